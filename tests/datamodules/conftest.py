"""Helpers shared by the data-module tests: tiny IDX copies and a machine with no network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision
from torch import Tensor

from datamodules import _downloads, images
from datamodules.idx import write_idx

NUM_TRAIN, NUM_TEST = 120, 30
REAL_SYSTEM_DATA_DIRS = dict(images.SYSTEM_DATA_DIRS)


def random_images(count: int, seed: int) -> Tensor:
    """uint8 images ``(count, 28, 28)``, different for each seed."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 28, 28), dtype=torch.uint8, generator=generator)


def write_image_files(
    folder: Path, seed: int = 0, compressed: bool = True
) -> tuple[Tensor, Tensor]:
    """Write the two IDX image files of a tiny data set into ``folder``; its (train, test)."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compressed else ""
    train, test = random_images(NUM_TRAIN, seed), random_images(NUM_TEST, seed + 1)
    write_idx(folder / f"train-images-idx3-ubyte{suffix}", train)
    write_idx(folder / f"t10k-images-idx3-ubyte{suffix}", test)
    return train, test


class FailingDownload:
    """Stands in for a torchvision data set class on a machine without network."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls: list[dict[str, object]] = []

    def __call__(self, root: object, **options: object) -> None:
        self.calls.append({"root": root, **options})
        if options.get("download", False):
            raise self.error
        raise RuntimeError("Dataset not found. You can use download=True to download it")


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> dict[str, FailingDownload]:
    """No test downloads, reads the user's data directory, or finds system copies by chance.

    Returns the fake torchvision classes by name, so a test can check what was tried.
    """
    fakes = {}
    for name in ("MNIST", "FashionMNIST", "Omniglot"):
        fakes[name] = FailingDownload(RuntimeError("offline"))
        monkeypatch.setattr(torchvision.datasets, name, fakes[name])
    monkeypatch.setattr(images, "SYSTEM_DATA_DIRS", {})
    monkeypatch.delenv(_downloads.CACHE_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return fakes
