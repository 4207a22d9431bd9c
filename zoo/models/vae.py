"""Variational autoencoders with discrete latent variables.

``CategoricalVAE`` is the paper's MNIST-VAE: L categorical latents of C classes, a
uniform prior, and a decoder that sees one-hot samples. The estimator (any name of
:func:`zoo.estimators.list_estimators`) turns the sampled reconstruction loss into
a gradient for the encoder; the KL term is analytic and gets its exact gradient.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from ..estimators import Estimator, estimator_options, get_estimator

STAGES = ("train", "val", "test")
TERMS = ("neg_elbo", "reconstruction", "kl")


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (not after)."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if index:
            layers.append(activation())
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


def build_estimator(name: str, tau: float, options: dict[str, Any] | None) -> Estimator:
    """``get_estimator`` with ``tau`` passed only to estimators that have a temperature."""
    options = dict(options or {})
    if "tau" in estimator_options(name):
        options.setdefault("tau", tau)
    return get_estimator(name, **options)


def make_optimizer(name: str, parameters, lr: float) -> torch.optim.Optimizer:
    optimizers = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}
    if name not in optimizers:
        raise ValueError(f"unknown optimizer {name!r}; valid optimizers: {', '.join(optimizers)}.")
    return optimizers[name](parameters, lr=lr)


class CategoricalVAE(L.LightningModule):
    """A VAE with ``latents`` categorical variables of ``categories`` classes each.

    Defaults are the paper's 10×30 ReinMax row: RAdam, lr 5e-4, τ 1.3. The loss is
    −ELBO per example: Σ_pixels BCE(decoder(z), x) + KL(q(z|x) ‖ uniform), averaged
    over the batch; ``num_samples`` samples of z per example (score-function
    estimators need at least 2).
    """

    #: What train.py's best-checkpoint callback watches, and in which direction.
    checkpoint_monitor = ("val/neg_elbo_epoch", "min")

    def __init__(
        self,
        categories: int = 10,
        latents: int = 30,
        hidden_sizes: Sequence[int] = (512, 256),
        estimator: str = "reinmax",
        tau: float = 1.3,
        estimator_options: dict[str, Any] | None = None,
        num_samples: int = 1,
        optimizer: str = "radam",
        lr: float = 5e-4,
        input_size: int = 784,
    ) -> None:
        super().__init__()
        if categories < 2 or latents < 1:
            raise ValueError(
                f"CategoricalVAE needs categories >= 2 and latents >= 1, got {categories} and {latents}."
            )
        hidden_sizes = [int(size) for size in hidden_sizes]  # stored as plain values
        self.save_hyperparameters()
        self.estimator = build_estimator(estimator, tau, estimator_options)
        code_size = latents * categories
        self.encoder = mlp([input_size, *hidden_sizes, code_size])
        self.decoder = mlp([code_size, *reversed(hidden_sizes), input_size])
        self.epoch_means = nn.ModuleDict(
            {f"{stage}_{term}": MeanMetric() for stage in STAGES for term in TERMS}
        )

    @property
    def code_shape(self) -> tuple[int, int]:
        return self.hparams.latents, self.hparams.categories

    def encode(self, images: Tensor) -> Tensor:
        """Logits of q(z | x): ``(B, latents, categories)``."""
        return self.encoder(images).unflatten(-1, self.code_shape)

    def decode(self, codes: Tensor) -> Tensor:
        """Bernoulli logits of the pixels for one-hot codes ``(..., latents, categories)``."""
        return self.decoder(codes.flatten(-2))

    def reconstruction_loss(self, images: Tensor, codes: Tensor) -> Tensor:
        """Σ_pixels BCE per code: codes ``(S, B, L, C)`` → losses ``(S, B)``."""
        pixel_logits = self.decode(codes)
        targets = images.expand_as(pixel_logits)
        return F.binary_cross_entropy_with_logits(pixel_logits, targets, reduction="none").sum(-1)

    def kl_to_uniform(self, logits: Tensor) -> Tensor:
        """KL(q ‖ uniform) per example: Σ_{l,c} q log q + L log C."""
        log_q = logits.log_softmax(-1)
        latents, categories = self.code_shape
        return (log_q.exp() * log_q).sum((-1, -2)) + latents * math.log(categories)

    def loss_terms(self, images: Tensor) -> dict[str, Tensor]:
        """−ELBO and its two terms, each averaged over the batch."""
        logits = self.encode(images)
        reconstruction = self.estimator.objective(
            logits, lambda codes: self.reconstruction_loss(images, codes), self.hparams.num_samples
        )
        kl = self.kl_to_uniform(logits).mean()
        return {"neg_elbo": reconstruction + kl, "reconstruction": reconstruction, "kl": kl}

    def _step(self, images: Tensor, stage: str) -> Tensor:
        terms = self.loss_terms(images)
        for term, value in terms.items():
            self.epoch_means[f"{stage}_{term}"].update(value.detach(), weight=images.shape[0])
        if stage == "train":
            self.log("train/neg_elbo", terms["neg_elbo"].detach(), prog_bar=True)
            self.log_dict({f"train/{term}": terms[term].detach() for term in TERMS[1:]})
        return terms["neg_elbo"]

    def _log_epoch_means(self, stage: str) -> None:
        """Log each term's epoch mean; ``compute`` already reduces across processes.

        Logged here rather than by passing the metrics to ``self.log`` every step,
        which costs Lightning about a millisecond per call.
        """
        for term in TERMS:
            mean = self.epoch_means[f"{stage}_{term}"]
            self.log(f"{stage}/{term}_epoch", mean.compute())
            mean.reset()

    def training_step(self, images: Tensor, batch_index: int) -> Tensor:
        return self._step(images, "train")

    def validation_step(self, images: Tensor, batch_index: int) -> None:
        self._step(images, "val")

    def test_step(self, images: Tensor, batch_index: int) -> None:
        self._step(images, "test")

    def on_train_epoch_end(self) -> None:
        self._log_epoch_means("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_means("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch_means("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.hparams.optimizer, self.parameters(), self.hparams.lr)

    @torch.no_grad()
    def reconstruct(self, images: Tensor) -> Tensor:
        """Pixel probabilities decoded from the most likely code of each image."""
        logits = self.encode(images)
        codes = F.one_hot(logits.argmax(-1), self.hparams.categories).to(images.dtype)
        return torch.sigmoid(self.decode(codes))

    @torch.no_grad()
    def generate(self, count: int) -> Tensor:
        """Pixel probabilities decoded from ``count`` codes drawn from the uniform prior."""
        latents, categories = self.code_shape
        index = torch.randint(categories, (count, latents), device=self.device)
        codes = F.one_hot(index, categories).to(self.dtype)
        return torch.sigmoid(self.decode(codes))

