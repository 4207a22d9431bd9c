"""What a model shows the gradient-quality callback: logits and a loss of samples."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..estimators import LossFn


@dataclass
class GradientProbe:
    """The discrete part of a model at its current parameters, for one probe batch.

    ``logits`` are ``(*batch, *variables, C)``, detached. ``loss`` maps one-hot
    samples ``(S, *extra, *batch, *variables, C)`` to per-example losses
    ``(S, *extra, *batch)`` for any leading ``extra`` axes, so that many gradient
    estimates can be drawn in one call. The gradient assessed is that of the mean
    over the batch of ``E_z[loss(z)]`` with respect to ``logits``.
    ``expected_loss``, when the model knows it in closed form, maps logits to that
    mean exactly, which gives the exact reference gradient at any size.
    ``event_ndim`` is the number of variable axes.
    """

    logits: Tensor
    loss: LossFn
    event_ndim: int = 1
    expected_loss: Callable[[Tensor], Tensor] | None = None
