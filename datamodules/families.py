"""Which data module serves a model: the data names valid for its data family, and the module itself.

A model's card names its family: ``images`` (MNIST, Fashion-MNIST, Omniglot for
the VAEs), ``listops``, ``none`` (the model makes its own inputs), ``nas-search``
(paired halves of a training set for architecture search) or ``nas-train`` (the
whole set, to train a found architecture). ``train.py``, the evaluation of
released weights and the notebooks build data through :func:`build_datamodule`,
so they agree on it.
"""

from __future__ import annotations

from lightning.pytorch import LightningDataModule

from .images import DATASETS as IMAGE_DATA
from .images import ImageDataModule
from .listops import ListOpsDataModule
from .nas import DATASETS as NAS_DATA
from .nas import NASDataModule
from .steps import StepsDataModule

IMAGES, LISTOPS, NONE, NAS_SEARCH, NAS_TRAIN = "images", "listops", "none", "nas-search", "nas-train"
FAMILIES = (IMAGES, LISTOPS, NONE, NAS_SEARCH, NAS_TRAIN)


def valid_data(family: str) -> list[str]:
    """The ``--data`` names a model of ``family`` accepts."""
    if family == IMAGES:
        return list(IMAGE_DATA)
    if family in (NAS_SEARCH, NAS_TRAIN):
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
    if family in (NAS_SEARCH, NAS_TRAIN):
        return NASDataModule(data, data_dir=data_dir, batch_size=batch_size,
                             mode="search" if family == NAS_SEARCH else "train")
    return ImageDataModule(data, data_dir=data_dir, batch_size=batch_size, binarize=binarize, val_size=val_size)
