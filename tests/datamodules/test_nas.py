"""The NAS image data: sources, batches with augmentation, the search split, resuming, Lightning."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
import torchvision
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn

from datamodules import images
from datamodules.idx import write_idx
from datamodules.images import DataUnavailableError
from datamodules.nas import (
    DATASETS,
    DatasetInfo,
    LabelledBatches,
    NASDataModule,
    PairedBatches,
    crop_and_flip,
    load,
    search_split,
)
from datamodules.nas.sources import IMAGENET16_FILES, SYNTHETIC_SIZES

from .conftest import REAL_SYSTEM_DATA_DIRS, FailingDownload

VALID_NAMES = "cifar10, cifar100, imagenet16-120, fashion-mnist, synthetic"


def distinct_images(count: int, channels: int = 2, size: int = 5) -> Tensor:
    """uint8 ``(count, C, size, size)``, each unique, with no zero pixel so padding stands out."""
    values = torch.arange(count * channels * size * size) % 254 + 1
    images = values.reshape(count, channels, size, size).to(torch.uint8)
    images[:, 0, 0, 0] = torch.arange(count) % 254 + 1
    return images


def as_uint8(batch: Tensor) -> Tensor:
    """Undo the normalisation of mean 0 and std 1: back to the uint8 pixel values."""
    return (batch * 255).round().to(torch.uint8)


def id_batches(count: int, batch_size: int, **options: object) -> LabelledBatches:
    """Batches whose labels are the examples' indices, normalised with mean 0 and std 1."""
    return LabelledBatches(distinct_images(count), torch.arange(count), batch_size, mean=[0, 0],
                           std=[1, 1], **options)


def window(image: Tensor, padding: int, row: int, column: int, flip: bool) -> Tensor:
    """The crop at (row, column) of ``image`` padded by zeros, mirrored if ``flip``; by slicing."""
    channels, height, width = image.shape
    padded = torch.zeros(channels, height + 2 * padding, width + 2 * padding, dtype=image.dtype)
    padded[:, padding : padding + height, padding : padding + width] = image
    crop = padded[:, row : row + height, column : column + width]
    return crop.flip(2) if flip else crop


def how_augmented(original: Tensor, augmented: Tensor, padding: int) -> list[tuple[int, int, bool]]:
    """Every (row, column, flip) whose window of ``original`` is exactly ``augmented``."""
    return [
        (row, column, flip)
        for row in range(2 * padding + 1)
        for column in range(2 * padding + 1)
        for flip in (False, True)
        if torch.equal(window(original, padding, row, column, flip), augmented)
    ]


# Augmentation.


def test_crop_and_flip_is_a_window_of_the_padded_image_and_a_mirror() -> None:
    images = distinct_images(4, channels=3, size=6)
    shifts = torch.tensor([[0, 0], [4, 4], [1, 3], [2, 2]])
    flips = torch.tensor([False, True, True, False])
    out = crop_and_flip(images, 2, shifts, flips)
    assert out.shape == images.shape and out.dtype == torch.uint8
    for index in range(4):
        row, column = shifts[index].tolist()
        assert torch.equal(out[index], window(images[index], 2, row, column, bool(flips[index])))
    assert torch.equal(out[3], images[3])  # the centred window is the image itself
    assert (out[0, :, :2].sum() == 0) and (out[0, :, :, :2].sum() == 0)  # the corner: padding


def test_augmented_batches_crop_and_flip_each_example() -> None:
    padding, count = 2, 40
    batches = id_batches(count, 16, shuffle=True, augment=True, padding=padding, seed=5)
    originals = distinct_images(count)
    seen = set()
    for _ in range(3):
        for batch, ids in batches:
            for image, index in zip(as_uint8(batch), ids.tolist()):
                matches = how_augmented(originals[index], image, padding)
                assert matches, f"example {index} is not a crop of its padded image"
                seen.update(matches)
    assert {flip for _, _, flip in seen} == {False, True}
    assert len({(row, column) for row, column, _ in seen}) > 10  # offsets vary


def test_augmentation_is_reproducible_and_new_each_epoch() -> None:
    first, second = (id_batches(30, 8, augment=True, seed=2) for _ in range(2))
    epochs = [torch.cat([batch for batch, _ in first]) for _ in range(2)]
    assert torch.equal(epochs[0], torch.cat([batch for batch, _ in second]))
    assert not torch.equal(epochs[0], epochs[1])


def test_without_augmentation_the_batches_are_the_images_in_order() -> None:
    batches = id_batches(10, 4)
    pairs = list(batches)
    assert torch.equal(as_uint8(torch.cat([batch for batch, _ in pairs])), distinct_images(10))
    assert torch.cat([ids for _, ids in pairs]).tolist() == list(range(10))


def test_normalisation_per_channel() -> None:
    values = (0, 51, 255)
    images = torch.stack([torch.full((3, 2, 2), value, dtype=torch.uint8) for value in values])
    batches = LabelledBatches(images, torch.zeros(3, dtype=torch.long), 3,
                              mean=[0.2, 0.2, 0.0], std=[0.5, 0.1, 1.0])
    batch, labels = next(iter(batches))
    assert batch.dtype == torch.float32 and labels.dtype == torch.int64
    expected = torch.tensor([[-0.4, -2.0, 0.0], [0.0, 0.0, 0.2], [1.6, 8.0, 1.0]])
    torch.testing.assert_close(batch[:, :, 0, 0], expected)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"images": distinct_images(4).float()}, "needs uint8 images (N, C, H, W)"),
        ({"labels": torch.arange(3)}, "one label per image"),
        ({"mean": [0.5]}, "a mean and a positive std per channel (2)"),
        ({"std": [1.0, 0.0]}, "a mean and a positive std per channel (2)"),
        ({"padding": -1}, "padding must be >= 0 pixels, got -1"),
        ({"batch_size": 0}, "LabelledBatches: batch_size must be a positive integer, got 0"),
    ],
)
def test_labelled_batches_reject_bad_arguments(change: dict[str, object], message: str) -> None:
    arguments = {"images": distinct_images(4), "labels": torch.arange(4), "batch_size": 2,
                 "mean": [0.0, 0.0], "std": [1.0, 1.0], **change}
    with pytest.raises(ValueError) as raised:
        LabelledBatches(**arguments)
    assert message in str(raised.value)


# Sharding and resuming.


def test_two_ranks_get_disjoint_shares_with_the_same_augmentation_per_example() -> None:
    count = 48
    ranks = [id_batches(count, 8, shuffle=True, augment=True, rank=rank, world_size=2, seed=4)
             for rank in range(2)]
    alone = id_batches(count, 8, shuffle=True, augment=True, seed=4)
    for _ in range(2):
        served = [list(batches) for batches in ranks]
        shares = [torch.cat([ids for _, ids in epoch]) for epoch in served]
        assert len(shares[0]) == len(shares[1]) == count // 2
        assert set(shares[0].tolist()).isdisjoint(shares[1].tolist())
        assert sorted(torch.cat(shares).tolist()) == list(range(count))
        by_example = {int(i): image for batch, ids in list(alone) for i, image in zip(ids, batch)}
        for epoch in served:
            for batch, ids in epoch:
                for index, image in zip(ids.tolist(), batch):
                    assert torch.equal(image, by_example[index])


def labelled(seed: int) -> LabelledBatches:
    return id_batches(50, 8, shuffle=True, augment=True, seed=seed)


def paired(seed: int) -> PairedBatches:
    """Halves of 50 and 57 examples: 7 and 8 batches, so the epoch ends the longer one early."""
    return PairedBatches(id_batches(50, 8, shuffle=True, augment=True, seed=seed),
                         id_batches(57, 8, shuffle=True, augment=True, seed=seed + 1000))


def flat(batch: tuple) -> list[Tensor]:
    """The tensors of a batch or of a pair of batches."""
    return [t for part in batch for t in (flat(part) if isinstance(part, tuple) else [part])]


def same(first: list[tuple], second: list[tuple]) -> bool:
    return len(first) == len(second) and all(
        all(torch.equal(a, b) for a, b in zip(flat(x), flat(y))) for x, y in zip(first, second)
    )


@pytest.mark.parametrize("make", [labelled, paired])
@pytest.mark.parametrize("stop_after", [0, 3, 7])  # 7 batches an epoch: 7 is the epoch's end
def test_a_loaded_state_replays_the_rest_of_the_epoch(make: Callable, stop_after: int) -> None:
    reference = make(seed=1)
    expected = [list(reference) for _ in range(3)]
    assert len(expected[1]) == 7

    first = make(seed=1)
    list(first)  # epoch 0
    iterator = iter(first)
    seen = [next(iterator) for _ in range(stop_after)]
    state = first.state_dict()

    resumed = make(seed=99)  # the seeds come back from the state
    resumed.load_state_dict(state)
    rest = list(resumed)
    if stop_after == 7:  # a completed epoch resumes with the next one
        assert same(seen, expected[1]) and same(rest, expected[2])
    else:
        assert same(seen + rest, expected[1])
        assert same(list(resumed), expected[2])


def test_paired_batches_zip_two_independent_loaders() -> None:
    train = id_batches(20, 4, shuffle=True, seed=1)
    held = id_batches(30, 4, shuffle=True, seed=2)
    pairs = PairedBatches(train, held)
    assert len(pairs) == 5
    epoch = list(pairs)
    assert len(epoch) == 5
    assert sorted(torch.cat([ids for (_, ids), _ in epoch]).tolist()) == list(range(20))
    held_ids = torch.cat([ids for _, (_, ids) in epoch]).tolist()
    assert len(set(held_ids)) == 20 and set(held_ids) <= set(range(30))


# The data module.


def set_up(name: str = "synthetic", **options: object) -> NASDataModule:
    datamodule = NASDataModule(name, **options)
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_synthetic_batches_have_the_shapes_dtypes_and_normalisation() -> None:
    datamodule = set_up(mode="train", augment=False, batch_size=SYNTHETIC_SIZES[0])
    assert datamodule.info == DatasetInfo(3, 32, 10, "synthetic")
    batch, labels = next(iter(datamodule.train_dataloader()))
    assert batch.shape == (SYNTHETIC_SIZES[0], 3, 32, 32) and batch.dtype == torch.float32
    assert labels.dtype == torch.int64 and set(labels.tolist()) == set(range(10))
    # Normalised with the training set's own statistics: mean 0, std 1 per channel.
    torch.testing.assert_close(batch.mean((0, 2, 3)), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(batch.std((0, 2, 3), correction=0), torch.ones(3), atol=1e-4, rtol=0)
    test_batches = [batch for batch, _ in datamodule.val_dataloader()]
    assert sum(len(batch) for batch in test_batches) == SYNTHETIC_SIZES[1]


def test_synthetic_data_is_deterministic_and_learnable() -> None:
    first, second = load("synthetic", Path("unused")), load("synthetic", Path("unused"))
    assert torch.equal(first.train_images, second.train_images)
    assert torch.equal(first.test_labels, second.test_labels)
    # The nearest class mean of the training images classifies the test images.
    train, test = first.train_images.float(), first.test_images.float()
    means = torch.stack([train[first.train_labels == label].mean(0) for label in range(10)])
    nearest = torch.cdist(test.flatten(1), means.flatten(1)).argmin(1)
    assert (nearest == first.test_labels).float().mean() > 0.95


def test_evaluation_batches_are_not_augmented() -> None:
    datamodule = set_up(eval_batch_size=100)
    data = load("synthetic", Path("unused"))
    mean, std = datamodule.mean.view(-1, 1, 1), datamodule.std.view(-1, 1, 1)
    for loader in (datamodule.val_dataloader(), datamodule.test_dataloader()):
        served = list(loader)
        batch = torch.cat([batch for batch, _ in served])
        torch.testing.assert_close(batch * std + mean, data.test_images.float() / 255)
        assert torch.equal(torch.cat([labels for _, labels in served]), data.test_labels)


def test_the_search_split_is_deterministic_disjoint_and_complete() -> None:
    train, held = search_split(101, seed=3)
    assert len(train) == 50 and len(held) == 51
    assert sorted(torch.cat([train, held]).tolist()) == list(range(101))
    again = search_split(101, seed=3)
    assert torch.equal(train, again[0]) and torch.equal(held, again[1])
    assert not torch.equal(train, search_split(101, seed=4)[0])


def image_set(images_uint8: Tensor) -> set[bytes]:
    return {image.numpy().tobytes() for image in images_uint8}


def test_search_mode_pairs_the_training_half_with_the_held_out_half() -> None:
    half = SYNTHETIC_SIZES[0] // 2
    datamodule = set_up(augment=False, batch_size=half, search_split_seed=7)
    data = load("synthetic", Path("unused"))
    train, held = search_split(SYNTHETIC_SIZES[0], seed=7)
    assert torch.equal(datamodule.splits["train"][0], data.train_images[train])
    assert torch.equal(datamodule.splits["held"][1], data.train_labels[held])

    loader = datamodule.train_dataloader()
    assert isinstance(loader, PairedBatches) and len(loader) == 1
    (x_train, y_train), (x_held, y_held) = next(iter(loader))
    mean, std = datamodule.mean.view(-1, 1, 1), datamodule.std.view(-1, 1, 1)
    served = [((x * std + mean) * 255).round().to(torch.uint8) for x in (x_train, x_held)]
    assert image_set(served[0]) == image_set(data.train_images[train])
    assert image_set(served[1]) == image_set(data.train_images[held])
    assert image_set(served[0]).isdisjoint(image_set(served[1]))
    assert y_train.shape == y_held.shape == (half,)


def test_train_mode_serves_the_whole_training_set() -> None:
    datamodule = set_up(mode="train", batch_size=100)
    loader = datamodule.train_dataloader()
    assert isinstance(loader, LabelledBatches) and loader.augment
    assert sum(len(labels) for _, labels in loader) == SYNTHETIC_SIZES[0]


def test_describe_is_a_static_lookup() -> None:
    assert NASDataModule.describe("cifar10") == DatasetInfo(3, 32, 10, "CIFAR-10")
    assert NASDataModule.describe("imagenet16-120").num_classes == 120
    assert NASDataModule("fashion-mnist").info == DATASETS["fashion-mnist"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"name": "cifar"}, f"unknown data set 'cifar'; valid data sets: {VALID_NAMES}."),
        ({"mode": "eval"}, "unknown mode='eval'; valid modes: search, train."),
        ({"batch_size": 0}, "batch_size must be a positive integer, got 0"),
        ({"eval_batch_size": -1}, "eval_batch_size must be a positive integer, got -1"),
    ],
)
def test_bad_arguments(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as raised:
        NASDataModule(**options)
    assert message in str(raised.value)


def test_unknown_names_list_the_valid_ones() -> None:
    for call in (lambda: load("mnist", Path("unused")), lambda: NASDataModule.describe("mnist")):
        with pytest.raises(ValueError, match=f"valid data sets: {VALID_NAMES}"):
            call()


def test_loaders_need_setup() -> None:
    with pytest.raises(RuntimeError, match=r"call setup\(\)"):
        NASDataModule("synthetic").train_dataloader()


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


# Lightning: a search run stopped after a step resumes with the batches of one never stopped.


class PairRecorder(LightningModule):
    """Records the labels and pixel sums of the pairs it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)
        self.seen: list[Tensor] = []

    def training_step(self, batch: tuple, batch_idx: int) -> Tensor:
        (x_train, y_train), (x_held, y_held) = batch
        sums = [x.sum((1, 2, 3)) for x in (x_train, x_held)]
        self.seen.append(torch.cat([y_train, y_held, *sums]))
        return self.layer(x_train.mean((1, 2, 3), keepdim=True)[:, :1]).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit(
    tmp_path: Path, max_steps: int, ckpt_path: Path | None = None
) -> tuple[PairRecorder, Trainer]:
    torch.manual_seed(0)
    model = PairRecorder()
    trainer = Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, max_steps=max_steps,
                      limit_val_batches=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=NASDataModule("synthetic", batch_size=128), ckpt_path=ckpt_path)
    return model, trainer


def test_lightning_resumes_a_search_epoch(tmp_path: Path) -> None:
    uninterrupted, _ = fit(tmp_path, max_steps=6)  # 4 pairs an epoch: the run crosses epochs
    stopped, trainer = fit(tmp_path, max_steps=3)
    trainer.save_checkpoint(tmp_path / "stopped.ckpt")
    resumed, _ = fit(tmp_path, max_steps=6, ckpt_path=tmp_path / "stopped.ckpt")
    assert len(resumed.seen) == 3
    for got, expected in zip(stopped.seen + resumed.seen, uninterrupted.seen):
        torch.testing.assert_close(got, expected)
