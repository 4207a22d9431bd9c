"""Log a VAE's reconstructions and prior samples to TensorBoard after each validation.

Works with any LightningModule that has ``reconstruct(images)`` and
``generate(count)`` returning pixel probabilities of shape ``(N, H·W)``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor
from torchvision.utils import make_grid


@runtime_checkable
class GenerativeImageModel(Protocol):
    """What the callback shows: a model that reconstructs images and samples new ones."""

    def reconstruct(self, images: Tensor) -> Tensor: ...

    def generate(self, count: int) -> Tensor: ...


class ReconstructionImages(L.Callback):
    """Originals above reconstructions, and prior samples, as image grids."""

    def __init__(self, count: int = 32, image_shape: tuple[int, int, int] = (1, 28, 28)) -> None:
        self.count = count
        self.image_shape = image_shape
        self._originals: Tensor | None = None

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and self._originals is None:
            self._originals = batch[: self.count].detach()

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        originals, self._originals = self._originals, None
        logger = trainer.logger
        if originals is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        if not isinstance(logger, TensorBoardLogger):
            return
        reconstructions = module.reconstruct(originals)
        samples = module.generate(self.count)
        step = trainer.global_step
        pairs = torch.cat((originals, reconstructions))
        logger.experiment.add_image("images/reconstructions", self._grid(pairs, len(originals)), step)
        logger.experiment.add_image("images/prior_samples", self._grid(samples, 8), step)

    def _grid(self, pixels: Tensor, per_row: int) -> Tensor:
        images = pixels.float().reshape(-1, *self.image_shape).clamp(0, 1)
        return make_grid(images.cpu(), nrow=per_row, padding=1)
