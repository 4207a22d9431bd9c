"""The zoo's LightningModules, registered by the short names ``train.py --model`` accepts.

Importing this package imports every model file, which registers its model with its
:class:`ModelCard`; :func:`list_models` and :func:`model_card` read the registry.
"""

from ._building import OPTIMIZERS, build_estimator, estimator_at, make_optimizer
from ._compiling import PartCompiler
from ._logging import logger_writes_this_step
from ._probe import GradientProbe
from ._registry import ModelCard, Recipe, get_model_class, list_models, markdown_table, model_card, register_model
from .gdas import GDASSearch
from .listops import ListOpsParser
from .moe import MoEClassifier
from .nas_net import NASNet
from .poly import PolynomialProgramming
from .vae import BernoulliVAE, CategoricalVAE, DiscreteVAE

__all__ = [
    "BernoulliVAE",
    "CategoricalVAE",
    "DiscreteVAE",
    "GDASSearch",
    "GradientProbe",
    "ListOpsParser",
    "MoEClassifier",
    "ModelCard",
    "NASNet",
    "OPTIMIZERS",
    "PartCompiler",
    "PolynomialProgramming",
    "Recipe",
    "build_estimator",
    "estimator_at",
    "get_model_class",
    "list_models",
    "logger_writes_this_step",
    "make_optimizer",
    "markdown_table",
    "model_card",
    "register_model",
]
