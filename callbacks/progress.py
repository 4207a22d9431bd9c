"""Lightning's progress bar, redrawn a few times a second, showing the loss the step's one read has read."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from .nonfinite import LOSS
from .step_read import Reading, StepRead


class LossProgressBar(TQDMProgressBar):
    """The bar with ``loss``: the last optimizer step's loss, averaged over processes.

    A value logged with ``prog_bar=True`` is read on the host at every batch for the
    rest of the epoch, a stall of the GPU each time. The loss shown here is the one
    :class:`~callbacks.nonfinite.NonFiniteGuard` provides to the step's one read
    (:class:`~callbacks.step_read.StepRead`); without a guard the bar shows no loss.

    The training bar is redrawn at most every ``seconds`` (and at an epoch's last
    batch) rather than every N batches: a redraw costs about half a millisecond, and
    steps range from milliseconds (a VAE on a GPU) to a second (ListOps on a CPU).
    """

    def __init__(self, seconds: float = 0.25) -> None:
        super().__init__(refresh_rate=1)
        self.seconds = seconds
        self.loss: float | None = None  # at the last read
        self._next_redraw = 0.0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        super().on_train_start(trainer, module)
        StepRead.of(trainer).listen(self._receive)

    def _receive(self, trainer: L.Trainer, module: L.LightningModule, optimizer: Any, reading: Reading) -> None:
        if LOSS in reading:
            self.loss = reading.mean(LOSS)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        if now < self._next_redraw and batch_idx + 1 != self.total_train_batches:
            return
        self._next_redraw = now + self.seconds
        super().on_train_batch_end(trainer, module, outputs, batch, batch_idx)

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, module)
        if self.loss is not None:
            metrics["loss"] = self.loss
        return metrics
