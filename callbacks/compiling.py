"""``--compile``: the model's loss and the optimizer's update compiled with ``torch.compile``.

A small model's step on a CPU is mostly the cost of running many small operators
one at a time and of the temporaries between them; on a GPU it is the cost of
launching them. Compiling fuses them. Two parts of a step are compiled:

* the model's loss computation: each model says which of its functions or modules
  that is, in ``compile_parts(compile)`` (the VAEs their loss, ListOps one merge of
  its parser; GDAS none, and why), with ``fullgraph=True`` unless the estimator
  declares why it cannot be captured whole (``Estimator.graph_break``);
* the optimizer's update, as PyTorch's recipe does it (a compiled function that calls
  ``optimizer.step()``), for optimizers without a fused implementation (RAdam).
  Adam, AdamW and SGD are built ``fused=True`` whether or not ``--compile`` is given
  (``zoo.models.make_optimizer``); their one kernel is what a compiled update would be.

Compiled functions replace the model's methods on the instance and modules compile in
place (``nn.Module.compile``), so parameter names, checkpoints and releases are those
of an uncompiled model, and a run may be resumed with or without ``--compile``.
Compilation happens in the first step; its time is printed once. Inductor's cache is
``TORCHINDUCTOR_CACHE_DIR`` (default: a folder in the system's temporary directory,
never ``$HOME``), which also holds Triton's. On a CPU inductor needs a C++ compiler;
without one the run says so and trains uncompiled.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

import lightning as L
import torch

from zoo.models import PartCompiler

#: The backends ``--compile`` takes: inductor generates code; aot_eager traces the forward and backward graphs
#: but runs them eagerly, eager only captures the graphs. The last two isolate a problem's layer (and compile fast).
COMPILERS = ("inductor", "aot_eager", "eager")
#: Optimizers whose update has no fused implementation in torch: their ``step`` is compiled instead.
UNFUSED_OPTIMIZERS = (torch.optim.RAdam,)


def compile_optimizer_step(optimizer: torch.optim.Optimizer, backend: str) -> None:
    """Compile ``optimizer``'s update, keeping ``step(closure)`` as Lightning calls it.

    The closure (forward, backward and the hooks before the step) runs eagerly; the
    update that follows runs compiled, as ``torch.compile(lambda: optimizer.step())``
    in PyTorch's recipe for compiling an optimizer.
    """
    update = optimizer.step
    compiled_update = torch.compile(lambda: update(), backend=backend)

    def step(closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        compiled_update()
        return loss

    optimizer.step = step


def missing_cpp_compiler() -> str | None:
    """The C++ compiler inductor looks for on a CPU, named, if none of them is installed; None if one is."""
    import torch._inductor.config as inductor

    searched = [name for name in inductor.cpp.cxx if name]
    return None if any(shutil.which(name) for name in searched) else " or ".join(searched)


class CompiledTraining(L.Callback):
    """Compile the model's parts and the optimizers' updates when fitting starts; print the compile time once."""

    def __init__(self, backend: str = "inductor") -> None:
        if backend not in COMPILERS:
            raise ValueError(f"CompiledTraining: backend must be one of {', '.join(COMPILERS)}, got {backend!r}.")
        self.backend = backend
        self._first_step_started: float | None = None
        self._timed = False

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        missing = missing_cpp_compiler() if self.backend == "inductor" and module.device.type == "cpu" else None
        if missing:
            self._timed = True
            if trainer.is_global_zero:
                print(f"--compile: no C++ compiler ({missing}) is installed, which inductor needs on a CPU; training "
                      "uncompiled. Install one (e.g. apt-get install g++) or pass --compile aot_eager.", flush=True)
            return
        compiled = getattr(module, "_parts_compiled", None)
        if compiled is None:  # a second fit of the same module keeps the parts compiled by the first
            compiler = PartCompiler(self.backend, getattr(getattr(module, "estimator", None), "graph_break", None))
            module.compile_parts(compiler)
            compiled = module._parts_compiled = compiler.compiled
            for note in compiler.notes if trainer.is_global_zero else ():
                print(f"--compile: {note}", flush=True)
        for optimizer in trainer.optimizers:
            if isinstance(optimizer, UNFUSED_OPTIMIZERS):
                compile_optimizer_step(optimizer, self.backend)
                compiled += 1
        self._timed = not compiled

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, index: int) -> None:
        if not self._timed and self._first_step_started is None:
            self._first_step_started = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any,
                           index: int) -> None:
        if self._timed:
            return
        self._timed = True
        if trainer.is_global_zero:
            print(f"compiled in {time.perf_counter() - self._first_step_started:.1f} s (the first step: the "
                  "model's loss, its gradient and the optimizer's update)", flush=True)
