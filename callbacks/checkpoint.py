"""Keep the final state of every run, wherever in an epoch it stops."""

from __future__ import annotations

from pathlib import Path

import lightning as L


class FinalCheckpoint(L.Callback):
    """Write ``path`` (the run's ``last.ckpt``) when training ends.

    ``ModelCheckpoint`` saves after validation and at epoch ends, so a run that
    ``max_steps`` stops in the middle of an epoch would lose its final steps.
    Every rank calls ``save_checkpoint``; only rank 0 writes.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)  # optimizer state too
