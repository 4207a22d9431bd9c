"""Seeds for data order that ``seed_everything`` controls and every rank shares."""

from __future__ import annotations

import lightning as L
import torch


def draw_seed() -> int:
    """A seed from torch's global RNG, so ``seed_everything`` fixes what it seeds."""
    return int(torch.randint(1 << 62, ()).item())


def shared_seed(trainer: L.Trainer | None) -> int:
    """``draw_seed()`` on rank 0, broadcast: every rank must shuffle alike for disjoint shares."""
    seed = draw_seed()
    return seed if trainer is None else trainer.strategy.broadcast(seed, src=0)
