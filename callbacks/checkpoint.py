"""A run's checkpoints: the last state wherever it stops, the best validation, never half a file."""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from datamodules import ResumableEpochs

#: Metrics whose names changed: checkpoints of the classifiers written before the stages were named
#: ``train``, ``val``, ``test`` everywhere monitor ``valid/accuracy``.
RENAMED_METRICS = {"valid/accuracy": "val/accuracy"}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a hidden file beside it, then rename it into place.

    A process killed while writing leaves the previous checkpoint intact (a
    rename is atomic on one file system) and at worst a stray ``.partial`` file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        with open(partial, "wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial, path)


class RunCheckpoints(Checkpoint):
    """``last.ckpt``, kept current, and ``best-epoch=E-step=S.ckpt``, in ``folder``.

    ``last.ckpt`` is written every ``every_n_steps`` optimizer steps (none if
    ``None``), at the end of every training epoch (after its validation), when
    training ends, and whenever :meth:`save_last` is called (e.g. on SIGTERM). Each
    of these resumes to the weights of an uninterrupted run.

    The best checkpoint holds the weights of the validation whose ``monitor`` was
    the lowest (``mode="min"``) or highest so far; the previous best is deleted. At
    an epoch's end it is a hard link to that step's ``last.ckpt``: one file
    written, not two. One callback rather than Lightning's ``ModelCheckpoint``
    twice also halves the hook calls a step. Every rank calls the writes (they
    gather state); only rank 0 touches files. As a ``Checkpoint``, Lightning calls
    its epoch-end hook after the module's (GDAS steps its schedulers there), and
    adds no checkpoint callback of its own.
    """

    def __init__(self, folder: str | Path, monitor: str, mode: Literal["min", "max"] = "min",
                 every_n_steps: int | None = None) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"RunCheckpoints: mode must be 'min' or 'max', got {mode!r}.")
        self.folder = Path(folder)
        self.monitor, self.mode = monitor, mode
        self.every_n_steps = every_n_steps
        self.best_score: float | None = None
        self.best_path: Path | None = None
        self._saved_step = -1  # the global step of the newest last.ckpt
        self._epoch_end_score: float | None = None  # this epoch's validation, to compare at its end
        self._logging_step: int | None = None  # the loggers' step of a checkpoint written at an epoch's end

    @property
    def last_path(self) -> Path:
        return self.folder / "last.ckpt"

    def save_last(self, trainer: L.Trainer) -> Path:
        """Write ``last.ckpt`` now, optimizer state included; its path."""
        trainer.save_checkpoint(self.last_path, weights_only=False)
        self._saved_step = trainer.global_step
        return self.last_path

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._saved_step = trainer.global_step  # a resumed run starts at a step already saved

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any,
                             batch_index: int) -> None:
        if self._logging_step is not None:
            # A restart may count the last batch's logging step again (Lightning does for a run bounded by
            # max_steps that validates at the epoch's end), as if the checkpoint had been written before that
            # batch was counted; one written at the epoch's end was written after. Set it back to the saved step.
            trainer.fit_loop.epoch_loop._batches_that_stepped = self._logging_step
            self._logging_step = None

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           batch_index: int) -> None:
        # GDAS takes two optimizer steps a batch: a period is due once the step passes its multiple.
        period_due = (self.every_n_steps is not None
                      and trainer.global_step // self.every_n_steps > self._saved_step // self.every_n_steps)
        # Here, not when training ends: by then Lightning counts the interrupted epoch as complete,
        # and a run resumed for more epochs would skip the rest of it.
        last_step = trainer.max_steps != -1 and trainer.global_step >= trainer.max_steps
        if period_due or last_step:
            self.save_last(trainer)

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        score = self._monitored(trainer)
        if score is None:
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            self._epoch_end_score = score  # compared once the epoch has ended, beside last.ckpt
        elif self._improves(score):
            self._save_best(trainer, score)  # validation in mid-epoch (val_check_interval < 1)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # cut short by max_steps: its last step is saved already, as in mid-epoch
        score, self._epoch_end_score = self._epoch_end_score, None
        improved = score is not None and self._improves(score)
        previous = self._take_best(trainer, score) if improved else None
        self.save_last(trainer)  # its state names the new best
        if improved:
            if trainer.is_global_zero:
                link_or_copy(self.last_path, self.best_path)
            self._remove(trainer, previous)

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._saved_step != trainer.global_step:  # stopped otherwise (max_time, a callback)
            self.save_last(trainer)

    def _monitored(self, trainer: L.Trainer) -> float | None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            rank_zero_warn(f"RunCheckpoints: validation did not log {self.monitor!r}, so no best checkpoint "
                           f"was kept; logged: {', '.join(sorted(trainer.callback_metrics)) or 'nothing'}.")
            return None
        return float(value)  # one read a validation

    def _improves(self, score: float) -> bool:
        if math.isnan(score):
            return False
        return self.best_score is None or (score < self.best_score if self.mode == "min" else score > self.best_score)

    def _take_best(self, trainer: L.Trainer, score: float) -> Path | None:
        """Take ``score`` as the best, at this step's file name; the previous best's file."""
        previous = self.best_path
        self.best_score = score
        self.best_path = self.folder / f"best-epoch={trainer.current_epoch}-step={trainer.global_step}.ckpt"
        return previous

    def _save_best(self, trainer: L.Trainer, score: float) -> None:
        previous = self._take_best(trainer, score)
        trainer.save_checkpoint(self.best_path, weights_only=False)
        self._remove(trainer, previous)

    def _remove(self, trainer: L.Trainer, previous: Path | None) -> None:
        # Only this run's own: one resumed from another folder's checkpoint leaves that folder be.
        if previous is not None and previous != self.best_path and previous.parent == self.folder:
            trainer.strategy.remove_checkpoint(previous)  # rank 0 only

    def state_dict(self) -> dict[str, Any]:
        return {"monitor": self.monitor, "best_score": self.best_score,
                "best_path": None if self.best_path is None else str(self.best_path)}

    def _watches(self, monitor: str | None) -> bool:
        """Whether a saved state's ``monitor`` is this callback's, under its current name."""
        return RENAMED_METRICS.get(monitor, monitor) == self.monitor

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self._watches(state.get("monitor")):
            self.best_score = state["best_score"]
            self.best_path = None if state["best_path"] is None else Path(state["best_path"])

    def on_load_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Count an epoch that the checkpoint was written at the end of as complete, at the loggers' step it
        saved; take the best score from a checkpoint written by Lightning's ``ModelCheckpoint`` (older runs)."""
        fit_loop = checkpoint.get("loops", {}).get("fit_loop")
        if count_finished_epoch(fit_loop):
            self._logging_step = fit_loop["epoch_loop.state_dict"]["_batches_that_stepped"]
        for key, state in checkpoint.get("callbacks", {}).items():
            if key.startswith("ModelCheckpoint") and self._watches(state.get("monitor")):
                score, path = state.get("best_model_score"), state.get("best_model_path")
                if score is not None:
                    self.load_state_dict({"monitor": self.monitor, "best_score": float(score),
                                          "best_path": path or None})


def count_finished_epoch(fit_loop: dict[str, Any] | None) -> bool:
    """Make the loops' state of a checkpoint written at an epoch's end that of the next epoch's start.

    ``last.ckpt`` is written in ``on_train_epoch_end`` after the module's hook (and
    ``ModelCheckpoint`` wrote it there too), so the epoch's work is done, but Lightning
    counts an epoch completed only after the hooks. An epoch-based run resumed from
    it counts the epoch itself; a run trained for ``max_steps`` instead restarts on
    that epoch's end and runs its end hooks a second time over no batches: NaN epoch
    means in the logs and GDAS's schedule stepped twice. Here the epoch is counted,
    the epoch loop's counts are reset as a new epoch resets them, and so are the
    loaders' positions, which an epoch cut short by ``limit_train_batches`` leaves
    short of their end. Returns whether the checkpoint was written at an epoch's end.
    """
    epochs = (fit_loop or {}).get("epoch_progress")
    if epochs is None:
        return False  # weights only, or another Lightning's layout
    total = epochs["total"]
    if not total["started"] == total["processed"] == total["completed"] + 1:
        return False  # written in mid-epoch, or after training ended
    for part in ("total", "current"):
        epochs[part]["completed"] = epochs[part]["processed"]
    for key, progress in fit_loop.items():
        if key.startswith("epoch_loop.") and not key.endswith("state_dict"):
            _reset_current(progress)
    fit_loop["epoch_loop.batch_progress"]["is_last_batch"] = False
    for loader in fit_loop.get("state_dict", {}).get("combined_loader", []):
        if isinstance(loader, dict) and set(loader) == {"seed", "epoch", "position"}:  # the zoo's loaders
            ResumableEpochs.end_epoch(loader)
    validation = fit_loop["epoch_loop.val_loop.batch_progress"]
    validation["total"] = dict.fromkeys(validation["total"], 0)  # as Lightning resets it when an epoch starts
    validation["is_last_batch"] = False
    return True


def _reset_current(progress: dict[str, Any]) -> None:
    """Zero the ``current`` counts of a Lightning progress tracker's state and of those nested in it."""
    for key, value in progress.items():
        if key == "current":
            progress[key] = dict.fromkeys(value, 0)
        elif isinstance(value, dict):
            _reset_current(value)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a hidden file beside ``path``, then rename it into place: a reader (another process,
    a later run) sees the old content or the new, never half of it."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def link_or_copy(source: Path, target: Path) -> None:
    """``target`` with ``source``'s content: a hard link where the file system has them, else a copy."""
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    try:
        os.link(source, partial)
    except OSError:
        shutil.copyfile(source, partial)
    os.replace(partial, target)
