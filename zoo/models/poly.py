"""The paper's polynomial-programming toy: a test bed where everything is exact.

``variables`` binary variables ``z_i`` with ``P(z_i = 1) = softmax(θ_i)_0`` and the
loss ``f(z) = mean_i |z_i − target|^p``. The expected loss and its gradient have
closed forms, so the training curve is the exact objective rather than a noisy
estimate of it, and the optimum ``z ≡ 0`` (loss ``target^p`` for a target below ½)
is known. Defaults: the paper's 128 variables, target 0.45, 64 samples a step,
Adam lr 1e-3, τ = 1, 8000 steps.

``replicas`` trains that many independent copies at once (logits
``(replicas, variables, 2)``, each copy its own example of the estimator's batch and
its own Adam coordinates): a sweep over seeds in one process at the cost of one run.
Each replica's exact expected loss is logged as ``train/expected_loss/replica_R``.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor, nn

from ._building import build_estimator, make_optimizer
from ._compiling import PartCompiler
from ._logging import logger_writes_this_step
from ._metrics import WeightedMeans
from ._probe import GradientProbe
from ._registry import Recipe, register_model

TERMS = ("loss", "expected_loss")


@register_model("poly", summary="the polynomial toy: minimise E[mean |z - target|^p], exact gradients known",
                data_family="none", metric="expected_loss_epoch", mode="min", monitor_stage="train",
                recipe=Recipe(data="none", max_steps=8000), small={"model_options": {"variables": 4}},
                replicas_option="replicas")
class PolynomialProgramming(L.LightningModule):
    """Minimise ``E_z[mean_i |z_i − target|^pnorm]`` over the logits ``θ (replicas, variables, 2)``."""

    def __init__(
        self,
        variables: int = 128,
        pnorm: float = 2.0,
        target: float = 0.45,
        estimator: str = "reinmax",
        tau: float = 1.0,
        estimator_options: dict[str, Any] | None = None,
        num_samples: int = 64,
        optimizer: str = "adam",
        lr: float = 1e-3,
        init_scale: float = 0.01,
        replicas: int = 1,
    ) -> None:
        super().__init__()
        if variables < 1 or replicas < 1 or not pnorm > 0 or not 0 <= target <= 1:
            raise ValueError(
                "PolynomialProgramming needs variables >= 1, replicas >= 1, pnorm > 0 and "
                f"0 <= target <= 1, got {variables}, {replicas}, {pnorm} and {target}."
            )
        self.save_hyperparameters()
        self.estimator = build_estimator(self.card, estimator, tau, estimator_options)
        self.estimator.check_num_samples(num_samples)
        self.logits = nn.Parameter(torch.empty(replicas, variables, 2).uniform_(-init_scale, init_scale))
        self.epoch_means = WeightedMeans(TERMS)

    def loss(self, samples: Tensor) -> Tensor:
        """``f`` per sample: one-hot samples ``(S, replicas, variables, 2)`` → ``(S, replicas)``;
        class 0 is z = 1."""
        ones = samples[..., 0]
        return (ones - self.hparams.target).abs().pow(self.hparams.pnorm).mean(-1)

    def expected_losses(self, logits: Tensor | None = None) -> Tensor:
        """``E_z[f(z)]`` of each replica in closed form (at ``logits``, default the model's)."""
        target, pnorm = self.hparams.target, self.hparams.pnorm
        q = (self.logits if logits is None else logits).softmax(-1)[..., 0]
        return (q * (1 - target) ** pnorm + (1 - q) * target**pnorm).mean(-1)

    def expected_loss(self, logits: Tensor | None = None) -> Tensor:
        """The replicas' mean expected loss; its autograd gradient is the exact gradient."""
        return self.expected_losses(logits).mean()

    def gradient_probe(self, batch: Any = None) -> GradientProbe:
        """The logits, the loss, and the closed form that gives the exact reference."""
        return GradientProbe(self.logits.detach(), self.loss, expected_loss=self.expected_loss)

    @property
    def optimum(self) -> float:
        """The smallest expected loss: every ``z_i`` at the value nearer the target."""
        target, pnorm = self.hparams.target, self.hparams.pnorm
        return min(target, 1 - target) ** pnorm

    def objective(self) -> Tensor:
        """The sampled loss, whose gradient is the estimator's estimate.

        Summed over replicas, so that each replica's gradient is that of a run of its own.
        """
        return self.estimator.objective(self.logits, self.loss, self.hparams.num_samples) * self.hparams.replicas

    def compile_parts(self, compile: PartCompiler) -> None:
        """``--compile``: the sampled loss, the estimator's samples included, as one graph."""
        self.objective = compile(self.objective)

    def training_step(self, batch: Any, batch_index: int) -> Tensor:
        objective = self.objective()
        loss = objective.detach() / self.hparams.replicas
        with torch.no_grad():
            expected = self.expected_loss()
        self.epoch_means.update(torch.stack((loss, expected)), 1)
        if logger_writes_this_step(self.trainer):
            self.log_dict({"train/loss": loss, "train/expected_loss": expected})
            if self.hparams.replicas > 1:  # each replica is a seed of its own: a study reports their spread
                self.log_dict({f"train/expected_loss/replica_{index}": value
                               for index, value in enumerate(self.expected_losses().detach())})
        return objective

    def on_train_epoch_end(self) -> None:
        for term, value in self.epoch_means.compute().items():
            self.log(f"train/{term}_epoch", value, sync_dist=True)  # see vae._log_epoch_means
        self.epoch_means.reset()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer(self.hparams.optimizer, self.parameters(), self.hparams.lr)
