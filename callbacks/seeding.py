"""Sampling noise of its own for every process, reproducibly."""

from __future__ import annotations

import lightning as L
import torch


def per_rank_seed(seed: int, rank: int) -> int:
    """A seed for process ``rank`` of a run seeded with ``seed``: distinct per rank."""
    return (seed * 1_000_003 + rank) % (1 << 63)


class PerRankSeed(L.Callback):
    """Reseed torch's generators with ``per_rank_seed(seed, rank)`` when fitting starts.

    ``seed_everything`` seeds every process alike. That is right for the initial
    weights (DDP broadcasts rank 0's anyway) but would make every rank draw the
    same uniforms for its estimator's samples and its binarization, so the
    averaged gradient would carry less independent noise than its batch size
    suggests. The data order stays shared: the data module broadcasts rank 0's
    shuffling seed.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        torch.manual_seed(per_rank_seed(self.seed, trainer.global_rank))
