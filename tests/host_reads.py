"""Count the reads of tensor values on the host made while Lightning fits a model.

On a GPU each such read (``item``, ``bool``, ``tolist``, ...) waits until every queued
kernel has run, so a training step should make as few as possible. Counted from a
``TorchFunctionMode``, whoever makes them (the project, Lightning, torchmetrics),
except the reads of ``torch.optim`` (its step counters live on the CPU even on a
GPU) and those of the data modules, which build batches from CPU index tensors.
"""

from __future__ import annotations

import collections
import sys

import lightning as L
import torch
from torch.overrides import TorchFunctionMode

READS = frozenset({"item", "__bool__", "tolist", "cpu", "numpy", "__int__", "__float__", "__index__"})
_TORCH = ("/torch/",)
_EXEMPT_INSIDE = ("/torch/optim/",)
_EXEMPT_CALLERS = ("/datamodules/",)


class HostReads(TorchFunctionMode):
    """Counts host reads by the place (``file:line``) they were made from, while :attr:`active`."""

    def __init__(self) -> None:
        super().__init__()
        self.active = False
        self.places: collections.Counter[str] = collections.Counter()

    @property
    def total(self) -> int:
        return sum(self.places.values())

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if self.active and getattr(func, "__name__", "") in READS and args and isinstance(args[0], torch.Tensor):
            self._count(func.__name__)
        return func(*args, **(kwargs or {}))

    def _count(self, name: str) -> None:
        # Walking the frames, not traceback.extract_stack(): that reads every frame's source line, and torch
        # makes dozens of exempt reads a step inside its own functions, each of which comes here.
        frame = sys._getframe(2)  # the caller of __torch_function__
        inside = []
        while frame is not None and any(part in frame.f_code.co_filename for part in _TORCH):
            inside.append(frame.f_code.co_filename)
            frame = frame.f_back
        if frame is None or any(part in file for file in inside for part in _EXEMPT_INSIDE):
            return
        caller = frame.f_code.co_filename
        if any(part in caller for part in _EXEMPT_CALLERS):
            return
        self.places[f"{name} {caller.split('site-packages/')[-1]}:{frame.f_lineno}"] += 1


class CountDuringFit(L.Callback):
    """Switches a :class:`HostReads` on from ``setup`` to the end of training.

    Left out: the teardown after training, where Lightning moves the model back to
    the CPU (once a run, not a step). Add it last, so that the other callbacks'
    ``on_train_end`` (the final checkpoint) is counted.
    """

    def __init__(self, reads: HostReads) -> None:
        self.reads = reads

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        self.reads.active = True

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.reads.active = False
