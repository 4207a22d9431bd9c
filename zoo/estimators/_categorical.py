"""Fast categorical numerics shared by every estimator.

Everything here works on the last axis of a float32 (or float64) tensor and is
called without autograd. Two facts about the eager CPU kernels shape the code:

* ``torch.softmax`` over a short last axis (C <= 16) is several times slower than
  the same maths written as ``exp(x - max) / sum``, and for C = 2 a single
  ``sigmoid`` of the logit difference is faster still.
* ``torch.multinomial`` costs tens of milliseconds for large batches; one uniform
  draw per row located among the cumulative probabilities (inverse CDF) gives
  the same distribution at a fraction of the cost.

Under ``torch.compile`` the plain formulations are used instead: the compiler fuses
whichever it is given, and a choice by the number of classes would make a graph for
each (ListOps' parser, whose pairs are its classes, would be compiled again and again).
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


# On CPU a full-size temporary costs more than the arithmetic on it (fresh pages
# for every large allocation), so row-wise dot products of big tensors go through
# einsum, which writes no (..., C) temporary.
_EINSUM_DOT_MIN_ELEMENTS = 1 << 22


def softmax(logits: Tensor, tau: float = 1.0) -> Tensor:
    """``softmax(logits / tau, -1)``, using the fastest formulation for the shape."""
    num_classes = logits.shape[-1]
    if torch.compiler.is_compiling():
        return torch.softmax(logits if tau == 1.0 else logits / tau, dim=-1)
    if num_classes == 2:
        first = torch.sigmoid((logits[..., 0] - logits[..., 1]).mul_(1.0 / tau))
        return torch.stack((first, 1.0 - first), dim=-1)
    if logits.is_cuda or num_classes >= _NATIVE_SOFTMAX_MIN_CLASSES:
        return torch.softmax(logits if tau == 1.0 else logits / tau, dim=-1)
    exp = (logits - logits.amax(dim=-1, keepdim=True)).mul_(1.0 / tau).exp_()
    return exp.div_(exp.sum(dim=-1, keepdim=True))


def row_dot(a: Tensor, b: Tensor, scratch: Tensor | None = None) -> Tensor:
    """``Σ_c a·b`` over the last axis, with the axis kept (size 1).

    ``scratch``, a tensor of the broadcast shape, receives the element-wise
    product when one is formed, so that no new full-size tensor is allocated.
    """
    if torch.compiler.is_compiling():
        return (a * b).sum(dim=-1, keepdim=True)
    if a.shape[-1] == 2:  # a reduction over two elements is slow; two products are not
        return torch.addcmul(a[..., :1] * b[..., :1], a[..., 1:], b[..., 1:])
    if not a.is_cuda and max(a.numel(), b.numel()) >= _EINSUM_DOT_MIN_ELEMENTS:
        return torch.einsum("...c,...c->...", a, b).unsqueeze(-1)
    return torch.mul(a, b, out=scratch).sum(dim=-1, keepdim=True)


def softmax_vjp(probs: Tensor, grad: Tensor) -> Tensor:
    """``J(p)·g = p ⊙ (g − pᵀg)``: the gradient of softmax at output ``p``."""
    out = torch.empty(torch.broadcast_shapes(probs.shape, grad.shape), dtype=probs.dtype, device=probs.device)
    inner = row_dot(probs, grad, out)
    return torch.sub(grad, inner, out=out).mul_(probs)


def sample_categorical(probs: Tensor) -> tuple[Tensor, Tensor]:
    """One draw from ``Cat(probs)`` per row: ``(one_hot, index)``, by inverse CDF.

    ``one_hot`` is exactly one-hot in ``probs``' dtype; ``index`` is ``(..., 1)``
    int64. One uniform ``u`` per row selects the first class whose cumulative
    probability reaches ``(1 − u)·total``; ``1 − u`` lies in ``(0, 1]``, so a class
    of zero probability (a masked logit) is never selected and the index never runs
    past the last class with positive probability.
    """
    uniform = torch.rand(probs.shape[:-1], dtype=probs.dtype, device=probs.device)
    if probs.shape[-1] == 2 and not torch.compiler.is_compiling():
        second = uniform < probs[..., 1]
        one_hot = torch.stack((~second, second), dim=-1).to(probs.dtype)
        return one_hot, second.unsqueeze(-1).long()
    cumulative = probs.cumsum(dim=-1)
    threshold = torch.rsub(uniform, 1.0).unsqueeze_(-1).mul_(cumulative[..., -1:])
    # The clamp only matters for NaN rows, which get through when validation is off.
    index = torch.searchsorted(cumulative, threshold).clamp_(max=probs.shape[-1] - 1)
    return torch.zeros_like(probs).scatter_(-1, index, 1.0), index


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


class InvalidLogitsError(ValueError):
    """Logits with no valid distribution: NaN, +inf, or a row all −inf (in training, often diverged weights)."""


def invalid_rows(probs: Tensor) -> Tensor:
    """Which rows of ``probs`` have no valid distribution: a boolean tensor ``probs.shape[:-1]``.

    :func:`softmax` turns a whole row into NaN when its logits contain NaN or
    +inf or are all −inf, so looking at the first class of each row is enough.
    """
    return torch.isnan(probs[..., 0])


def check_probabilities(probs: Tensor, estimator: str) -> None:
    """Raise :class:`InvalidLogitsError` naming the bad rows if any row of ``probs`` is NaN."""
    bad = invalid_rows(probs)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise InvalidLogitsError(
            f"{estimator}: {int(bad.sum())} row(s) of logits have no valid distribution "
            f"(first at index {first}). Each row needs at least one finite logit and "
            "no NaN or +inf; use -inf only to mask classes."
        )
