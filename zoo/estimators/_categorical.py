"""Fast categorical numerics shared by every estimator.

Everything here works on the last axis of a float32 (or float64) tensor and is
called without autograd. Two facts about the CPU kernels shape the code:

* ``torch.softmax`` over a short last axis (C <= 16) is several times slower than
  the same maths written as ``exp(x - max) / sum``, and for C = 2 a single
  ``sigmoid`` of the logit difference is faster still.
* ``torch.multinomial`` costs tens of milliseconds for large batches; one uniform
  draw per row compared against the cumulative probabilities (inverse CDF) gives
  the same distribution at a fraction of the cost.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Below this many classes the hand-written softmax beats the native kernel on CPU.
_NATIVE_SOFTMAX_MIN_CLASSES = 32


def full_precision(tensor: Tensor) -> Tensor:
    """``tensor`` in float32, or as it is if already float32 or float64.

    Softmax and sampling lose too much in half precision (a bfloat16 probability
    has 8 bits), so they always run in at least float32.
    """
    return tensor if tensor.dtype in (torch.float32, torch.float64) else tensor.float()


def softmax(logits: Tensor) -> Tensor:
    """``softmax(logits, -1)``, using the fastest formulation for the class count."""
    num_classes = logits.shape[-1]
    if num_classes == 2:
        first = torch.sigmoid(logits[..., 0] - logits[..., 1])
        return torch.stack((first, 1.0 - first), dim=-1)
    if logits.is_cuda or num_classes >= _NATIVE_SOFTMAX_MIN_CLASSES:
        return torch.softmax(logits, dim=-1)
    shifted = logits - logits.amax(dim=-1, keepdim=True)
    exp = shifted.exp_()
    return exp.div_(exp.sum(dim=-1, keepdim=True))


def softmax_vjp(probs: Tensor, grad: Tensor, *, overwrite_grad: bool = False) -> Tensor:
    """``J(p)·g = p ⊙ (g − pᵀg)``: the gradient of softmax at output ``p``.

    With ``overwrite_grad`` the result is written into ``grad`` (a temporary the
    caller no longer needs), which saves an allocation on large batches.
    """
    inner = (probs * grad).sum(dim=-1, keepdim=True)
    centred = grad.sub_(inner) if overwrite_grad else grad - inner
    return centred.mul_(probs)


def standard_exponential(
    shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None = None
) -> Tensor:
    """Exp(1) noise, kept away from 0 so that ``log`` and division stay finite."""
    noise = torch.empty(shape, dtype=like.dtype, device=like.device)
    return noise.exponential_(generator=generator).clamp_(min=torch.finfo(like.dtype).tiny)


def one_hot_argmax(values: Tensor) -> Tensor:
    """The one-hot of ``argmax(values, -1)``, in ``values``' dtype."""
    index = values.argmax(dim=-1, keepdim=True)
    return torch.zeros_like(values).scatter_(-1, index, 1.0)


def sample_one_hot(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One exactly one-hot draw from ``Cat(probs)`` per row, by inverse CDF.

    One uniform ``u`` per row selects the first class whose cumulative probability
    reaches ``(1 − u)·total``; ``1 − u`` lies in ``(0, 1]``, so a class of zero
    probability (a masked logit) is never selected and the index never runs past
    the last class with positive probability.
    """
    uniform = torch.rand(
        probs.shape[:-1], dtype=probs.dtype, device=probs.device, generator=generator
    )
    if probs.shape[-1] == 2:
        second = uniform < probs[..., 1]
        return torch.stack((~second, second), dim=-1).to(probs.dtype)
    cumulative = probs.cumsum(dim=-1)
    threshold = torch.rsub(uniform, 1.0).unsqueeze_(-1).mul_(cumulative[..., -1:])
    reached = (cumulative >= threshold).to(probs.dtype)
    # The step from "not reached" to "reached" marks the sampled class.
    reached[..., 1:] -= reached[..., :-1].clone()
    return reached


def check_probabilities(probs: Tensor, estimator: str) -> None:
    """Raise a ``ValueError`` naming the bad rows if any row of ``probs`` is NaN.

    :func:`softmax` turns a whole row into NaN when its logits contain NaN or
    +inf or are all −inf, so looking at the first class of each row is enough.
    """
    bad = torch.isnan(probs[..., 0])
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"{estimator}: {int(bad.sum())} row(s) of logits have no valid distribution "
            f"(first at index {first}). Each row needs at least one finite logit and "
            "no NaN or +inf; use -inf only to mask classes."
        )
