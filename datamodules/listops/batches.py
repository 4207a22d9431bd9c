"""Length-bucketed batches of token sequences, sharded over ranks."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from .._batching import ResumableEpochs, draw_seed
from .expressions import TOKEN_IDS
from .files import Example

#: ``(tokens (B, T), lengths (B,), labels (B,))``; T is the longest sequence of the batch.
Batch = tuple[Tensor, Tensor, Tensor]


def encode(examples: list[Example]) -> tuple[Tensor, Tensor, Tensor]:
    """Token ids padded with 0 ``(N, T_max)``, lengths ``(N,)`` and labels ``(N,)``."""
    lengths = torch.tensor([len(example.tokens) for example in examples])
    tokens = torch.zeros(len(examples), int(lengths.max()), dtype=torch.long)
    for row, example in enumerate(examples):
        tokens[row, : len(example.tokens)] = torch.tensor([TOKEN_IDS[token] for token in example.tokens])
    return tokens, lengths, torch.tensor([example.label for example in examples])


class BucketedBatches(ResumableEpochs):
    """Batches of examples of similar length, so that padding stays small.

    Training order (``shuffle``): epoch ``e`` shuffles with a generator seeded
    ``seed + e``, sorts each run of ``bucket_batches`` batches' worth of examples by
    length, cuts it into batches and shuffles the batches. Without ``shuffle`` the
    whole split is sorted by length. ``seed=None`` draws the seed from torch's global
    RNG, so ``seed_everything`` fixes the order.

    Rank ``r`` of ``world_size`` takes every ``world_size``-th batch from ``r``, the
    batch list padded by wrapping around, so that every rank gets as many batches
    (DDP's collectives need that) and, given the same seed, the shares are disjoint
    but for the padding.
    """

    def __init__(
        self,
        tokens: Tensor,
        lengths: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        bucket_batches: int = 50,
        rank: int = 0,
        world_size: int = 1,
        seed: int | None = None,
        epoch: int = 0,
    ) -> None:
        if len(tokens) == 0 or not len(tokens) == len(lengths) == len(labels):
            raise ValueError(
                f"BucketedBatches needs as many (>= 1) token rows, lengths and labels, "
                f"got {len(tokens)}, {len(lengths)} and {len(labels)}."
            )
        if batch_size < 1 or bucket_batches < 1:
            raise ValueError(f"batch_size and bucket_batches must be >= 1, got {batch_size} and {bucket_batches}.")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, world_size={world_size}."
            )
        self.tokens, self.lengths, self.labels = tokens, lengths, labels
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.bucket_batches = bucket_batches
        self.rank, self.world_size = rank, world_size
        self.seed = draw_seed() if seed is None and shuffle else seed
        #: Epochs started so far; advanced when iteration begins.
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.tokens) / self.batch_size) / self.world_size)

    def __iter__(self) -> Iterator[Batch]:
        share = self._epoch_batches()[self.rank :: self.world_size]
        for index in self._resumable(len(share)):
            indices = share[index]
            longest = int(self.lengths[indices].max())
            yield self.tokens[indices, :longest], self.lengths[indices], self.labels[indices]

    def _epoch_batches(self) -> list[Tensor]:
        size = len(self.tokens)
        generator = torch.Generator().manual_seed(self.seed + self.epoch) if self.shuffle else None
        order = torch.randperm(size, generator=generator) if self.shuffle else torch.arange(size)
        self.epoch += 1
        bucket = self.bucket_batches * self.batch_size if self.shuffle else size
        batches: list[Tensor] = []
        for chunk in order.split(bucket):
            batches.extend(chunk[self.lengths[chunk].argsort(stable=True)].split(self.batch_size))
        if self.shuffle:
            batches = [batches[index] for index in torch.randperm(len(batches), generator=generator)]
        padded = len(self) * self.world_size
        return (batches * math.ceil(padded / len(batches)))[:padded]
