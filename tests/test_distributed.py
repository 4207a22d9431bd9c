"""Several processes, however Lightning comes to use them: every model trains, and a NaN stops them all.

Two CPU processes (gloo) stand in for two GPUs: the strategy, the sharding of the
data, the all-reduced step flags and the record of the global batch are the same.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.runs import small_run
from zoo import build, train
from zoo.models import list_models, model_card

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--trainer-arg", "enable_progress_bar=false", "--trainer-arg", "enable_model_summary=false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def run(command: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def one_model_per_data_family() -> list[str]:
    """The models whose runs on several processes differ: each data family shards and batches in its own way."""
    return list({model_card(model).data_family: model for model in reversed(list_models())}.values())


@pytest.mark.parametrize("model", one_model_per_data_family())
def test_a_model_of_every_data_family_trains_on_two_processes_without_naming_a_strategy(model, data, tmp_path):
    check_two_processes(small_run(model, data, batch_size=4), tmp_path)


def check_two_processes(model_arguments: list[str], tmp_path: Path, program: tuple[str, ...] = ("train.py",)) -> None:
    """A run of ``program`` on two CPU processes trains, and records the global batch it had."""
    result = run([*program, *model_arguments, "--accelerator", "cpu", "--devices", "2", "--max-steps", "4",
                  "--output-dir", str(tmp_path), "--trainer-arg", "limit_val_batches=1", *QUIET])
    assert result.returncode == 0, result.stderr[-3000:]
    (config_file,) = tmp_path.glob("*/version_0/config.yaml")
    config = yaml.safe_load(config_file.read_text())
    per_process = config["batch_size"]
    assert (config["processes"], config["global_batch_size"]) == (2, 2 * per_process)
    assert f"global batch: {2 * per_process} ({per_process} per process x 2 processes)" in result.stdout


@pytest.mark.parametrize("strategy", ["auto", "ddp", "ddp_spawn", "ddp_fork"])
def test_a_model_with_unused_parameters_gets_them_found_whatever_ddp_strategy_is_asked(strategy, tmp_path):
    config = train.parse_settings(
        ["--model", "gdas", "--data", "synthetic", "--accelerator", "cpu", "--devices", "2", "--strategy", strategy,
         "--output-dir", str(tmp_path)])
    model = build.build_model(config)
    trainer = build.build_trainer(config, tmp_path / "version_0", model)
    assert trainer.world_size == 2
    assert trainer.strategy._ddp_kwargs["find_unused_parameters"] is True


NAN_ON_RANK_ONE = textwrap.dedent('''
    """train.py, with the encoder's logits turning NaN at step 3 on rank 1 only."""
    import os
    import sys

    import torch

    sys.path.insert(0, os.getcwd())
    from zoo import train
    from zoo.models import CategoricalVAE

    encode = CategoricalVAE.encode

    def encode_with_nan_on_rank_one(self, images):
        logits = encode(self, images)
        if self.training and self.global_rank == 1 and self.global_step == 3:
            logits = logits * float("nan")
        return logits

    CategoricalVAE.encode = encode_with_nan_on_rank_one
    sys.exit(train.main())
''')


def test_a_nan_on_one_of_two_processes_stops_both_at_that_step(data, tmp_path):
    """Without the all-reduced flag, rank 1 would stop alone and leave rank 0 waiting in a collective."""
    script = tmp_path / "nan_on_rank_one.py"
    script.write_text(NAN_ON_RANK_ONE)
    result = run([str(script), *small_run("vae", data, batch_size=4), "--accelerator", "cpu",
                  "--devices", "2", "--max-steps", "20", "--output-dir", str(tmp_path / "runs"), *QUIET], timeout=60)
    assert result.returncode == 1, result.stderr[-3000:]
    # Each process says it stopped, at the same step, and why: rank 1's logits (and so the loss) on both.
    assert result.stderr.count("training stopped: non-finite values at step 3 (epoch 0): the loss is nan") == 2
    assert result.stderr.count("the estimator met logits with no valid distribution") == 2
    assert "Traceback" not in result.stderr


def test_a_sigterm_to_one_of_two_processes_stops_both_at_one_step_with_its_checkpoint(data, tmp_path):
    """A scheduler may signal one process only: the guard's summed flag carries it to the other."""
    command = [sys.executable, "train.py", *small_run("vae", data, batch_size=4), "--accelerator", "cpu",
               "--devices", "2", "--max-steps", "100000", "--checkpoint-every", "5", "--output-dir", str(tmp_path),
               *QUIET]
    launcher = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "vae-mnist-reinmax" / "version_0" / "checkpoints" / "last.ckpt"
    while launcher.poll() is None and not last.exists():  # both processes are training
        time.sleep(0.02)
    (worker,) = subprocess.run(["pgrep", "-P", str(launcher.pid)], capture_output=True, text=True).stdout.split()
    os.kill(int(worker), signal.SIGTERM)  # rank 1, started by Lightning; rank 0 hears nothing
    _, stderr = launcher.communicate(timeout=120)
    assert launcher.returncode == 143, stderr[-3000:]
    step = torch.load(last, weights_only=True)["global_step"]
    assert f"stopped by SIGTERM after step {step};" in stderr
    assert f"stopped by a signal to another process after step {step};" in stderr
    assert "Traceback" not in stderr
