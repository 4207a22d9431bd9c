"""NAS data sources: CIFAR, ImageNet16-120 (read without executing it), Fashion-MNIST 32×32."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from torch import Tensor

from datamodules import images
from datamodules.idx import write_idx
from datamodules.images import DataUnavailableError
from datamodules.nas import (
    NASDataModule,
    load,
)
from datamodules.nas.sources import IMAGENET16_FILES

from ..conftest import REAL_SYSTEM_DATA_DIRS, FailingDownload

# CIFAR.


class FakeCIFAR10:
    """torchvision's CIFAR10 after a successful download: NHWC uint8 images, a list of labels."""

    def __init__(self, root: Path, train: bool, download: bool) -> None:
        count = 6 if train else 2
        self.data = np.arange(count * 32 * 32 * 3, dtype=np.uint8).reshape(count, 32, 32, 3)
        self.targets = list(range(count))


def test_cifar_images_become_channel_major(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    data = load("cifar10", Path("unused"))
    assert data.train_images.shape == (6, 3, 32, 32) and data.test_images.shape == (2, 3, 32, 32)
    nhwc = FakeCIFAR10(Path("unused"), True, False).data
    assert torch.equal(data.train_images[1, 2], torch.from_numpy(nhwc[1, :, :, 2]))
    assert data.train_labels.dtype == torch.int64 and data.train_labels.tolist() == list(range(6))


def test_cifar10_offline_without_files(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError) as raised:
        NASDataModule("cifar10", data_dir=str(tmp_path), download=False).prepare_data()
    message = str(raised.value)
    for expected in ["CIFAR-10 is not available", str(tmp_path / "cifar-10-batches-py"),
                     "download=False", "--data-dir", "downloaded into"]:
        assert expected in message
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_cifar100_download_failure_is_explained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FailingDownload(URLError("no route to host"))
    monkeypatch.setattr(torchvision.datasets, "CIFAR100", fake)
    with pytest.raises(DataUnavailableError) as raised:
        load("cifar100", tmp_path, download=True)
    assert raised.value.__cause__ is fake.error and fake.calls[0]["download"]
    assert "CIFAR-100 is not available" in str(raised.value)
    assert "the download failed (URLError" in str(raised.value)


# ImageNet16-120.


def write_imagenet16(
    folder: Path, labels_per_file: list[list[int]], protocol: int = 2
) -> list[np.ndarray]:
    """Fake NATS-Bench batch files (the ten training batches, then val_data); their data."""
    folder.mkdir(parents=True, exist_ok=True)
    data = []
    for index, (name, labels) in enumerate(zip(IMAGENET16_FILES, labels_per_file)):
        rows = np.random.default_rng(index).integers(0, 256, (len(labels), 768), dtype=np.uint8)
        entry = {"data": rows, "labels": labels, "mean": rows.mean(0)}  # as the release has
        with open(folder / name, "wb") as file:
            pickle.dump(entry, file, protocol=protocol)
        data.append(rows)
    return data


LABELS = [[1, 121, 120, 1000, 7]] * 10 + [[500, 3, 120]]


@pytest.mark.parametrize("protocol", [2, 4, 5])
@pytest.mark.parametrize("subfolder", ["", "ImageNet16"])
def test_imagenet16_keeps_the_first_120_classes(
    tmp_path: Path, protocol: int, subfolder: str
) -> None:
    data = write_imagenet16(tmp_path / subfolder, LABELS, protocol)
    splits = load("imagenet16-120", tmp_path)
    assert splits.train_images.shape == (30, 3, 16, 16) and splits.train_images.dtype == torch.uint8
    assert splits.train_labels.tolist() == [0, 119, 6] * 10
    assert splits.test_labels.tolist() == [2, 119]
    # Rows are channel-major: the first 256 values are the red channel, row by row.
    assert torch.equal(splits.train_images[1], torch.from_numpy(data[0][2]).view(3, 16, 16))
    assert torch.equal(splits.test_images[0, 1, 0], torch.from_numpy(data[10][1, 256:272]))


class Payload:
    """Pickles as a call of os.mkdir: what a doctored file could make pickle.load do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return os.mkdir, (str(self.marker),)


def test_a_pickle_that_calls_anything_else_is_refused_unexecuted(tmp_path: Path) -> None:
    write_imagenet16(tmp_path, LABELS)
    marker = tmp_path / "payload-ran"
    with open(tmp_path / "train_data_batch_3", "wb") as file:
        pickle.dump({"data": Payload(marker), "labels": [1]}, file, protocol=2)
    with pytest.raises(ValueError) as raised:
        load("imagenet16-120", tmp_path)
    message = str(raised.value)
    assert "train_data_batch_3 is not an ImageNet16 batch file" in message
    assert "mkdir" in message and "nothing from it was executed" in message
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (pickle.dumps([1, 2, 3]), "expected a dict with 'data'"),
        (pickle.dumps({"data": np.zeros((2, 10), np.uint8), "labels": [1, 2]}), "uint8 array"),
        (pickle.dumps({"data": np.zeros((1, 768), np.uint8), "labels": ["a"]}), "N class numb"),
        (b"\x80\x02}q\x00(X", "not a readable ImageNet16 batch file"),
    ],
    ids=["list", "wrong-width", "text-labels", "truncated"],
)
def test_malformed_imagenet16_files_are_named(tmp_path: Path, content: bytes, message: str) -> None:
    write_imagenet16(tmp_path, LABELS)
    (tmp_path / "val_data").write_bytes(content)
    with pytest.raises(ValueError, match="val_data") as raised:
        load("imagenet16-120", tmp_path)
    assert message in str(raised.value)


def test_missing_imagenet16_names_the_files_and_the_manual_download(tmp_path: Path) -> None:
    write_imagenet16(tmp_path / "ImageNet16", LABELS)
    (tmp_path / "ImageNet16" / "val_data").unlink()
    with pytest.raises(DataUnavailableError) as raised:
        NASDataModule("imagenet16-120", data_dir=str(tmp_path)).prepare_data()
    message = str(raised.value)
    for expected in [f"  {tmp_path}\n", f"  {tmp_path / 'ImageNet16'}\n", "train_data_batch_1,",
                     "train_data_batch_10", "val_data", "cannot be downloaded automatically",
                     "NATS-Bench", "--data-dir"]:
        assert expected in message


# Fashion-MNIST.


def write_fashion_mnist(folder: Path, labels: bool = True) -> Tensor:
    """Tiny IDX copies of the four files; the training images."""
    generator = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (12, 28, 28), dtype=torch.uint8, generator=generator)
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / "train-images-idx3-ubyte.gz", train)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", train[:4])
    if labels:
        write_idx(folder / "train-labels-idx1-ubyte.gz", torch.arange(12, dtype=torch.uint8) % 10)
        write_idx(folder / "t10k-labels-idx1-ubyte", torch.arange(4, dtype=torch.uint8))
    return train


def test_fashion_mnist_is_padded_to_32(tmp_path: Path) -> None:
    train = write_fashion_mnist(tmp_path / "FashionMNIST" / "raw")
    data = load("fashion-mnist", tmp_path)
    assert data.train_images.shape == (12, 1, 32, 32) and data.test_images.shape == (4, 1, 32, 32)
    assert torch.equal(data.train_images[:, 0, 2:30, 2:30], train)
    assert data.train_images[:, :, :2].sum() == 0 and data.train_images[:, :, :, 30:].sum() == 0
    assert data.train_labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert data.test_labels.dtype == torch.int64


def test_fashion_mnist_without_label_files(tmp_path: Path) -> None:
    write_fashion_mnist(tmp_path, labels=False)
    with pytest.raises(DataUnavailableError, match="train-labels-idx1-ubyte"):
        load("fashion-mnist", tmp_path)


def test_fashion_mnist_offline_reuses_the_image_module_error(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match="apt-get install dataset-fashion-mnist"):
        NASDataModule("fashion-mnist", data_dir=str(tmp_path), download=False).prepare_data()


@pytest.mark.skipif(
    not (images.DEBIAN_FASHION_MNIST / "train-labels-idx1-ubyte.gz").is_file(),
    reason="the Debian package dataset-fashion-mnist is not installed",
)
def test_debian_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "SYSTEM_DATA_DIRS", REAL_SYSTEM_DATA_DIRS)
    data = load("fashion-mnist", tmp_path)
    assert data.train_images.shape == (60000, 1, 32, 32)
    assert data.test_images.shape == (10000, 1, 32, 32)
    assert data.train_images[:, :, :2].max() == 0 and data.train_images[:, :, :, -2:].max() == 0
    assert set(data.train_labels.tolist()) == set(range(10)) == set(data.test_labels.tolist())
    assert torch.bincount(data.train_labels).tolist() == [6000] * 10
