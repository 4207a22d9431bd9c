"""Sampling noise of its own for every process, reproducibly, and continued exactly on resume."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from torch import Tensor


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

    Checkpoints carry every rank's generator state (gathered when the checkpoint is
    written), and a resumed run restores its rank's when training starts, after
    Lightning's sanity-check validation, so it draws exactly what the
    uninterrupted run would have drawn.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._restored: list[dict[str, Tensor]] | None = None

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._restored is None:
            torch.manual_seed(per_rank_seed(self.seed, trainer.global_rank))

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._restored is None:
            return
        if len(self._restored) != trainer.world_size:
            raise ValueError(
                f"the checkpoint holds the random state of {len(self._restored)} process(es) but this run has "
                f"{trainer.world_size}; resume with as many processes (--devices) as the run had."
            )
        state = self._restored[trainer.global_rank]
        torch.set_rng_state(state["cpu"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
        self._restored = None

    def state_dict(self) -> dict[str, Any]:
        state = {"cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        states = [state]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, state)
        return {"seed": self.seed, "random_states": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict["random_states"]
