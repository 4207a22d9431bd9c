"""GDAS (Dong & Yang, CVPR 2019): differentiable architecture search by sampling one operation an edge.

The supernet is the NATS-Bench topology network (C = 16, N = 5 by default) with
one architecture matrix α ``(6 edges, 5 operations)`` shared by all 15 cells. A
forward pass draws one operation per edge from the estimator (a sample shared by
the batch and the cells) and computes only that one; the estimator's surrogate
gradient carries the loss's sensitivity to every entry of α (see
:class:`~zoo.models.nats.network.SearchCell`). GDAS used the Gumbel-softmax
straight-through estimator; any pathwise estimator plugs in.

Training is the first-order bi-level alternation: at every step the weights take
an SGD step on a batch of the training half with a fresh sample, then α takes an
Adam step on a batch of the held-out half with a second fresh sample. Validation
scores the current genotype (the per-edge argmax of α) on the test split.

The temperature falls linearly over the epochs from ``tau`` (10) to ``tau_end``;
its default is the GDAS paper's 0.1, raised to the estimator's smallest allowed τ
when that is higher. ReinMax, whose τ must be ≥ 1, thus anneals from 10 to 1: the
same exploration at the start as GDAS's Gumbel-softmax, ending at τ = 1 where
ReinMax's second-order correction is what its derivation assumes (larger τ only
flattens the first-order term it corrects).
"""

from __future__ import annotations

import math
import shlex
import statistics
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from ._building import build_estimator, make_optimizer
from ._classification import Classifier
from ._compiling import PartCompiler
from ._heat_map import labelled_heat_map
from ._registry import Recipe, register_model
from .nats.genotype import EDGES, OPERATIONS, Genotype
from .nats.network import SearchCell, TopologyNetwork

#: GDAS's final temperature; an estimator with a higher lower bound ends at its bound.
GDAS_TAU_END = 0.1

Batch = tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]


@register_model("gdas", summary="the GDAS supernet searching the NATS-Bench topology space",
                data_family="nas-search", metric="accuracy", mode="max", estimator_families=("pathwise",),
                unused_parameters=True, recipe=Recipe(data="cifar10", max_epochs=100, batch_size=64),
                from_data=("in_channels", "num_classes"),
                small={"model_options": {"channels": 2, "cells_per_stage": 1}},
                host_reads_per_batch=4)  # its two architecture samples, and the guard's flag at each of its two steps
class GDASSearch(Classifier):
    """The GDAS supernet and its alternating weight and architecture steps (manual optimisation).

    Defaults follow NATS-Bench's GDAS: weights by SGD (lr 0.025, Nesterov momentum
    0.9, weight decay 5e-4, cosine to 1e-3 over the run, gradients clipped at norm
    5), α by Adam (lr 3e-4, betas (0.5, 0.999), weight decay 1e-3), batch 64, 100
    epochs (in :attr:`recipe`). ``in_channels`` and ``num_classes`` follow the data;
    ``train.py`` sets them.
    """

    def __init__(
        self,
        channels: int = 16,
        cells_per_stage: int = 5,
        in_channels: int = 3,
        num_classes: int = 10,
        estimator: str = "reinmax",
        tau: float = 10.0,
        tau_end: float | None = None,
        estimator_options: dict[str, Any] | None = None,
        lr: float = 0.025,
        lr_end: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        gradient_clip_norm: float = 5.0,
        arch_lr: float = 3e-4,
        arch_betas: tuple[float, float] = (0.5, 0.999),
        arch_weight_decay: float = 1e-3,
    ) -> None:
        super().__init__(num_classes)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.estimator = build_estimator(self.card, estimator, tau, estimator_options)
        self.tau_start = float(tau)
        self.tau_end = float(tau_end) if tau_end is not None else max(GDAS_TAU_END, self.estimator.min_tau)
        self.estimator.tau = self.tau_end  # the estimator's own range check names the fix
        self.estimator.tau = self.tau_start
        self.network = TopologyNetwork(SearchCell, channels, cells_per_stage, in_channels, num_classes, affine=False)
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(OPERATIONS)))

    @property
    def genotype(self) -> Genotype:
        """The architecture found so far: each edge's most likely operation."""
        return Genotype.from_alpha(self.alpha.detach())

    def sample(self) -> tuple[Tensor, list[int]]:
        """One operation per edge: the estimator's one-hot sample in training, α's argmax otherwise."""
        if self.training:
            weights, _ = self.estimator(self.alpha)
        else:
            weights = F.one_hot(self.alpha.argmax(-1), len(OPERATIONS)).to(self.alpha.dtype)
        return weights, weights.detach().argmax(-1).tolist()

    def forward(self, images: Tensor) -> Tensor:
        """Class logits of ``images`` under a fresh sample of the architecture."""
        return self.network(images, *self.sample())

    def compile_parts(self, compile: PartCompiler) -> None:
        """``--compile``: nothing of the network, which stays eager (the note says why)."""
        compile.leave_eager("gdas: the network stays eager. Each cell runs the operations the sample chose, read "
                            "on the host, so a compiled cell would be compiled again for each of its 5^6 choices; "
                            "its stem, head and residual blocks alone take a small share of a step and, compiled "
                            "apart, exceed torch's limit of 8 graphs a function.")

    def configure_optimizers(self) -> tuple[list[torch.optim.Optimizer], list[Any]]:
        hparams = self.hparams
        # Not fused: torch's fused SGD fails once parameters have momentum of different ages, as those of
        # operations sampled for the first time do.
        weights = make_optimizer("sgd", self.network.parameters(), hparams.lr, momentum=hparams.momentum,
                                 weight_decay=hparams.weight_decay, nesterov=True, fused=False)
        architecture = make_optimizer("adam", [self.alpha], hparams.arch_lr, betas=tuple(hparams.arch_betas),
                                      weight_decay=hparams.arch_weight_decay)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(weights, T_max=epochs, eta_min=hparams.lr_end)
        return [weights, architecture], [cosine]

    def on_train_start(self) -> None:
        self.on_train_epoch_start()  # a run resumed in mid-epoch gets no epoch start

    def on_train_epoch_start(self) -> None:
        epochs = self.trainer.max_epochs
        progress = self.current_epoch / (epochs - 1) if epochs and epochs > 1 else 1.0
        self.estimator.tau = self.tau_start + (self.tau_end - self.tau_start) * min(progress, 1.0)

    def training_step(self, batch: Batch, batch_index: int) -> None:
        (train_images, train_labels), (held_images, held_labels) = batch
        weight_optimizer, architecture_optimizer = self.optimizers()

        self.toggle_optimizer(weight_optimizer)  # α takes no gradient in the weight step
        logits = self(train_images)
        weight_loss = F.cross_entropy(logits, train_labels)
        weight_optimizer.zero_grad(set_to_none=True)
        self.manual_backward(weight_loss)
        weight_optimizer.step()  # clipped in on_before_optimizer_step
        self.untoggle_optimizer(weight_optimizer)

        self.toggle_optimizer(architecture_optimizer)  # and the weights none in the architecture step
        architecture_loss = F.cross_entropy(self(held_images), held_labels)
        architecture_optimizer.zero_grad(set_to_none=True)
        self.manual_backward(architecture_loss)
        architecture_optimizer.step()
        self.untoggle_optimizer(architecture_optimizer)

        self.record("train", logits, train_labels, weight_loss, **{"train/arch_loss": architecture_loss.detach()})

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Clip the weights' gradients: called once a loss scaler (16-mixed) has unscaled them."""
        if optimizer is self.trainer.optimizers[0]:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_norm,
                                gradient_clip_algorithm="norm")

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        self.lr_schedulers().step()
        self._log_architecture()

    def release_figure(self) -> np.ndarray:
        """softmax(α) as a labelled heat map, the figure ``zoo.release`` writes beside a release."""
        return alpha_image(self.alpha.detach().softmax(-1).tolist(), f"softmax(alpha): {self.genotype}")

    def on_fit_end(self) -> None:
        rank_zero_info(f"GDAS found {self.genotype}; train it from scratch with: {self.retraining_command()}")

    def retraining_command(self) -> str:
        """The ``train.py`` command that trains the found genotype from scratch on this search's data and size."""
        data = getattr(self.trainer.datamodule, "name", "DATA")
        command = ["python", "train.py", "--model", "nas-net", "--genotype", str(self.genotype), "--data", data]
        for option in ("channels", "cells_per_stage"):
            command += ["--model-arg", f"{option}={self.hparams[option]}"]
        return shlex.join(command)

    def _log_architecture(self) -> None:
        """The epoch's genotype, softmax(α) as a heat map, its mean entropy and τ, on TensorBoard.

        All of it comes from one copy of α on the host, the epoch's only read of it.
        """
        experiment = getattr(self.logger, "experiment", None)
        if not (self.trainer.is_global_zero and hasattr(experiment, "add_text")):
            return
        alpha = self.alpha.detach().tolist()
        probabilities = [softmax(row) for row in alpha]
        entropy = statistics.fmean(-sum(p * math.log(p) for p in row if p > 0) for row in probabilities)
        genotype = Genotype(tuple(OPERATIONS[row.index(max(row))] for row in alpha))  # argmax, first of ties
        epoch = self.current_epoch
        experiment.add_text("search/genotype", f"`{genotype}`", epoch)
        experiment.add_image("search/alpha_softmax", alpha_image(probabilities, f"softmax(alpha), epoch {epoch}"),
                             epoch, dataformats="HWC")
        experiment.add_scalar("search/alpha_entropy", entropy, epoch)
        experiment.add_scalar("train/tau", self.estimator.tau, epoch)  # τ changes once an epoch

    def logits_and_labels(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        images, labels = batch
        return self(images), labels


def softmax(row: Sequence[float]) -> list[float]:
    """``softmax`` of a few numbers on the host."""
    largest = max(row)
    exponentials = [math.exp(value - largest) for value in row]
    total = sum(exponentials)
    return [value / total for value in exponentials]


def alpha_image(probabilities: Sequence[Sequence[float]], title: str) -> np.ndarray:
    """softmax(α) ``(edges, operations)`` as a labelled heat map, operations down and edges across."""
    columns = [f"{source}->{target}" for target, source in EDGES]
    return labelled_heat_map(np.asarray(probabilities).T, OPERATIONS, columns, title)
