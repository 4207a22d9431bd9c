"""Image classification data for architecture search (GDAS) and for retraining what it found.

``mode="search"`` splits the training set in two halves, once, by a permutation seeded
with ``search_split_seed`` (CIFAR-10: 25,000 / 25,000), as NATS-Bench searches do: the
network weights train on one half while the architecture is chosen on the other, so
``train_dataloader`` pairs a batch of each. ``mode="train"`` trains on the whole
training set. In both modes validation and test serve the test split, unaugmented.

Like :class:`~datamodules.images.ImageDataModule`, the splits are tensors kept on the
trainer's device and batched by indexing; normalisation uses the per-channel mean and
std of the training images, computed once at setup.
"""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor

from .._batching import ResumableOrder
from .._downloads import default_data_dir
from . import sources
from .batches import LabelledBatches, PairedBatches
from .sources import DatasetInfo

__all__ = ["MODES", "NASDataModule", "search_split"]

MODES = ("search", "train")

# Images per chunk when computing the channel statistics, so no float copy of the whole set.
_STATISTICS_CHUNK = 4096


class NASDataModule(ResumableOrder, LightningDataModule):
    """Batches ``(images, labels)`` of one of :data:`~datamodules.nas.sources.DATASETS`.

    ``train_dataloader`` returns :class:`PairedBatches` (training half, held-out half)
    when searching and :class:`LabelledBatches` when training; training batches are
    shuffled, each loader with its own seed shared by all ranks, and augmented (random
    crop of the zero-padded image, horizontal flip) unless ``augment=False``.
    ``data_dir`` defaults to the cache folder's ``data/`` (``datamodules.cache_dir()``).
    """

    MODES = MODES
    DATASETS = tuple(sources.DATASETS)

    def __init__(
        self,
        name: str = "fashion-mnist",
        data_dir: str | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 512,
        mode: str = "search",
        augment: bool = True,
        download: bool = True,
        search_split_seed: int = 0,
    ) -> None:
        super().__init__()
        sources.describe(name)  # an unknown name fails here, listing the known ones
        if mode not in MODES:
            raise ValueError(f"unknown mode={mode!r}; valid modes: {', '.join(MODES)}.")
        for argument, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{argument} must be a positive integer, got {value!r}.")
        if not isinstance(search_split_seed, int):
            raise ValueError(f"search_split_seed must be an integer, got {search_split_seed!r}.")
        self.save_hyperparameters()
        self.name = name
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.mode = mode
        self.augment = augment
        self.download = download
        self.search_split_seed = search_split_seed
        #: ``(images, labels)`` of "train" (in search mode the training half), "held" (the
        #: held-out half, search mode only) and "test"; filled by :meth:`setup`.
        self.splits: dict[str, tuple[Tensor, Tensor]] = {}
        #: Per-channel mean and std of the training images, in [0, 1] units; set by setup.
        self.mean: Tensor | None = None
        self.std: Tensor | None = None

    @staticmethod
    def describe(name: str) -> DatasetInfo:
        """Channels, image size and classes of data set ``name``, without reading it."""
        return sources.describe(name)

    @property
    def info(self) -> DatasetInfo:
        return sources.describe(self.name)

    def prepare_data(self) -> None:
        """Make sure a local copy exists: find one, else download one into ``data_dir``."""
        sources.prepare(self.name, self.data_dir, self.download)

    def setup(self, stage: str | None = None) -> None:
        """Load the splits once; move them to the trainer's device whenever attached to one."""
        if not self.splits:
            self._load()
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            self.splits = {
                split: (images.to(device), labels.to(device))
                for split, (images, labels) in self.splits.items()
            }

    def train_dataloader(self) -> PairedBatches | LabelledBatches:
        if self.mode == "search":
            return PairedBatches(
                self._batches("train", self.batch_size, training=True),
                self._batches("held", self.batch_size, training=True),
            )
        return self._batches("train", self.batch_size, training=True)

    def val_dataloader(self) -> LabelledBatches:
        """The test split: search and retraining alike report test accuracy."""
        return self._batches("test", self.eval_batch_size)

    def test_dataloader(self) -> LabelledBatches:
        return self._batches("test", self.eval_batch_size)

    def _load(self) -> None:
        data = sources.load(self.name, self.data_dir, self.download)
        self.mean, self.std = _channel_statistics(data.train_images)
        self.splits = {"test": (data.test_images, data.test_labels)}
        if self.mode == "search":
            train, held = search_split(len(data.train_images), self.search_split_seed)
            self.splits["train"] = (data.train_images[train], data.train_labels[train])
            self.splits["held"] = (data.train_images[held], data.train_labels[held])
        else:
            self.splits["train"] = (data.train_images, data.train_labels)

    def _batches(self, split: str, batch_size: int, training: bool = False) -> LabelledBatches:
        if not self.splits:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for batches.")
        images, labels = self.splits[split]
        return LabelledBatches(
            images,
            labels,
            batch_size,
            mean=self.mean,
            std=self.std,
            shuffle=training,
            augment=training and self.augment,
            **self.placement(split, training),
        )


def search_split(count: int, seed: int) -> tuple[Tensor, Tensor]:
    """The indices of the search's training half and held-out half of ``count`` examples."""
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return order[: count // 2], order[count // 2 :]


def _channel_statistics(images: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and std per channel of uint8 ``(N, C, H, W)`` images, float32 in [0, 1] units."""
    total = torch.zeros(images.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for chunk in images.split(_STATISTICS_CHUNK):
        values = chunk.double()
        total += values.sum((0, 2, 3))
        squares += values.square().sum((0, 2, 3))
    count = images.numel() // images.shape[1]
    mean = total / count
    std = (squares / count - mean.square()).clamp(min=0).sqrt()
    return (mean / 255).float(), (std / 255).float()
