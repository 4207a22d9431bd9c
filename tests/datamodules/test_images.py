"""ImageDataModule: finding data, splits, binarization, and Lightning."""

from __future__ import annotations

import socket
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision
from lightning.pytorch import LightningModule, Trainer
from PIL import Image, ImageDraw
from torch import Tensor, nn

from datamodules import _downloads, images
from datamodules.idx import write_idx
from datamodules.images import DataUnavailableError, ImageDataModule

from .conftest import (
    NUM_TEST,
    NUM_TRAIN,
    REAL_SYSTEM_DATA_DIRS,
    FailingDownload,
    write_image_files,
)


def as_unit(images_uint8: Tensor) -> Tensor:
    return images_uint8.reshape(len(images_uint8), -1).float() / 255


def set_up(data_dir: Path, name: str = "mnist", **options: object) -> ImageDataModule:
    datamodule = ImageDataModule(name, data_dir=str(data_dir), **options)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


# Where local copies are found.


@pytest.mark.parametrize("compressed", [True, False], ids=["gz", "raw"])
def test_files_directly_in_data_dir(tmp_path: Path, compressed: bool, offline) -> None:
    train, _ = write_image_files(tmp_path, compressed=compressed)
    datamodule = set_up(tmp_path)
    assert torch.equal(datamodule.splits["train"], as_unit(train))
    assert not offline["MNIST"].calls


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_torchvision_layout(tmp_path: Path, name: str, folder: str) -> None:
    train, _ = write_image_files(tmp_path / folder / "raw", compressed=False)
    assert torch.equal(set_up(tmp_path, name).splits["train"], as_unit(train))


def test_system_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "SYSTEM_DATA_DIRS", {"fashion-mnist": (tmp_path / "debian",)})
    train, _ = write_image_files(tmp_path / "debian")
    datamodule = set_up(tmp_path / "empty", "fashion-mnist")
    assert torch.equal(datamodule.splits["train"], as_unit(train))


def test_precedence_data_dir_then_torchvision_then_system(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "SYSTEM_DATA_DIRS", {"fashion-mnist": (tmp_path / "debian",)})
    places = [tmp_path / "data", tmp_path / "data" / "FashionMNIST" / "raw", tmp_path / "debian"]
    copies = [write_image_files(place, seed=10 * index)[0] for index, place in enumerate(places)]
    for place, train in zip(places, copies):
        loaded = set_up(tmp_path / "data", "fashion-mnist").splits["train"]
        assert torch.equal(loaded, as_unit(train)), f"expected the copy in {place}"
        for file in place.glob("*-images-*"):
            file.unlink()


def test_an_incomplete_copy_is_skipped(tmp_path: Path) -> None:
    write_image_files(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    train, _ = write_image_files(tmp_path / "MNIST" / "raw", seed=5)
    assert torch.equal(set_up(tmp_path).splits["train"], as_unit(train))


def test_files_that_are_not_28x28_images_are_named(tmp_path: Path) -> None:
    write_image_files(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", torch.zeros(5, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte holds .* \(5,\), not 28×28"):
        set_up(tmp_path)


# Downloading, and failing to.


class FakeMNIST:
    """torchvision.datasets.MNIST on a working network: writes the files into root/MNIST/raw."""

    def __init__(self, root: Path, train: bool, download: bool) -> None:
        assert download and socket.getdefaulttimeout() == _downloads.DOWNLOAD_TIMEOUT_S
        write_image_files(Path(root) / "MNIST" / "raw", compressed=False)


def test_download_goes_to_torchvision_layout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    previous_timeout = socket.getdefaulttimeout()
    datamodule = set_up(tmp_path)
    assert socket.getdefaulttimeout() == previous_timeout
    assert (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    assert len(datamodule.splits["train"]) == NUM_TRAIN


@pytest.mark.parametrize(
    "error", [RuntimeError("offline"), URLError("no route to host")], ids=["runtime", "url"]
)
@pytest.mark.parametrize(
    ("name", "title", "searched"),
    [
        ("mnist", "MNIST", ["", "MNIST/raw"]),
        ("omniglot", "Omniglot", ["omniglot28/train.pt", "omniglot-py/images_background.zip"]),
    ],
)
def test_offline_without_local_copy(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: Exception,
    name: str,
    title: str,
    searched: list[str],
) -> None:
    fake = FailingDownload(error)
    monkeypatch.setattr(torchvision.datasets, "MNIST" if name == "mnist" else "Omniglot", fake)
    with pytest.raises(DataUnavailableError) as raised:
        ImageDataModule(name, data_dir=str(tmp_path)).prepare_data()
    assert isinstance(raised.value, FileNotFoundError)
    assert raised.value.__cause__ is error
    assert fake.calls and all(call["download"] for call in fake.calls)
    message = str(raised.value)
    for expected in [title, str(error), "--data-dir", "--data fashion-mnist"]:
        assert expected in message
    for place in searched:
        assert f"  {tmp_path / place}\n" in message


def test_offline_fashion_mnist_names_the_debian_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(DataUnavailableError, match="apt-get install dataset-fashion-mnist"):
        ImageDataModule("fashion-mnist", data_dir=str(tmp_path)).prepare_data()

    monkeypatch.setattr(images, "SYSTEM_DATA_DIRS", {"fashion-mnist": (tmp_path / "debian",)})
    with pytest.raises(DataUnavailableError) as raised:
        ImageDataModule("fashion-mnist", data_dir=str(tmp_path / "data")).prepare_data()
    message = str(raised.value)
    for expected in [
        "Fashion-MNIST",
        str(tmp_path / "data"),
        str(tmp_path / "data" / "FashionMNIST" / "raw"),
        str(tmp_path / "debian"),
        "--data-dir",
        f"apt-get install dataset-fashion-mnist` (Debian/Ubuntu), which puts the files in "
        f"{images.DEBIAN_FASHION_MNIST}",
    ]:
        assert expected in message


def test_download_false_never_downloads(tmp_path: Path, offline) -> None:
    with pytest.raises(DataUnavailableError, match="download=False"):
        ImageDataModule(data_dir=str(tmp_path), download=False).prepare_data()
    assert not offline["MNIST"].calls


def test_setup_without_prepare_data_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataUnavailableError, match=r"prepare_data\(\) downloads one"):
        ImageDataModule(data_dir=str(tmp_path)).setup("fit")


# Omniglot, converted from a fake torchvision data set.


class FakeOmniglot:
    """torchvision's Omniglot: 105×105 black strokes on white, 7 background / 3 evaluation."""

    def __init__(self, root: Path, background: bool, download: bool) -> None:
        self.count = 7 if background else 3

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        image = Image.new("L", (105, 105), 255)
        ImageDraw.Draw(image).rectangle((20, 20, 59, 84), fill=0)
        return image, index


def test_omniglot_is_converted_once_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torchvision.datasets, "Omniglot", FakeOmniglot)
    datamodule = set_up(tmp_path, "omniglot")
    assert len(datamodule.splits["train"]) == 7 and len(datamodule.splits["test"]) == 3
    image = datamodule.splits["train"][0].reshape(28, 28)
    assert image[10, 10] == 1.0 and image[1, 1] == 0.0  # strokes bright, background dark
    cached = torch.load(tmp_path / "omniglot28" / "train.pt", weights_only=True)
    assert cached.dtype == torch.uint8 and cached.shape == (7, 28, 28)

    offline = FailingDownload(RuntimeError("offline"))
    monkeypatch.setattr(torchvision.datasets, "Omniglot", offline)
    assert len(set_up(tmp_path, "omniglot").splits["test"]) == 3
    assert not offline.calls  # the cache alone served it


def test_broken_omniglot_cache_is_named(tmp_path: Path) -> None:
    (tmp_path / "omniglot28").mkdir()
    torch.save(torch.zeros(4, 105, 105, dtype=torch.uint8), tmp_path / "omniglot28" / "train.pt")
    torch.save(torch.zeros(4, 28, 28, dtype=torch.uint8), tmp_path / "omniglot28" / "test.pt")
    with pytest.raises(ValueError, match="train.pt is not a valid Omniglot 28×28 cache.*delete"):
        set_up(tmp_path, "omniglot")


# Splits and binarization.


def test_val_size_zero_validates_on_the_test_split(tmp_path: Path) -> None:
    train, test = write_image_files(tmp_path)
    splits = set_up(tmp_path).splits
    assert torch.equal(splits["train"], as_unit(train))
    assert torch.equal(splits["val"], as_unit(test))
    assert torch.equal(splits["test"], as_unit(test))


def test_val_size_holds_out_the_end_of_the_training_set(tmp_path: Path) -> None:
    train, test = write_image_files(tmp_path)
    splits = set_up(tmp_path, val_size=20).splits
    assert torch.equal(splits["train"], as_unit(train[:100]))
    assert torch.equal(splits["val"], as_unit(train[100:]))
    assert torch.equal(splits["test"], as_unit(test))


def test_batches_are_flat_float_in_unit_interval(tmp_path: Path) -> None:
    write_image_files(tmp_path)
    datamodule = set_up(tmp_path, batch_size=50, eval_batch_size=1000)
    for loader, sizes in [
        (datamodule.train_dataloader(), [50, 50, 20]),
        (datamodule.val_dataloader(), [NUM_TEST]),
        (datamodule.test_dataloader(), [NUM_TEST]),
    ]:
        batches = list(loader)
        assert [len(batch) for batch in batches] == sizes
        for batch in batches:
            assert batch.dtype == torch.float32 and batch.shape[1:] == (784,)
            assert 0 <= batch.min() and batch.max() <= 1


def test_dynamic_binarization(tmp_path: Path) -> None:
    write_image_files(tmp_path)
    datamodule = set_up(tmp_path, binarize="dynamic", batch_size=NUM_TRAIN, val_size=20)
    loader = datamodule.train_dataloader()
    first, second = next(iter(loader)), next(iter(loader))
    for batch in (first, second):
        assert set(batch.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first.sum(0), second.sum(0))  # fresh draws, not just a new order

    again = set_up(tmp_path, binarize="dynamic", val_size=20)
    for split in ("val", "test"):
        assert set(datamodule.splits[split].unique().tolist()) == {0.0, 1.0}
        assert torch.equal(datamodule.splits[split], again.splits[split])
    first_val, second_val = (next(iter(datamodule.val_dataloader())) for _ in range(2))
    assert torch.equal(first_val, second_val)


def test_static_binarization_draws_the_training_images_once(tmp_path: Path) -> None:
    write_image_files(tmp_path)
    datamodule = set_up(tmp_path, binarize="static", batch_size=NUM_TRAIN, val_size=20)
    dynamic = set_up(tmp_path, binarize="dynamic", val_size=20)
    train = datamodule.splits["train"]
    assert set(train.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(train, set_up(tmp_path, binarize="static", val_size=20).splits["train"])
    epochs = [next(iter(datamodule.train_dataloader())) for _ in range(2)]
    assert torch.equal(epochs[0].sum(0), epochs[1].sum(0))  # the same images, in a new order
    for split in ("val", "test"):  # evaluation sees what a dynamic run's evaluation sees
        assert torch.equal(datamodule.splits[split], dynamic.splits[split])


# Arguments.


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "cifar"}, "unknown data set 'cifar'; valid data sets: mnist, fashion-mnist, omn"),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"eval_batch_size": -5}, "eval_batch_size must be a positive integer, got -5"),
        ({"binarize": "fixed"}, "unknown binarize='fixed'; valid values: none, dynamic, static"),
        ({"val_size": -1}, "val_size must be an integer >= 0 (0 validates on the test split)"),
    ],
)
def test_bad_arguments(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        ImageDataModule(**options)
    assert message in str(raised.value)


def test_val_size_must_leave_training_data(tmp_path: Path) -> None:
    write_image_files(tmp_path)
    with pytest.raises(ValueError) as raised:
        set_up(tmp_path, val_size=NUM_TRAIN)
    expected = f"smaller than the training set of MNIST ({NUM_TRAIN} images), got {NUM_TRAIN}"
    assert expected in str(raised.value)


def test_loaders_need_setup() -> None:
    with pytest.raises(RuntimeError, match=r"call setup\(\)"):
        ImageDataModule().train_dataloader()


# The real Fashion-MNIST, where the Debian package is installed.


@pytest.mark.skipif(
    not (images.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
    reason="the Debian package dataset-fashion-mnist is not installed",
)
def test_debian_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "SYSTEM_DATA_DIRS", REAL_SYSTEM_DATA_DIRS)
    splits = set_up(tmp_path, "fashion-mnist").splits
    assert splits["train"].shape == (60000, 784) and splits["test"].shape == (10000, 784)
    assert 0.2 < splits["train"].mean() < 0.4  # Fashion-MNIST's mean pixel is 0.286


# Lightning.


class TinyModel(LightningModule):
    """Reconstructs the input through one linear layer; records the batches it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(784, 784)
        self.seen: dict[str, list[tuple[int, ...]]] = {"train": [], "val": []}

    def _step(self, batch: Tensor, stage: str) -> Tensor:
        self.seen[stage].append(tuple(batch.shape))
        return nn.functional.binary_cross_entropy_with_logits(self.layer(batch), batch)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self.log("val_loss", self._step(batch, "val"))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def trainer(tmp_path: Path, **options: object) -> Trainer:
    return Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **options,
    )


def test_fit_fast_dev_run(tmp_path: Path) -> None:
    write_image_files(tmp_path / "data")
    datamodule = ImageDataModule(data_dir=str(tmp_path / "data"), batch_size=32)
    model = TinyModel()
    trainer(tmp_path, fast_dev_run=True).fit(model, datamodule=datamodule)
    assert model.seen == {"train": [(32, 784)], "val": [(NUM_TEST, 784)]}


def test_fit_with_limited_batches(tmp_path: Path) -> None:
    write_image_files(tmp_path / "data")
    datamodule = ImageDataModule(
        data_dir=str(tmp_path / "data"), batch_size=32, binarize="dynamic", val_size=20
    )
    model = TinyModel()
    fit_trainer = trainer(tmp_path, max_epochs=2, limit_train_batches=2, num_sanity_val_steps=0)
    fit_trainer.fit(model, datamodule=datamodule)
    assert model.seen["train"] == [(32, 784)] * 4
    assert model.seen["val"] == [(20, 784)] * 2
    assert datamodule.splits["train"].device == fit_trainer.strategy.root_device


class IndexRecorder(LightningModule):
    """Saves, per rank and epoch, which training examples it saw (pixel 0 holds the index)."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__()
        self.out_dir = out_dir
        self.layer = nn.Linear(784, 1)
        self.indices: list[Tensor] = []

    def setup(self, stage: str) -> None:
        # Per-rank noise, as the models seed it: the ranks' global RNGs now differ, so
        # only the data module's broadcast seed keeps their shuffles in agreement.
        torch.manual_seed(self.global_rank)

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        assert batch.device == self.device
        self.indices.append((batch[:, 0] * 255).round().long().cpu())
        return self.layer(batch).mean()

    def on_train_epoch_end(self) -> None:
        name = f"rank{self.global_rank}-epoch{self.current_epoch}.pt"
        torch.save(torch.cat(self.indices), self.out_dir / name)
        self.indices = []

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.slow
def test_ddp_ranks_see_disjoint_shares(tmp_path: Path) -> None:
    count = 101  # odd, so one rank's share is padded
    train = torch.zeros(count, 28, 28, dtype=torch.uint8)
    train[:, 0, 0] = torch.arange(count, dtype=torch.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", train)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", train[:10])
    datamodule = ImageDataModule(data_dir=str(tmp_path), batch_size=16)
    ddp = trainer(tmp_path, devices=2, strategy="ddp_spawn", max_epochs=2, limit_val_batches=0)
    ddp.fit(IndexRecorder(tmp_path), datamodule=datamodule)
    orders = []
    for epoch in range(2):
        shares = [torch.load(tmp_path / f"rank{rank}-epoch{epoch}.pt") for rank in range(2)]
        first, second = (set(share.tolist()) for share in shares)
        assert len(shares[0]) == len(shares[1]) == 51
        assert first | second == set(range(count))
        assert len(first & second) == 1  # the one padded example
        orders.append(shares[0].tolist())
    assert orders[0] != orders[1]
