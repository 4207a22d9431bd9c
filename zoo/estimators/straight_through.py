"""Straight-through (ST) and ReinMax: the first- and second-order estimators.

Both draw ``D ~ Cat(π)`` with no Gumbel noise. For a fixed sample, the change
``f(I_i) − f(D)`` that the true gradient needs is approximated by integrating
``∇f`` along the segment from ``D`` to ``I_i``: ST takes the forward-Euler step
(the gradient at ``D`` only); ReinMax takes Heun's step (the average of the
gradients at both ends), which makes it exact for quadratic losses at τ = 1.
"""

from __future__ import annotations

from torch import Tensor

from ._base import PathwiseEstimator, straight_through_grad
from ._categorical import sample_one_hot, softmax, softmax_vjp


def _tempered(logits: Tensor, probs: Tensor, tau: float) -> Tensor | None:
    """``softmax(logits/τ)``, or ``None`` when τ = 1 and it equals ``probs``."""
    return None if tau == 1.0 else softmax(logits / tau)


class StraightThrough(PathwiseEstimator):
    """ST: ``∇θ ≈ (1/τ)·J(π_τ)·g``; unbiased for linear losses at τ = 1."""

    name = "st"

    def draw(self, logits: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
        probs = self.probabilities(logits)
        sample = sample_one_hot(probs)
        return sample, probs, (probs, _tempered(logits, probs, self.tau))

    def logits_grad(self, saved, tau, grad_sample, grad_probs):
        probs, tempered = saved
        return straight_through_grad(probs, tempered, tau, grad_sample, grad_probs)


class ReinMax(PathwiseEstimator):
    """ReinMax: ``∇θ ≈ 2·J(π_h)·g + J(π)·(g_π − ½g)`` with ``π_h = ½(π_τ + D)``.

    Unbiased for quadratic losses at τ = 1. The published recipe subtracts the
    mean over classes at the end; every term here is a softmax Jacobian product,
    whose entries already sum to zero, so that step is left out.
    """

    name = "reinmax"
    min_tau = 1.0
    tau_inclusive = True

    def _tau_reason(self) -> str:
        return " (ReinMax's Heun step needs tau >= 1; use st or stgs for smaller tau)"

    def draw(self, logits: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
        probs = self.probabilities(logits)
        sample = sample_one_hot(probs)
        return sample, probs, (sample, probs, _tempered(logits, probs, self.tau))

    def logits_grad(self, saved, tau, grad_sample, grad_probs):
        sample, probs, tempered = saved
        if grad_sample is None:
            return straight_through_grad(probs, None, tau, None, grad_probs)
        # Expanding 2·J(π_h)·g with π_h = ½(ρ + D), ρ = π_τ, and writing g_i for the
        # gradient at the sampled class and s = π_hᵀg:
        #   2·J(π_h)·g = ρ ⊙ (g − s) + D·(g_i − s)
        # and the remaining term J(π)·h with h = g_π − ½g.
        rho = probs if tempered is None else tempered
        grad_at_sample = (grad_sample * sample).sum(dim=-1, keepdim=True)
        s = (rho * grad_sample).sum(dim=-1, keepdim=True).add_(grad_at_sample).mul_(0.5)
        h = grad_sample * -0.5
        if grad_probs is not None:
            h += grad_probs
        if tempered is None:
            # ρ = π: both products with π share one pass.
            grad = (grad_sample - s).add_(h).sub_((probs * h).sum(dim=-1, keepdim=True))
            grad.mul_(probs)
        else:
            grad = (grad_sample - s).mul_(rho)
            grad += softmax_vjp(probs, h, overwrite_grad=True)
        return grad.addcmul_(sample, grad_at_sample - s)
