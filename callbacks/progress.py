"""Lightning's progress bar, showing the training loss without reading it from the device again."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar

from .nonfinite import NonFiniteGuard


class LossProgressBar(TQDMProgressBar):
    """The bar with ``loss``: the last optimizer step's loss, averaged over processes.

    A value logged with ``prog_bar=True`` is read on the host at every batch for the
    rest of the epoch, a stall of the GPU each time. The loss shown here is the one
    :class:`~callbacks.nonfinite.NonFiniteGuard` reads with its flags anyway.
    """

    def __init__(self, guard: NonFiniteGuard, refresh_rate: int = 10) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.guard = guard

    def get_metrics(self, trainer: L.Trainer, module: L.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, module)
        if self.guard.last_loss is not None:
            metrics["loss"] = self.guard.last_loss
        return metrics
