"""Running a study's missing cells on this machine: one after another in this process, or ``jobs`` at once.

With ``jobs`` > 1 each cell is a process of its own (``python -m zoo.study cell``)
with its share of the CPU threads and, on a machine with GPUs, one GPU; its output
goes to ``cell.log`` in its folder. SIGTERM or Ctrl-C reaches every cell, which
checkpoints and stops; the study then exits with 143 like ``train.py``, and running it
again continues where it stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from callbacks.preemption import EXIT_STATUS
from callbacks.run_summary import PREEMPTED

from .cell import RUNNING, CellState, cell_state, run_cell
from .spec import Cell, Study

CELL_LOG = "cell.log"


class Progress:
    """A line a cell started and finished, with the number left and an estimate of the time left."""

    def __init__(self, total: int, jobs: int, say: Callable[[str], None]) -> None:
        self.total, self.jobs, self.say = total, jobs, say
        self.finished = 0
        self.seconds: list[float] = []

    def ended(self, cell: Cell, state: CellState, seconds: float) -> None:
        self.finished += 1
        self.seconds.append(seconds)
        left = self.total - self.finished
        estimate = ""
        if left:
            mean = sum(self.seconds) / len(self.seconds)
            estimate = f", about {_duration(mean * left / min(self.jobs, left))} to go"
        why = f" ({state.line})" if state.line and not state.done else ""
        self.say(f"study: {cell.name} {state.status} after {_duration(seconds)}{why}; {left} of {self.total} left"
                 f"{estimate}")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def cells_to_run(study: Study, say: Callable[[str], None] = print) -> list[Cell]:
    """The cells not done and not running elsewhere, saying what is skipped."""
    todo = []
    for cell in study.cells:
        state = cell_state(study, cell)
        if state.status == RUNNING:
            say(f"study: skipping {cell.name}: running elsewhere ({state.line})")
        elif not state.done:
            todo.append(cell)
    return todo


def _still_to_run(study: Study, cell: Cell, say: Callable[[str], None]) -> bool:
    """Whether ``cell`` is still to run now: another runner of the study (another job, another machine on the
    same file system) may have taken it since this one listed it."""
    state = cell_state(study, cell)
    if state.status == RUNNING or state.done:
        say(f"study: skipping {cell.name}: {state.status} elsewhere meanwhile")
        return False
    return True


def run_study(study: Study, jobs: int = 1, callbacks: Sequence[Any] = (), say: Callable[[str], None] = print) -> int:
    """Run every cell that is not done; 0 when all are, 143 if stopped by a signal, else 1."""
    todo = cells_to_run(study, say)
    done = sum(cell_state(study, cell).done for cell in study.cells)
    elsewhere = len(study.cells) - done - len(todo)
    say(f"study {study.name}: {len(study.cells)} cells, {done} done, "
        + (f"{elsewhere} running elsewhere, " if elsewhere else "") + f"{len(todo)} to run"
        + (f", {jobs} at a time" if jobs > 1 and len(todo) > 1 else "") + f"; runs under {study.output_dir}")
    progress = Progress(len(todo), jobs, say)
    if jobs == 1:
        for cell in todo:
            if not _still_to_run(study, cell, say):
                progress.total -= 1
                continue
            say(f"study: started {cell.name}")
            start = time.monotonic()
            state = run_cell(study, cell, callbacks)
            progress.ended(cell, state, time.monotonic() - start)
            if state.status == PREEMPTED:
                say("study: stopped by a signal; run the same command again to continue.")
                return EXIT_STATUS
    elif todo:
        stopped = _run_in_processes(study, todo, jobs, progress, say)
        if stopped:
            say("study: stopped by a signal; run the same command again to continue.")
            return EXIT_STATUS
    return 0 if all(cell_state(study, cell).done for cell in study.cells) else 1


def cell_environment(slot: int, jobs: int, gpus: int, cores: int) -> dict[str, str]:
    """The environment of the cell in ``slot`` of ``jobs``: its share of the CPU threads, and its GPU if any."""
    environment = {"OMP_NUM_THREADS": str(max(1, cores // jobs))}
    if gpus:
        environment["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    return environment


def _run_in_processes(study: Study, todo: list[Cell], jobs: int, progress: Progress,
                      say: Callable[[str], None]) -> bool:
    """Run ``todo`` as processes, ``jobs`` at a time; whether a signal stopped them."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if gpus and jobs > gpus:
        say(f"study: {jobs} jobs share {gpus} GPUs: cells on the same GPU slow each other down")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    running: dict[int, tuple[Cell, subprocess.Popen, float]] = {}
    signalled = []
    previous = {number: signal.signal(number, lambda number, frame: signalled.append(number))
                for number in (signal.SIGTERM, signal.SIGINT)}
    queue = list(todo)
    try:
        while queue or running:
            if signalled:  # SIGTERM, or Ctrl-C (which the terminal sends the cells too): each checkpoints and stops
                for _, process, _ in running.values():
                    process.send_signal(signalled[0])
                for _, process, _ in running.values():
                    process.wait()
                return True
            for slot in range(jobs):
                if slot not in running and queue:
                    cell = queue.pop(0)
                    if not _still_to_run(study, cell, say):
                        progress.total -= 1
                        continue
                    running[slot] = (cell, _start(study, cell, cell_environment(slot, jobs, gpus, cores)),
                                     time.monotonic())
                    say(f"study: started {cell.name} (log: {study.run_folder(cell) / CELL_LOG})")
            for slot, (cell, process, start) in list(running.items()):
                if process.poll() is not None:
                    del running[slot]
                    progress.ended(cell, cell_state(study, cell), time.monotonic() - start)
            time.sleep(0.2)
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    return False


def _start(study: Study, cell: Cell, environment: dict[str, str]) -> subprocess.Popen:
    folder = study.run_folder(cell)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / CELL_LOG, "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "zoo.study", "cell", str(study.path), cell.name,
                                 "--output-dir", str(study.output_dir), "--shared-machine"],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **environment})
