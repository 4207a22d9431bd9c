"""A torchmetrics metric for the weighted means of several values at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric


class WeightedMeans(Metric):
    """Weighted running means of named values, e.g. the terms of a loss over an epoch.

    One ``update`` per step takes all values as one tensor: torchmetrics' bookkeeping
    costs about 0.1 ms a call, which one metric per value would pay several times a
    step. The sums are all-reduced across processes by ``compute``.
    """

    full_state_update = False

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.names = tuple(names)
        self.add_state("sums", torch.zeros(len(self.names)), dist_reduce_fx="sum")
        self.add_state("weight", torch.zeros(()), dist_reduce_fx="sum")

    def update(self, values: Tensor, weight: float) -> None:
        """Add ``values`` (one per name), each counted ``weight`` times."""
        self.sums.add_(values.detach(), alpha=weight)  # in place: no state re-assignment to bookkeep
        self.weight.add_(weight)

    def compute(self) -> dict[str, Tensor]:
        return dict(zip(self.names, self.sums / self.weight))
