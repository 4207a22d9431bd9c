"""Small train.py runs of every model: the data they read and their command-line arguments."""

from __future__ import annotations

import random
from pathlib import Path

import torch

from datamodules.idx import write_idx
from datamodules.listops.expressions import OPERATORS, model_tokens, to_text, value
from datamodules.listops.files import write_lines

GENOTYPE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
_SMALL_NAS = ["--model-arg", "channels=2", "--model-arg", "cells_per_stage=1"]
#: A Mixture-of-Experts transformer of width 16 with 4 experts in its second (and last) block.
SMALL_MOE = [argument for option in ("width=16", "hidden=16", "depth=2", "heads=2", "num_experts=4", "patch_size=8")
             for argument in ("--model-arg", option)]


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


def model_arguments(model: str, images: Path, listops: Path, batch_size: int | None = None,
                    small: bool = True) -> list[str]:
    """``--model`` and what a run of it needs: its data, ``batch_size`` if given, and small widths if ``small``."""
    data = {
        "vae": ["--data", "mnist", "--data-dir", str(images)],
        "bvae": ["--data", "mnist", "--data-dir", str(images), *(["--val-size", "10"] if small else [])],
        "poly": [],
        "listops": ["--data-dir", str(listops)],
        "gdas": ["--data", "synthetic"],
        "nas-net": ["--data", "synthetic", "--genotype", GENOTYPE],
        "moe": ["--data", "synthetic"],
    }[model]
    widths = {"listops": ["--model-arg", "hidden_size=16"], "gdas": _SMALL_NAS, "nas-net": _SMALL_NAS,
              "moe": SMALL_MOE}
    batch = ["--batch-size", str(batch_size)] if batch_size is not None and model != "poly" else []
    return ["--model", model, *data, *(widths.get(model, []) if small else []), *batch]
