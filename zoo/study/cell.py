"""One cell of a study: its ``train.py`` run, the test split on its best and last checkpoints, its record.

A cell's folder is its run's folder. Beside what ``train.py`` writes there
(``config.yaml``, events, ``checkpoints/``, ``summary.json``) the study keeps:

- ``cell.yaml``: the run's settings; ``python train.py --config cell.yaml --resume auto`` is the cell;
- ``heartbeat``: touched every few seconds while the cell runs, wherever it runs (this machine or a
  cluster's node), so that ``status`` tells a running cell from one that was killed;
- ``cell.json``: how the cell ended and its test metrics; a cell is done once it says finished or diverged.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from callbacks.checkpoint import write_text_atomically
from callbacks.preemption import EXIT_STATUS
from callbacks.run_summary import DIVERGED, FAILED, FINISHED, PREEMPTED, read_summary

from .. import build, train
from ..evaluate import measure_test_split
from ..runs import run_settings
from .spec import Cell, Study

CELL_CONFIG, CELL_RECORD, HEARTBEAT = "cell.yaml", "cell.json", "heartbeat"
#: How often a running cell touches its heartbeat, and how old one may be before the cell counts as stopped.
HEARTBEAT_SECONDS, HEARTBEAT_TIMEOUT = 10.0, 60.0
#: A cell whose mean load average exceeds its threads by more than this shared the machine with other work.
SHARED_LOAD_MARGIN = 0.75
#: A cell is done when its run finished its budget or diverged (a result too); the others run again.
DONE = (FINISHED, DIVERGED)
#: What ``status`` calls a cell, besides the run's own endings.
PENDING, RUNNING, INTERRUPTED = "pending", "running", "interrupted"


@dataclass(frozen=True)
class CellState:
    """Where a cell stands: pending, running, interrupted, failed, or done (finished or diverged)."""

    status: str
    line: str = ""  # the failure's one line, or what is known of the state

    @property
    def done(self) -> bool:
        return self.status in DONE


def read_record(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / CELL_RECORD).read_text())
    except (OSError, ValueError):
        return None


def cell_state(study: Study, cell: Cell, now: float | None = None) -> CellState:
    """The cell's state from its folder alone, so any process on any machine that sees the folder agrees."""
    folder = study.run_folder(cell)
    now = time.time() if now is None else now
    with contextlib.suppress(OSError):
        age = now - (folder / HEARTBEAT).stat().st_mtime
        if age < HEARTBEAT_TIMEOUT:
            return CellState(RUNNING, f"heartbeat {age:.0f} s ago")
    record = read_record(folder)
    if record is not None and record["status"] in DONE:
        if same_run_and_budget(record.get("settings", {}), cell.settings):
            return CellState(record["status"], record.get("reason") or "")
        return CellState(INTERRUPTED, "the study's settings for it changed (a longer budget?); run the study to "
                                      "continue it")
    if record is not None and record["status"] == FAILED:
        return CellState(FAILED, record.get("reason") or "")
    summary = read_summary(folder)
    if (folder / "checkpoints" / "last.ckpt").is_file() or (folder / HEARTBEAT).exists() or summary is not None:
        step = f" at step {summary['last']['step']}" if summary else ""
        return CellState(INTERRUPTED, f"stopped{step}; run the study again to continue it")
    return CellState(PENDING)


def same_run_and_budget(recorded: dict[str, Any], settings: dict[str, Any]) -> bool:
    """Whether a cell recorded with ``recorded`` settings trained what ``settings`` ask: the same run (as
    ``--resume auto`` sees it) for as long. Where it runs (devices, folders) does not count."""
    def counted(values: dict[str, Any]) -> dict[str, Any]:
        return {**run_settings(values), "budget": [values.get("max_steps"), values.get("max_epochs")]}

    return counted(recorded) == counted(json.loads(json.dumps(settings)))


def run_cell(study: Study, cell: Cell, callbacks: Sequence[Any] = (), shared_machine: bool = False) -> CellState:
    """Train the cell (continuing its run if it has one), measure the test split on its checkpoints, record it."""
    folder = study.run_folder(cell)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / CELL_CONFIG
    config.write_text(yaml.safe_dump({**cell.settings, "output_dir": str(study.output_dir),
                                      "run_name": cell.run_name}, sort_keys=False))
    argv = ["--config", str(config), "--resume", "auto"]
    sittings_before = (read_summary(folder) or {}).get("sittings", 0)
    with beating(folder / HEARTBEAT) as loads, last_line_of_stderr() as stderr:
        status, reason = _train(argv, callbacks, stderr)
        summary = read_summary(folder) or {}
        if summary.get("sittings", 0) > sittings_before and status != PREEMPTED:
            status, reason = summary["status"], summary["reason"] or reason
        test = _measure(argv, summary) if status in DONE and study.test else None
    previous = read_record(folder) or {}
    load = statistics.mean(loads) if loads else None
    threads = torch.get_num_threads()
    record = {
        "cell": cell.name, "estimator": cell.estimator, "point": dict(cell.point), "seed": cell.seed,
        "settings": cell.settings,
        "status": status, "reason": reason, "summary": summary, "test": test,
        # Its time a step is not the estimator's alone if any sitting shared the machine: with other cells of
        # the study, or with anything else (more runnable processes, on average, than this cell's threads).
        "shared_machine": (shared_machine or previous.get("shared_machine", False)
                           or (load is not None and load > threads + SHARED_LOAD_MARGIN)),
        "mean_load_average": load,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "threads": threads, "torch": torch.__version__,
        "command": f"python train.py --config {config} --resume auto",
    }
    write_text_atomically(folder / CELL_RECORD, json.dumps(record, indent=1) + "\n")
    return CellState(status, reason or "")


def _train(argv: list[str], callbacks: Sequence[Any], stderr: LastLine) -> tuple[str, str | None]:
    """Run ``train.py`` in this process; how it ended, as the run summary's statuses, and the error's line."""
    try:
        code = train.main(argv, callbacks=callbacks)
    except SystemExit as exit:
        code = exit.code
    except Exception as error:  # a fault of this cell must not stop the study's other cells
        traceback.print_exc()
        return FAILED, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if code == 0:
        return FINISHED, None
    if code == EXIT_STATUS:
        return PREEMPTED, stderr.line
    return FAILED, stderr.line or f"train.py exited with status {code}"


def _measure(argv: list[str], summary: dict[str, Any]) -> dict[str, dict[str, float] | None]:
    """The test split's metrics on the run's best and last checkpoints (None where it kept no best)."""
    config = train.parse_settings(argv)
    datamodule = build.build_datamodule(config)
    measured = {}
    for which in ("best", "last"):
        checkpoint = (summary.get(which) or {}).get("checkpoint")
        if checkpoint is None or not Path(checkpoint).is_file():
            measured[which] = None
            continue
        model = build.build_model(config)
        model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"])
        measured[which] = measure_test_split(model, datamodule, accelerator=config.accelerator)
    return measured


@contextlib.contextmanager
def beating(path: Path) -> Iterator[list[float]]:
    """Touch ``path`` every :data:`HEARTBEAT_SECONDS` from a thread while the block runs, and remove it after;
    yields the machine's one-minute load averages, sampled at each beat (none where the system has none)."""
    stop = threading.Event()
    loads: list[float] = []

    def beat() -> None:
        while not stop.is_set():
            path.touch()
            if hasattr(os, "getloadavg"):
                loads.append(os.getloadavg()[0])
            stop.wait(HEARTBEAT_SECONDS)

    thread = threading.Thread(target=beat, name="study-heartbeat", daemon=True)
    thread.start()
    try:
        yield loads
    finally:
        stop.set()
        thread.join()
        path.unlink(missing_ok=True)


class LastLine(io.TextIOBase):
    """A stream that passes everything on to ``stream`` and keeps the last non-empty line: the error's."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.line = ""

    def write(self, text: str) -> int:
        self.stream.write(text)
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            self.line = lines[-1]
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def last_line_of_stderr() -> Iterator[LastLine]:
    stream = LastLine(sys.stderr)
    with contextlib.redirect_stderr(stream):
        yield stream
