"""Run folders: where a run is written, which run ``--resume auto`` continues, and what it records.

A run writes to ``OUTPUT_DIR/MODEL-DATA-ESTIMATOR/version_N/`` (``MODEL-DATA`` for a
model without an estimator), or ``.../RUN_NAME/`` with ``--run-name``: the resolved
settings and the command (``config.yaml``), TensorBoard events, and ``checkpoints/``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shlex
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning
import torch
import yaml
from lightning.pytorch.plugins.environments import SLURMEnvironment

from callbacks.slurm import slurm_job_id

from .pretrained import weights_mismatch
from .settings import MODEL_SETTINGS, NAMES, NOT_DEFINING_A_RUN, Settings

RUN_VERSION_VARIABLE = "DISCRETE_ZOO_RUN_VERSION"

#: Trainer arguments that change how a run is shown, not what it trains (the settings' own are declared).
NOT_DEFINING_A_RUN_TRAINER = ("enable_progress_bar", "enable_model_summary", "log_every_n_steps")


def run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that define a run, as ``config.yaml`` stores them."""
    defining = {key: value for key, value in config.items() if key in NAMES and key not in NOT_DEFINING_A_RUN
                and value is not None}
    defining["trainer"] = {key: value for key, value in config.get("trainer", {}).items()
                           if key not in NOT_DEFINING_A_RUN_TRAINER}
    return yaml.safe_load(yaml.safe_dump(defining))


def recorded_settings(run: Path) -> dict[str, Any] | None:
    """The defining settings in ``run``'s ``config.yaml``; None if it has none that reads."""
    try:
        return run_settings(yaml.safe_load((run / "config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def differences(recorded: dict[str, Any] | None, settings: dict[str, Any]) -> str:
    if recorded is None:
        return "it has no readable config.yaml"
    changed = [f"{key} {recorded.get(key)!r} -> {settings.get(key)!r}"
               for key in sorted(set(recorded) | set(settings)) if recorded.get(key) != settings.get(key)]
    return "its settings differ: " + "; ".join(changed)


def run_directory(config: Settings) -> tuple[Path, Path | None]:
    """The run's folder and the checkpoint to resume from, if any.

    A new ``version_N`` is chosen by the first process and handed to the processes
    that Lightning launches through the environment; processes started by
    ``torchrun`` or ``srun`` name it after their launch instead (see
    :func:`launch_name`), so that all ranks agree on it.
    """
    name = "-".join(part for part in (config.model, config.data, config.estimator) if part is not None)
    runs = Path(config.output_dir) / name
    check_writable(runs)
    resume, settings = config.resume, run_settings(config.as_dict())
    if resume not in (None, "auto"):
        checkpoint = Path(resume)
        if not checkpoint.is_file():
            raise ValueError(f"--resume: no checkpoint file at {checkpoint}.")
        if checkpoint.parent.name == "checkpoints":
            return checkpoint.parent.parent, checkpoint
        return new_run(runs, settings), checkpoint
    if config.run_name is not None:
        return named_run(runs / config.run_name, settings, resume == "auto")
    if resume == "auto":
        newest_first = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda path: path.stat().st_mtime, reverse=True)
        for last in newest_first:
            if recorded_settings(last.parent.parent) == settings:
                return last.parent.parent, last
    return new_run(runs, settings), None


def check_writable(folder: Path) -> None:
    """Refuse an output folder that cannot be created or written, and create nothing: a command refused
    later (a bad ``--resume``, a model that does not build) leaves no empty folders behind.

    The probe is a nameless temporary file in the folder's nearest existing ancestor,
    so processes that check at once (a ``torchrun`` launch) cannot see each other's.
    """
    existing = next(path for path in (folder, *folder.parents) if path.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is a file")
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as error:
        raise ValueError(
            f"cannot write to the output directory {folder}: {error.strerror or error}. "
            "Choose another with --output-dir."
        ) from error


def named_run(run: Path, settings: dict[str, Any], resume: bool) -> tuple[Path, Path | None]:
    """``--run-name``: the folder is this command's; it continues only with ``--resume auto``.

    A folder without a checkpoint has nothing to lose or continue: the run starts in
    it. (That is also what the other processes of a launch see while the first one
    writes its config.yaml there.)
    """
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return run, None
    if not resume:
        raise ValueError(f"the run {run} exists already. Continue it with --resume auto, or choose another "
                         "--run-name.")
    recorded = recorded_settings(run)
    if recorded != settings:
        raise ValueError(f"cannot continue the run {run}: {differences(recorded, settings)}. Choose another "
                         "--run-name for these settings.")
    return run, last


@contextmanager
def version_handed_on() -> Iterator[None]:
    """While a run trains, the processes it starts learn its ``version_N`` from the environment (:func:`new_run`);
    afterwards it is dropped, so that the next run in this process (a notebook, a test) gets a version of its own
    rather than the last one's folder. A version the environment gave (a launcher's) is left as it is."""
    given = RUN_VERSION_VARIABLE in os.environ
    try:
        yield
    finally:
        if not given:
            os.environ.pop(RUN_VERSION_VARIABLE, None)


def new_run(runs: Path, settings: dict[str, Any]) -> Path:
    """A folder for a new run of ``settings`` under ``runs``, the same for every process of the launch."""
    if RUN_VERSION_VARIABLE not in os.environ:
        launch = launch_name(settings)
        if launch is not None:
            if (runs / launch / "checkpoints" / "last.ckpt").exists():
                raise ValueError(f"this launch's run {runs / launch} has a checkpoint already: continue it with "
                                 "--resume auto and its settings, or pass --run-name for a new run.")
            return runs / launch
        versions = [int(path.name.removeprefix("version_")) for path in runs.glob("version_*")
                    if path.name.removeprefix("version_").isdigit()]
        os.environ[RUN_VERSION_VARIABLE] = str(max(versions, default=-1) + 1)
    return runs / f"version_{os.environ[RUN_VERSION_VARIABLE]}"


def launch_name(settings: dict[str, Any]) -> str | None:
    """The folder name that the processes of a ``torchrun`` or ``srun`` launch share; None otherwise.

    Those processes start together and cannot hand each other a ``version_N`` before
    training connects them, so each derives the name from what its launcher set
    alike in all of them, torchrun's rendezvous id or SLURM's job (and array task)
    id, and from the run's ``settings`` (a short hash), so that one job may train
    several runs. A SLURM batch job that is requeued keeps its id, so it finds its
    run again; an interactive one (job name ``bash`` or ``interactive``) is not taken
    for one.
    """

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        run_id = os.environ["TORCHELASTIC_RUN_ID"]
        if run_id == "none":
            raise ValueError("torchrun without a rendezvous id gives its processes no shared run name: pass "
                             "--run-name, or launch with torchrun --standalone (or --rdzv-id).")
        launch = f"torchrun-{run_id}"
    elif SLURMEnvironment.detect() and "SLURM_JOB_ID" in os.environ:
        launch = f"slurm-{slurm_job_id()}"
    else:
        return None
    digest = hashlib.sha256(yaml.safe_dump(settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"{launch}-{digest}"


def save_config(settings: Settings, run: Path, command: list[str], processes: int = 1) -> None:
    """The resolved settings, the command as typed, the processes and global batch, and the library
    versions, beside the run's events."""

    # A model setting still unset is one the model does not take (bvae has no categories): not recorded.
    taken = {key: value for key, value in settings.as_dict().items() if not (key in MODEL_SETTINGS and value is None)}
    record = {**taken, "command": shlex.join(command),
              "processes": processes, "global_batch_size": settings.batch_size * processes,
              "versions": {"python": sys.version.split()[0], "torch": str(torch.__version__),
                           "lightning": lightning.__version__}}
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))


def load_failure(error: BaseException) -> str:
    """Why a file did not load, in one line for a refusal to quote.

    torch's weights-only refusal opens with advice to load the file with ``weights_only=False``, which
    would run whatever code it holds; its reason (``Unsupported operand 103`` for a text file,
    ``Unsupported global: ...`` for a pickled object) follows ``WeightsUnpickler error:``.
    """
    _, refused, reason = str(error).partition("WeightsUnpickler error:")
    if refused and (lines := reason.strip().splitlines()):
        return f"the weights-only unpickler refused it: {lines[0].split('. ')[0].removesuffix('.')}"
    return (str(error).splitlines() or [type(error).__name__])[0]


def check_checkpoint(path: Path, model: lightning.LightningModule) -> None:
    """Refuse a checkpoint that does not load as tensors and plain values, or whose weights do not fit the
    ``model`` these settings build, before training and before the run's ``config.yaml`` is rewritten."""

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict) or "state_dict" not in saved:
            raise ValueError("no state_dict in it: weights alone are not a run to resume")
        weights = saved["state_dict"]
    except Exception as error:  # noqa: BLE001 - whatever fails to load (a text file: IndexError) is no checkpoint
        others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path)
        hint = f"; other checkpoints beside it: {', '.join(others)}" if others else ""
        raise ValueError(
            f"cannot resume from {path}: it is corrupt, truncated or not a checkpoint of this "
            f"project ({load_failure(error)}). Pass another with --resume PATH{hint}, "
            "or start a new run without --resume."
        ) from error
    if details := weights_mismatch(model.state_dict(), weights):
        trained = yaml.safe_load(yaml.safe_dump(dict(saved.get("hyper_parameters", {}))))  # tuples as lists
        here = yaml.safe_load(yaml.safe_dump(dict(model.hparams)))
        differing = [f"{key}={trained[key]!r} (here {value!r})" for key, value in here.items()
                     if key in trained and trained[key] != value]
        trained_with = f" It was trained with {', '.join(differing)}." if differing else ""
        raise ValueError(
            f"cannot resume from {path}: its weights do not fit the model these settings build ({details})."
            f"{trained_with} Resume it with the settings it was trained with (its run's config.yaml), or pass "
            "another --resume."
        )
