"""Data order that ``seed_everything`` controls, every rank shares, and a resumed run replays."""

from __future__ import annotations

from typing import Iterator

import lightning as L
import torch


def draw_seed() -> int:
    """A seed from torch's global RNG, so ``seed_everything`` fixes what it seeds."""
    return int(torch.randint(1 << 62, ()).item())


def shared_seed(trainer: L.Trainer | None) -> int:
    """``draw_seed()`` on rank 0, broadcast: every rank must shuffle alike for disjoint shares."""
    seed = draw_seed()
    return seed if trainer is None else trainer.strategy.broadcast(seed, src=0)


class ResumableOrder:
    """A data module's shuffling seeds, kept in its checkpoints; its loaders start at the epoch to train.

    Lightning restores a loader's own state (:class:`ResumableEpochs`) only when it
    resumes in the middle of an epoch. From a checkpoint written at an epoch's end,
    or when training ends, it builds fresh loaders, which would draw a new seed and
    start again at epoch 0: another order than the uninterrupted run's. So the data
    module keeps the seed it drew for each shuffled split in its ``state_dict``,
    which every checkpoint holds, and each loader begins at the first epoch not yet trained.
    """

    def placement(self, split: str, shuffle: bool) -> dict[str, int | None]:
        """A loader's ``rank``, ``world_size``, first ``epoch`` and shuffling ``seed`` (shared by all ranks)."""
        trainer = self.trainer
        rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        seed = None
        if shuffle:
            seeds = self.__dict__.setdefault("_order_seeds", {})
            seed = seeds[split] = seeds[split] if split in seeds else shared_seed(trainer)
        # Epochs whose batches have all been trained on: a checkpoint written at an epoch's end
        # (after validation) resumes before Lightning counts that epoch as completed.
        epoch = trainer.fit_loop.epoch_progress.current.processed if trainer is not None else 0
        return {"rank": rank, "world_size": world_size, "seed": seed, "epoch": epoch}

    def state_dict(self) -> dict[str, dict[str, int]]:
        return {"order_seeds": dict(self.__dict__.get("_order_seeds", {}))}

    def load_state_dict(self, state: dict[str, dict[str, int]]) -> None:
        self.__dict__["_order_seeds"] = dict(state.get("order_seeds", {}))


class ResumableEpochs:
    """The bookkeeping that lets Lightning resume an in-memory loader in the middle of an epoch.

    A loader keeps ``seed`` (its shuffling seed), ``epoch`` (epochs started) and
    ``position`` (batches handed out in the current epoch). Lightning saves
    :meth:`state_dict` in checkpoints and calls :meth:`load_state_dict` on resume;
    the next iteration then replays the interrupted epoch's order from the first
    batch not yet trained on.
    """

    seed: int | None
    epoch: int
    position: int = 0
    _resume_at: int = 0

    def _resumable(self, count: int) -> Iterator[int]:
        """The indices of the epoch's ``count`` batches still to hand out, counting them.

        Once the last batch is handed out the epoch counts as complete (position 0),
        so a checkpoint written after training on it resumes with the next epoch.
        """
        start, self._resume_at = self._resume_at, 0
        for index in range(start, count):
            self.position = (index + 1) % count
            yield index

    def state_dict(self) -> dict[str, int | None]:
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        self.seed, self.position = state["seed"], int(state["position"])
        # Mid-epoch, the next iteration must draw the interrupted epoch's order again.
        self.epoch = int(state["epoch"]) - (1 if self.position else 0)
        self._resume_at = self.position
