"""Resuming: from every kind of checkpoint, every model ends with the weights of an uninterrupted run.

The runs are in-process train.py runs of two short epochs on small data. The
uninterrupted run keeps a copy of each checkpoint as it is written: the periodic
one in mid-epoch, the one written at the first epoch's end (after validation) and
the best; each is resumed in a fresh folder, as is a run that ``--max-steps``
stopped in mid-epoch, and every resumed run must end bit-identical to the
uninterrupted one: weights, optimizer state, learning-rate schedules and step. A run trained for a number
of steps rather than epochs is resumed from its first epoch's end too, and must
not run that epoch's end again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from tests.runs import small_run
from zoo import runs as run_folders
from zoo import train
from zoo.models import list_models, model_card
from zoo.settings import Settings

QUIET = ["--trainer-arg", "enable_progress_bar=false", "--trainer-arg", "enable_model_summary=false"]
#: Two short epochs of every model: about 8 batches of 4 (a checkpoint at step 5 is in mid-epoch).
EXAMPLES = 32
SHORT_EPOCHS = ["--batch-size", "4",
                "--accelerator", "cpu", "--devices", "1", "--seed", "3", "--checkpoint-every", "5", *QUIET]


@pytest.fixture(autouse=True)
def fresh_run_versions(monkeypatch):
    """main() hands its run version on through the environment: none before a test, none left after it."""
    monkeypatch.setenv(run_folders.RUN_VERSION_VARIABLE, "")
    monkeypatch.delenv(run_folders.RUN_VERSION_VARIABLE)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


class KeepCheckpoints(L.Callback):
    """Copies each checkpoint of the first epoch as it is written: ``periodic``, ``epoch-end`` and ``best``."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.kept = folder, {}

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
        self._keep(trainer, "periodic", "last.ckpt")

    def on_train_epoch_start(self, trainer, module) -> None:
        if trainer.current_epoch == 1:
            self._keep(trainer, "epoch-end", "last.ckpt")
            self._keep(trainer, "best", "best-*.ckpt")

    def _keep(self, trainer, kind: str, pattern: str) -> None:
        found = list((Path(trainer.logger.log_dir) / "checkpoints").glob(pattern))
        if kind not in self.kept and found:
            self.kept[kind] = shutil.copy(found[0], self.folder / f"{kind}.ckpt")


def run(arguments: list[str], output: Path, *extra: str, callbacks=()) -> dict:
    assert train.main([*arguments, "--output-dir", str(output), *extra], callbacks=callbacks) == 0
    (last,) = output.glob("*/*/checkpoints/last.ckpt")
    return torch.load(last, weights_only=True)


def assert_same_training_state(resumed: dict, expected: dict) -> None:
    assert resumed["global_step"] == expected["global_step"]
    logging_step = "epoch_loop.state_dict"  # the step the loggers log at
    assert resumed["loops"]["fit_loop"][logging_step] == expected["loops"]["fit_loop"][logging_step]
    assert resumed["state_dict"].keys() == expected["state_dict"].keys()
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], tensor), name
    assert resumed["lr_schedulers"] == expected["lr_schedulers"]  # e.g. a plateau's best and patience count
    for resumed_optimizer, optimizer in zip(resumed["optimizer_states"], expected["optimizer_states"], strict=True):
        assert resumed_optimizer["param_groups"] == optimizer["param_groups"]  # the learning rates
        for index, state in optimizer["state"].items():
            for key, value in state.items():
                assert torch.equal(torch.as_tensor(resumed_optimizer["state"][index][key]), torch.as_tensor(value))


@pytest.mark.parametrize("model", list_models())
def test_every_kind_of_checkpoint_resumes_to_the_uninterrupted_runs_weights(model, data, tmp_path):
    validates = model_card(model).monitor_stage == "val"  # a model without validation data has no best
    check_every_kind_of_checkpoint_resumes(small_run(model, data, EXAMPLES), tmp_path, validates)


def test_an_epoch_temperature_schedule_is_restored_by_a_resume_in_mid_epoch(data, tmp_path):
    """A schedule by epoch sets τ when an epoch starts, which a run resumed in mid-epoch does not see."""
    arguments = [*small_run("vae", data, EXAMPLES), "--tau", "2", "--tau-schedule", "linear", "--tau-end", "1",
                 "--tau-duration", "2", "--tau-interval", "epoch", *SHORT_EPOCHS]
    keep = KeepCheckpoints(tmp_path)
    expected = run(arguments, tmp_path / "whole", "--max-epochs", "2", "--max-steps", "-1", callbacks=[keep])
    resumed = run(arguments, tmp_path / "periodic", "--max-epochs", "2", "--max-steps", "-1", "--resume",
                  str(keep.kept["periodic"]))
    assert_same_training_state(resumed, expected)


def test_an_epoch_cut_short_by_limit_train_batches_resumes_from_its_end_with_the_next_epoch(data, tmp_path):
    """8 of 13 batches an epoch: the loader's position (8) at the epoch's end must not resume the epoch."""
    arguments = [*small_run("vae", data, 50), *SHORT_EPOCHS, "--trainer-arg", "limit_train_batches=8",
                 "--max-epochs", "-1", "--max-steps", "16"]
    keep = KeepCheckpoints(tmp_path)
    expected = run(arguments, tmp_path / "whole", callbacks=[keep])
    resumed = run(arguments, tmp_path / "resumed", "--resume", str(keep.kept["epoch-end"]))
    assert_same_training_state(resumed, expected)
    assert epoch_means_logged(tmp_path / "resumed") == epoch_means_logged(tmp_path / "whole")[1:]


def check_every_kind_of_checkpoint_resumes(model_arguments: list[str], tmp_path: Path, validates: bool) -> None:
    """Every checkpoint of a run of two short epochs resumes to its very weights; ``validates``: it has a best."""
    arguments = [*model_arguments, *SHORT_EPOCHS]
    keep = KeepCheckpoints(tmp_path)
    expected = run(arguments, tmp_path / "whole", "--max-epochs", "2", "--max-steps", "-1", callbacks=[keep])
    assert sorted(keep.kept) == ["best", "epoch-end", "periodic"][0 if validates else 1:]
    epoch_end = torch.load(keep.kept["epoch-end"], weights_only=True)
    assert torch.load(keep.kept["periodic"], weights_only=True)["global_step"] < epoch_end["global_step"]

    for kind, checkpoint in keep.kept.items():
        resumed = run(arguments, tmp_path / kind, "--max-epochs", "2", "--max-steps", "-1", "--resume", str(checkpoint))
        assert_same_training_state(resumed, expected)
    # Stopped by --max-steps in mid-epoch, then continued by --resume auto in the same folder.
    stop_at = epoch_end["global_step"] + 3
    run(arguments, tmp_path / "stopped", "--max-epochs", "2", "--max-steps", str(stop_at))
    resumed = run(arguments, tmp_path / "stopped", "--max-epochs", "2", "--max-steps", "-1", "--resume", "auto")
    assert_same_training_state(resumed, expected)

    # Trained for a number of steps rather than epochs (Lightning restarts such a run on the epoch's end):
    # resumed from the first epoch's end, the second epoch's end is the only one logged, at the same step.
    by_steps = ["--max-epochs", "-1", "--max-steps", str(expected["global_step"])]
    keep = KeepCheckpoints(Path(tmp_path / "by-steps"))
    keep.folder.mkdir()
    expected = run(arguments, tmp_path / "by-steps-whole", *by_steps, callbacks=[keep])
    resumed = run(arguments, tmp_path / "by-steps-resumed", *by_steps, "--resume", str(keep.kept["epoch-end"]))
    assert_same_training_state(resumed, expected)
    assert epoch_means_logged(tmp_path / "by-steps-resumed") == epoch_means_logged(tmp_path / "by-steps-whole")[1:]


def epoch_means_logged(output: Path) -> list[tuple[int, dict[str, float]]]:
    """The epoch means (``*_epoch``) a run logged to TensorBoard: (step, means) an epoch end, oldest first."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run_folder,) = output.glob("*/*/")
    events = EventAccumulator(str(run_folder)).Reload()
    by_step: dict[int, dict[str, float]] = {}
    for tag in events.Tags()["scalars"]:
        if tag.endswith("_epoch") and tag.startswith("train/"):
            for event in events.Scalars(tag):
                by_step.setdefault(event.step, {})[tag] = event.value
    return sorted(by_step.items())


def config_for(*arguments: str) -> Settings:
    return train.parse_settings(list(arguments))


def make_run(folder: Path, config: Settings, step: int = 1) -> Path:
    """A run folder as train.py leaves it: its config.yaml and a last.ckpt."""
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({**config.as_dict(), "command": "python train.py"}))
    torch.save({"global_step": step}, folder / "checkpoints" / "last.ckpt")
    return folder


def test_resume_auto_continues_only_a_run_of_the_same_settings(tmp_path, monkeypatch):
    base = ["--output-dir", str(tmp_path), "--resume", "auto"]
    runs = tmp_path / "vae-mnist-reinmax"
    seed_zero = make_run(runs / "version_0", config_for(*base))
    make_run(runs / "version_1", config_for(*base, "--seed", "1"))

    # The budget, the devices and the folders may change; the seed, the learning rate... may not.
    assert run_folders.run_directory(config_for(*base, "--max-epochs", "9", "--devices", "2")) == (
        seed_zero, seed_zero / "checkpoints" / "last.ckpt")
    assert run_folders.run_directory(config_for(*base, "--seed", "1"))[0] == runs / "version_1"
    new, checkpoint = run_folders.run_directory(config_for(*base, "--seed", "2"))
    assert (new, checkpoint) == (runs / "version_2", None)
    monkeypatch.delenv(run_folders.RUN_VERSION_VARIABLE)
    assert run_folders.run_directory(config_for(*base, "--lr", "0.01")) == (runs / "version_2", None)


def test_resume_auto_on_an_empty_folder_starts_a_run_and_says_so(tmp_path, tiny_mnist, capsys):
    arguments = ["--data", "mnist", "--data-dir", str(tiny_mnist), "--output-dir", str(tmp_path), "--accelerator",
                 "cpu", "--devices", "1", "--max-steps", "2", "--latents", "3", "--categories", "4", "--model-arg",
                 "hidden_sizes=[8]", "--resume", "auto", *QUIET]
    assert train.main(arguments) == 0
    assert "--resume auto: no run of these settings to continue; starting a new one" in capsys.readouterr().out
    assert torch.load(tmp_path / "vae-mnist-reinmax" / "version_0" / "checkpoints" / "last.ckpt",
                      weights_only=True)["global_step"] == 2


def test_a_named_run_is_continued_only_by_resume_auto_and_its_own_settings(tmp_path):
    base = ["--output-dir", str(tmp_path), "--run-name", "job-7"]
    run = make_run(tmp_path / "vae-mnist-reinmax" / "job-7", config_for(*base))
    assert run_folders.run_directory(config_for(*base, "--resume", "auto")) == (run, run / "checkpoints" / "last.ckpt")
    with pytest.raises(ValueError, match="exists already. Continue it with --resume auto, or choose another"):
        run_folders.run_directory(config_for(*base))
    with pytest.raises(ValueError, match=r"its settings differ: seed 0 -> 5\. Choose another --run-name"):
        run_folders.run_directory(config_for(*base, "--resume", "auto", "--seed", "5"))
    fresh = tmp_path / "vae-mnist-reinmax" / "job-8"
    assert run_folders.run_directory(config_for(*base[:-1], "job-8", "--resume", "auto")) == (fresh, None)


@pytest.mark.parametrize("environment, name", [
    ({"WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "c0ffee"}, "torchrun-c0ffee"),
    ({"SLURM_NTASKS": "2", "SLURM_JOB_ID": "4242"}, "slurm-4242"),
    ({"SLURM_NTASKS": "1", "SLURM_JOB_ID": "4244"}, "slurm-4244"),  # one task: a requeued job finds it again
    ({"SLURM_NTASKS": "2", "SLURM_JOB_ID": "4243", "SLURM_ARRAY_JOB_ID": "4200", "SLURM_ARRAY_TASK_ID": "3"},
     "slurm-4200_3"),
])
def test_processes_of_an_outside_launcher_agree_on_their_runs_folder(environment, name, tmp_path, monkeypatch):
    for variable in ("WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID",
                     "SLURM_JOB_NAME"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environment.items():
        monkeypatch.setenv(variable, value)
    make_run(tmp_path / "vae-mnist-reinmax" / "version_0", config_for("--output-dir", str(tmp_path), "--seed", "1"))
    config = config_for("--output-dir", str(tmp_path))
    run, checkpoint = run_folders.run_directory(config)
    assert run.name.startswith(f"{name}-") and checkpoint is None
    assert run_folders.run_directory(config_for("--output-dir", str(tmp_path), "--max-steps", "9"))[0] == run
    # A job's second run, of other settings, gets a folder of its own.
    assert run_folders.run_directory(config_for("--output-dir", str(tmp_path), "--seed", "2"))[0] != run
    make_run(run, config)
    with pytest.raises(ValueError, match="has a checkpoint already: continue it with --resume auto"):
        run_folders.run_directory(config)


def test_torchrun_without_a_rendezvous_id_asks_for_a_run_name(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    with pytest.raises(ValueError, match="pass --run-name, or launch with torchrun --standalone"):
        run_folders.run_directory(config_for("--output-dir", str(tmp_path)))


def test_an_interactive_slurm_job_is_not_taken_for_a_launch(tmp_path, monkeypatch):
    """Runs typed in ``srun --pty bash`` share its job id; each gets a version of its own."""
    for variable, value in {"SLURM_NTASKS": "1", "SLURM_JOB_ID": "9", "SLURM_JOB_NAME": "bash"}.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    assert run_folders.run_directory(config_for("--output-dir", str(tmp_path)))[0].name == "version_0"
