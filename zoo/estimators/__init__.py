"""Gradient estimators for categorical variables, by name.

>>> est = get_estimator("reinmax", tau=1.3)
>>> sample, probs = est(logits)                 # pathwise: one loss evaluation
>>> loss = est.objective(logits, f, num_samples)  # every estimator
>>> routing = get_estimator("sparsemixer")(router_logits)  # routers: a Mixture-of-Experts layer's choice

Each estimator class registers itself with :func:`register_estimator`: its entry's
options are the class's keyword arguments, its family (pathwise, score-function or
router) and constraints (a temperature range, binary variables only) are attributes of
the class. ``python -m zoo.estimators`` prints the registry as the README's table.
"""

from __future__ import annotations

from ._base import FAMILIES, Estimator, LossFn, PathwiseEstimator, ScoreFunctionEstimator
from ._categorical import InvalidLogitsError
from ._registry import (
    EstimatorEntry,
    estimator_entry,
    estimator_options,
    get_estimator,
    list_estimators,
    markdown_table,
    register_estimator,
)
from .exact import Exact
from .gumbel import GappedStraightThrough, GumbelRaoMonteCarlo, GumbelSoftmaxST
from .rodeo import RODEO
from .routers import Router, Routing, SoftMixture, SparseMixer, SwitchGate
from .score_function import DisARM, ReinforceLeaveOneOut
from .straight_through import ReinMax, StraightThrough

__all__ = [
    "FAMILIES",
    "RODEO",
    "DisARM",
    "Estimator",
    "EstimatorEntry",
    "Exact",
    "GappedStraightThrough",
    "GumbelRaoMonteCarlo",
    "GumbelSoftmaxST",
    "InvalidLogitsError",
    "LossFn",
    "PathwiseEstimator",
    "ReinMax",
    "ReinforceLeaveOneOut",
    "Router",
    "Routing",
    "ScoreFunctionEstimator",
    "SoftMixture",
    "SparseMixer",
    "StraightThrough",
    "SwitchGate",
    "estimator_entry",
    "estimator_options",
    "get_estimator",
    "list_estimators",
    "markdown_table",
    "register_estimator",
]
