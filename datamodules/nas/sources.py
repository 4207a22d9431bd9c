"""The image classification data sets of the NAS experiments, each read as uint8 tensors.

Every data set comes as :class:`Splits`: images ``(N, C, H, W)`` uint8 and labels
``(N,)`` int64, for the training and the test split. :data:`DATASETS` describes each
(channels, size, classes), so a model can be sized before any file is read.

* ``cifar10`` / ``cifar100``: torchvision's copies (``data_dir/cifar-10-batches-py``,
  ``data_dir/cifar-100-python``), downloaded there when missing and allowed;
  torchvision checks the files' MD5 sums before it reads them.
* ``imagenet16-120``: NATS-Bench's ImageNet16-120, the first 120 classes of the
  16×16 downsampled ImageNet. It cannot be downloaded automatically; its pickled batch
  files are read with an unpickler that builds nothing but numpy arrays and plain
  containers, so a doctored file cannot run code.
* ``fashion-mnist``: the IDX files, found (or downloaded) as
  :class:`~datamodules.images.ImageDataModule` finds them, zero-padded from 28×28 to
  32×32 so that the cells built for CIFAR apply unchanged.
* ``synthetic``: class templates plus noise, generated from a fixed seed; no files,
  for tests and smoke runs.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor
from torch.nn import functional

from .._downloads import DOWNLOAD_ERRORS, DataUnavailableError, describe_failure, socket_timeout
from ..idx import read_idx, read_idx_images
from ..images import ImageDataModule

__all__ = [
    "DATASETS",
    "IMAGENET16_FILES",
    "SYNTHETIC_SEED",
    "SYNTHETIC_SIZES",
    "DatasetInfo",
    "Splits",
    "describe",
    "load",
    "prepare",
]


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know of a data set: its image shape and number of classes."""

    channels: int
    size: int
    num_classes: int
    title: str


@dataclass(frozen=True)
class Splits:
    """A data set in memory: uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)``."""

    train_images: Tensor
    train_labels: Tensor
    test_images: Tensor
    test_labels: Tensor


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo(3, 32, 10, "CIFAR-10"),
    "cifar100": DatasetInfo(3, 32, 100, "CIFAR-100"),
    "imagenet16-120": DatasetInfo(3, 16, 120, "ImageNet16-120"),
    "fashion-mnist": DatasetInfo(1, 32, 10, "Fashion-MNIST"),
    "synthetic": DatasetInfo(3, 32, 10, "synthetic"),
}

#: The files of NATS-Bench's ImageNet16 release: ten training batches and the validation set.
IMAGENET16_FILES = tuple(f"train_data_batch_{index}" for index in range(1, 11)) + ("val_data",)

#: Training and test images of the synthetic data set, and the seed that generates them.
SYNTHETIC_SIZES = (1024, 256)
SYNTHETIC_SEED = 0

# torchvision's class of each CIFAR and the folder it keeps the files in under its root.
_CIFAR = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py"),
    "cifar100": ("CIFAR100", "cifar-100-python"),
}
_CIFAR_PAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
_IMAGENET16_FOLDER = "ImageNet16"
# ImageNet16-120 keeps the classes 1..120 of the 1000 (labels are 1-based in the files).
_IMAGENET16_CLASSES = 120
_IMAGENET16_PIXELS = 3 * 16 * 16  # a row of 'data': the red, green and blue 16×16 planes
# What unpickling a damaged file may raise (the pickle documentation's list, and more).
_UNPICKLING_ERRORS = (
    pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError
)
_FASHION_MNIST_PADDING = 2  # 28 + 2 + 2 = 32
# Synthetic templates are 4×4 blocks of 8×8 pixels, so that a crop shifted by up to 4
# pixels keeps most of each block and the classes stay easy to tell apart.
_SYNTHETIC_BLOCKS = 4
_SYNTHETIC_NOISE = 32.0


def load(name: str, data_dir: Path, download: bool = False) -> Splits:
    """The training and test splits of data set ``name``, downloading it first if allowed."""
    info = describe(name)
    if name in _CIFAR:
        train = _load_cifar(name, data_dir, download, train=True)
        return Splits(*train, *_load_cifar(name, data_dir, download, train=False))
    if name == "imagenet16-120":
        return _load_imagenet16(data_dir)
    if name == "fashion-mnist":
        return _load_fashion_mnist(data_dir, download)
    return _synthetic(info)


def prepare(name: str, data_dir: Path, download: bool = False) -> None:
    """Make sure data set ``name`` can be loaded: find a local copy, else download one.

    What ``LightningDataModule.prepare_data`` needs (one process per node downloads);
    a data set that is not available raises the error :func:`load` would.
    """
    describe(name)
    if name in _CIFAR:
        _load_cifar(name, data_dir, download, train=False)  # the smaller split
    elif name == "imagenet16-120":
        _imagenet16_files(data_dir)
    elif name == "fashion-mnist":
        _fashion_mnist_files(data_dir, download)


def describe(name: str) -> DatasetInfo:
    """The description of data set ``name``; an unknown name is a ValueError listing the known."""
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid data sets: {', '.join(DATASETS)}.")
    return DATASETS[name]


# CIFAR-10 and CIFAR-100.


def _load_cifar(name: str, data_dir: Path, download: bool, train: bool) -> tuple[Tensor, Tensor]:
    class_name, folder = _CIFAR[name]
    dataset_class = getattr(torchvision.datasets, class_name)
    try:
        with socket_timeout():
            dataset = dataset_class(data_dir, train=train, download=download)
    except DOWNLOAD_ERRORS as err:
        failure = describe_failure(err) if download else f"download=False ({err})"
        title = DATASETS[name].title
        raise DataUnavailableError(
            f"{title} is not available: no intact copy was found in {data_dir / folder} "
            f"and {failure}.\nTo fix it, do one of these:\n"
            f"  - pass --data-dir (data_dir=...) pointing at a folder holding {folder}/, "
            f"the python version of {title} from {_CIFAR_PAGE}\n"
            f"  - connect to the network and run again with downloads allowed: the files "
            f"are downloaded into {data_dir}\n"
        ) from err
    images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
    return images, torch.tensor(dataset.targets, dtype=torch.int64)


# ImageNet16-120.


def _load_imagenet16(data_dir: Path) -> Splits:
    files = _imagenet16_files(data_dir)
    train = [_read_imagenet16_batch(path) for path in files[:-1]]
    test_images, test_labels = _read_imagenet16_batch(files[-1])
    return Splits(
        torch.cat([images for images, _ in train]),
        torch.cat([labels for _, labels in train]),
        test_images,
        test_labels,
    )


def _imagenet16_files(data_dir: Path) -> list[Path]:
    """The batch files of the first of ``data_dir`` and ``data_dir/ImageNet16`` to hold all."""
    places = [data_dir, data_dir / _IMAGENET16_FOLDER]
    for place in places:
        if all((place / name).is_file() for name in IMAGENET16_FILES):
            return [place / name for name in IMAGENET16_FILES]
    raise DataUnavailableError(
        "ImageNet16-120 is not available: its batch files were not found, and it cannot be "
        "downloaded automatically.\nLooked in:\n"
        + "".join(f"  {place}\n" for place in places)
        + "for the files: "
        + ", ".join(IMAGENET16_FILES)
        + ".\nTo fix it, download ImageNet16 by hand (the 16×16 'Downsampled ImageNet' as "
        "NATS-Bench releases it, a folder ImageNet16 with these files), then pass "
        "--data-dir (data_dir=...) pointing at that folder or at the folder above it.\n"
    )


def _read_imagenet16_batch(path: Path) -> tuple[Tensor, Tensor]:
    """The images ``(n, 3, 16, 16)`` and labels 0..119 of one batch file, other classes dropped."""
    with open(path, "rb") as file:
        try:
            entry = _BatchUnpickler(file, path).load()
        except _RefusedGlobal:
            raise
        except _UNPICKLING_ERRORS as err:
            raise ValueError(
                f"{path} is not a readable ImageNet16 batch file ({type(err).__name__}: {err}); "
                "it may be truncated: download it again."
            ) from err
    arrays = _batch_arrays(entry)
    if arrays is None:
        raise ValueError(
            f"{path} is not an ImageNet16 batch file: expected a dict with 'data', a uint8 "
            f"array (N, {_IMAGENET16_PIXELS}), and 'labels', N class numbers; point data_dir "
            "at the folder of the NATS-Bench ImageNet16 files."
        )
    data, labels = arrays
    keep = (labels >= 1) & (labels <= _IMAGENET16_CLASSES)
    images = torch.from_numpy(data[keep]).view(-1, 3, 16, 16)
    return images, torch.from_numpy(labels[keep] - 1)


def _batch_arrays(entry: object) -> tuple[np.ndarray, np.ndarray] | None:
    """The 'data' (N, 768) uint8 and 'labels' (N,) int64 of an unpickled batch, or None."""
    if not isinstance(entry, dict):
        return None
    data = entry.get("data")
    try:
        labels = np.asarray(entry.get("labels"), dtype=np.int64)
    except (TypeError, ValueError):
        return None
    if (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.shape[1:] == (_IMAGENET16_PIXELS,)
        and labels.shape == (len(data),)
    ):
        return data, labels
    return None


class _RefusedGlobal(ValueError):
    """A pickle asked for a callable that ImageNet16 batch files never contain."""


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, dicts, lists and numbers, and refuses every other global.

    ``pickle.load`` would call whatever a file names; here a name outside
    :attr:`ALLOWED` stops the load before anything from the file is called.
    """

    #: What a pickled dict of numpy arrays refers to, in numpy 1 and 2, any protocol;
    #: ``_codecs.encode`` rebuilds bytes in protocol 2 pickles written by Python 3.
    ALLOWED = frozenset(
        [
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),
            *(
                (f"numpy.{core}.{module}", name)
                for core in ("core", "_core")
                for module, name in (
                    ("multiarray", "_reconstruct"),
                    ("multiarray", "scalar"),
                    ("numeric", "_frombuffer"),
                )
            ),
        ]
    )

    def __init__(self, file: Any, path: Path) -> None:
        # The release's files were pickled by Python 2; latin1 restores its byte strings.
        super().__init__(file, encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Callable[..., Any]:
        if (module, name) not in self.ALLOWED:
            raise _RefusedGlobal(
                f"{self.path} is not an ImageNet16 batch file: it refers to {module}.{name}, "
                "which such files never contain, so it was not loaded and nothing from it was "
                "executed; replace it with the file of the NATS-Bench release."
            )
        return super().find_class(module, name)


# Fashion-MNIST.


def _fashion_mnist_files(data_dir: Path, download: bool) -> tuple[Path, ...]:
    """The four IDX files, found or downloaded as ``ImageDataModule`` does for its images."""
    images = ImageDataModule("fashion-mnist", data_dir=str(data_dir), download=download)
    images.prepare_data()  # finds the image files or downloads all four, else explains
    files = images.idx_files(labels=True)
    if files is None:
        folder = images.idx_files()[0].parent
        raise DataUnavailableError(
            f"Fashion-MNIST's labels are not available: {folder} holds the image files but not "
            "train-labels-idx1-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz] beside them.\n"
            "To fix it, put the label files of the same release in that folder, or pass "
            "--data-dir (data_dir=...) pointing at a folder with all four IDX files.\n"
        )
    return files


def _load_fashion_mnist(data_dir: Path, download: bool) -> Splits:
    train_images, test_images, train_labels, test_labels = _fashion_mnist_files(data_dir, download)
    return Splits(
        _pad_to_32(read_idx_images(train_images)),
        _read_labels(train_labels),
        _pad_to_32(read_idx_images(test_images)),
        _read_labels(test_labels),
    )


def _pad_to_32(images: Tensor) -> Tensor:
    """uint8 ``(N, 28, 28)`` → ``(N, 1, 32, 32)``, framed by zeros (the background)."""
    return functional.pad(images, (_FASHION_MNIST_PADDING,) * 4).unsqueeze(1)


def _read_labels(path: Path) -> Tensor:
    labels = read_idx(path)
    if labels.dtype != torch.uint8 or labels.dim() != 1:
        raise ValueError(
            f"{path} holds a {labels.dtype} tensor of shape {tuple(labels.shape)}, not uint8 "
            "labels (N,); point data_dir at the IDX files of Fashion-MNIST."
        )
    return labels.long()


# Synthetic.


def _synthetic(info: DatasetInfo) -> Splits:
    """One coarse random template per class; an image is its class's template plus noise."""
    generator = torch.Generator().manual_seed(SYNTHETIC_SEED)
    blocks = (info.num_classes, info.channels, _SYNTHETIC_BLOCKS, _SYNTHETIC_BLOCKS)
    templates = torch.rand(blocks, generator=generator) * 255
    templates = templates.repeat_interleave(info.size // _SYNTHETIC_BLOCKS, dim=2)
    templates = templates.repeat_interleave(info.size // _SYNTHETIC_BLOCKS, dim=3)
    splits = []
    for count in SYNTHETIC_SIZES:
        labels = torch.randint(info.num_classes, (count,), generator=generator)
        noise = torch.randn((count, *templates.shape[1:]), generator=generator)
        images = templates[labels] + _SYNTHETIC_NOISE * noise
        splits += [images.round().clamp(0, 255).to(torch.uint8), labels]
    return Splits(*splits)
