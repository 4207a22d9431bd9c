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


#: The optimizers a model's ``optimizer`` setting names.
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "radam": torch.optim.RAdam, "sgd": torch.optim.SGD}
#: Those torch has a fused implementation of: one kernel updates every parameter.
FUSED = (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD)


def make_optimizer(name: str, parameters: Iterable[torch.nn.Parameter], lr: float,
                   **options: Any) -> torch.optim.Optimizer:
    """The optimizer ``name`` of ``parameters``, fused where torch has a fused implementation for their device.

    A fused update is the same arithmetic as the default (foreach) one up to rounding,
    in one kernel instead of a dozen passes over the parameters: on a CPU a fused Adam
    update takes a fifth of the time (``benchmarks/RESULTS.md``).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(OPTIMIZERS)}.")
    optimizer_class = OPTIMIZERS[name]
    parameters = list(parameters)
    if optimizer_class in FUSED and all(parameter.device.type in fused_devices() for parameter in parameters):
        options.setdefault("fused", True)
    optimizer = optimizer_class(parameters, lr=lr, **options)
    if options.get("fused"):
        optimizer.register_load_state_dict_post_hook(stay_fused)
    return optimizer


def stay_fused(optimizer: torch.optim.Optimizer) -> None:
    """Keep a fused optimizer fused when it loads the state of an unfused one (a checkpoint from before the zoo
    fused its updates): the loaded options would unfuse it while it still tells a loss scaler that it unscales
    and skips steps itself, which only the fused update does."""
    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = True, None


def fused_devices() -> list[str]:
    """The device types torch's fused optimizers run on."""
    from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

    return _get_fused_kernels_supported_devices()
