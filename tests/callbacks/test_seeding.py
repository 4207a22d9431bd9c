"""Each process gets its own, reproducible sampling noise."""

from __future__ import annotations

from types import SimpleNamespace

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
