"""What every model does the same way: build its estimator and its optimizer."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from ..estimators import Estimator, estimator_options, get_estimator

if TYPE_CHECKING:
    from ._registry import ModelCard


def build_estimator(card: ModelCard, name: str, tau: float, options: dict[str, Any] | None) -> Estimator:
    """The estimator of a model of ``card``, its family checked first."""
    card.check_estimator(name)
    return estimator_at(name, tau, options)


def estimator_at(name: str, tau: float, options: dict[str, Any] | None) -> Estimator:
    """``get_estimator`` with ``tau`` passed only to estimators that have a temperature."""
    options = dict(options or {})
    if "tau" in estimator_options(name):
        options.setdefault("tau", tau)
    return get_estimator(name, **options)


def make_optimizer(name: str, parameters: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Optimizer:
    optimizers = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}
    if name not in optimizers:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(optimizers)}.")
    return optimizers[name](parameters, lr=lr)
