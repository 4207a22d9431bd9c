"""Helpers shared by the estimator tests: forcing a sample, enumerating outcomes."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor

from zoo.estimators import straight_through


def one_hot_configuration(configuration: tuple[int, ...], num_classes: int, dtype: torch.dtype) -> Tensor:
    """The one-hot tensor ``(L, C)`` of a tuple of class indices."""
    index = torch.tensor(configuration)
    return torch.nn.functional.one_hot(index, num_classes).to(dtype)


def all_configurations(num_variables: int, num_classes: int) -> Iterator[tuple[int, ...]]:
    return itertools.product(range(num_classes), repeat=num_variables)


@pytest.fixture
def force_sample(monkeypatch: pytest.MonkeyPatch) -> Callable[[Tensor], None]:
    """Make ST and ReinMax draw the given one-hot sample instead of a random one."""

    def force(one_hot: Tensor) -> None:
        def forced(probs: Tensor) -> tuple[Tensor, Tensor]:
            sample = one_hot.to(probs.dtype).expand_as(probs).clone()
            return sample, sample.argmax(-1, keepdim=True)

        monkeypatch.setattr(straight_through, "sample_categorical", forced)

    return force


def expected_pathwise_gradient(
    estimator: Callable[[Tensor], tuple[Tensor, Tensor]],
    logits: Tensor,
    loss: Callable[[Tensor, Tensor], Tensor],
    force: Callable[[Tensor], None],
) -> Tensor:
    """``E[∇̂] = Σ_z p(z) ∇̂(z)``, exactly, over every joint outcome of ``logits (L, C)``."""
    num_variables, num_classes = logits.shape
    probs = logits.softmax(-1)
    expected = torch.zeros_like(logits)
    for configuration in all_configurations(num_variables, num_classes):
        force(one_hot_configuration(configuration, num_classes, logits.dtype))
        leaf = logits.detach().clone().requires_grad_()
        sample, leaf_probs = estimator(leaf)
        loss(sample, leaf_probs).backward()
        weight = probs[torch.arange(num_variables), torch.tensor(configuration)].prod()
        expected += weight * leaf.grad
    return expected


def true_gradient(logits: Tensor, loss: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
    """``∇θ E_z[loss(z, π)]`` by autograd through the enumerated expectation."""
    leaf = logits.detach().clone().requires_grad_()
    probs = leaf.softmax(-1)
    num_variables, num_classes = logits.shape
    total = leaf.new_zeros(())
    for configuration in all_configurations(num_variables, num_classes):
        one_hot = one_hot_configuration(configuration, num_classes, logits.dtype)
        weight = probs[torch.arange(num_variables), torch.tensor(configuration)].prod()
        total = total + weight * loss(one_hot, probs)
    total.backward()
    return leaf.grad
