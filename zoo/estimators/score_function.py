"""Score-function (REINFORCE-style) estimators: unbiased for any loss.

They evaluate the loss at several samples and weight ``∇θ log p(sample)`` by how
much better or worse than a baseline each sample did, so they are only reachable
through ``objective(logits, f, num_samples)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._base import LossFn, ScoreFunctionEstimator, check_losses
from ._categorical import full_precision, sample_categorical
from ._registry import register_estimator


def per_example_log_prob(log_probs: Tensor, index: Tensor, batch_ndim: int) -> Tensor:
    """``log p(sample)`` per sample and example: ``(S, *batch)``.

    ``log_probs`` is ``(..., C)``; ``index`` holds the sampled classes
    ``(S, ..., 1)``. The log probability of the sampled class is gathered (never
    multiplied by a one-hot, which would turn masked −inf logits into NaN) and
    summed over the variables of each example.
    """
    picked = log_probs.expand(*index.shape[:-1], log_probs.shape[-1]).gather(-1, index).squeeze(-1)
    variable_dims = tuple(range(1 + batch_ndim, picked.dim()))
    return picked.sum(dim=variable_dims) if variable_dims else picked


def with_surrogate(mean_loss: Tensor, surrogate: Tensor) -> Tensor:
    """``mean_loss`` in value; ``mean_loss + surrogate`` in gradient."""
    return mean_loss + (surrogate - surrogate.detach())


def binary_logit_gap(estimator: ScoreFunctionEstimator, logits: Tensor) -> tuple[Tensor, Tensor]:
    """``η = θ_1 − θ_0`` (in float32 or wider, with gradient) and ``p = σ(η)`` (checked, detached).

    For the estimators that only handle binary variables, logits ``(..., 2)``.
    """
    estimator.check_categories(logits.shape[-1])
    work = full_precision(logits)
    logit_gap = work[..., 1] - work[..., 0]
    with torch.no_grad():
        prob_one = torch.sigmoid(logit_gap)
        estimator.check(prob_one.unsqueeze(-1))
    return logit_gap, prob_one


def logit_gap_surrogate(grad_gap: Tensor, logit_gap: Tensor, num_examples: int) -> Tensor:
    """A scalar whose gradient for ``η`` is ``grad_gap`` averaged over the examples.

    A masked class makes ``η`` infinite and its estimate zero; 0·∞ is kept out of
    the value.
    """
    finite_gap = logit_gap.masked_fill(~torch.isfinite(logit_gap.detach()), 0.0)
    return (grad_gap * finite_gap).sum() / num_examples


@register_estimator("reinforce", summary="K samples; REINFORCE with each sample's baseline the mean loss of the "
                   "others (RLOO)")
class ReinforceLeaveOneOut(ScoreFunctionEstimator):
    """RLOO: ``(1/K) Σ_k [f(b_k) − mean_{j≠k} f(b_j)] ∇θ log p(b_k)``, K ≥ 2."""

    def objective(self, logits: Tensor, f: LossFn, num_samples: int = 2) -> Tensor:
        self.check_num_samples(num_samples)
        log_probs = torch.log_softmax(full_precision(logits), dim=-1)
        with torch.no_grad():
            probs = log_probs.exp()
            self.check(probs)
            samples, index = sample_categorical(probs.expand(num_samples, *probs.shape))
            samples = samples.to(logits.dtype)
        losses = f(samples)
        batch_ndim = check_losses(self.name, losses, logits, num_samples)
        with torch.no_grad():
            # f_k − mean_{j≠k} f_j = K/(K−1) · (f_k − mean_j f_j)
            advantage = (losses - losses.mean(dim=0)) * (num_samples / (num_samples - 1))
        log_p = per_example_log_prob(log_probs, index, batch_ndim)
        surrogate = (advantage * log_p).mean()
        return with_surrogate(losses.mean(), surrogate)


@register_estimator("disarm", summary="K/2 antithetic pairs of binary samples; DisARM's gradient for the logit gap")
class DisARM(ScoreFunctionEstimator):
    """DisARM (Dong et al. 2020) for binary variables, logits ``(..., 2)``.

    Each antithetic pair shares one uniform ``u``: ``b = 1[u < σ(η)]`` and
    ``b̃ = 1[u > 1 − σ(η)]`` with ``η = θ_1 − θ_0``. The estimate for ``η`` is
    ``½ (f(b) − f(b̃)) (−1)^{b̃} 1[b ≠ b̃] σ(|η|)``, averaged over K/2 pairs.
    """

    binary_only = True
    min_num_samples_reason = " (one antithetic pair)"

    def check_num_samples(self, num_samples: int) -> None:
        super().check_num_samples(num_samples)
        if num_samples % 2:
            raise ValueError(
                f"{self.name}: num_samples counts loss evaluations, two per antithetic "
                f"pair, so it must be even; got {num_samples}."
            )

    def objective(self, logits: Tensor, f: LossFn, num_samples: int = 2) -> Tensor:
        self.check_num_samples(num_samples)
        logit_gap, prob_one = binary_logit_gap(self, logits)
        pairs = num_samples // 2
        with torch.no_grad():
            uniform = torch.rand((pairs, *prob_one.shape), dtype=prob_one.dtype, device=prob_one.device)
            first = uniform < prob_one
            second = uniform > 1.0 - prob_one
            ones = torch.cat((first, second))
            samples = torch.stack((~ones, ones), dim=-1).to(logits.dtype)
        losses = f(samples)
        batch_ndim = check_losses(self.name, losses, logits, num_samples)
        with torch.no_grad():
            half_difference = 0.5 * (losses[:pairs] - losses[pairs:])
            half_difference = half_difference.reshape(
                half_difference.shape + (1,) * (prob_one.dim() - batch_ndim)
            )
            sign = 1.0 - 2.0 * second.to(prob_one.dtype)
            weight = (first != second).to(prob_one.dtype) * torch.sigmoid(logit_gap.abs())
            grad_gap = (half_difference * sign * weight).mean(dim=0)
        surrogate = logit_gap_surrogate(grad_gap, logit_gap, losses[0].numel())
        return with_surrogate(losses.mean(), surrogate)
