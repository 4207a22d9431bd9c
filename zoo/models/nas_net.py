"""A network of the NATS-Bench topology space built from one genotype, trained from scratch.

This is how NATS-Bench scores an architecture, and how a genotype found by
:class:`~zoo.models.gdas.GDASSearch` is checked without the benchmark's files: the
same skeleton with every cell fixed to the genotype and ordinary (affine) BN,
trained with SGD (lr 0.1, Nesterov momentum 0.9, weight decay 5e-4, cosine to 0
per epoch), batch 256, 200 epochs. The architecture has no discrete latent
variable, so no estimator is involved.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._building import make_optimizer
from ._classification import Classifier
from ._compiling import PartCompiler
from ._registry import Recipe, register_model
from .nats.genotype import Genotype
from .nats.network import FixedCell, TopologyNetwork


@register_model("nas-net", summary="a NATS-Bench genotype's network, trained from scratch",
                data_family="classification", metric="accuracy", mode="max", estimator_families=(),
                recipe=Recipe(data="cifar10", max_epochs=200, batch_size=256), from_data=("in_channels", "num_classes"),
                small={"genotype": "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|"
                                   "nor_conv_3x3~2|", "model_options": {"channels": 2, "cells_per_stage": 1}})
class NASNet(Classifier):
    """Classify images with the topology network of ``genotype`` (a NATS-Bench string)."""

    def __init__(
        self,
        genotype: str,
        channels: int = 16,
        cells_per_stage: int = 5,
        in_channels: int = 3,
        num_classes: int = 10,
        lr: float = 0.1,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
    ) -> None:
        super().__init__(num_classes)
        architecture = Genotype.parse(genotype)
        self.save_hyperparameters()
        self.network = TopologyNetwork(lambda width: FixedCell(architecture, width), channels, cells_per_stage,
                                       in_channels, num_classes)

    @property
    def genotype(self) -> Genotype:
        return Genotype.parse(self.hparams.genotype)

    def forward(self, images: Tensor) -> Tensor:
        return self.network(images)

    def logits_and_labels(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        images, labels = batch
        return self(images), labels

    def compile_parts(self, compile: PartCompiler) -> None:
        """``--compile``: the whole network, one graph."""
        compile(self.network)

    def configure_optimizers(self) -> dict[str, Any]:
        hparams = self.hparams
        optimizer = make_optimizer("sgd", self.parameters(), hparams.lr, momentum=hparams.momentum,
                                   weight_decay=hparams.weight_decay, nesterov=True)
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}
