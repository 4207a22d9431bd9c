"""Each training step reads at most its budget of tensor values on the host: on a GPU each read is a stall.

Counted in-process over 200 training batches of ``train.py`` at its default settings,
with validation off and small widths (the count does not depend on them). The
budget is the model card's ``host_reads_per_batch`` (one for most models: the
non-finite guard's fused flag), plus Lightning's reads of the values logged every 50
steps. Several processes keep the same budget: the guard's flag is summed over them in
the same read.
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
from tests.runs import small_run
from zoo import train
from zoo.models import list_models, model_card

BATCHES = 200
#: Lightning reads the values logged every 50 steps (log_every_n_steps): a few reads each time.
LOGGING_ALLOWANCE = 0.1


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


class StopAfter(L.Callback):
    """Counts the training batches and stops training after ``batches`` of them."""

    def __init__(self, batches: int) -> None:
        self.batches, self.count = batches, 0

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        self.count += 1
        trainer.should_stop = self.count >= self.batches


@pytest.mark.parametrize("model", list_models())
def test_a_training_step_reads_at_most_its_budget_on_the_host(model, data, tmp_path):
    check_host_reads(model, small_run(model, data, examples=4 * BATCHES + 20), tmp_path)


def check_host_reads(model: str, model_arguments: list[str], tmp_path: Path) -> None:
    """``BATCHES`` training batches of the run ``model_arguments`` read at most the card's budget a batch."""
    reads, batches = HostReads(), StopAfter(BATCHES)
    with reads:
        train.main([*model_arguments, "--batch-size", "2", "--accelerator", "cpu", "--devices", "1",
                    "--max-epochs", "-1", "--max-steps", "-1", "--output-dir", str(tmp_path),
                    "--trainer-arg", "limit_val_batches=0", "--trainer-arg", "enable_model_summary=false",
                    "--trainer-arg", "enable_progress_bar=false"], callbacks=[batches, CountDuringFit(reads)])
    assert batches.count == BATCHES
    per_batch = reads.total / BATCHES
    budget = model_card(model).host_reads_per_batch + LOGGING_ALLOWANCE
    assert per_batch <= budget, f"{per_batch:.3f} reads a batch; where: {reads.places.most_common(8)}"


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
        [sys.executable, str(script), str(report_folder), *small_run("vae", data, 4020, batch_size=10),
         "--accelerator", "cpu",
         "--devices", "2", "--max-steps", str(BATCHES), "--output-dir", str(tmp_path / "runs"),
         "--trainer-arg", "limit_val_batches=0", "--trainer-arg", "enable_model_summary=false",
         "--trainer-arg", "enable_progress_bar=false"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = [json.loads(path.read_text()) for path in report_folder.iterdir()]
    assert [report["steps"] for report in reports] == [BATCHES, BATCHES]
    for report in reports:
        repeated = {place: count for place, count in report["places"].items() if count > BATCHES // 10}
        assert sum(repeated.values()) <= BATCHES, f"reads made again and again: {repeated}"
