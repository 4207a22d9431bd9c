"""Each training step reads at most its budget of tensor values on the host: on a GPU each read is a stall.

Counted in-process over 200 training steps (batches) of ``train.py`` at its default
settings, with validation off and small widths (the count does not depend on them).
The budget is one read a step, the non-finite guard's fused flag, plus Lightning's
reads of the values logged every 50 steps; ListOps may take one more, and GDAS reads
its two architecture samples and checks each of its two optimizer steps. Several
processes keep the same budget: the guard's flag is summed over them in the same read.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
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


COUNT_ON_EACH_PROCESS = textwrap.dedent('''
    """train.py with the folder to report in first: each process writes its host reads by place and its steps."""
    import json
    import os
    import sys

    import lightning as L

    sys.path.insert(0, os.getcwd())
    from tests.host_reads import CountDuringFit, HostReads
    from zoo import train

    class Batches(L.Callback):
        count = 0

        def on_train_batch_end(self, *args):
            self.count += 1

    reads, batches = HostReads(), Batches()
    with reads:
        status = train.main(sys.argv[2:], callbacks=[batches, CountDuringFit(reads)])
    report = {"steps": batches.count, "places": reads.places}  # a file each: long lines on one pipe interleave
    with open(os.path.join(sys.argv[1], f"{os.getpid()}.json"), "w") as file:
        json.dump(report, file)
    sys.exit(status)
''')


def test_two_processes_read_once_a_step_as_one_does(data, tmp_path):
    """Each of two processes (gloo, standing in for two GPUs) reads once a step: the guard's flag, summed over
    them. Set-up reads (the seeds' and Lightning's broadcasts) come once a run; the loop is the models' common part."""
    script, report_folder = tmp_path / "count_reads.py", tmp_path / "reports"
    script.write_text(COUNT_ON_EACH_PROCESS)
    report_folder.mkdir()
    result = subprocess.run(
        [sys.executable, str(script), str(report_folder), *model_arguments("vae", *data, 50), "--accelerator", "cpu",
         "--devices", "2", "--max-steps", str(STEPS), "--output-dir", str(tmp_path / "runs"),
         "--trainer-arg", "limit_val_batches=0", "--trainer-arg", "enable_model_summary=false",
         "--trainer-arg", "enable_progress_bar=false"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(path.read_text()) for path in report_folder.iterdir()]
    assert [report["steps"] for report in reports] == [STEPS, STEPS]
    for report in reports:
        repeated = {place: count for place, count in report["places"].items() if count > STEPS // 10}
        assert sum(repeated.values()) <= STEPS, f"reads made again and again: {repeated}"
