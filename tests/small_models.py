"""Small models and data for the tests of models and callbacks: the smallest VAE each estimator accepts."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader

from zoo.estimators import estimator_entry
from zoo.models import BernoulliVAE, CategoricalVAE

INPUT_SIZE = 784

VAES = {"vae": CategoricalVAE, "bvae": BernoulliVAE}


def small_vae(estimator: str, model: str = "vae", **overrides) -> CategoricalVAE | BernoulliVAE:
    """A VAE of a few small latents, at the smallest setting ``estimator`` declares it accepts."""
    declared = estimator_entry(estimator).estimator_class
    settings = dict(latents=3, hidden_sizes=(16, 8), estimator=estimator, num_samples=declared.min_num_samples)
    if "categories" in VAES[model].card.arguments:  # the Bernoulli VAE's are binary
        settings["categories"] = 2 if declared.binary_only else 4
    settings.update(overrides)
    return VAES[model](**settings)


def images(batch: int = 6) -> torch.Tensor:
    return torch.rand(batch, INPUT_SIZE, generator=torch.Generator().manual_seed(0))


def loader(count: int, batch: int) -> DataLoader:
    """Batches of images as plain tensors, as the image DataModule yields them."""
    return DataLoader(images(count), batch_size=batch)


def quiet_trainer(tmp_path, **settings) -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, **settings)


class RecordingLogger(L.pytorch.loggers.Logger):
    """Keeps every ``log_metrics`` call: (step, metrics)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, dict[str, float]]] = []

    name = "recording"
    version = 0

    def log_metrics(self, metrics, step=None) -> None:
        self.calls.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass
