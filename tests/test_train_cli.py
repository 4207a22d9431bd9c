"""train.py as a user runs it, on small generated IDX files.

Most runs are in-process (``zoo.train.main`` with its output captured), which checks
the same exit statuses and messages without an interpreter start-up each; what needs
the process boundary (SIGKILL, SIGTERM) runs ``python train.py``. Runs on two
processes are in ``tests/test_launchers.py`` and ``tests/test_distributed.py``.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
import yaml

from callbacks.run_summary import read_summary, summary_line
from zoo import runs
from zoo import train as train_module
from zoo.estimators import list_estimators
from zoo.models import list_models

ROOT = Path(__file__).resolve().parents[1]
SMALL_MODEL = ["--latents", "3", "--categories", "4", "--model-arg", "hidden_sizes=[16, 8]"]


@pytest.fixture
def data_dir(tiny_mnist) -> Path:
    return tiny_mnist


def train(*arguments: str) -> subprocess.CompletedProcess:
    """``python train.py ARGUMENTS`` in this process: its exit status and what it printed."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            status = train_module.main(list(arguments))
        except SystemExit as exit:
            status = exit.code
    return subprocess.CompletedProcess(["train.py", *arguments], status, stdout.getvalue(), stderr.getvalue())


def small_run_arguments(data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return ["--data", "mnist", "--data-dir", str(data_dir), "--output-dir", str(output_dir), "--accelerator", "cpu",
            "--devices", "1", "--batch-size", "20", *SMALL_MODEL, *extra]


def small_run(data_dir: Path, output_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return train(*small_run_arguments(data_dir, output_dir, *extra))


def test_help_lists_models_estimators_and_data_sets():
    result = train("--help")
    assert result.returncode == 0
    for name in [*list_estimators(), "vae", "mnist", "fashion-mnist", "omniglot"]:
        assert name in result.stdout


def test_a_short_run_writes_config_events_and_checkpoints_then_resumes(data_dir, tmp_path):
    first = small_run(data_dir, tmp_path, "--max-steps", "2", "--estimator", "st", "--tau", "1.0")
    assert first.returncode == 0, first.stderr
    run = tmp_path / "vae-mnist-st" / "version_0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["estimator"] == "st" and config["tau"] == 1.0 and config["max_steps"] == 2
    assert config["model_options"] == {"hidden_sizes": [16, 8]} and "torch" in config["versions"]
    assert list(run.glob("events.out.tfevents.*"))
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 and last["optimizer_states"]
    summary = read_summary(run)
    assert summary["status"] == "finished" and summary["last"]["step"] == 2 and summary["sittings"] == 1
    assert summary["last"]["checkpoint"] == str(run / "checkpoints" / "last.ckpt") and summary["best"] is None
    assert summary_line(summary) in first.stdout and "summary: finished at step 2; val/neg_elbo_epoch" in first.stdout

    resumed = small_run(data_dir, tmp_path, "--max-steps", "5", "--estimator", "st", "--tau", "1.0",
                        "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert not (tmp_path / "vae-mnist-st" / "version_1").exists()  # continued in place
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 5
    assert sorted(path.name for path in (run / "checkpoints").glob("last*")) == ["last.ckpt"]
    assert last["optimizer_states"][0]["state"][0]["step"].item() == 5
    summary = read_summary(run)
    assert summary["last"]["step"] == 5 and summary["sittings"] == 2 and summary["timed_steps"] == 5


def test_the_bernoulli_vae_takes_its_recipe_from_the_model(data_dir, tmp_path):
    result = train("--model", "bvae", "--estimator", "disarm", "--data", "mnist", "--data-dir",
                   str(data_dir), "--output-dir", str(tmp_path), "--accelerator", "cpu", "--devices",
                   "1", "--batch-size", "10", "--val-size", "20", "--latents", "5", "--max-steps", "2",
                   "--model-arg", "hidden_sizes=[16]")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((tmp_path / "bvae-mnist-disarm" / "version_0" / "config.yaml").read_text())
    assert (config["binarize"], config["val_size"], config["max_epochs"]) == ("dynamic", 20, -1)
    assert (config["optimizer"], config["lr"], config["num_samples"], config["latents"]) == ("adam", 3e-4, 2, 5)
    assert "categories" not in config


def test_a_temperature_schedule_anneals_tau_to_its_end(data_dir, tmp_path):
    result = small_run(data_dir, tmp_path, "--estimator", "stgs", "--tau", "1.0", "--tau-schedule",
                       "exponential", "--tau-end", "0.25", "--tau-duration", "2", "--max-steps", "3",
                       "--trainer-arg", "log_every_n_steps=1")
    assert result.returncode == 0, result.stderr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "vae-mnist-stgs" / "version_0")).Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/tau")] == [(0, 1.0), (1, 0.5), (2, 0.25)]
    config = yaml.safe_load((tmp_path / "vae-mnist-stgs" / "version_0" / "config.yaml").read_text())
    assert (config["tau_schedule"], config["tau_end"], config["tau_duration"]) == ("exponential", 0.25, 2)


def test_the_polynomial_toy_runs_without_a_data_set(tmp_path):
    result = train("--model", "poly", "--pnorm", "3", "--max-steps", "4", "--output-dir", str(tmp_path),
                   "--accelerator", "cpu", "--devices", "1", "--model-arg", "variables=8")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((tmp_path / "poly-none-reinmax" / "version_0" / "config.yaml").read_text())
    assert (config["data"], config["pnorm"], config["num_samples"], config["lr"]) == ("none", 3.0, 64, 1e-3)
    last = torch.load(tmp_path / "poly-none-reinmax" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 4
    refused = train("--model", "poly", "--data", "mnist", "--output-dir", str(tmp_path))
    assert refused.returncode == 2 and "unknown data 'mnist' for model 'poly'; valid choices: none" in refused.stderr


def test_gradient_quality_is_logged_when_asked(data_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"grad_quality": {"num_samples": 4, "probe_batch_size": 3,
                                                       "estimators": ["st"]}}))
    result = small_run(data_dir, tmp_path, "--config", str(config), "--grad-quality-every", "2",
                       "--max-steps", "3")
    assert result.returncode == 0, result.stderr
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "vae-mnist-reinmax" / "version_0")).Reload()
    for estimator in ("reinmax", "st"):
        assert [e.step for e in events.Scalars(f"grad_quality/{estimator}/cosine")] == [0, 2]
    refused = small_run(data_dir, tmp_path, "--grad-quality-every", "2", "--max-steps", "1",
                        "--config", str(_yaml(tmp_path, {"grad_quality": {"samples": 4}})))
    assert refused.returncode == 2 and "bad grad_quality option" in refused.stderr


def _yaml(folder: Path, settings: dict) -> Path:
    path = folder / "settings.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def test_a_yaml_config_is_read_and_flags_override_it(data_dir, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"estimator": "stgs", "tau": 0.5, "max_steps": 1,
                                      "trainer": {"limit_val_batches": 1}}))
    result = small_run(data_dir, tmp_path, "--config", str(config), "--tau", "0.7")
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load((tmp_path / "vae-mnist-stgs" / "version_0" / "config.yaml").read_text())
    assert saved["tau"] == 0.7 and saved["trainer"] == {"limit_val_batches": 1}


def test_numbers_written_with_an_exponent_are_numbers_in_flags_and_config_files(tmp_path):
    """PyYAML (YAML 1.1) reads ``3e-4`` as a string, which reached the optimizer as one."""
    from zoo.settings import resolve

    config = tmp_path / "run.yaml"
    config.write_text("lr: 3e-4\nmodel_options:\n  arch_lr: 1E-3\n")
    settings = resolve({"model": "gdas", "model_args": ["weight_decay=5e-4", "channels=8"]}, config)
    assert settings.lr == 3e-4
    assert settings.model_options == {"arch_lr": 1e-3, "weight_decay": 5e-4, "channels": 8}
    assert resolve({"model_args": ["note=1e", "version=2"]}).model_options == {"note": "1e", "version": 2}


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--model", "vea"], f"unknown model 'vea'; valid models: {', '.join(list_models())}"),
        (["--estimator", "reinmx"], f"unknown estimator 'reinmx'; valid estimators: {', '.join(list_estimators())}"),
        (["--data", "cifar"], "unknown data 'cifar' for model 'vae'; valid choices: mnist, fashion-mnist, omniglot"),
        (["--estimator", "reinmax", "--tau", "0.5"], "reinmax: temperature tau=0.5 is out of range"),
        (["--batch-size", "0"], "--batch-size: must be a positive integer, got 0"),
        (["--trainer-arg", "max_epocs=3"], "bad trainer setting"),
        (["--model-arg", "widths=3"], "bad model option for 'vae'"),
        (["--model-arg", "learnable_prior=maybe"], "model option 'learnable_prior' of 'vae' must be true or false, "
                                                   "got 'maybe'"),
        (["--model", "bvae"], "model 'bvae' has no setting 'categories'; its settings: --latents, --tau"),
        (["--val-size", "-1"], "--val-size: must be an integer >= 0, got -1"),
        (["--pnorm", "3"], "model 'vae' has no setting 'pnorm'"),
        (["--estimator", "reinforce", "--num-samples", "1"], "reinforce: num_samples must be an integer >= 2"),
        (["--tau", "2", "--tau-schedule", "linear", "--tau-end", "0.5", "--tau-duration", "4"],
         "reinmax: temperature tau=0.5 is out of range"),
        (["--tau-schedule", "linear"], "a linear temperature schedule needs an end temperature and a duration"),
        (["--trainer-arg", "oops"], "--trainer-arg expects KEY=VALUE, got 'oops'"),
        (["--resume", "missing.ckpt"], "--resume: no checkpoint file at missing.ckpt"),
        (["--run-name", "a/b"], "--run-name: must be a folder name without '/'"),
    ],
)
def test_bad_input_gets_one_clear_line_and_a_non_zero_exit(arguments, message, data_dir, tmp_path):
    result = small_run(data_dir, tmp_path, "--max-steps", "1", *arguments)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_diverging_weights_stop_training_with_the_step_named(data_dir, tmp_path):
    result = small_run(data_dir, tmp_path, "--max-steps", "20", "--optimizer", "adam", "--lr", "1e30")
    assert result.returncode == 1
    assert "training stopped: non-finite values at step" in result.stderr and "Lower the learning rate" in result.stderr
    assert "Traceback" not in result.stderr
    summary = read_summary(tmp_path / "vae-mnist-reinmax" / "version_0")
    assert summary["status"] == "diverged" and "non-finite values at step" in summary["reason"]
    assert f"summary: diverged at step {summary['last']['step']} (" in result.stdout


#: 60 images in batches of 5: 12 steps an epoch; dynamic binarization and the estimator both draw
#: from the random stream. How often checkpoints are written does not change the weights.
UNINTERRUPTED = ("--max-steps", "600", "--batch-size", "5", "--binarize", "dynamic",
                 "--trainer-arg", "enable_progress_bar=false")


@pytest.fixture(scope="module")
def uninterrupted(tiny_mnist, tmp_path_factory) -> dict:
    """The last checkpoint of a run that nothing interrupted."""
    output = tmp_path_factory.mktemp("uninterrupted")
    result = small_run(tiny_mnist, output, *UNINTERRUPTED)
    assert result.returncode == 0, result.stderr
    return torch.load(output / "vae-mnist-reinmax" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)


def assert_same_weights_and_optimizer(final: dict, expected: dict) -> None:
    assert final["global_step"] == expected["global_step"] == 600
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(final["state_dict"][name], tensor), name
    for index, state in expected["optimizer_states"][0]["state"].items():
        assert torch.equal(final["optimizer_states"][0]["state"][index]["exp_avg"], state["exp_avg"])


def test_a_run_killed_mid_epoch_resumes_to_the_weights_of_an_uninterrupted_run(data_dir, tmp_path, uninterrupted):
    """SIGKILL in a later epoch; ``--resume auto`` continues from the last epoch-end checkpoint.

    With the default period (1,000 steps) the checkpoints are those written at each
    epoch's end, after validation: what a VAE run on Fashion-MNIST (600 steps an
    epoch) has to resume from.
    """
    settings = UNINTERRUPTED
    command = [sys.executable, "train.py", *small_run_arguments(data_dir, tmp_path, *settings)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = tmp_path / "vae-mnist-reinmax" / "version_0" / "checkpoints" / "last.ckpt"
    killed_after = None
    while process.poll() is None:
        if last.exists() and (step := torch.load(last, weights_only=True)["global_step"]) >= 60:
            process.send_signal(signal.SIGKILL)
            killed_after = step
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    assert killed_after is not None and process.returncode == -signal.SIGKILL, "the run ended before it was killed"
    assert torch.load(last, weights_only=True)["global_step"] < 600

    resumed = small_run(data_dir, tmp_path, *settings, "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_weights_and_optimizer(torch.load(last, weights_only=True), uninterrupted)


def test_sigterm_writes_a_checkpoint_at_the_step_it_arrived_and_exits_143(data_dir, tmp_path, uninterrupted):
    """A scheduler's SIGTERM: the run saves the step it is at, exits 143, and the requeued command continues it."""
    settings = (*UNINTERRUPTED, "--resume", "auto")  # one command for every launch of the job
    command = [sys.executable, "train.py", *small_run_arguments(data_dir, tmp_path, *settings)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "vae-mnist-reinmax" / "version_0" / "checkpoints" / "last.ckpt"
    while process.poll() is None and not last.exists():  # the first epoch's end: step 12
        time.sleep(0.02)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    saved = torch.load(last, weights_only=True)["global_step"]
    assert 12 < saved < 600 and saved % 12, "the checkpoint is of the step SIGTERM arrived at, not an epoch's end"
    assert f"stopped by SIGTERM after step {saved}" in stderr and "--resume auto" in stderr
    assert "Traceback" not in stderr
    summary = read_summary(last.parent.parent)
    assert summary["status"] == "preempted" and summary["last"]["step"] == saved
    assert f"stopped by SIGTERM after step {saved}" in summary["reason"]

    resumed = small_run(data_dir, tmp_path, *settings)
    assert resumed.returncode == 0, resumed.stderr
    summary = read_summary(last.parent.parent)
    assert summary["status"] == "finished" and summary["sittings"] == 2 and summary["last"]["step"] == 600
    assert_same_weights_and_optimizer(torch.load(last, weights_only=True), uninterrupted)


def test_runs_in_one_process_get_versions_of_their_own_and_leave_no_version_behind(data_dir, tmp_path):
    """The version main() hands to the processes it starts lives only as long as its run: a notebook's second
    run is version_1, not the first run's folder again."""
    for version in range(2):
        assert small_run(data_dir, tmp_path, "--max-steps", "1", "--seed", str(version)).returncode == 0
        assert (tmp_path / "vae-mnist-reinmax" / f"version_{version}" / "checkpoints" / "last.ckpt").is_file()
        assert runs.RUN_VERSION_VARIABLE not in os.environ


def test_the_same_command_and_seed_give_the_same_weights(data_dir, tmp_path):
    weights = []
    for name in ("first", "second"):
        result = small_run(data_dir, tmp_path / name, "--max-steps", "12", "--batch-size", "5", "--binarize",
                           "dynamic", "--trainer-arg", "enable_progress_bar=false")
        assert result.returncode == 0, result.stderr
        weights.append(torch.load(tmp_path / name / "vae-mnist-reinmax" / "version_0" / "checkpoints" / "last.ckpt",
                                  weights_only=True)["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])


def test_a_corrupt_checkpoint_is_refused_and_kept(data_dir, tmp_path):
    assert small_run(data_dir, tmp_path, "--max-steps", "3").returncode == 0  # one epoch: a best too
    last = tmp_path / "vae-mnist-reinmax" / "version_0" / "checkpoints" / "last.ckpt"
    truncated = last.read_bytes()[:1000]
    last.write_bytes(truncated)
    result = small_run(data_dir, tmp_path, "--max-steps", "2", "--resume", "auto")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"cannot resume from {last}: it is corrupt" in result.stderr
    assert "--resume PATH" in result.stderr and "best-epoch=" in result.stderr
    assert last.read_bytes() == truncated  # nothing is overwritten
    assert not list(last.parent.glob("last-v*.ckpt"))


def test_a_checkpoint_of_other_settings_is_refused_before_its_run_is_touched(data_dir, tmp_path):
    """Resuming a checkpoint with settings that build another network names what differs, and the run's
    config.yaml stays the record of how it was trained."""
    assert small_run(data_dir, tmp_path, "--max-steps", "2").returncode == 0
    run = tmp_path / "vae-mnist-reinmax" / "version_0"
    config = (run / "config.yaml").read_text()
    last = run / "checkpoints" / "last.ckpt"
    result = small_run(data_dir, tmp_path, "--max-steps", "4", "--latents", "5", "--resume", str(last))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"cannot resume from {last}: its weights do not fit the model these settings build" in result.stderr
    assert "It was trained with latents=3 (here 5)" in result.stderr and "config.yaml" in result.stderr
    assert (run / "config.yaml").read_text() == config
    assert [path.name for path in run.parent.iterdir()] == ["version_0"]


def test_weights_alone_are_not_a_checkpoint_to_resume(tmp_path):
    from zoo.models import PolynomialProgramming

    model = PolynomialProgramming(variables=4)
    weights = tmp_path / "weights.pt"
    torch.save(model.state_dict(), weights)
    with pytest.raises(ValueError, match="not a checkpoint of this project .no state_dict in it"):
        runs.check_checkpoint(weights, model)


@pytest.mark.parametrize("content, reason", [
    (b"not a checkpoint\n", "Unsupported operand"),
    ({"state_dict": {}, "arguments": argparse.Namespace(lr=1.0)}, "Unsupported global: GLOBAL argparse.Namespace"),
])
def test_an_unloadable_checkpoint_names_the_unpicklers_reason_not_torchs_advice(tmp_path, content, reason):
    """torch's refusal advises loading with weights_only=False, which would run the file's code."""
    from zoo.models import PolynomialProgramming

    path = tmp_path / "last.ckpt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ValueError, match="not a checkpoint of this project") as refusal:
        runs.check_checkpoint(path, PolynomialProgramming(variables=4))
    assert f"the weights-only unpickler refused it: {reason}" in str(refusal.value)
    assert "weights_only" not in str(refusal.value)


def test_an_unwritable_output_directory_is_named(data_dir, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = small_run(data_dir, blocker / "runs", "--max-steps", "1")
    assert result.returncode != 0 and "cannot write to the output directory" in result.stderr
    assert "--output-dir" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("refused", [("--resume", "missing.ckpt"), ("--estimator", "disarm")])
def test_a_refused_command_leaves_no_folders(data_dir, tmp_path, refused):
    output = tmp_path / "new" / "runs"
    assert train(*small_run_arguments(data_dir, output, "--max-steps", "1"), *refused).returncode == 2
    assert list(tmp_path.iterdir()) == []


def test_a_corrupt_idx_file_is_named(data_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in data_dir.iterdir():
        (broken / path.name).write_bytes(path.read_bytes())
    images = broken / "train-images-idx3-ubyte.gz"
    import gzip

    images.write_bytes(gzip.compress(gzip.decompress(images.read_bytes())[:1000]))
    result = small_run(broken, tmp_path / "out", "--max-steps", "1")
    assert result.returncode != 0 and "train-images-idx3-ubyte.gz" in result.stderr
    assert "Traceback" not in result.stderr
