"""Labelled image batches cut from tensors in memory, augmented a whole batch at a time.

:class:`LabelledBatches` serves ``(images, labels)`` in the order and rank shares of
:class:`~datamodules._batching.ShardedBatches`, normalised per channel, and optionally
with the augmentation of the CIFAR recipes: a random crop of the image padded by 4
zero pixels on each side, and a random horizontal flip. Both are one indexing
operation on the batch tensor, on the data's device, with no per-image Python work.
:class:`PairedBatches` zips two of them for architecture search, which alternates a
step on the training half with one on the held-out half.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional

from .._batching import ResumableEpochs, ShardedBatches, draw_seed

__all__ = ["CROP_PADDING", "LabelledBatches", "PairedBatches", "crop_and_flip"]

#: Zero pixels added on each side before a random crop back to the original size.
CROP_PADDING = 4


class LabelledBatches(ShardedBatches):
    """Batches ``(images, labels)``: float32 ``(B, C, H, W)`` normalised, int64 ``(B,)``.

    ``images`` are uint8 ``(N, C, H, W)``; a batch is ``(images / 255 − mean) / std``
    per channel. With ``augment``, each example of epoch ``e`` gets a crop offset and a
    flip drawn from a generator seeded with (``seed``, ``e``), indexed by the example,
    so an epoch's augmentation is reproducible, the same whatever the number of ranks,
    and replayed exactly when a run resumes mid-epoch. ``seed=None`` draws the seed
    from torch's global RNG when the batches are shuffled or augmented.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        batch_size: int,
        *,
        mean: Sequence[float] | Tensor,
        std: Sequence[float] | Tensor,
        shuffle: bool = False,
        augment: bool = False,
        padding: int = CROP_PADDING,
        rank: int = 0,
        world_size: int = 1,
        seed: int | None = None,
        epoch: int = 0,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) == 0:
            raise ValueError(
                "LabelledBatches needs uint8 images (N, C, H, W) with N >= 1, "
                f"got a {images.dtype} tensor of shape {tuple(images.shape)}."
            )
        if labels.shape != (len(images),) or labels.device != images.device:
            raise ValueError(
                "LabelledBatches needs one label per image, on the images' device: got labels "
                f"of shape {tuple(labels.shape)} on {labels.device} for {len(images)} images "
                f"on {images.device}."
            )
        channels = images.shape[1]
        mean = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std = torch.as_tensor(std, dtype=torch.float32).flatten()
        if len(mean) != channels or len(std) != channels or not bool((std > 0).all()):
            raise ValueError(
                f"LabelledBatches needs a mean and a positive std per channel ({channels}), "
                f"got mean={mean.tolist()} and std={std.tolist()}."
            )
        if padding < 0:
            raise ValueError(f"LabelledBatches: padding must be >= 0 pixels, got {padding}.")
        if seed is None and augment:
            seed = draw_seed()  # the base class draws one only for shuffling
        super().__init__(
            len(images), batch_size, shuffle=shuffle, rank=rank, world_size=world_size, seed=seed, epoch=epoch
        )
        self.images, self.labels = images, labels
        self.augment = augment
        self.padding = padding
        # Folded into one subtraction and one division of the uint8 values.
        self._offset = (255 * mean).view(-1, 1, 1).to(images.device)
        self._scale = (255 * std).view(-1, 1, 1).to(images.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        device = self.images.device
        # Drawn before _index_batches starts the epoch, so self.epoch is the one served.
        augmentation = self._draw_augmentation(self.epoch, device) if self.augment else None
        for indices in self._index_batches(device):
            images = self.images[indices]
            if augmentation is not None:
                shifts, flips = augmentation
                images = crop_and_flip(images, self.padding, shifts[indices], flips[indices])
            yield images.float().sub_(self._offset).div_(self._scale), self.labels[indices]

    def _draw_augmentation(self, epoch: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Per example: the crop's offsets ``(N, 2)`` (rows, columns) and whether to flip."""
        # A stream apart from the shuffle's (seeded seed + epoch): SeedSequence hashes the
        # pair, and needs both numbers >= 0.
        mixed = np.random.SeedSequence([self.seed % 2**64, epoch]).generate_state(1, np.uint64)
        generator = torch.Generator().manual_seed(int(mixed[0]))
        shifts = torch.randint(2 * self.padding + 1, (self.size, 2), generator=generator)
        flips = torch.rand(self.size, generator=generator) < 0.5
        return shifts.to(device), flips.to(device)


def crop_and_flip(images: Tensor, padding: int, shifts: Tensor, flips: Tensor) -> Tensor:
    """Crops of the zero-padded ``images``, mirrored left to right where ``flips``, in one gather.

    Example ``i`` of ``(B, C, H, W)`` becomes the ``H × W`` window at rows
    ``shifts[i, 0]`` and columns ``shifts[i, 1]`` of the image padded by ``padding``
    zeros on each side (offsets in ``0 .. 2 * padding``), reversed along the columns
    when ``flips[i]``.
    """
    count, channels, height, width = images.shape
    device = images.device
    padded = functional.pad(images, (padding,) * 4)
    rows = shifts[:, :1] + torch.arange(height, device=device)
    columns = torch.arange(width, device=device).expand(count, width)
    columns = torch.where(flips[:, None], columns.flip(1), columns) + shifts[:, 1:]
    return padded[
        torch.arange(count, device=device)[:, None, None, None],
        torch.arange(channels, device=device)[None, :, None, None],
        rows[:, None, :, None],
        columns[:, None, None, :],
    ]


class PairedBatches(ResumableEpochs):
    """Two loaders in step: ``((x_train, y_train), (x_held, y_held))`` batches.

    An epoch has as many batches as the shorter loader; each loader shuffles by its
    own seed. The state that Lightning checkpoints is both loaders' with this epoch's
    position, so a resumed run replays the interrupted epoch's remaining pairs, and a
    completed epoch completes both, even where the longer one had batches left.
    """

    def __init__(self, train: LabelledBatches, held: LabelledBatches) -> None:
        self.train, self.held = train, held

    def __len__(self) -> int:
        return min(len(self.train), len(self.held))

    def __iter__(self) -> Iterator[tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]]:
        # The index generator first: zip stops on it without drawing a batch past the epoch's end.
        for _, train, held in zip(self._resumable(len(self)), self.train, self.held):
            yield train, held

    def state_dict(self) -> dict[str, Any]:
        return {
            name: {**part.state_dict(), "position": self.position}
            for name, part in (("train", self.train), ("held", self.held))
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.train.load_state_dict(state["train"])
        self.held.load_state_dict(state["held"])
        self._resume_at = self.position = int(state["train"]["position"])
