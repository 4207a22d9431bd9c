"""Estimators built on Gumbel perturbations: STGS, GST and GR-MCK.

All three return ``D`` in the forward pass and back-propagate through a tempered
softmax ``s`` of perturbed logits: ``∇θ ≈ (1/τ)·J(s)·g``. They differ in how the
perturbation is chosen:

* STGS (Jang et al. 2017; Maddison et al. 2017) adds fresh Gumbel noise and takes
  ``D = onehot(argmax(θ + G))``;
* GST (Fan et al. 2022) moves the logits deterministically so that the sampled
  class leads the others by a gap;
* GR-MCK (Paulus et al. 2021) averages the STGS surrogate over K Gumbel draws
  conditioned on the sampled class, which keeps STGS's mean and lowers its variance.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch import Tensor

from ._base import PathwiseEstimator, straight_through_grad
from ._categorical import (
    one_hot_argmax,
    sample_categorical,
    softmax,
    softmax_vjp,
    standard_exponential,
)
from ._registry import register_estimator


@register_estimator("stgs", summary="D = onehot(argmax(θ + G)); (1/τ)·J(softmax((θ + G)/τ))·g")
class GumbelSoftmaxST(PathwiseEstimator):
    """STGS: ``D = onehot(argmax(θ + G))``, ``∇θ ≈ (1/τ)·J(softmax((θ+G)/τ))·g``."""

    def draw(self, logits: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
        probs = self.probabilities(logits)
        perturbed = logits - standard_exponential(logits.shape, logits).log_()
        sample = one_hot_argmax(perturbed)
        return sample, probs, (probs, softmax(perturbed, self.tau))

    def logits_grad(self, saved, tau, grad_sample, grad_probs):
        probs, surrogate = saved
        return straight_through_grad(probs, surrogate, tau, grad_sample, grad_probs)


@register_estimator("gst-1.0", gap=1.0, summary="D ~ Cat(π); the softmax surrogate of logits moved so that D "
                   "leads the others by a gap of 1")
@register_estimator("gst-p", gap=None, summary="D ~ Cat(π); as gst-1.0 with the gap −log(1 − π_D)/π_D")
class GappedStraightThrough(PathwiseEstimator):
    """GST: the surrogate softmax of logits moved so the sample leads by ``gap``.

    The sampled logit is lifted to the maximum and every other logit is pushed at
    least ``gap`` below it: ``θ̃_j = min(θ_j, max θ − gap)``. Both moves are
    constants for autograd. ``gap=None`` is GST-p, whose gap
    ``−log(1 − π_i)/π_i`` adapts to the probability of the sampled class. The
    published recipe also centres ``θ̃``; softmax ignores that shift, so it is
    left out (which keeps masked logits at −inf).
    """

    # GST-p's gap diverges as π_i → 1; clip π_i below 1 by this much.
    _MAX_PROB_MARGIN = 1e-6

    def __init__(self, *, gap: float | None, tau: float = 1.0, validate_args: bool = True) -> None:
        if gap is not None and not (math.isfinite(gap) and gap >= 0):
            raise ValueError(f"gst: gap must be a finite number >= 0, got {gap!r}.")
        self.gap = gap  # before the base class checks tau, whose message names the estimator
        super().__init__(tau=tau, validate_args=validate_args)

    @property
    def name(self) -> str:  # type: ignore[override]
        return "gst-p" if self.gap is None else f"gst-{self.gap}"

    def draw(self, logits: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
        probs = self.probabilities(logits)
        sample, index = sample_categorical(probs)
        top = logits.amax(dim=-1, keepdim=True)
        if self.gap is None:
            p = probs.gather(-1, index).clamp_(max=1.0 - self._MAX_PROB_MARGIN)
            gap = torch.log1p(-p).neg_().div_(p)
        else:
            gap = self.gap
        moved = torch.minimum(logits, top - gap).scatter_(-1, index, top)
        return sample, probs, (probs, softmax(moved, self.tau))

    def logits_grad(self, saved, tau, grad_sample, grad_probs):
        probs, surrogate = saved
        return straight_through_grad(probs, surrogate, tau, grad_sample, grad_probs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gap={'adaptive' if self.gap is None else self.gap}"


@register_estimator("grmck", summary="D ~ Cat(π); STGS's surrogate averaged over K Gumbel draws conditioned on D")
class GumbelRaoMonteCarlo(PathwiseEstimator):
    """GR-MCK: the STGS surrogate averaged over K conditional Gumbel draws.

    The K draws are needed only in backward, so forward records a seed and
    backward regenerates the noise in chunks of ``chunk_size`` draws: memory
    stays at a few chunk-sized tensors however large K is. ``chunk_size=None``
    picks chunks of about 4M elements; ``chunk_size=K`` is the materialised form.
    """

    _CHUNK_ELEMENTS = 1 << 22

    def __init__(
        self,
        *,
        num_gumbel_samples: int = 100,
        chunk_size: int | None = None,
        tau: float = 1.0,
        validate_args: bool = True,
    ) -> None:
        if not isinstance(num_gumbel_samples, int) or num_gumbel_samples < 1:
            raise ValueError(
                f"grmck: num_gumbel_samples (K) must be an integer >= 1, got {num_gumbel_samples!r}."
            )
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"grmck: chunk_size must be None or an integer >= 1, got {chunk_size!r}.")
        super().__init__(tau=tau, validate_args=validate_args)
        self.num_gumbel_samples = num_gumbel_samples
        self.chunk_size = chunk_size

    def draw(self, logits: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
        probs = self.probabilities(logits)
        sample, index = sample_categorical(probs)
        # Drawn from the global generator, so torch.manual_seed fixes the estimate. A compiled graph cannot
        # seed a generator of its own (nor read the seed on the host): there backward draws from the global one.
        seed = None if torch.compiler.is_compiling() else torch.randint(1 << 62, ())
        return sample, probs, (probs, index, seed)

    def logits_grad(self, saved, tau, grad_sample, grad_probs):
        probs, index, seed = saved
        if grad_sample is None:
            return softmax_vjp(probs, grad_probs)
        noise = self._noise_chunks(probs, None if seed is None else int(seed))
        grad = conditional_gumbel_vjp_sum(probs, index, grad_sample, tau, noise)
        grad.mul_(1.0 / (tau * self.num_gumbel_samples))
        if grad_probs is not None:
            grad += softmax_vjp(probs, grad_probs)
        return grad

    def _noise_chunks(self, probs: Tensor, seed: int | None) -> Iterator[Tensor]:
        """The K draws' noise, in chunks, from a generator seeded with ``seed`` (None: the global one)."""
        generator = None if seed is None else torch.Generator(device=probs.device).manual_seed(seed)
        chunk = self.chunk_size or max(1, self._CHUNK_ELEMENTS // max(1, probs.numel()))
        for start in range(0, self.num_gumbel_samples, chunk):
            count = min(chunk, self.num_gumbel_samples - start)
            yield standard_exponential((count, *probs.shape), probs, generator)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_gumbel_samples={self.num_gumbel_samples}"


def conditional_gumbel_vjp_sum(
    probs: Tensor, index: Tensor, grad: Tensor, tau: float, noise: Iterator[Tensor]
) -> Tensor:
    """``Σ_k J(s_k)·g`` over every draw in ``noise`` (chunks of Exp(1), ``(k, *probs.shape)``).

    With ``i`` (``index``) the sampled class and ``E`` the exponential noise of one
    draw, the Gumbel-perturbed logits conditioned on ``argmax = i`` are, up to a
    constant shift, ``−log E_i`` at ``i`` and ``−log(E_j/π_j + E_i)`` elsewhere;
    ``s_k = softmax(perturbed/τ)``. The sum does not depend on how the draws are
    split into chunks.
    """
    total = torch.zeros_like(probs)
    for exponential in noise:
        chunk_index = index.expand(*exponential.shape[:-1], 1)
        at_sample = exponential.gather(-1, chunk_index)
        ratio = exponential.div_(probs).scatter_(-1, chunk_index, 0.0).add_(at_sample)
        surrogate = softmax(ratio.log_().neg_(), tau)
        total += softmax_vjp(surrogate, grad).sum(dim=0)
    return total
