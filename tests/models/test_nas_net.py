"""NASNet: a genotype's network, trained from scratch."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader

from zoo.models import NASNet
from zoo.models.nats import EXAMPLE, GenotypeError
from zoo.models.nats.network import FixedCell


def trainer(**options) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **options)


def test_nas_net_rejects_a_malformed_genotype():
    with pytest.raises(GenotypeError, match="valid operations: none, skip_connect"):
        NASNet("|conv~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|")


def test_nas_net_builds_the_genotypes_operations_with_affine_batch_norm():
    model = NASNet(EXAMPLE, channels=4, cells_per_stage=1)
    cells = [layer for layer in model.network.layers if isinstance(layer, FixedCell)]
    assert len(cells) == 3
    names = [type(edge).__name__ for edge in cells[0].edges]
    assert names == ["ReLUConvBN"] * 3 + ["Identity"] + ["ReLUConvBN"] * 2
    assert all(module.affine for module in model.modules() if isinstance(module, torch.nn.BatchNorm2d))


def test_a_small_nas_net_learns_separable_classes_well_above_chance():
    torch.manual_seed(0)
    templates = torch.randn(4, 3, 16, 16)
    labels = torch.arange(4).repeat(64)
    images = templates[labels] + 0.8 * torch.randn(len(labels), 3, 16, 16)
    loader = DataLoader(list(zip(images.split(32), labels.split(32))), batch_size=None)
    model = NASNet(EXAMPLE, channels=4, cells_per_stage=1, num_classes=4, lr=0.05)
    trainer(max_epochs=6).fit(model, train_dataloaders=loader)
    model.eval()
    with torch.no_grad():
        accuracy = (model(images).argmax(-1) == labels).float().mean().item()
    assert accuracy > 0.8, accuracy
    assert math.isclose(model.trainer.optimizers[0].param_groups[0]["lr"], 0.0, abs_tol=1e-12)  # cosine to 0
