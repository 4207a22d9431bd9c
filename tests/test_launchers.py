"""Every launcher of a 2-process run: Lightning's own, torchrun and srun write one folder and resume it exactly.

srun cannot run here; its processes are started by hand with the environment it
sets. Every launch trains the same 2-process CPU run (gloo), so a run that Lightning's
launcher or srun stopped and resumed must end with the weights of torchrun's
uninterrupted run. How each launcher's processes find their run's folder again is
tested in-process (``tests/test_resume.py``).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from datamodules.tiny import write_images

ROOT = Path(__file__).resolve().parents[1]
SLURM_JOB = "4242"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("images"), 60)


def arguments(images: Path, output: Path, *extra: str) -> list[str]:
    return ["train.py", "--data", "mnist", "--data-dir", str(images), "--output-dir", str(output),
            "--accelerator", "cpu", "--batch-size", "10", "--latents", "3", "--categories", "4",
            "--model-arg", "hidden_sizes=[16, 8]", "--binarize", "dynamic", "--resume", "auto",
            "--trainer-arg", "enable_progress_bar=false", *extra]


def clean_environment(**variables: str) -> dict[str, str]:
    keep = {key: value for key, value in os.environ.items()
            if not key.startswith(("SLURM_", "TORCHELASTIC_", "DISCRETE_ZOO_")) and key not in ("RANK", "WORLD_SIZE")}
    return {**keep, **variables}


def torchrun(images: Path, output: Path, *extra: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               *arguments(images, output, "--devices", "2", *extra)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=clean_environment())
    assert result.returncode == 0, result.stderr[-3000:]


def slurm_processes(images: Path, output: Path, *extra: str, tasks: int = 2,
                    environment: dict[str, str] | None = None) -> list[subprocess.Popen]:
    """``tasks`` processes with the variables srun gives the tasks of job SLURM_JOB on one node.

    The rendezvous port is a free one, not the one Lightning derives from the job id,
    which the previous launch of the same job may still hold for a moment.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    return [subprocess.Popen(
        [sys.executable, *arguments(images, output, "--devices", str(tasks), *extra)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=clean_environment(SLURM_JOB_ID=SLURM_JOB, SLURM_JOB_NAME="zoo", SLURM_NTASKS=str(tasks),
                              SLURM_NTASKS_PER_NODE=str(tasks), SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank),
                              SLURM_NODEID="0", SLURM_NODELIST="127.0.0.1", MASTER_PORT=port, **(environment or {})))
        for rank in range(tasks)]


def finish(processes: list[subprocess.Popen]) -> list[tuple[int, str]]:
    return [(process.wait(timeout=300), process.communicate()[1]) for process in processes]


def only_run(output: Path) -> Path:
    (run,) = (output / "vae-mnist-reinmax").iterdir()
    return run


def lightning_launch(images: Path, output: Path, *extra: str) -> None:
    """``python train.py --devices 2``: Lightning starts the second process itself."""
    result = subprocess.run([sys.executable, *arguments(images, output, "--devices", "2", "--strategy", "ddp",
                                                        *extra)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300, env=clean_environment())
    assert result.returncode == 0, result.stderr[-3000:]


def srun(images: Path, output: Path, *extra: str) -> None:
    for status, stderr in finish(slurm_processes(images, output, *extra)):
        assert status == 0, stderr[-3000:]


def test_every_launcher_writes_one_folder_logs_once_and_resumes_exactly(images, tmp_path):
    torchrun(images, tmp_path / "torchrun", "--max-steps", "10")
    run = only_run(tmp_path / "torchrun")
    assert run.name.startswith("torchrun-")
    expected = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert expected["global_step"] == 10

    for launcher, launch, prefix in (("lightning", lightning_launch, "version_0"),
                                     ("srun", srun, f"slurm-{SLURM_JOB}-")):
        launch(images, tmp_path / launcher, "--max-steps", "4", "--checkpoint-every", "2")  # 3 steps an epoch
        run = only_run(tmp_path / launcher)
        assert run.name.startswith(prefix) and len(list(run.glob("events.out.tfevents.*"))) == 1  # rank 0 logs
        stopped = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        states = stopped["callbacks"]["PerRankSeed"]["random_states"]
        assert stopped["global_step"] == 4 and len(states) == 2
        assert not torch.equal(states[0]["cpu"], states[1]["cpu"])  # each rank draws its own noise
        launch(images, tmp_path / launcher, "--max-steps", "10")  # the same command continues it (--resume auto)
        assert only_run(tmp_path / launcher) == run
        resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
        assert resumed["global_step"] == 10
        for name, tensor in expected["state_dict"].items():
            assert torch.equal(resumed["state_dict"][name], tensor), (launcher, name)


def test_slurms_requeue_signal_saves_the_step_and_requeues_the_job(images, tmp_path):
    """SIGUSR1 before the time limit (``#SBATCH --signal=SIGUSR1@90``): checkpoint, ``scontrol requeue``, 143."""
    bin_folder, calls = tmp_path / "bin", tmp_path / "scontrol-calls"
    bin_folder.mkdir()
    scontrol = bin_folder / "scontrol"
    scontrol.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    scontrol.chmod(0o755)
    path = f"{bin_folder}{os.pathsep}{os.environ['PATH']}"
    (process,) = slurm_processes(images, tmp_path / "out", "--max-steps", "600", "--batch-size", "5",
                                 tasks=1, environment={"PATH": path})
    runs = tmp_path / "out" / "vae-mnist-reinmax"
    while process.poll() is None and not list(runs.glob("slurm-*/checkpoints/last.ckpt")):
        time.sleep(0.02)
    process.send_signal(signal.SIGUSR1)
    ((status, stderr),) = finish([process])
    assert status == 143, stderr[-3000:]
    step = torch.load(only_run(tmp_path / "out") / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert f"stopped by SIGUSR1 after step {step}" in stderr and f"SLURM job {SLURM_JOB} is requeued" in stderr
    assert calls.read_text() == f"requeue {SLURM_JOB}\n"
