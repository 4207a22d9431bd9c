"""The zoo's LightningModules, by the short names ``train.py --model`` accepts."""

from __future__ import annotations

import lightning as L

from ._probe import GradientProbe
from .gdas import GDASSearch
from .listops import ListOpsParser
from .nas_net import NASNet
from .poly import PolynomialProgramming
from .vae import BernoulliVAE, CategoricalVAE, DiscreteVAE

MODELS: dict[str, type[L.LightningModule]] = {
    "vae": CategoricalVAE,
    "bvae": BernoulliVAE,
    "poly": PolynomialProgramming,
    "listops": ListOpsParser,
    "gdas": GDASSearch,
    "nas-net": NASNet,
}


def list_models() -> list[str]:
    return sorted(MODELS)


def get_model_class(name: str) -> type[L.LightningModule]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}.")
    return MODELS[name]


__all__ = [
    "BernoulliVAE",
    "CategoricalVAE",
    "DiscreteVAE",
    "GDASSearch",
    "GradientProbe",
    "ListOpsParser",
    "MODELS",
    "NASNet",
    "PolynomialProgramming",
    "get_model_class",
    "list_models",
]
