"""Stop on a scheduler's SIGTERM at the end of the current step, with a checkpoint of it."""

from __future__ import annotations

import signal
from types import FrameType

import lightning as L
import torch

from callbacks.checkpoint import RunCheckpoints
from callbacks.nonfinite import NonFiniteGuard

#: What a process ended by SIGTERM reports (128 + 15), so a job script knows the run is not finished.
EXIT_STATUS = 128 + signal.SIGTERM


class Preempted(RuntimeError):
    """The run was told to stop and wrote ``last.ckpt`` at the step it had reached."""


class StopOnSignal(L.Callback):
    """Turn SIGTERM into a checkpoint at the current step and a :class:`Preempted` error.

    Schedulers send SIGTERM some time before they kill a job. The handler only
    sets a flag; the non-finite guard reads it with the step's other checks,
    summed over processes, so every rank finishes the same optimizer step, writes
    its share of ``last.ckpt`` and stops together, even when the signal reached
    one process only. Lightning's own handler, replaced while training runs, would
    stop each rank where it stands and make no checkpoint.
    """

    def __init__(self, checkpoints: RunCheckpoints, guard: NonFiniteGuard,
                 signals: tuple[signal.Signals, ...] = (signal.SIGTERM,)) -> None:
        self.checkpoints, self.guard, self.signals = checkpoints, guard, signals
        self.received: signal.Signals | None = None
        self._flag: torch.Tensor | None = None
        self._any_process_received = lambda: False
        self._previous_handlers: dict[signal.Signals, object] = {}

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._flag = torch.zeros((), device=module.device)
        self._any_process_received = self.guard.add_flag(self._flag)
        for number in self.signals:
            self._previous_handlers[number] = signal.signal(number, self._handle)

    def _handle(self, number: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(number)
        self._flag.fill_(1)

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch,
                           batch_index: int) -> None:
        if self._any_process_received():
            path = self.checkpoints.save_last(trainer)
            raise Preempted(f"stopped by {self.received.name if self.received else 'a signal to another process'} "
                            f"after step {trainer.global_step}; {path} holds it. Run the same command with "
                            "--resume auto to continue.")

    def teardown(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        for number, handler in self._previous_handlers.items():
            signal.signal(number, handler)
        self._previous_handlers.clear()

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, module, "fit")  # Lightning skips teardown when fit raises
