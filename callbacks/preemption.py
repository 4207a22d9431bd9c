"""Stop on a scheduler's signal at the end of the current step, with a checkpoint of it."""

from __future__ import annotations

import signal
from types import FrameType

import lightning as L
import torch
from lightning.pytorch.plugins.environments import SLURMEnvironment

from .checkpoint import RunCheckpoints
from .slurm import requeue_slurm_job
from .step_read import Reading, StepRead

#: What a process ended by SIGTERM reports (128 + 15), so a job script knows the run is not finished.
EXIT_STATUS = 128 + signal.SIGTERM
#: The signal a SLURM batch job asks for before its time limit (``#SBATCH --signal=SIGUSR1@90``),
#: as for Lightning's own requeueing.
SLURM_REQUEUE_SIGNAL = signal.SIGUSR1
#: The name of the stop flag in the step's read: how many processes received a signal.
SIGNALLED = "signalled"


class Preempted(RuntimeError):
    """The run was told to stop and wrote ``last.ckpt`` at the step it had reached."""


class StopOnSignal(L.Callback):
    """Turn SIGTERM into a checkpoint at the current step and a :class:`Preempted` error.

    Schedulers send SIGTERM some time before they kill a job. The handler only
    sets a flag, provided as :data:`SIGNALLED` to the step's one read
    (:class:`~callbacks.step_read.StepRead`): summed over processes with the
    step's other values, so every rank finishes the same optimizer step, writes
    its share of ``last.ckpt`` and stops together, even when the signal reached
    one process only. Lightning's own handlers, replaced while training runs, stop
    each rank where it stands (SIGTERM) or save from inside the handler, in the
    middle of a step (SLURM's requeue signal).

    In a SLURM batch job, :data:`SLURM_REQUEUE_SIGNAL` does the same and then
    requeues the job (``scontrol requeue``, as Lightning does): the new job has the
    same id, hence the same run folder, and its ``--resume auto`` continues the run.

    With its handlers replaced, Lightning's own SIGTERM flag stays unset, yet on
    several processes Lightning broadcasts it from rank 0 and reads it at every
    batch: a collective and a device sync each step for nothing. That broadcast is
    switched off while training runs; the flag in the step's read carries the signal.
    """

    def __init__(self, checkpoints: RunCheckpoints) -> None:
        self.checkpoints = checkpoints
        self.signals = (signal.SIGTERM, *((SLURM_REQUEUE_SIGNAL,) if SLURMEnvironment.detect() else ()))
        self.received: signal.Signals | None = None
        self._flag: torch.Tensor | None = None
        self._any_process_received = False  # at the last read
        self._previous_handlers: dict[signal.Signals, object] = {}

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._flag = torch.zeros((), device=module.device)
        read = StepRead.of(trainer)
        read.provide(SIGNALLED, self._provide_flag)
        read.listen(self._receive)
        for number in self.signals:
            self._previous_handlers[number] = signal.signal(number, self._handle)
        if trainer.world_size > 1:
            trainer.fit_loop.epoch_loop._broadcast_sigterm_tensor = _no_broadcast

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(number)
        self._flag.fill_(1)

    def _provide_flag(self, optimizer: torch.optim.Optimizer) -> torch.Tensor:
        return self._flag

    def _receive(self, trainer: L.Trainer, module: L.LightningModule, optimizer: torch.optim.Optimizer,
                 reading: Reading) -> None:
        self._any_process_received = reading[SIGNALLED] > 0

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch,
                           batch_index: int) -> None:
        if not self._any_process_received:
            return
        path = self.checkpoints.save_last(trainer)
        name = self.received.name if self.received else "a signal to another process"
        message = f"stopped by {name} after step {trainer.global_step}; {path} holds it."
        if self.received == SLURM_REQUEUE_SIGNAL and SLURM_REQUEUE_SIGNAL in self.signals and trainer.is_global_zero:
            message += " " + requeue_slurm_job()
        raise Preempted(f"{message} Run the same command with --resume auto to continue.")

    def teardown(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        self._previous_handlers.clear()
        vars(trainer.fit_loop.epoch_loop).pop("_broadcast_sigterm_tensor", None)  # Lightning's own again

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, module, "fit")  # Lightning skips teardown when fit raises


def _no_broadcast() -> None:
    """Stands in for Lightning's per-batch broadcast of its SIGTERM flag, which these handlers leave unset."""
