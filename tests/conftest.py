"""Fixtures shared across the test packages."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from datamodules.idx import write_idx


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory) -> Path:
    """A tiny MNIST-format folder for train.py runs: 60 training and 20 test images, with labels."""
    folder = tmp_path_factory.mktemp("tiny-mnist")
    generator = torch.Generator().manual_seed(0)
    for prefix, count in (("train", 60), ("t10k", 20)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz",
                  torch.randint(256, (count, 28, 28), generator=generator, dtype=torch.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz",
                  torch.randint(10, (count,), generator=generator, dtype=torch.uint8))
    return folder
