"""The estimator registry: a class registers under a name, with the options its entry fixes.

    @register_estimator("gst-1.0", gap=1.0, summary="...")
    @register_estimator("gst-p", gap=None, summary="...")
    class GappedStraightThrough(PathwiseEstimator): ...

An entry's options are the class's keyword arguments that the entry leaves free;
its family and constraints are read from the class, so nothing is written twice.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ._base import FAMILIES, Estimator, PathwiseEstimator

EstimatorClass = TypeVar("EstimatorClass", bound=type[Estimator])


@dataclass(frozen=True)
class EstimatorEntry:
    """One registered name: the class it builds and the constructor arguments it fixes."""

    name: str
    estimator_class: type[Estimator]
    summary: str  # what it samples and what gradient it gives, in one line (the README's table)
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return self.estimator_class.family

    def options(self) -> dict[str, Any]:
        """The keyword arguments a user may set, with their defaults."""
        parameters = inspect.signature(self.estimator_class).parameters.values()
        return {parameter.name: parameter.default for parameter in parameters
                if parameter.kind is parameter.KEYWORD_ONLY and parameter.name not in self.fixed}

    def constraints(self) -> list[str]:
        """The class's limits in words: its temperature range, binary variables only."""
        found = []
        if issubclass(self.estimator_class, PathwiseEstimator):
            bound = "≥" if self.estimator_class.tau_inclusive else ">"
            found.append(f"τ {bound} {self.estimator_class.min_tau:g}")
        if self.estimator_class.binary_only:
            found.append("binary variables only")
        return found

    def build(self, **options: Any) -> Estimator:
        unknown = sorted(set(options) - set(self.options()))
        if unknown:
            raise ValueError(f"unknown option(s) {', '.join(unknown)} for estimator {self.name!r}; "
                             f"valid options: {', '.join(self.options()) or '(none)'}.")
        return self.estimator_class(**self.fixed, **options)


_REGISTRY: dict[str, EstimatorEntry] = {}


def register_estimator(name: str, *, summary: str, **fixed: Any) -> Callable[[EstimatorClass], EstimatorClass]:
    """Register an :class:`Estimator` class as ``name``; ``fixed`` are constructor arguments of this entry."""

    def decorate(estimator_class: EstimatorClass) -> EstimatorClass:
        if name in _REGISTRY:
            raise ValueError(f"an estimator named {name!r} is already registered")
        if estimator_class.family not in FAMILIES:
            raise ValueError(f"estimator {name!r}: family {estimator_class.family!r} is not one of "
                             f"{', '.join(FAMILIES)}; derive from PathwiseEstimator, ScoreFunctionEstimator or Router.")
        if not isinstance(inspect.getattr_static(estimator_class, "name"), property):
            if "name" in vars(estimator_class):
                raise ValueError(f"estimator {name!r}: {estimator_class.__name__} is registered already as "
                                 f"{estimator_class.name!r}; a class with several entries names them by a name "
                                 "property of its options.")
            estimator_class.name = name
        _REGISTRY[name] = EstimatorEntry(name, estimator_class, summary, dict(fixed))
        return estimator_class

    return decorate


def list_estimators(family: str | None = None) -> list[str]:
    """Registered names, sorted; ``family`` may be one of ``FAMILIES``."""
    if family not in (None, *FAMILIES):
        raise ValueError(f"family must be None or one of {', '.join(map(repr, FAMILIES))}, got {family!r}.")
    return sorted(name for name, entry in _REGISTRY.items() if family in (None, entry.family))


def estimator_entry(name: str) -> EstimatorEntry:
    if name not in _REGISTRY:
        raise ValueError(f"unknown estimator {name!r}; valid estimators: {', '.join(list_estimators())}.")
    return _REGISTRY[name]


def estimator_options(name: str) -> dict[str, Any]:
    """The options of ``name`` with their defaults."""
    return estimator_entry(name).options()


def get_estimator(name: str, **options: Any) -> Estimator:
    """Build the estimator registered as ``name`` with ``options``."""
    return estimator_entry(name).build(**options)


def markdown_table() -> str:
    """The registry as the README's estimator table."""
    rows = ["| name | family | what it does | options |", "|---|---|---|---|"]
    for name in list_estimators():
        entry = estimator_entry(name)
        options = ", ".join(f"`{option}`" for option in entry.options() if option != "validate_args") or "—"
        limits = "; ".join(entry.constraints())
        rows.append(f"| `{name}` | {entry.family} | {entry.summary} | {options}{f' ({limits})' if limits else ''} |")
    return "\n".join(rows)
