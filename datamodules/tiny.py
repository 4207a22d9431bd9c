"""Tiny stand-ins for each data family, in the formats the real data comes in, for smoke runs.

A few dozen random images as MNIST's IDX files, or depth-one ListOps expressions as
its TSV files, read by the same data modules as the real sets: the tests and the GPU
check's ``--tiny`` run every model on them in seconds, without a download.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from .idx import write_idx
from .listops.expressions import OPERATORS, model_tokens, to_text, value
from .listops.files import write_lines


def write_images(folder: Path, train: int, test: int = 20, compressed: bool = False) -> Path:
    """Random MNIST-format images and labels: IDX files, gzip-compressed (``.gz``) if ``compressed``."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if compressed else ""
    generator = torch.Generator().manual_seed(0)
    for prefix, count in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}",
                  torch.randint(256, (count, 28, 28), generator=generator, dtype=torch.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}",
                  torch.randint(10, (count,), generator=generator, dtype=torch.uint8))
    return folder


def write_listops(folder: Path, train: int, evaluation: int = 16) -> Path:
    """Depth-one ListOps expressions in the published file format."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)
    for split, count in (("train", train), ("valid", evaluation), ("test", evaluation)):
        trees = [(rng.choice(OPERATORS), [rng.randrange(10) for _ in range(rng.randint(2, 5))]) for _ in range(count)]
        write_lines(folder / f"{split}.tsv", [(value(tree), " ".join(model_tokens(to_text(tree)))) for tree in trees])
    return folder
