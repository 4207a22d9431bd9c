"""Each training step reads at most its budget of tensor values on the host: on a GPU each read is a stall.

Counted in-process over 200 training steps (batches) of ``train.py`` at its default
settings, with validation off and small widths (the count does not depend on them).
The budget is one read a step, the non-finite guard's fused flag, plus Lightning's
reads of the values logged every 50 steps; ListOps may take one more, and GDAS reads
its two architecture samples and checks each of its two optimizer steps.
"""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import pytest
import torch

import train
from datamodules.idx import write_idx
from datamodules.listops.expressions import OPERATORS, model_tokens, to_text, value
from datamodules.listops.files import write_lines
from tests.host_reads import CountDuringFit, HostReads
from zoo.models import list_models

STEPS = 200
BUDGETS = {"vae": 1.1, "bvae": 1.1, "poly": 1.1, "nas-net": 1.1, "listops": 2.1, "gdas": 4.1}
GENOTYPE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
NAS = ["--data", "synthetic", "--model-arg", "channels=2", "--model-arg", "cells_per_stage=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Enough data that 200 steps are one epoch: images for the VAEs, expressions for ListOps."""
    folder = tmp_path_factory.mktemp("host-reads")
    generator = torch.Generator().manual_seed(0)
    for prefix, count in (("train", 100 * STEPS + 100), ("t10k", 100)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte",
                  torch.randint(256, (count, 28, 28), generator=generator, dtype=torch.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", torch.randint(10, (count,), generator=generator,
                                                                        dtype=torch.uint8))
    rng = random.Random(0)
    for split, count in (("train", 16 * STEPS + 200), ("valid", 16), ("test", 16)):
        trees = [(rng.choice(OPERATORS), [rng.randrange(10) for _ in range(rng.randint(2, 5))]) for _ in range(count)]
        write_lines(folder / f"{split}.tsv", [(value(tree), " ".join(model_tokens(to_text(tree)))) for tree in trees])
    return folder


def arguments(model: str, data: Path) -> list[str]:
    """Default settings but for size; batch sizes that make 200 steps fit in one epoch."""
    return {
        "vae": ["--data", "mnist", "--data-dir", str(data)],
        "bvae": ["--data", "mnist", "--data-dir", str(data), "--val-size", "100"],
        "poly": [],
        "listops": ["--data-dir", str(data), "--model-arg", "hidden_size=16"],
        "gdas": [*NAS, "--batch-size", "2"],
        "nas-net": [*NAS, "--batch-size", "4", "--genotype", GENOTYPE],
    }[model]


class Batches(L.Callback):
    def __init__(self) -> None:
        self.count = 0

    def on_train_batch_end(self, *args) -> None:
        self.count += 1


@pytest.mark.parametrize("model", list_models())
def test_a_training_step_reads_at_most_its_budget_on_the_host(model, data, tmp_path, monkeypatch):
    assert model in BUDGETS, f"give the new model {model!r} a host-read budget here"
    reads, batches = HostReads(), Batches()
    build_trainer = train.build_trainer

    def counting(config, run, module):
        trainer = build_trainer(config, run, module)
        trainer.callbacks += [batches, CountDuringFit(reads)]
        return trainer

    monkeypatch.setattr(train, "build_trainer", counting)
    steps_per_batch = 2 if model == "gdas" else 1  # its weight and architecture steps
    with reads:
        train.main(["--model", model, *arguments(model, data), "--accelerator", "cpu", "--devices", "1",
                    "--max-steps", str(STEPS * steps_per_batch), "--output-dir", str(tmp_path),
                    "--trainer-arg", "limit_val_batches=0", "--trainer-arg", "enable_model_summary=false"])
    assert batches.count == STEPS
    per_step = reads.total / STEPS
    assert per_step <= BUDGETS[model], f"{per_step:.3f} reads a step; where: {reads.places.most_common(8)}"
