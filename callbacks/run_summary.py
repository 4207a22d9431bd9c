"""How a run ended, in one line and in ``summary.json``: the monitored metric's best and last values and where
their checkpoints are, whether it finished or stopped early, and its time a training step.

A study (:mod:`zoo.study`) reads ``summary.json`` to know a run is done and what it reached; a person reads the
line. A run resumed several times keeps one file: the training time and steps of its sittings add up.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import lightning as L

from zoo.estimators import InvalidLogitsError

from .checkpoint import RunCheckpoints, write_text_atomically
from .nonfinite import NonFiniteError
from .preemption import Preempted

SUMMARY_FILE = "summary.json"
#: How a run ended: it reached its budget; a signal stopped it (SIGTERM, SLURM's, Ctrl-C: resume to continue);
#: its loss, gradients or logits stopped being finite (the result of the run, not a fault of the machine);
#: anything else.
FINISHED, PREEMPTED, DIVERGED, FAILED = "finished", "preempted", "diverged", "failed"
BEST_NAME = re.compile(r"best-epoch=(?P<epoch>\d+)-step=(?P<step>\d+)\.ckpt$")


def read_summary(run: str | Path) -> dict[str, Any] | None:
    """The run folder's ``summary.json``; None if it has none that reads (not written yet, or half written)."""
    try:
        return json.loads((Path(run) / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return None


class RunSummary(L.Callback):
    """Write ``summary.json`` in ``run`` and print its line when training ends, however it ends.

    Time a training step is the fit's wall time less validation, over the optimizer
    steps taken: what a step costs, data loading and logging included. Nothing is
    read on the device during training; the monitored value is read once, at the end.
    """

    def __init__(self, run: str | Path, checkpoints: RunCheckpoints) -> None:
        self.run = Path(run)
        self.checkpoints = checkpoints
        self._started = 0.0
        self._validation_started = 0.0
        self._validation_seconds = 0.0
        self._first_step = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._started, self._validation_seconds = time.perf_counter(), 0.0
        self._first_step = trainer.global_step

    def on_validation_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._validation_seconds += time.perf_counter() - self._validation_started

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._write(trainer, FINISHED, None)

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (Preempted, KeyboardInterrupt)):  # a signal: SIGTERM, SLURM's, or Ctrl-C
            status = PREEMPTED
        elif isinstance(exception, (NonFiniteError, InvalidLogitsError)):
            status = DIVERGED
        else:
            status = FAILED
        self._write(trainer, status, str(exception).splitlines()[0] if str(exception) else type(exception).__name__)

    def _write(self, trainer: L.Trainer, status: str, reason: str | None) -> None:
        if not trainer.is_global_zero or self._started == 0.0:
            return  # another rank's, or training never started (nothing to summarise)
        seconds = time.perf_counter() - self._started - self._validation_seconds
        previous = read_summary(self.run) or {}
        summary = {
            "status": status,
            "reason": reason,
            "monitor": self.checkpoints.monitor,
            "mode": self.checkpoints.mode,
            "best": self._best(),
            "last": {"value": _value(trainer.callback_metrics.get(self.checkpoints.monitor)),
                     "epoch": trainer.current_epoch, "step": trainer.global_step,
                     "checkpoint": str(self.checkpoints.last_path) if self.checkpoints.last_path.is_file() else None},
            "training_seconds": previous.get("training_seconds", 0.0) + seconds,
            "timed_steps": previous.get("timed_steps", 0) + trainer.global_step - self._first_step,
            "sittings": previous.get("sittings", 0) + 1,
        }
        summary["seconds_per_step"] = (summary["training_seconds"] / summary["timed_steps"]
                                       if summary["timed_steps"] else None)
        self.run.mkdir(parents=True, exist_ok=True)
        write_text_atomically(self.run / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
        print(summary_line(summary), flush=True)

    def _best(self) -> dict[str, Any] | None:
        path = self.checkpoints.best_path
        if path is None or self.checkpoints.best_score is None:
            return None
        match = BEST_NAME.search(path.name)
        return {"value": self.checkpoints.best_score,
                "epoch": int(match["epoch"]) if match else None, "step": int(match["step"]) if match else None,
                "checkpoint": str(path)}


def _value(metric: Any) -> float | None:
    return None if metric is None else float(metric)


def summary_line(summary: dict[str, Any]) -> str:
    """E.g. ``summary: finished at step 6000; val/neg_elbo_epoch best 257.19 (epoch 9, step 6000), last 257.19;
    checkpoints: best .../best-epoch=9-step=6000.ckpt, last .../last.ckpt``."""
    last, best = summary["last"], summary["best"]
    ended = f"finished at step {last['step']}" if summary["status"] == FINISHED else (
        f"{summary['status']} at step {last['step']} ({summary['reason']}), before the end of its budget")
    values = f"{summary['monitor']} last {_format(last['value'])}"
    if best is not None:
        values += f", best {_format(best['value'])} (epoch {best['epoch']}, step {best['step']})"
    checkpoints = f"last {last['checkpoint']}" + (f", best {best['checkpoint']}" if best is not None else "")
    return f"summary: {ended}; {values}; checkpoints: {checkpoints}"


def _format(value: float | None) -> str:
    return "none logged" if value is None else f"{value:.6g}"
