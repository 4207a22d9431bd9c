"""NAS batches: augmentation, normalisation, sharding, paired halves and resuming."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from datamodules.nas import (
    LabelledBatches,
    PairedBatches,
    crop_and_flip,
)


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
