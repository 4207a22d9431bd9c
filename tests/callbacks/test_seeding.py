"""Each process gets its own, reproducible sampling noise."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from callbacks.seeding import PerRankSeed


def draws_on_rank(rank: int, seed: int = 7) -> torch.Tensor:
    torch.manual_seed(0)  # what seed_everything leaves on every rank alike
    PerRankSeed(seed).on_fit_start(SimpleNamespace(global_rank=rank), None)
    return torch.rand(5)


def test_ranks_draw_different_noise_and_each_rank_the_same_every_time():
    first, second = draws_on_rank(0), draws_on_rank(1)
    assert not torch.equal(first, second)
    torch.testing.assert_close(draws_on_rank(1), second, rtol=0, atol=0)
    assert not torch.equal(draws_on_rank(1, seed=8), second)


def test_a_saved_random_state_is_restored_when_training_starts():
    saver = PerRankSeed(7)
    saver.on_fit_start(SimpleNamespace(global_rank=0), None)
    state = saver.state_dict()
    expected = torch.rand(5)

    restorer = PerRankSeed(7)
    restorer.load_state_dict(state)
    trainer = SimpleNamespace(global_rank=0, world_size=1)
    restorer.on_fit_start(trainer, None)  # no reseeding on resume ...
    torch.rand(3)  # ... and what Lightning's sanity check draws does not matter
    restorer.on_train_start(trainer, None)
    torch.testing.assert_close(torch.rand(5), expected, rtol=0, atol=0)


def test_resuming_with_another_number_of_processes_is_refused():
    restorer = PerRankSeed(7)
    restorer.load_state_dict(PerRankSeed(7).state_dict())
    with pytest.raises(ValueError, match="random state of 1 process.*has 2; resume with as many processes"):
        restorer.on_train_start(SimpleNamespace(global_rank=0, world_size=2), None)
