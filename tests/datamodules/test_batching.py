"""The in-memory loaders: each epoch's order and shares, and resuming in the middle of an epoch with the
batches an uninterrupted run gets."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from datamodules._batching import TensorBatches
from datamodules.listops.batches import BucketedBatches


def tensor_batches(seed: int) -> TensorBatches:
    return TensorBatches(torch.arange(50.0).unsqueeze(1), 8, shuffle=True, seed=seed)


def bucketed_batches(seed: int) -> BucketedBatches:
    lengths = torch.arange(1, 51) % 7 + 1
    return BucketedBatches(torch.ones(50, 8, dtype=torch.long), lengths, torch.arange(50), 8, shuffle=True,
                           bucket_batches=2, seed=seed)


def ids(batch) -> list[int]:
    """Which examples a batch holds: the images' values, or ListOps' labels (set to the indices)."""
    return (batch[:, 0] if isinstance(batch, torch.Tensor) else batch[2]).long().tolist()


@pytest.mark.parametrize("make", [tensor_batches, bucketed_batches])
@pytest.mark.parametrize("stop_after", [0, 3, 7])  # 7 batches an epoch: 7 is the epoch's end
def test_a_loaded_state_continues_the_interrupted_epoch(make: Callable, stop_after: int):
    reference = make(seed=1)
    expected = [[ids(batch) for batch in reference] for _ in range(3)]

    first = make(seed=1)
    list(first)  # epoch 0
    iterator = iter(first)
    seen = [ids(next(iterator)) for _ in range(stop_after)]
    state = first.state_dict()

    resumed = make(seed=99)  # the seed comes back from the state
    resumed.load_state_dict(state)
    rest = [ids(batch) for batch in resumed]
    if stop_after == len(expected[1]):  # a completed epoch resumes with the next one
        assert seen == expected[1] and rest == expected[2]
    else:
        assert seen + rest == expected[1]
        assert [ids(batch) for batch in resumed] == expected[2]


def test_the_state_holds_plain_values():
    loader = tensor_batches(seed=3)
    assert loader.state_dict() == {"seed": 3, "epoch": 0, "position": 0}
    next(iter(loader))
    assert loader.state_dict() == {"seed": 3, "epoch": 1, "position": 1}


# TensorBatches.


def rows(count: int) -> Tensor:
    """Row ``i`` holds ``i``, so a batch says which examples it contains."""
    return torch.arange(count, dtype=torch.float32).unsqueeze(1)


def epoch_indices(batches: TensorBatches) -> list[int]:
    return [int(value) for batch in batches for value in batch[:, 0]]


def test_every_example_once_per_epoch_in_a_new_order() -> None:
    batches = TensorBatches(rows(103), 10, shuffle=True)
    epochs = [epoch_indices(batches) for _ in range(3)]
    for order in epochs:
        assert sorted(order) == list(range(103))
    assert epochs[0] != epochs[1] != epochs[2]


def test_same_seed_same_order() -> None:
    torch.manual_seed(7)
    first = TensorBatches(rows(50), 8, shuffle=True)
    torch.manual_seed(7)
    second = TensorBatches(rows(50), 8, shuffle=True)
    assert [epoch_indices(first) for _ in range(2)] == [epoch_indices(second) for _ in range(2)]


def test_unshuffled_order_is_the_data_order() -> None:
    assert epoch_indices(TensorBatches(rows(25), 10)) == list(range(25))


def test_a_bare_iter_does_not_advance_the_epoch() -> None:
    batches = TensorBatches(rows(20), 5, shuffle=True, seed=3)
    iter(batches)  # what Lightning does to check that a loader is iterable
    assert epoch_indices(batches) == epoch_indices(TensorBatches(rows(20), 5, shuffle=True, seed=3))


@pytest.mark.parametrize(
    ("count", "batch_size", "length"), [(100, 10, 10), (103, 10, 11), (5, 10, 1)]
)
def test_len_counts_the_last_partial_batch(count: int, batch_size: int, length: int) -> None:
    batches = TensorBatches(rows(count), batch_size, shuffle=True)
    assert len(batches) == length == len(list(batches))


@pytest.mark.parametrize(("count", "world_size"), [(100, 2), (103, 2), (10, 3), (2, 4)])
def test_ranks_share_each_epoch(count: int, world_size: int) -> None:
    ranks = [
        TensorBatches(rows(count), 7, shuffle=True, rank=rank, world_size=world_size, seed=11)
        for rank in range(world_size)
    ]
    share_size = -(-count // world_size)
    padding = share_size * world_size - count
    for _ in range(2):  # the shares hold in every epoch, with that epoch's order
        shares = [epoch_indices(batches) for batches in ranks]
        assert all(len(share) == share_size for share in shares)
        assert len({len(batches) for batches in ranks}) == 1
        together = sorted(index for share in shares for index in share)
        assert set(together) == set(range(count))  # the shares cover the epoch...
        assert len(together) == count + padding  # ...and overlap by the padding only


def test_tensor_batches_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least one example"):
        TensorBatches(torch.zeros(0, 784), 10)
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        TensorBatches(rows(5), 0)
    with pytest.raises(ValueError, match="0 <= rank < world_size, got rank=2, world_size=2"):
        TensorBatches(rows(5), 1, rank=2, world_size=2)
