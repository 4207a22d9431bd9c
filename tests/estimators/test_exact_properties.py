"""The properties of estimators.md that hold exactly, checked by enumeration.

For a fixed sample the surrogate gradient is deterministic, so the expectation of
an estimator is a finite sum over outcomes: no Monte Carlo tolerance is needed.
Everything runs in float64 so that "equal" means equal to rounding.
"""

from __future__ import annotations

import pytest
import torch

from zoo.estimators import get_estimator

from .conftest import expected_pathwise_gradient, true_gradient

NUM_VARIABLES = 2
# Two classes take the binary fast paths; three the general ones.
PROBLEMS = [(seed, num_classes) for num_classes in (2, 3) for seed in range(4)]


def random_problem(seed: int, num_classes: int = 3):
    """Logits (L, C) and a random linear and quadratic loss of the joint one-hot."""
    generator = torch.Generator().manual_seed(seed)
    size = NUM_VARIABLES * num_classes
    logits = torch.randn(NUM_VARIABLES, num_classes, generator=generator, dtype=torch.float64)
    matrix = torch.randn(size, size, generator=generator, dtype=torch.float64)
    vector = torch.randn(size, generator=generator, dtype=torch.float64)
    prob_weight = torch.randn(NUM_VARIABLES, num_classes, generator=generator, dtype=torch.float64)

    def linear(sample, probs):
        return sample.reshape(-1) @ vector

    def quadratic(sample, probs):
        flat = sample.reshape(-1)
        return flat @ matrix @ flat + flat @ vector

    def quadratic_with_probs(sample, probs):
        # A term in π too (as an analytic KL would add): exercises g_π.
        return quadratic(sample, probs) + (prob_weight * probs).sum() + (probs**2).sum()

    return logits, linear, quadratic, quadratic_with_probs


@pytest.mark.parametrize("seed, num_classes", PROBLEMS)
def test_st_at_tau_one_is_unbiased_for_linear_losses(seed, num_classes, force_sample):
    logits, linear, _, _ = random_problem(seed, num_classes)
    expected = expected_pathwise_gradient(get_estimator("st"), logits, linear, force_sample)
    torch.testing.assert_close(expected, true_gradient(logits, linear), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed, num_classes", PROBLEMS)
def test_reinmax_at_tau_one_is_unbiased_for_quadratic_losses(seed, num_classes, force_sample):
    logits, _, quadratic, quadratic_with_probs = random_problem(seed, num_classes)
    reinmax = get_estimator("reinmax", tau=1.0)
    for loss in (quadratic, quadratic_with_probs):
        expected = expected_pathwise_gradient(reinmax, logits, loss, force_sample)
        torch.testing.assert_close(expected, true_gradient(logits, loss), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed, num_classes", PROBLEMS)
def test_st_is_biased_for_quadratic_losses(seed, num_classes, force_sample):
    logits, _, quadratic, _ = random_problem(seed, num_classes)
    expected = expected_pathwise_gradient(get_estimator("st"), logits, quadratic, force_sample)
    bias = (expected - true_gradient(logits, quadratic)).norm()
    assert bias > 1e-3 * true_gradient(logits, quadratic).norm()


@pytest.mark.parametrize("seed, num_classes", PROBLEMS)
def test_reinmax_above_tau_one_is_biased_for_quadratic_losses(seed, num_classes, force_sample):
    logits, _, quadratic, _ = random_problem(seed, num_classes)
    expected = expected_pathwise_gradient(get_estimator("reinmax", tau=2.0), logits, quadratic, force_sample)
    assert (expected - true_gradient(logits, quadratic)).norm() > 1e-6


@pytest.mark.parametrize("name", ["st", "reinmax"])
@pytest.mark.parametrize("tau", [1.0, 1.7])
@pytest.mark.parametrize("num_classes", [2, 3, 40])
def test_gradient_for_a_fixed_sample_matches_the_formula(name, tau, num_classes, force_sample):
    """Check the hand-written backward against estimators.md's formula directly."""
    logits, _, _, _ = random_problem(11, num_classes)
    sample = torch.eye(num_classes, dtype=torch.float64)[[num_classes - 1, 0]]
    grad_sample = torch.randn(NUM_VARIABLES, num_classes, dtype=torch.float64)
    grad_probs = torch.randn(NUM_VARIABLES, num_classes, dtype=torch.float64)
    force_sample(sample)
    leaf = logits.clone().requires_grad_()
    out_sample, out_probs = get_estimator(name, tau=tau)(leaf)
    ((out_sample * grad_sample).sum() + (out_probs * grad_probs).sum()).backward()

    def jacobian_product(p, v):
        return p * (v - (p * v).sum(-1, keepdim=True))

    probs, tempered = logits.softmax(-1), (logits / tau).softmax(-1)
    if name == "st":
        formula = jacobian_product(tempered, grad_sample) / tau + jacobian_product(probs, grad_probs)
    else:
        half = 0.5 * (tempered + sample)
        formula = 2 * jacobian_product(half, grad_sample) + jacobian_product(
            probs, grad_probs - 0.5 * grad_sample
        )
        formula = formula - formula.mean(-1, keepdim=True)
    torch.testing.assert_close(leaf.grad, formula, rtol=0, atol=1e-12)
