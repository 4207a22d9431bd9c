"""A model zoo for neural networks with discrete latent variables and pluggable
gradient estimators (ST, Gumbel-softmax, GST, GR-MCK, ReinMax, REINFORCE-LOO, DisARM).

Released weights: ``zoo.list_pretrained()`` and ``zoo.load_pretrained(name)``."""

from typing import Any

from . import estimators
from .estimators import get_estimator, list_estimators

__all__ = ["estimators", "get_estimator", "list_estimators", "list_pretrained", "load_pretrained"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The release functions bring in Lightning; load them when first asked for.
    if name in ("list_pretrained", "load_pretrained"):
        from . import pretrained

        return getattr(pretrained, name)
    raise AttributeError(f"module 'zoo' has no attribute {name!r}")
