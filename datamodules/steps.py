"""A data module for models that make their own inputs: only a count of steps."""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import torch
from torch import Tensor


class EmptyBatches:
    """``length`` empty tensors: one per training step, each rank the same count."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[Tensor]:
        return (torch.empty(0) for _ in range(self.length))


class StepsDataModule(L.LightningDataModule):
    """Epochs of ``steps_per_epoch`` steps for a model without a data set (``--data none``)."""

    def __init__(self, steps_per_epoch: int = 100) -> None:
        super().__init__()
        if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
            raise ValueError(f"steps_per_epoch must be a positive integer, got {steps_per_epoch!r}.")
        self.steps_per_epoch = steps_per_epoch

    def train_dataloader(self) -> EmptyBatches:
        return EmptyBatches(self.steps_per_epoch)
