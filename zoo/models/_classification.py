"""What the zoo's classifiers (ListOps, GDAS, NAS-Net) share: the loss and accuracy of each stage, logged alike."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy

from ._logging import logger_writes_this_step

STAGES = ("train", "val", "test")


class Classifier(L.LightningModule):
    """Cross-entropy training with ``{stage}/loss`` and ``{stage}/accuracy`` logged.

    A subclass says how a batch becomes class logits and labels
    (:meth:`logits_and_labels`). Training values reach the logger every
    ``log_every_n_steps``; the epoch's training accuracy is ``train/accuracy_epoch``.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        # ModuleDict keys may not shadow Module attributes such as ``train``. Validating the
        # labels would read them on the host (torch.unique) at every update.
        self.accuracy = nn.ModuleDict({
            f"{stage}_accuracy": MulticlassAccuracy(num_classes, average="micro", validate_args=False)
            for stage in STAGES
        })

    def logits_and_labels(self, batch: Any) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def record(self, stage: str, logits: Tensor, labels: Tensor, loss: Tensor, **extra: Any) -> None:
        """Update the stage's accuracy and log it with the loss (and, in training, ``extra``)."""
        accuracy = self.accuracy[f"{stage}_accuracy"]
        accuracy.update(logits.detach(), labels)
        if stage != "train":
            self.log(f"{stage}/accuracy", accuracy, prog_bar=True)
            self.log(f"{stage}/loss", loss, batch_size=len(labels), sync_dist=True)
        elif logger_writes_this_step(self.trainer):
            self.log_dict({"train/loss": loss.detach(), "train/accuracy": accuracy.compute(), **extra})

    def _step(self, batch: Any, stage: str) -> Tensor:
        logits, labels = self.logits_and_labels(batch)
        loss = F.cross_entropy(logits, labels)
        self.record(stage, logits, labels, loss)
        return loss

    def training_step(self, batch: Any, batch_index: int) -> Tensor | None:
        return self._step(batch, "train")

    def validation_step(self, batch: Any, batch_index: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Any, batch_index: int) -> None:
        self._step(batch, "test")

    def on_train_epoch_end(self) -> None:
        accuracy = self.accuracy["train_accuracy"]
        self.log("train/accuracy_epoch", accuracy.compute(), sync_dist=True)  # see vae._log_epoch_means
        accuracy.reset()
