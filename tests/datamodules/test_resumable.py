"""In-memory loaders resume in the middle of an epoch with the batches an uninterrupted run gets."""

from __future__ import annotations

from typing import Callable

import pytest
import torch

from datamodules.images import TensorBatches
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
