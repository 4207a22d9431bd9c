"""Each training step reads at most its budget of tensor values on the host: on a GPU each read is a stall.

Counted in-process over 200 training steps (batches) of ``train.py`` at its default
settings, with validation off and small widths (the count does not depend on them).
The budget is one read a step, the non-finite guard's fused flag, plus Lightning's
reads of the values logged every 50 steps; ListOps may take one more, and GDAS reads
its two architecture samples and checks each of its two optimizer steps.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest

from tests.host_reads import CountDuringFit, HostReads
from tests.runs import model_arguments, write_images, write_listops
from zoo import train
from zoo.models import list_models

STEPS = 200
BUDGETS = {"vae": 1.1, "bvae": 1.1, "poly": 1.1, "nas-net": 1.1, "moe": 1.1, "listops": 2.1, "gdas": 4.1}
#: Batch sizes that make 200 steps one epoch of the data below (poly makes its own).
BATCH_SIZES = {"vae": 100, "bvae": 100, "poly": None, "listops": 16, "gdas": 2, "nas-net": 4, "moe": 4}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """Images for the VAEs and expressions for ListOps, enough that 200 steps are one epoch."""
    return (write_images(tmp_path_factory.mktemp("images"), 100 * STEPS + 100),
            write_listops(tmp_path_factory.mktemp("listops"), 16 * STEPS + 200))


class Batches(L.Callback):
    def __init__(self) -> None:
        self.count = 0

    def on_train_batch_end(self, *args) -> None:
        self.count += 1


@pytest.mark.parametrize("model", list_models())
def test_a_training_step_reads_at_most_its_budget_on_the_host(model, data, tmp_path):
    assert model in BUDGETS, f"give the new model {model!r} a host-read budget here"
    reads, batches = HostReads(), Batches()
    steps_per_batch = 2 if model == "gdas" else 1  # its weight and architecture steps
    with reads:
        train.main([*model_arguments(model, *data, BATCH_SIZES[model]), "--accelerator", "cpu", "--devices", "1",
                    "--max-steps", str(STEPS * steps_per_batch), "--output-dir", str(tmp_path),
                    "--trainer-arg", "limit_val_batches=0", "--trainer-arg", "enable_model_summary=false"],
                   callbacks=[batches, CountDuringFit(reads)])
    assert batches.count == STEPS
    per_step = reads.total / STEPS
    assert per_step <= BUDGETS[model], f"{per_step:.3f} reads a step; where: {reads.places.most_common(8)}"
