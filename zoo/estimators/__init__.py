"""Gradient estimators for categorical variables, by name.

>>> est = get_estimator("reinmax", tau=1.3)
>>> sample, probs = est(logits)                 # pathwise: one loss evaluation
>>> loss = est.objective(logits, f, num_samples)  # every estimator

Each registered entry is a short function whose keyword arguments are the
estimator's options; :func:`get_estimator` rejects any other option by name.
"""

from __future__ import annotations

import inspect
from typing import Callable

from ._base import Estimator, LossFn, PathwiseEstimator, ScoreFunctionEstimator
from ._categorical import InvalidLogitsError
from .exact import Exact
from .gumbel import GappedStraightThrough, GumbelRaoMonteCarlo, GumbelSoftmaxST
from .rodeo import RODEO
from .score_function import DisARM, ReinforceLeaveOneOut
from .straight_through import ReinMax, StraightThrough

__all__ = [
    "Estimator",
    "InvalidLogitsError",
    "LossFn",
    "PathwiseEstimator",
    "ScoreFunctionEstimator",
    "estimator_options",
    "get_estimator",
    "list_estimators",
    "register_estimator",
]

_REGISTRY: dict[str, Callable[..., Estimator]] = {}


def register_estimator(name: str) -> Callable[[Callable[..., Estimator]], Callable[..., Estimator]]:
    """Register a factory whose keyword-only arguments are the estimator's options."""

    def decorate(factory: Callable[..., Estimator]) -> Callable[..., Estimator]:
        if name in _REGISTRY:
            raise ValueError(f"an estimator named {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_estimators(kind: str | None = None) -> list[str]:
    """Registered names, sorted; ``kind`` may be ``"pathwise"`` or ``"score-function"``."""
    if kind not in (None, "pathwise", "score-function"):
        raise ValueError(f"kind must be None, 'pathwise' or 'score-function', got {kind!r}.")
    names = sorted(_REGISTRY)
    if kind is None:
        return names
    wanted = PathwiseEstimator if kind == "pathwise" else ScoreFunctionEstimator
    return [name for name in names if issubclass(_product_class(name), wanted)]


def estimator_options(name: str) -> dict[str, object]:
    """The options of ``name`` with their defaults."""
    factory = _lookup(name)
    return {
        parameter.name: parameter.default
        for parameter in inspect.signature(factory).parameters.values()
    }


def get_estimator(name: str, **options: object) -> Estimator:
    """Build the estimator registered as ``name`` with ``options``."""
    valid = estimator_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(unknown)} for estimator {name!r}; "
            f"valid options: {', '.join(valid) or '(none)'}."
        )
    return _REGISTRY[name](**options)


def _lookup(name: str) -> Callable[..., Estimator]:
    if name not in _REGISTRY:
        raise ValueError(
            f"unknown estimator {name!r}; valid estimators: {', '.join(sorted(_REGISTRY))}."
        )
    return _REGISTRY[name]


def _product_class(name: str) -> type:
    return inspect.signature(_lookup(name), eval_str=True).return_annotation


# The entries. Defaults follow the paper; see docs/estimators.md for the maths.


@register_estimator("st")
def st(*, tau: float = 1.0, validate_args: bool = True) -> StraightThrough:
    return StraightThrough(tau=tau, validate_args=validate_args)


@register_estimator("reinmax")
def reinmax(*, tau: float = 1.0, validate_args: bool = True) -> ReinMax:
    return ReinMax(tau=tau, validate_args=validate_args)


@register_estimator("stgs")
def stgs(*, tau: float = 1.0, validate_args: bool = True) -> GumbelSoftmaxST:
    return GumbelSoftmaxST(tau=tau, validate_args=validate_args)


@register_estimator("gst-1.0")
def gst_1(*, tau: float = 1.0, validate_args: bool = True) -> GappedStraightThrough:
    return GappedStraightThrough(gap=1.0, tau=tau, validate_args=validate_args)


@register_estimator("gst-p")
def gst_p(*, tau: float = 1.0, validate_args: bool = True) -> GappedStraightThrough:
    return GappedStraightThrough(gap=None, tau=tau, validate_args=validate_args)


@register_estimator("grmck")
def grmck(
    *,
    num_gumbel_samples: int = 100,
    chunk_size: int | None = None,
    tau: float = 1.0,
    validate_args: bool = True,
) -> GumbelRaoMonteCarlo:
    return GumbelRaoMonteCarlo(
        num_gumbel_samples=num_gumbel_samples,
        chunk_size=chunk_size,
        tau=tau,
        validate_args=validate_args,
    )


@register_estimator("reinforce")
def reinforce(*, validate_args: bool = True) -> ReinforceLeaveOneOut:
    return ReinforceLeaveOneOut(validate_args=validate_args)


@register_estimator("disarm")
def disarm(*, validate_args: bool = True) -> DisARM:
    return DisARM(validate_args=validate_args)


@register_estimator("rodeo")
def rodeo(*, hidden_size: int = 100, validate_args: bool = True) -> RODEO:
    return RODEO(hidden_size=hidden_size, validate_args=validate_args)


@register_estimator("exact")
def exact(
    *, event_ndim: int = 1, max_configurations: int = 1 << 16, validate_args: bool = True
) -> Exact:
    return Exact(
        event_ndim=event_ndim, max_configurations=max_configurations, validate_args=validate_args
    )
