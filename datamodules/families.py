"""Which data module serves a model: the data names valid for its data family, and the module itself.

A model's card names its family: ``images`` (MNIST, Fashion-MNIST, Omniglot as
flat 28×28 images, for the VAEs), ``listops``, ``none`` (the model makes its own
inputs), ``classification`` (labelled image sets as ``(N, C, H, W)`` batches: a
found architecture, the Mixture-of-Experts classifier) or ``nas-search`` (paired
halves of such a set for architecture search). ``train.py``, the evaluation of
released weights and the notebooks build data through :func:`build_datamodule`,
so they agree on it; :func:`data_facts` tells a model what it must know of the data
(its card's ``from_data``), and :func:`tiny_data` writes a stand-in for smoke runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule

from .images import DATASETS as IMAGE_DATA
from .images import ImageDataModule
from .listops import ListOpsDataModule
from .nas import DATASETS as NAS_DATA
from .nas import NASDataModule, describe
from .steps import StepsDataModule
from .tiny import write_images, write_listops

IMAGES, LISTOPS, NONE, CLASSIFICATION, NAS_SEARCH = "images", "listops", "none", "classification", "nas-search"
FAMILIES = (IMAGES, LISTOPS, NONE, CLASSIFICATION, NAS_SEARCH)
#: What a family tells a model of its data, by the constructor argument each fills.
FACTS = {CLASSIFICATION: ("in_channels", "num_classes", "image_size"),
         NAS_SEARCH: ("in_channels", "num_classes", "image_size")}


def valid_data(family: str) -> list[str]:
    """The ``--data`` names a model of ``family`` accepts."""
    if family == IMAGES:
        return list(IMAGE_DATA)
    if family in FACTS:
        return list(NAS_DATA)
    return [family]  # listops and none: the model's own


def build_datamodule(family: str, data: str, *, data_dir: str | None = None, batch_size: int = 100,
                     binarize: str = "none", val_size: int = 0) -> LightningDataModule:
    """The data module of ``data`` for a model of ``family``; ``binarize`` and ``val_size`` are the images'."""
    if data not in valid_data(family):
        raise ValueError(f"unknown data {data!r} for this model; valid choices: {', '.join(valid_data(family))}.")
    if family == NONE:
        return StepsDataModule()
    if family == LISTOPS:
        # Without data_dir the splits are generated once into the cache.
        return ListOpsDataModule(data_dir=data_dir, batch_size=batch_size)
    if family in FACTS:
        return NASDataModule(data, data_dir=data_dir, batch_size=batch_size,
                             mode="search" if family == NAS_SEARCH else "train")
    return ImageDataModule(data, data_dir=data_dir, batch_size=batch_size, binarize=binarize, val_size=val_size)


def data_facts(family: str, data: str) -> dict[str, int]:
    """What a model of ``family`` may need to know of data set ``data`` (see :data:`FACTS`), without reading it."""
    if family not in FACTS:
        return {}
    info = describe(data)
    return {"in_channels": info.channels, "num_classes": info.num_classes, "image_size": info.size}


def tiny_data(family: str, folder: Path, examples: int = 60) -> dict[str, Any]:
    """Write a stand-in of ``examples`` training examples for ``family`` into ``folder``; the settings that read it.

    Random images as MNIST's IDX files (read as Fashion-MNIST by the classification
    families, which pad them to 32×32), or depth-one ListOps expressions.
    """
    if family == IMAGES:
        return {"data": "mnist", "data_dir": str(write_images(folder, examples))}
    if family in FACTS:
        return {"data": "fashion-mnist", "data_dir": str(write_images(folder, examples))}
    if family == LISTOPS:
        return {"data": "listops", "data_dir": str(write_listops(folder, examples))}
    return {}
