"""A study on SLURM: one job array, one task a cell not done yet, written as a script and submitted with sbatch.

Each task runs ``python -m zoo.study cell`` under ``srun``, which is ``train.py``
with ``--resume auto`` plus the test split. SLURM sends SIGUSR1 90 s before a task's
time limit or its preemption (``--signal=SIGUSR1@90``): the run checkpoints at the
step it reached and requeues its own task (``scontrol requeue ARRAYJOB_TASK``, in
:mod:`callbacks.preemption`); the requeued task runs the same cell, which continues.
The script is a plain file beside the runs, to read, adapt and resubmit.

Why a script and not submitit: submitit requeues by installing its own handlers for
SLURM's signals and pickling the function it runs, which would fight the handler
that already checkpoints at a step boundary and requeues; and a job script needs no
new dependency, shows exactly what runs, and is what cluster users already know.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .local import cells_to_run
from .spec import Study, StudyError

#: The #SBATCH options every array gets; --sbatch-arg adds to them (and SLURM takes the last of a repeated one).
DEFAULT_OPTIONS = ("--requeue", "--signal=SIGUSR1@90", "--ntasks=1")


def job_script(study: Study, cells: Sequence[str], options: Sequence[str], parallel: int | None, logs: str) -> str:
    """The array job: task ``i`` runs the ``i``-th of ``cells``."""
    array = f"0-{len(cells) - 1}" + (f"%{parallel}" if parallel else "")
    lines = ["#!/bin/bash", f"#SBATCH --job-name={study.name}", f"#SBATCH --array={array}",
             f"#SBATCH --output={logs}/%A_%a.out"]
    lines += [f"#SBATCH {option}" for option in (*DEFAULT_OPTIONS, *options)]
    lines += ["", f"# {len(cells)} cells of {study.path}; written by `python -m zoo.study submit`.",
              "cells=(" + " ".join(shlex.quote(cell) for cell in cells) + ")",
              f"cd {shlex.quote(str(Path.cwd()))}  # where the study was submitted from",
              f"exec srun {shlex.quote(sys.executable)} -m zoo.study cell {shlex.quote(str(study.path))} "
              f"\"${{cells[$SLURM_ARRAY_TASK_ID]}}\" --output-dir {shlex.quote(str(study.output_dir))}", ""]
    return "\n".join(lines)


def submit(study: Study, options: Sequence[str], parallel: int | None, dry_run: bool) -> int:
    """Write the array script for the cells not done yet and submit it (or print it, with ``dry_run``)."""
    cells = [cell.name for cell in cells_to_run(study)]
    if not cells:
        print(f"study {study.name}: every cell is done or running; nothing to submit.")
        return 0
    if parallel is not None and parallel < 1:
        raise StudyError(f"--parallel must be at least 1, got {parallel}.")
    folder = study.output_dir / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / f"array-{time.strftime('%Y%m%d-%H%M%S')}.sh"
    script.write_text(job_script(study, cells, options, parallel, str(folder)))
    if dry_run:
        print(script.read_text(), end="")
        print(f"(written to {script}; submit it with: sbatch {script})")
        return 0
    if shutil.which("sbatch") is None:
        raise StudyError(f"sbatch is not on PATH: this is not a SLURM login node. The job script is {script}; "
                         "submit it from one, or run the study here with `python -m zoo.study run`.")
    result = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True)
    if result.returncode != 0:
        raise StudyError(f"sbatch refused {script}: {result.stderr.strip() or result.stdout.strip()}")
    job = result.stdout.strip().split(";")[0]
    print(f"study {study.name}: submitted job array {job}, {len(cells)} tasks (one a cell; script {script}). "
          f"Follow it with `python -m zoo.study status {study.path}`.")
    return 0
