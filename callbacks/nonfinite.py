"""Stop (or skip) a training step whose loss or gradient is not finite, before it touches the weights."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor

ACTIONS = ("stop", "skip")


class NonFiniteError(RuntimeError):
    """Training met a NaN or infinite loss or gradient; the message names the step."""


class NonFiniteGuard(L.Callback):
    """Check the loss before backward and the gradients before the optimizer step.

    ``action="stop"`` raises :class:`NonFiniteError` before the optimizer step, so
    the weights, and every checkpoint already written, stay as they were;
    ``train.py`` turns it into a message and a non-zero exit. ``action="skip"``
    drops that step's gradients (the optimizer leaves parameters without a
    gradient untouched), counts it in ``train/skipped_steps`` and goes on.
    The gradient check is one reduction and one host sync per step.
    """

    def __init__(self, action: str = "stop") -> None:
        if action not in ACTIONS:
            raise ValueError(f"NonFiniteGuard: action must be one of {', '.join(ACTIONS)}, got {action!r}.")
        self.action = action
        self.skipped_steps = 0
        self._loss_problem: str | None = None

    def on_before_backward(self, trainer: L.Trainer, module: L.LightningModule, loss: Tensor) -> None:
        self._loss_problem = None if bool(torch.isfinite(loss.detach()).all()) else f"the loss is {loss.item()}"

    def on_before_optimizer_step(self, trainer: L.Trainer, module: L.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        problem = self._loss_problem
        if problem is None and gradients and not bool(torch.stack([g.isfinite().all() for g in gradients]).all()):
            problem = "a gradient is not finite"
        if problem is None:
            return
        step = trainer.global_step
        if self.action == "stop":
            raise NonFiniteError(
                f"non-finite values at step {step} (epoch {trainer.current_epoch}): {problem}. The weights are "
                "those before this step and the checkpoints already written are kept. Lower the learning rate, "
                "clip gradients (--gradient-clip-val), resume from the last checkpoint, or skip such steps with "
                "--on-nonfinite skip."
            )
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None
        self.skipped_steps += 1
        module.log("train/skipped_steps", float(self.skipped_steps))

    def state_dict(self) -> dict[str, int]:
        return {"skipped_steps": self.skipped_steps}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped_steps = state_dict["skipped_steps"]
