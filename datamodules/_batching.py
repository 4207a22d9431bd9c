"""Batches of in-memory data: shuffled by a seed every rank shares, sharded over ranks, resumable.

The image, ListOps and NAS data modules keep their splits as tensors and cut
batches by indexing. What they share is here: the seeds that ``seed_everything``
controls and checkpoints keep (:class:`ResumableOrder`, a data-module mixin), the
bookkeeping that lets Lightning resume a loader in the middle of an epoch
(:class:`ResumableEpochs`), and the sharded index order (:class:`ShardedBatches`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import lightning as L
import torch
from torch import Tensor


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

    @staticmethod
    def end_epoch(state: dict[str, int | None]) -> None:
        """Make a saved state that of a loader whose epoch is over, though it handed out fewer batches than it
        has: an epoch cut short (``limit_train_batches``) must not be resumed where it stopped."""
        state["position"] = 0

    def load_state_dict(self, state: dict[str, int | None]) -> None:
        self.seed, self.position = state["seed"], int(state["position"])
        # Mid-epoch, the next iteration must draw the interrupted epoch's order again.
        self.epoch = int(state["epoch"]) - (1 if self.position else 0)
        self._resume_at = self.position


class ShardedBatches(ResumableEpochs):
    """Epochs of batches of example indices, shuffled, sharded over ranks and resumable.

    The index logic shared by the in-memory loaders: a subclass holds the data and
    turns each index batch of :meth:`_index_batches` into a batch of it. With
    ``shuffle``, epoch ``e`` uses the permutation of a generator seeded with
    ``seed + e``; ``seed=None`` draws the seed from torch's global RNG here, so
    ``torch.manual_seed``/``seed_everything`` make the order reproducible, and ranks
    given the same seed agree on it. ``epoch`` is the first epoch to serve (a data module
    resuming after an epoch's end starts at the trainer's).

    Like ``DistributedSampler``, rank ``r`` of ``world_size`` takes every
    ``world_size``-th index of the epoch's order from ``r``, after the order is padded
    by wrapping around to a multiple of ``world_size``: the shares are disjoint but for
    the padding, and every rank gets the same number of batches (the collectives of
    DDP need that). The last batch may be smaller (``drop_last=False``). ``size``, the
    number of examples, must be at least 1; subclasses check it with their data.
    """

    def __init__(
        self,
        size: int,
        batch_size: int,
        *,
        shuffle: bool = False,
        rank: int = 0,
        world_size: int = 1,
        seed: int | None = None,
        epoch: int = 0,
    ) -> None:
        name = type(self).__name__
        if batch_size <= 0:
            raise ValueError(f"{name}: batch_size must be a positive integer, got {batch_size}.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"{name}: need world_size >= 1 and 0 <= rank < world_size, "
                f"got rank={rank}, world_size={world_size}."
            )
        self.size = size
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rank = rank
        self.world_size = world_size
        self.seed = draw_seed() if seed is None and shuffle else seed
        #: Epochs started so far; advanced when iteration begins, not by a bare ``iter()``,
        #: so Lightning's check that the object is iterable does not skip an order.
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(self._share_size() / self.batch_size)

    def _index_batches(self, device: torch.device) -> Iterator[Tensor]:
        """This rank's index batches of the next epoch on ``device``, from where it resumes."""
        share = self._epoch_order()[self.rank :: self.world_size].to(device)
        starts = range(0, len(share), self.batch_size)
        for index in self._resumable(len(starts)):
            yield share[starts[index] : starts[index] + self.batch_size]

    def _share_size(self) -> int:
        return math.ceil(self.size / self.world_size)

    def _epoch_order(self) -> Tensor:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=generator)
        else:
            order = torch.arange(self.size)
        self.epoch += 1
        padded = self._share_size() * self.world_size
        return order.repeat(math.ceil(padded / self.size))[:padded]


class TensorBatches(ShardedBatches):
    """The rows of one tensor in batches, cut by indexing: a DataLoader for data in memory.

    Each iteration is one epoch; batches are ``data[indices]`` (no labels), in the
    order and shares of :class:`ShardedBatches`. ``binarize`` replaces each batch by
    a fresh Bernoulli draw with the pixels as probabilities.
    """

    def __init__(
        self,
        data: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        binarize: bool = False,
        rank: int = 0,
        world_size: int = 1,
        seed: int | None = None,
        epoch: int = 0,
    ) -> None:
        if data.dim() == 0 or len(data) == 0:
            raise ValueError(
                "TensorBatches needs at least one example, "
                f"got a tensor of shape {tuple(data.shape)}."
            )
        super().__init__(
            len(data), batch_size, shuffle=shuffle, rank=rank, world_size=world_size, seed=seed, epoch=epoch
        )
        self.data = data
        self.binarize = binarize

    def __iter__(self) -> Iterator[Tensor]:
        for indices in self._index_batches(self.data.device):
            batch = self.data[indices]
            yield torch.bernoulli(batch) if self.binarize else batch
