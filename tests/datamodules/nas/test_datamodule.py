"""NASDataModule: the search split, the modes, arguments, and resuming under Lightning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor, nn

from datamodules.nas import (
    DATASETS,
    DatasetInfo,
    LabelledBatches,
    NASDataModule,
    PairedBatches,
    load,
    search_split,
)
from datamodules.nas.sources import SYNTHETIC_SIZES

VALID_NAMES = "cifar10, cifar100, imagenet16-120, fashion-mnist, synthetic"


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
