"""The SLURM job a process runs in: its id as ``scontrol`` names it, and requeueing it.

Kept apart from the preemption callback and free of torch and Lightning, so that
``zoo.runs``, which names a run's folder after the job, imports it cheaply.
"""

from __future__ import annotations

import os
import subprocess


def slurm_job_id() -> str:
    """This SLURM job's id as ``scontrol`` names it: ``ARRAYJOB_TASK`` for a task of a job array."""
    job = os.environ["SLURM_JOB_ID"]
    if "SLURM_ARRAY_TASK_ID" in os.environ:
        job = f"{os.environ.get('SLURM_ARRAY_JOB_ID', job)}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return job


def requeue_slurm_job() -> str:
    """Put this SLURM job back in the queue; a sentence saying how it went."""
    job = slurm_job_id()
    try:
        result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"Requeueing SLURM job {job} failed ({error}); requeue it yourself."
    if result.returncode != 0:
        return f"Requeueing SLURM job {job} failed ({result.stderr.strip()}); requeue it yourself."
    return f"SLURM job {job} is requeued."
