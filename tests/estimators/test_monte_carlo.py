"""Statistical properties, where enumeration cannot replace sampling.

Each check draws many independent estimates at once (one per row of a batch of
identical logits) and allows four standard errors, so a correct estimator fails
with probability well under 1e-3 per component; the seeds are fixed.
"""

from __future__ import annotations

import pytest
import torch

from zoo.estimators import get_estimator
from zoo.estimators._categorical import sample_categorical
from zoo.estimators.gumbel import conditional_gumbel_vjp_sum

Z_TOLERANCE = 4.0


def per_row_gradients(name: str, logits: torch.Tensor, weight: torch.Tensor, rows: int, **options) -> torch.Tensor:
    """``rows`` independent single-sample estimates for the loss ``weight · D``."""
    leaf = logits.expand(rows, *logits.shape).clone().requires_grad_()
    sample, _ = get_estimator(name, **options)(leaf)
    (sample * weight).sum().backward()
    return leaf.grad


def assert_means_agree(a: torch.Tensor, b: torch.Tensor) -> None:
    standard_error = (a.var(0) / len(a) + b.var(0) / len(b)).sqrt()
    z = (a.mean(0) - b.mean(0)).abs() / standard_error.clamp_min(1e-12)
    assert z.max() < Z_TOLERANCE, f"means differ by {z.max():.1f} standard errors"


def assert_unbiased(estimates: torch.Tensor, truth: torch.Tensor) -> None:
    standard_error = estimates.std(0) / len(estimates) ** 0.5
    z = (estimates.mean(0) - truth).abs() / standard_error.clamp_min(1e-12)
    assert z.max() < Z_TOLERANCE, f"mean is {z.max():.1f} standard errors from the exact gradient"


@pytest.mark.parametrize("num_classes", [2, 4, 7])
def test_sampler_frequencies_match_the_probabilities(num_classes):
    torch.manual_seed(0)
    probs = torch.rand(num_classes) + 0.05
    probs[num_classes // 2] = 0.0  # a masked class
    probs /= probs.sum()
    draws = 200_000
    one_hot, index = sample_categorical(probs.expand(draws, num_classes))
    assert torch.equal(one_hot.argmax(-1, keepdim=True), index)
    counts = one_hot.sum(0)
    standard_error = (draws * probs * (1 - probs)).sqrt()
    assert counts[num_classes // 2] == 0
    assert ((counts - draws * probs).abs() <= Z_TOLERANCE * standard_error + 1e-9).all()


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_grmck_has_the_mean_of_stgs_and_a_lower_variance(tau):
    torch.manual_seed(0)
    logits = torch.tensor([1.0, -0.5, 0.3, 0.0], dtype=torch.float64)
    weight = torch.tensor([0.4, -1.2, 2.0, 0.1], dtype=torch.float64)
    rows = 40_000
    stgs = per_row_gradients("stgs", logits, weight, rows, tau=tau)
    grmck = per_row_gradients("grmck", logits, weight, rows, tau=tau, num_gumbel_samples=50)
    assert_means_agree(grmck, stgs)
    assert grmck.var(0).sum() < 0.8 * stgs.var(0).sum()


def test_grmck_estimate_does_not_depend_on_the_chunking_of_the_same_noise():
    torch.manual_seed(0)
    probs = torch.randn(32, 5, dtype=torch.float64).softmax(-1)
    _, index = sample_categorical(probs)
    grad = torch.randn(32, 5, dtype=torch.float64)
    noise = torch.empty(60, 32, 5, dtype=torch.float64).exponential_()
    materialised = conditional_gumbel_vjp_sum(probs, index, grad, 1.3, iter([noise.clone()]))
    chunked = conditional_gumbel_vjp_sum(probs, index, grad, 1.3, iter(noise.clone().split(7)))
    torch.testing.assert_close(chunked, materialised, rtol=1e-12, atol=1e-12)


def test_grmck_conditional_noise_reproduces_the_sample():
    """The conditional perturbation of the sampled class is always the largest."""
    torch.manual_seed(1)
    probs = torch.randn(1000, 6, dtype=torch.float64).softmax(-1)
    sample, _ = sample_categorical(probs)
    exponential = torch.empty(20, 1000, 6, dtype=torch.float64).exponential_()
    at_sample = (exponential * sample).sum(-1, keepdim=True)
    ratio = (exponential / probs).masked_fill(sample.bool(), 0.0) + at_sample
    perturbed = -ratio.log()
    assert torch.equal(perturbed.argmax(-1), sample.argmax(-1).expand(20, 1000))


def score_function_estimates(name: str, logits: torch.Tensor, f, rows: int, num_samples: int) -> torch.Tensor:
    """``rows`` independent estimates of ``∇θ E[f]`` for one example with logits ``(L, C)``."""
    leaf = logits.expand(rows, *logits.shape).clone().requires_grad_()
    get_estimator(name).objective(leaf, f, num_samples).backward()
    return leaf.grad * rows  # the objective averages over the rows


def exact_gradient(logits: torch.Tensor, f) -> torch.Tensor:
    leaf = logits.clone().requires_grad_()
    get_estimator("exact").objective(leaf.unsqueeze(0), f).backward()
    return leaf.grad


def nonlinear_loss(samples: torch.Tensor) -> torch.Tensor:
    """A loss with interactions between the variables: (S, rows, L, C) → (S, rows)."""
    values = torch.arange(samples.shape[-1], dtype=samples.dtype)
    levels = (samples * values).sum(-1)  # (S, rows, L)
    return (levels.sum(-1) - 1.3) ** 2 + torch.sin(3 * levels[..., 0]) * levels[..., -1]


@pytest.mark.parametrize("num_samples", [2, 5])
def test_reinforce_leave_one_out_is_unbiased(num_samples):
    torch.manual_seed(0)
    logits = torch.tensor([[0.5, -0.2, 0.1], [1.0, 0.0, -1.0], [0.0, 0.3, 0.2]], dtype=torch.float64)
    estimates = score_function_estimates("reinforce", logits, nonlinear_loss, 40_000, num_samples)
    assert_unbiased(estimates, exact_gradient(logits, nonlinear_loss))


@pytest.mark.parametrize("num_samples", [2, 6])
def test_disarm_is_unbiased(num_samples):
    torch.manual_seed(0)
    logits = torch.tensor([[0.0, 0.7], [0.2, -0.9], [0.0, 0.1], [0.5, 0.5]], dtype=torch.float64)
    estimates = score_function_estimates("disarm", logits, nonlinear_loss, 40_000, num_samples)
    assert_unbiased(estimates, exact_gradient(logits, nonlinear_loss))


def test_exact_gradient_matches_the_single_variable_formula():
    """For one variable, ∇θ Σ_i π_i f(I_i) = J(π)·[f(I_i)]_i."""
    logits = torch.tensor([0.3, -1.0, 2.0, 0.5], dtype=torch.float64)
    values = torch.tensor([1.5, -2.0, 0.25, 4.0], dtype=torch.float64)
    gradient = exact_gradient(logits.unsqueeze(0), lambda s: (s * values).sum((-1, -2)))[0]
    probs = logits.softmax(-1)
    torch.testing.assert_close(gradient, probs * (values - probs @ values), rtol=0, atol=1e-12)
