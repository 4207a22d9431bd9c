"""The one read of the device a training step makes: named values, summed over processes, read together.

Reading a value on the host stalls a GPU until its queue drains, and on several
processes each value a decision rests on must be summed over them first, so that
every rank decides alike. :class:`StepRead` does both once per optimizer step for
everyone: callbacks name the device scalars they need (:meth:`StepRead.provide`),
and it stacks them, sums them over processes in one collective, reads them in one
``tolist()`` and calls each listener (:meth:`StepRead.listen`) with the values by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import lightning as L
import torch
from torch import Tensor

#: Makes a provided value at the read: a scalar, or a list of scalars (one name, several values).
Collect = Callable[[torch.optim.Optimizer], Tensor | Sequence[Tensor]]


@dataclass(frozen=True)
class Reading:
    """One step's values, by name, each summed over the ``processes``: a number, or a list of them."""

    values: Mapping[str, float | list[float]]
    processes: int

    def __getitem__(self, name: str) -> float | list[float]:
        return self.values[name]

    def __contains__(self, name: str) -> bool:
        return name in self.values

    def mean(self, name: str) -> float:
        """A scalar value's mean over the processes."""
        return self.values[name] / self.processes


#: Called after each read with the trainer, the module, the optimizer about to step and the reading.
Listen = Callable[[L.Trainer, L.LightningModule, torch.optim.Optimizer, Reading], None]


class StepRead(L.Callback):
    """Read the values callbacks provide once per optimizer step, in ``on_before_optimizer_step``.

    A callback provides values and listens to readings from its own hooks at the start
    of fitting, through :meth:`of`, which finds the trainer's :class:`StepRead` or adds
    one: every subscriber of a trainer shares one read, and a callback used alone
    brings it. The listeners are called by the read itself, right after it and before
    the optimizer steps, so no order of the trainer's callbacks can make one decide on
    a stale value; a value wanted later in the step (at ``on_train_batch_end``) is the
    one the listener kept. Subscribing again (a second ``fit``) changes nothing.
    """

    def __init__(self) -> None:
        self._providers: dict[str, Collect] = {}
        self._listeners: list[Listen] = []

    @staticmethod
    def of(trainer: L.Trainer) -> StepRead:
        """The trainer's step read; one is added to its callbacks if it has none."""
        for callback in trainer.callbacks:
            if isinstance(callback, StepRead):
                return callback
        read = StepRead()
        trainer.callbacks.append(read)  # Lightning looks its callbacks up afresh at every hook
        return read

    def provide(self, name: str, collect: Collect) -> None:
        """Read ``collect(optimizer)`` at each step under ``name``; it must give the same number of scalars
        on every process."""
        if self._providers.get(name, collect) != collect:
            raise ValueError(f"StepRead: two callbacks provide a value named {name!r}; give one of them "
                             "another name.")
        self._providers[name] = collect

    def listen(self, listener: Listen) -> None:
        """Call ``listener`` with each step's :class:`Reading`, in the order listeners were added."""
        if listener not in self._listeners:
            self._listeners.append(listener)

    def on_before_optimizer_step(self, trainer: L.Trainer, module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        collected = {name: collect(optimizer) for name, collect in self._providers.items()}
        scalars = [value.float() for values in collected.values()
                   for value in ((values,) if isinstance(values, Tensor) else values)]
        read = iter(sum_over_processes(trainer, torch.stack(scalars)).tolist() if scalars else [])
        values = {name: next(read) if isinstance(given, Tensor) else [next(read) for _ in given]
                  for name, given in collected.items()}
        reading = Reading(values, trainer.world_size)
        for listener in self._listeners:
            listener(trainer, module, optimizer, reading)


def sum_over_processes(trainer: L.Trainer, values: Tensor) -> Tensor:
    """``values`` summed over the trainer's processes (one collective), on the device."""
    return trainer.strategy.reduce(values, reduce_op="sum") if trainer.world_size > 1 else values
