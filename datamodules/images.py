"""MNIST, Fashion-MNIST and Omniglot as flat 28×28 images in [0, 1], for the VAEs.

Splits, as in the VAE experiments of the ReinMax paper:

* ``val_size=0`` (the default, as in the categorical-VAE table: 60k train / 10k test):
  train is the whole training set and the *validation loader serves the test split*,
  so the ``val`` metrics Lightning logs are test metrics. The paper reports the
  training −ELBO and a test −ELBO; there is no model selection to leak into.
* ``val_size=n > 0``: train is ``train[:-n]`` and validation ``train[-n:]`` (the
  Bernoulli VAE uses 10,000: ``train[:50000]`` / ``train[50000:]``).
* The test loader always serves the test split.

Binarization: ``"none"`` keeps grey levels (the categorical VAE's BCE on [0, 1]);
``"dynamic"`` draws a fresh ``x = 1[U < pixel]`` for every training batch, as the
Bernoulli VAE does, while validation and test images are binarized once, in
:meth:`ImageDataModule.setup`, with the fixed seed ``EVAL_BINARIZATION_SEED``, so that
evaluation is deterministic and comparable between runs. ``"static"`` binarizes the
training images once too (seed ``TRAIN_BINARIZATION_SEED``), as the ReinMax authors'
script does: a model then sees the same binary images every epoch, which it can
partly memorize, so its training −ELBO is not comparable with a dynamic run's.

These data sets fit in (GPU) memory, so each split is kept as one tensor on the
trainer's device and batched by indexing (:class:`TensorBatches`): no DataLoader
workers, no per-example collation, and Lightning's batch transfer is a no-op.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
import torchvision
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torchvision.transforms.functional import pil_to_tensor, resize

from ._batching import ResumableOrder, TensorBatches
from ._downloads import (
    DOWNLOAD_ERRORS,
    DataUnavailableError,
    default_data_dir,
    describe_failure,
    find_file,
    socket_timeout,
)
from .idx import read_idx_images

__all__ = [
    "BINARIZATIONS",
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "EVAL_BINARIZATION_SEED",
    "IMAGE_SHAPE",
    "SYSTEM_DATA_DIRS",
    "TRAIN_BINARIZATION_SEED",
    "DataUnavailableError",
    "ImageDataModule",
]

log = logging.getLogger(__name__)

DATASETS = ("mnist", "fashion-mnist", "omniglot")
BINARIZATIONS = ("none", "dynamic", "static")
IMAGE_SHAPE = (1, 28, 28)

#: Where ``apt-get install dataset-fashion-mnist`` (Debian/Ubuntu) puts the IDX files.
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")

#: Directories where system packages install a data set; searched after ``data_dir``.
SYSTEM_DATA_DIRS: dict[str, tuple[Path, ...]] = {"fashion-mnist": (DEBIAN_FASHION_MNIST,)}

#: Seed of the once-per-setup binarization of validation and test images.
EVAL_BINARIZATION_SEED = 0
#: Seed of the training images' one binarization under ``binarize="static"`` (another draw than evaluation's).
TRAIN_BINARIZATION_SEED = 1

_TITLES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "omniglot": "Omniglot"}
# torchvision's class for each IDX data set; it downloads into data_dir/<class name>/raw.
_TORCHVISION_CLASSES = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_IDX_IMAGE_FILES = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
_IDX_LABEL_FILES = ("train-labels-idx1-ubyte", "t10k-labels-idx1-ubyte")
_OMNIGLOT_CACHE = "omniglot28"
_OMNIGLOT_TORCHVISION_FILES = ("images_background.zip", "images_evaluation.zip")
_SPLITS = ("train", "test")

class ImageDataModule(ResumableOrder, LightningDataModule):
    """MNIST, Fashion-MNIST or Omniglot as ``(B, 784)`` float32 batches in [0, 1].

    See the module docstring for the splits and binarization. ``prepare_data`` (run by
    Lightning on one process per node) finds a local copy or downloads one into
    ``data_dir``; IDX files are looked for, in order, directly in ``data_dir`` (one data
    set per folder: the names are the same for MNIST and Fashion-MNIST), in torchvision's
    layout ``data_dir/MNIST/raw`` or ``data_dir/FashionMNIST/raw``, and in
    ``SYSTEM_DATA_DIRS``. Only the image files are needed (labels are not used), each
    either gzip-compressed (``.gz``) or not.

    Attached to a trainer, every loader gives each rank its share of the split (see
    :class:`TensorBatches`); under DDP, evaluation thus counts up to ``world_size − 1``
    wrapped-around examples twice, as Lightning's ``DistributedSampler`` would.

    Omniglot is torchvision's: its background set (19,280 images) is the training set
    and its evaluation set (13,180) the test set, each 105×105 image resized to 28×28
    with antialiasing and inverted so strokes are 1 and the background 0, as in MNIST.
    The converted images are cached in ``data_dir/omniglot28/{train,test}.pt``. This is
    *not* the 28×28 split of Burda et al. (24,345 / 8,070) that the paper used, so
    Omniglot numbers are not directly comparable with the published ones.
    """

    DATASETS = DATASETS
    image_shape = IMAGE_SHAPE

    def __init__(
        self,
        name: str = "mnist",
        data_dir: str | None = None,
        batch_size: int = 100,
        eval_batch_size: int = 1000,
        binarize: str = "none",
        val_size: int = 0,
        download: bool = True,
    ) -> None:
        super().__init__()
        if name not in DATASETS:
            raise ValueError(f"unknown data set {name!r}; valid data sets: {', '.join(DATASETS)}.")
        for argument, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{argument} must be a positive integer, got {value!r}.")
        if binarize not in BINARIZATIONS:
            raise ValueError(
                f"unknown binarize={binarize!r}; valid values: {', '.join(BINARIZATIONS)}."
            )
        if not isinstance(val_size, int) or val_size < 0:
            raise ValueError(
                "val_size must be an integer >= 0 (0 validates on the test split), "
                f"got {val_size!r}."
            )
        self.save_hyperparameters()
        self.name = name
        self.data_dir = Path(data_dir).expanduser() if data_dir else default_data_dir()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.binarize = binarize
        self.val_size = val_size
        self.download = download
        self.splits: dict[str, Tensor] = {}

    def prepare_data(self) -> None:
        """Make sure a local copy exists: find one, else download one into ``data_dir``."""
        if self.name == "omniglot":
            self._prepare_omniglot()
            return
        if self.idx_files() is not None:
            return
        if not self.download:
            raise self._unavailable("no local copy was found and download=False")
        dataset_class = getattr(torchvision.datasets, _TORCHVISION_CLASSES[self.name])
        try:
            with socket_timeout():
                # One call fetches all four files, the test split's included.
                dataset_class(self.data_dir, train=True, download=True)
        except DOWNLOAD_ERRORS as err:
            raise self._unavailable(f"no local copy was found and {describe_failure(err)}") from err
        if self.idx_files() is None:
            raise self._unavailable("the download finished but left no image files")

    def setup(self, stage: str | None = None) -> None:
        """Load the splits once; move them to the trainer's device whenever attached to one."""
        if not self.splits:
            self.splits = self._load_splits()
        if self.trainer is not None:
            device = self.trainer.strategy.root_device
            self.splits = {split: images.to(device) for split, images in self.splits.items()}

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> TensorBatches:
        """The validation split, or the test split when ``val_size=0``."""
        return self._batches("val", self.eval_batch_size)

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test", self.eval_batch_size)

    def _batches(self, split: str, batch_size: int, shuffle: bool = False) -> TensorBatches:
        if not self.splits:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for batches.")
        return TensorBatches(
            self.splits[split],
            batch_size,
            shuffle=shuffle,
            binarize=split == "train" and self.binarize == "dynamic",
            **self.placement(split, shuffle),
        )

    def _load_splits(self) -> dict[str, Tensor]:
        train, test = (_to_unit_interval(images) for images in self._load_uint8())
        if self.val_size >= len(train):
            raise ValueError(
                f"val_size must be smaller than the training set of {_TITLES[self.name]} "
                f"({len(train)} images), got {self.val_size}."
            )
        if self.binarize != "none":  # the evaluation images: one fixed draw, the same in every run
            test = _fixed_binarization(test, EVAL_BINARIZATION_SEED)
        if self.val_size == 0:
            val = test
        else:
            train, val = train[: -self.val_size], train[-self.val_size :]
            if self.binarize != "none":
                val = _fixed_binarization(val, EVAL_BINARIZATION_SEED)
        if self.binarize == "static":
            train = _fixed_binarization(train, TRAIN_BINARIZATION_SEED)
        return {"train": train, "val": val, "test": test}

    def _load_uint8(self) -> tuple[Tensor, Tensor]:
        """The training and test images, uint8 ``(N, 28, 28)``."""
        if self.name == "omniglot":
            if not self._omniglot_cached():
                raise self._unavailable(_NOT_PREPARED)
            train, test = self._omniglot_cache_files()
            return _load_omniglot_cache(train), _load_omniglot_cache(test)
        files = self.idx_files()
        if files is None:
            raise self._unavailable(_NOT_PREPARED)
        return read_idx_images(files[0]), read_idx_images(files[1])

    # Finding local copies.

    def _idx_places(self) -> list[Path]:
        raw = self.data_dir / _TORCHVISION_CLASSES[self.name] / "raw"
        return [self.data_dir, raw, *SYSTEM_DATA_DIRS.get(self.name, ())]

    def idx_files(self, labels: bool = False) -> tuple[Path, ...] | None:
        """The IDX files of the first place that has all of them, or None if none has.

        The training and test image files; with ``labels`` (which the VAEs do not need,
        classifiers do) also the training and test label files, from the same place.
        """
        names = _IDX_IMAGE_FILES + (_IDX_LABEL_FILES if labels else ())
        for place in self._idx_places():
            files = [find_file(place, name) for name in names]
            if None not in files:
                return tuple(files)
        return None

    def _omniglot_cache_files(self) -> list[Path]:
        return [self.data_dir / _OMNIGLOT_CACHE / f"{split}.pt" for split in _SPLITS]

    def _omniglot_cached(self) -> bool:
        return all(path.is_file() for path in self._omniglot_cache_files())

    def _prepare_omniglot(self) -> None:
        """Build the 28×28 cache from torchvision's Omniglot, downloading it if allowed."""
        if self._omniglot_cached():
            return
        try:
            with socket_timeout():
                sources = [
                    torchvision.datasets.Omniglot(
                        self.data_dir, background=split == "train", download=self.download
                    )
                    for split in _SPLITS
                ]
        except DOWNLOAD_ERRORS as err:
            failure = describe_failure(err) if self.download else "download=False"
            raise self._unavailable(f"no local copy was found and {failure}") from err
        log.info("Converting Omniglot to 28×28 into %s (once).", self.data_dir / _OMNIGLOT_CACHE)
        (self.data_dir / _OMNIGLOT_CACHE).mkdir(parents=True, exist_ok=True)
        for source, path in zip(sources, self._omniglot_cache_files()):
            temporary = path.with_suffix(".tmp")
            torch.save(_omniglot_28x28(source), temporary)
            temporary.replace(path)  # atomic: an interrupted conversion leaves no cache

    def _unavailable(self, reason: str) -> DataUnavailableError:
        title = _TITLES[self.name]
        if self.name == "omniglot":
            downloads = self.data_dir / "omniglot-py"
            searched = self._omniglot_cache_files()
            searched += [downloads / name for name in _OMNIGLOT_TORCHVISION_FILES]
            wanted = "omniglot-py/images_background.zip and images_evaluation.zip in it"
        else:
            searched = self._idx_places()
            wanted = "the IDX files " + " and ".join(f"{name}[.gz]" for name in _IDX_IMAGE_FILES)
        remedies = [f"pass --data-dir (data_dir=...) pointing at a folder with {wanted}"]
        if self.name == "fashion-mnist":
            remedies.append(
                "install it with `apt-get install dataset-fashion-mnist` (Debian/Ubuntu), "
                f"which puts the files in {DEBIAN_FASHION_MNIST}"
            )
        else:
            remedies.append(
                "use --data fashion-mnist after `apt-get install dataset-fashion-mnist` "
                "(Debian/Ubuntu), which needs no download"
            )
        remedies.append(
            f"connect to the network and run again: the files are downloaded into {self.data_dir}"
        )
        return DataUnavailableError(
            f"{title} is not available: {reason}.\nLooked in:\n"
            + "".join(f"  {place}\n" for place in searched)
            + "To fix it, do one of these:\n"
            + "".join(f"  - {remedy}\n" for remedy in remedies)
        )


_NOT_PREPARED = "no local copy was found; prepare_data() downloads one (Trainer.fit calls it)"


def _load_omniglot_cache(path: Path) -> Tensor:
    problem = f"{path} is not a valid Omniglot 28×28 cache"
    remedy = "delete it and run prepare_data() again to rebuild it"
    try:
        images = torch.load(path, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as err:
        raise ValueError(f"{problem} ({err}); {remedy}.") from err
    if not (
        isinstance(images, Tensor)
        and images.dtype == torch.uint8
        and images.dim() == 3
        and tuple(images.shape[1:]) == (28, 28)
    ):
        raise ValueError(f"{problem} (expected a uint8 tensor (N, 28, 28)); {remedy}.")
    return images


def _omniglot_28x28(dataset: torchvision.datasets.Omniglot) -> Tensor:
    """torchvision's Omniglot images, 105×105 PIL, as uint8 ``(N, 28, 28)``, strokes bright."""
    chunk = 1024  # resize in chunks: the full-size images of a set would take 200 MB
    resized = []
    for start in range(0, len(dataset), chunk):
        stop = min(start + chunk, len(dataset))
        images = torch.stack([pil_to_tensor(dataset[index][0]) for index in range(start, stop)])
        resized.append(resize(images, [28, 28], antialias=True))
    images = torch.cat(resized).squeeze(1)
    # Omniglot draws dark strokes on white; MNIST-like models expect the opposite.
    return 255 - images if images.float().mean() > 127.5 else images


def _to_unit_interval(images: Tensor) -> Tensor:
    """uint8 ``(N, 28, 28)`` → float32 ``(N, 784)`` in [0, 1]."""
    return images.reshape(len(images), -1).float().div_(255)


def _fixed_binarization(images: Tensor, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(images, generator=generator)
