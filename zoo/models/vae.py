"""Variational autoencoders with discrete latent variables.

``CategoricalVAE`` is the paper's MNIST-VAE: L categorical latents of C classes and
a uniform prior. ``BernoulliVAE`` is its 2×200 comparison with the REINFORCE family:
200 binary latents, a Bernoulli(0.5) prior and dynamically binarized pixels. Both
share :class:`DiscreteVAE`: the estimator (any name of
:func:`zoo.estimators.list_estimators`) turns the sampled reconstruction loss into a
gradient for the encoder, and the KL term is analytic and gets its exact gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._building import build_estimator, make_optimizer
from ._compiling import PartCompiler
from ._logging import logger_writes_this_step
from ._metrics import WeightedMeans
from ._probe import GradientProbe
from ._registry import Recipe, register_model

STAGES = ("train", "val", "test")
TERMS = ("neg_elbo", "reconstruction", "kl")


def mlp(sizes: Sequence[int], activation: Callable[[], nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (not after)."""
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if index:
            layers.append(activation())
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


class DiscreteVAE(L.LightningModule):
    """What every VAE of the zoo shares: the loss, its logging, sampling, the optimizer.

    A subclass builds its networks, calls ``save_hyperparameters()`` (which must
    include ``num_samples``, ``optimizer`` and ``lr``) and defines :meth:`encode`
    (images → logits ``(B, L, C)``) and :meth:`decode` (one-hot codes
    ``(..., L, C)`` → pixel logits). The loss is −ELBO per example,
    Σ_pixels BCE(decode(z), x) + KL(q(z|x) ‖ prior), averaged over the batch, with
    ``num_samples`` evaluations of the decoder per example.
    """

    def __init__(
        self,
        code_shape: tuple[int, int],
        estimator: str,
        tau: float,
        estimator_options: dict[str, Any] | None,
        num_samples: int,
        learnable_prior: bool,
    ) -> None:
        super().__init__()
        self.code_shape = code_shape
        self.estimator = build_estimator(self.card, estimator, tau, estimator_options)
        self.estimator.check_num_samples(num_samples)  # fail now, not at the first step
        self.estimator.check_categories(code_shape[-1])
        prior_logits = torch.zeros(code_shape)  # uniform: Bernoulli(0.5) when C = 2
        if learnable_prior:
            self.prior_logits = nn.Parameter(prior_logits)
        else:
            self.register_buffer("prior_logits", prior_logits, persistent=False)
        self.epoch_means = nn.ModuleDict({f"{stage}_terms": WeightedMeans(TERMS) for stage in STAGES})

    def encode(self, images: Tensor) -> Tensor:
        """Logits of q(z | x): ``(B, latents, categories)``."""
        raise NotImplementedError

    def decode(self, codes: Tensor) -> Tensor:
        """Bernoulli logits of the pixels for one-hot codes ``(..., latents, categories)``."""
        raise NotImplementedError

    def reconstruction_loss(self, images: Tensor, codes: Tensor) -> Tensor:
        """Σ_pixels BCE per code: codes ``(S, B, L, C)`` → losses ``(S, B)``."""
        pixel_logits = self.decode(codes)
        targets = images.expand_as(pixel_logits)
        return F.binary_cross_entropy_with_logits(pixel_logits, targets, reduction="none").sum(-1)

    def kl_to_prior(self, logits: Tensor) -> Tensor:
        """KL(q ‖ prior) per example: Σ_{l,c} q (log q − log p)."""
        log_q = logits.log_softmax(-1)
        log_prior = self.prior_logits.log_softmax(-1)
        return (log_q.exp() * (log_q - log_prior)).sum((-1, -2))

    def loss_terms(self, images: Tensor) -> dict[str, Tensor]:
        """−ELBO and its two terms, each averaged over the batch."""
        logits = self.encode(images)
        reconstruction = self.estimator.objective(
            logits, lambda codes: self.reconstruction_loss(images, codes), self.hparams.num_samples
        )
        kl = self.kl_to_prior(logits).mean()
        return {"neg_elbo": reconstruction + kl, "reconstruction": reconstruction, "kl": kl}

    def compile_parts(self, compile: PartCompiler) -> None:
        """``--compile``: the loss and its terms, from the images to the KL, as one graph."""
        self.loss_terms = compile(self.loss_terms)

    def gradient_probe(self, images: Tensor) -> GradientProbe:
        """The encoder's logits for ``images`` and the reconstruction loss of codes.

        The KL term is left out: its gradient is analytic, not estimated.
        """
        with torch.no_grad():
            logits = self.encode(images)
        return GradientProbe(logits, lambda codes: self.reconstruction_loss(images, codes))

    def _step(self, images: Tensor, stage: str) -> Tensor:
        terms = self.loss_terms(images)
        self.epoch_means[f"{stage}_terms"].update(torch.stack([terms[term] for term in TERMS]), images.shape[0])
        if stage == "train" and self._trainer is not None and logger_writes_this_step(self.trainer):
            self.log_dict({f"train/{term}": terms[term].detach() for term in TERMS})
        return terms["neg_elbo"]

    def _log_epoch_means(self, stage: str) -> None:
        """Log each term's epoch mean; ``compute`` already reduces across processes.

        Logged here rather than by passing the metric to ``self.log`` every step,
        which costs Lightning about a millisecond per call. ``sync_dist`` averages
        values every process already holds, once an epoch: without it Lightning
        warns that an epoch-level value is not synchronised.
        """
        means = self.epoch_means[f"{stage}_terms"]
        for term, value in means.compute().items():
            self.log(f"{stage}/{term}_epoch", value, sync_dist=True)
        means.reset()

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
        codes = F.one_hot(logits.argmax(-1), self.code_shape[1]).to(images.dtype)
        return torch.sigmoid(self.decode(codes))

    @torch.no_grad()
    def generate(self, count: int) -> Tensor:
        """Pixel probabilities decoded from ``count`` codes drawn from the prior."""
        probs = self.prior_logits.softmax(-1).expand(count, *self.code_shape)
        index = torch.multinomial(probs.reshape(-1, self.code_shape[1]), 1).view(count, -1)
        codes = F.one_hot(index, self.code_shape[1]).to(self.dtype)
        return torch.sigmoid(self.decode(codes))


@register_model("vae", summary="categorical VAE, the paper's MNIST-VAE (10 categories x 30 latents)",
                data_family="images", metric="neg_elbo_epoch", mode="min",
                recipe=Recipe(data="mnist", max_epochs=160),
                small={"latents": 3, "categories": 4, "model_options": {"hidden_sizes": [16, 8]}})
class CategoricalVAE(DiscreteVAE):
    """A VAE with ``latents`` categorical variables of ``categories`` classes each.

    Defaults are the paper's 10×30 ReinMax row: RAdam, lr 5e-4, τ 1.3, on grey-level
    pixels. The decoder sees the flattened one-hot code. ``num_samples`` samples of
    z per example (score-function estimators need at least 2).
    """

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
        learnable_prior: bool = False,
    ) -> None:
        if categories < 2 or latents < 1:
            raise ValueError(
                f"CategoricalVAE needs categories >= 2 and latents >= 1, got {categories} and {latents}."
            )
        super().__init__(
            (latents, categories), estimator, tau, estimator_options, num_samples, learnable_prior
        )
        hidden_sizes = [int(size) for size in hidden_sizes]  # stored as plain values
        self.save_hyperparameters()
        code_size = latents * categories
        self.encoder = mlp([input_size, *hidden_sizes, code_size])
        self.decoder = mlp([code_size, *reversed(hidden_sizes), input_size])

    def encode(self, images: Tensor) -> Tensor:
        return self.encoder(images).unflatten(-1, self.code_shape)

    def decode(self, codes: Tensor) -> Tensor:
        return self.decoder(codes.flatten(-2))


@register_model("bvae", summary="Bernoulli VAE, the paper's 2x200 comparison with the REINFORCE family",
                data_family="images", metric="neg_elbo_epoch", mode="min",
                recipe=Recipe(data="mnist", max_steps=1_000_000, binarize="dynamic", val_size=10_000),
                small={"latents": 4, "val_size": 10, "model_options": {"hidden_sizes": [16, 8]}})
class BernoulliVAE(DiscreteVAE):
    """The paper's 2×200 VAE: ``latents`` binary variables, LeakyReLU(0.3) networks.

    The encoder (784→200→200→200) gives one logit η per latent; the estimators see
    two-class logits ``[0, η]`` (so ``softmax`` gives ``P(z=1) = σ(η)``) and the
    decoder (200→200→200→784) sees the bits ``z``. The prior is Bernoulli(0.5), or a
    learned Bernoulli per latent with ``learnable_prior``. ``num_samples`` K is the
    number of decoder evaluations per example and step: score-function estimators
    use K samples, pathwise ones average K independent single-sample losses.
    Defaults are the paper's ReinMax settings (Adam, lr 3e-4, τ 1.1, K = 2).
    """

    def __init__(
        self,
        latents: int = 200,
        hidden_sizes: Sequence[int] = (200, 200),
        estimator: str = "reinmax",
        tau: float = 1.1,
        estimator_options: dict[str, Any] | None = None,
        num_samples: int = 2,
        optimizer: str = "adam",
        lr: float = 3e-4,
        input_size: int = 784,
        learnable_prior: bool = False,
    ) -> None:
        if latents < 1:
            raise ValueError(f"BernoulliVAE needs latents >= 1, got {latents}.")
        super().__init__((latents, 2), estimator, tau, estimator_options, num_samples, learnable_prior)
        hidden_sizes = [int(size) for size in hidden_sizes]
        self.save_hyperparameters()
        activation = lambda: nn.LeakyReLU(0.3)  # noqa: E731
        self.encoder = mlp([input_size, *hidden_sizes, latents], activation)
        self.decoder = mlp([latents, *reversed(hidden_sizes), input_size], activation)

    def encode(self, images: Tensor) -> Tensor:
        logit_one = self.encoder(images)
        return torch.stack((torch.zeros_like(logit_one), logit_one), dim=-1)

    def decode(self, codes: Tensor) -> Tensor:
        return self.decoder(codes[..., 1])
