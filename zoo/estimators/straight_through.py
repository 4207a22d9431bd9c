"""Straight-through (ST) and ReinMax: the first- and second-order estimators.

Both draw ``D ~ Cat(π)`` with no Gumbel noise. For a fixed sample, the change
``f(I_i) − f(D)`` that the true gradient needs is approximated by integrating
``∇f`` along the segment from ``D`` to ``I_i``: ST takes the forward-Euler step
(the gradient at ``D`` only); ReinMax takes Heun's step (the average of the
gradients at both ends), which makes it exact for quadratic losses at τ = 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import PathwiseEstimator, straight_through_grad
from ._categorical import row_dot, sample_categorical, softmax, softmax_vjp
from ._registry import register_estimator


@register_estimator("st", summary="D ~ Cat(π); (1/τ)·J(π_τ)·g")
class StraightThrough(PathwiseEstimator):
    """ST: ``∇θ ≈ (1/τ)·J(π_τ)·g``; unbiased for linear losses at τ = 1."""

    def draw(self, logits: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
        probs = self.probabilities(logits)
        sample, _ = sample_categorical(probs)
        tempered = None if self.tau == 1.0 else softmax(logits, self.tau)
        return sample, probs, (probs, tempered)

    def logits_grad(self, saved, tau, grad_sample, grad_probs):
        probs, tempered = saved
        return straight_through_grad(probs, tempered, tau, grad_sample, grad_probs)


@register_estimator("reinmax", summary="D ~ Cat(π); 2·J(½(π_τ + D))·g − ½·J(π)·g (Heun's method)")
class ReinMax(PathwiseEstimator):
    """ReinMax: ``∇θ ≈ 2·J(π_h)·g + J(π)·(g_π − ½g)`` with ``π_h = ½(π_τ + D)``.

    Unbiased for quadratic losses at τ = 1. The published recipe subtracts the
    mean over classes at the end; every term here is a softmax Jacobian product,
    whose entries already sum to zero, so that step is left out.
    """

    min_tau = 1.0
    tau_inclusive = True

    def _tau_reason(self) -> str:
        return " (ReinMax's Heun step needs tau >= 1; use st or stgs for smaller tau)"

    def draw(self, logits: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
        probs = self.probabilities(logits)
        sample, index = sample_categorical(probs)
        tempered = None if self.tau == 1.0 else softmax(logits, self.tau)
        if logits.shape[-1] == 2:
            # Two classes: every softmax Jacobian product is c·(g₁ − g₀)·(−1, 1) for
            # a per-row c, so the whole rule is one coefficient per row.
            half = (probs if tempered is None else tempered)[..., 1].add(sample[..., 1]).mul_(0.5)
            coefficient = half.mul(1.0 - half).mul_(2.0).sub_(probs[..., 0] * probs[..., 1] * 0.5)
            return sample, probs, (index, probs, coefficient)
        # lead = π_τ − ½π; at τ = 1 it is ½π and is not stored.
        lead = None if tempered is None else tempered.add_(probs, alpha=-0.5)
        return sample, probs, (index, probs, lead)

    def logits_grad(self, saved, tau, grad_sample, grad_probs):
        # The third saved tensor is the per-row coefficient for two classes, else `lead`.
        index, probs, lead = saved
        if grad_sample is None:
            return softmax_vjp(probs, grad_probs)
        if grad_sample.shape[-1] == 2:
            return _binary_grad(probs, lead, grad_sample, grad_probs)
        # Every full-size intermediate lives in `grad`, the one tensor allocated here.
        grad = torch.empty_like(grad_sample)
        at_sample = grad_sample.gather(-1, index)
        probs_dot = row_dot(probs, grad_sample, grad)
        if lead is None:
            # τ = 1: 2·J(π_h)·g − ½·J(π)·g = ½·π ⊙ (g − g_i) + ½·D·(g_i − πᵀg)
            torch.sub(grad_sample, at_sample, out=grad).mul_(probs)
            grad.scatter_add_(-1, index, at_sample - probs_dot).mul_(0.5)
        else:
            # With q = π_τ − ½π and s = π_hᵀg = ½(qᵀg + ½πᵀg + g_i):
            # 2·J(π_h)·g − ½·J(π)·g = q ⊙ (g − s) + ½(πᵀg − s)·π + D·(g_i − s)
            s = (row_dot(lead, grad_sample, grad) + 0.5 * probs_dot + at_sample).mul_(0.5)
            torch.sub(grad_sample, s, out=grad).mul_(lead)
            grad.addcmul_(probs, (probs_dot - s).mul_(0.5)).scatter_add_(-1, index, at_sample - s)
        if grad_probs is not None:
            grad += softmax_vjp(probs, grad_probs)
        return grad


def _binary_grad(probs: Tensor, coefficient: Tensor, grad_sample: Tensor, grad_probs: Tensor | None) -> Tensor:
    """``c·(g₁ − g₀)·(−1, 1) + J(π)·g_π`` for two classes, with ``J(π)·v = π₀π₁(v₁ − v₀)·(−1, 1)``."""
    step = (grad_sample[..., 1] - grad_sample[..., 0]).mul_(coefficient)
    if grad_probs is not None:
        step.addcmul_(probs[..., 0] * probs[..., 1], grad_probs[..., 1] - grad_probs[..., 0])
    return torch.stack((-step, step), dim=-1)
