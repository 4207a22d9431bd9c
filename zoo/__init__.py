"""A model zoo for neural networks with discrete latent variables and pluggable
gradient estimators (ST, Gumbel-softmax, GST, GR-MCK, ReinMax, REINFORCE-LOO, DisARM)."""

from . import estimators
from .estimators import get_estimator, list_estimators

__all__ = ["estimators", "get_estimator", "list_estimators"]
__version__ = "0.1.0"
