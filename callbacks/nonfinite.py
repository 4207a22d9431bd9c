"""Stop (or skip) a training step whose loss or gradient is not finite, before it touches the weights."""

from __future__ import annotations

import math

import lightning as L
import torch
from torch import Tensor

from zoo.estimators import Estimator

from .step_read import Reading, StepRead, sum_over_processes

ACTIONS = ("stop", "skip")
#: A loss scaler that skips this many optimizer steps in a row has collapsed: its
#: scale has been halved this many times (2^30 ≈ 1e9), and the run trains nothing.
MAX_CONSECUTIVE_SCALER_SKIPS = 30
#: The names of the guard's values in the step's read: the loss (the progress bar shows it too), the
#: estimators' flag and the gradients' summaries.
LOSS, INVALID_LOGITS, GRADIENTS = "loss", "invalid_logits", "gradient_summaries"


class NonFiniteError(RuntimeError):
    """Training met a NaN or infinite loss or gradient; the message names the step."""


class NonFiniteGuard(L.Callback):
    """Check the loss, the gradients and the estimators' logits before each optimizer step.

    ``action="stop"`` raises :class:`NonFiniteError` before the optimizer step, so
    the weights, and every checkpoint already written, stay as they were;
    ``train.py`` turns it into a message and a non-zero exit. ``action="skip"``
    drops that step's gradients (the optimizer leaves parameters without a
    gradient untouched), counts it in ``train/skipped_steps`` and goes on.

    Reading a value on the host stalls a GPU until its queue drains, so the checks
    are collected on the device: the model's estimators set a flag instead of
    raising (:meth:`Estimator.defer_checks`). The flag, the loss (its mean over the
    step's backward passes, so accumulated gradients are all covered) and one
    summary of each gradient are provided to the step's one read
    (:class:`~callbacks.step_read.StepRead`), which sums them over processes, so
    every process stops, or skips, the same step; none is left waiting in a
    collective. The loss is provided as :data:`LOSS`, for the progress bar too;
    :attr:`last_loss` is its mean over processes at the last read.

    Under a loss scaler (``--precision 16-mixed``) a non-finite gradient is the
    scaler's business: it skips the step and halves its scale, as it does on
    purpose every so often. Such steps are counted in ``train/scaler_skipped_steps``;
    only :data:`MAX_CONSECUTIVE_SCALER_SKIPS` of them in a row stop the run.
    """

    def __init__(self, action: str = "stop", max_consecutive_scaler_skips: int = MAX_CONSECUTIVE_SCALER_SKIPS) -> None:
        if action not in ACTIONS:
            raise ValueError(f"NonFiniteGuard: action must be one of {', '.join(ACTIONS)}, got {action!r}.")
        self.action = action
        self.max_consecutive_scaler_skips = max_consecutive_scaler_skips
        self.skipped_steps = 0
        self.scaler_skipped_steps = 0
        self.consecutive_scaler_skips = 0
        self.last_loss: float | None = None
        self._loss: Tensor | None = None  # summed over the backward passes since the last optimizer step
        self._backward_passes = 0
        self._invalid_logits: Tensor | None = None

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._invalid_logits = torch.zeros((), dtype=torch.bool, device=module.device)
        for estimator in _estimators(module):
            estimator.defer_checks(self._invalid_logits)
        read = StepRead.of(trainer)
        read.provide(LOSS, self._step_loss)
        read.provide(INVALID_LOGITS, self._take_invalid_logits)
        read.provide(GRADIENTS, self._gradient_summaries)
        read.listen(self._check)

    def teardown(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        for estimator in _estimators(module):
            estimator.defer_checks(None)  # direct calls after training check eagerly again

    def on_exception(self, trainer: L.Trainer, module: L.LightningModule, exception: BaseException) -> None:
        self.teardown(trainer, module, "fit")  # Lightning skips teardown when fit raises

    def on_before_backward(self, trainer: L.Trainer, module: L.LightningModule, loss: Tensor) -> None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        # Under a loss scaler this is the scaled loss; its scale, read on the device, undoes that.
        loss = loss.detach() if scaler is None else loss.detach() / scaler._get_scale_async()
        self._loss = loss if self._loss is None else self._loss + loss
        self._backward_passes += 1

    def _step_loss(self, optimizer: torch.optim.Optimizer) -> Tensor:
        """The loss's mean over this step's backward passes, on the device; the sum starts again."""
        loss = torch.zeros((), device=self._invalid_logits.device) if self._loss is None else (
            self._loss / self._backward_passes)
        self._loss, self._backward_passes = None, 0
        return loss

    def _take_invalid_logits(self, optimizer: torch.optim.Optimizer) -> Tensor:
        """Whether an estimator met logits without a distribution since the last read; the flag is cleared."""
        flag = self._invalid_logits.float()
        self._invalid_logits.zero_()
        return flag

    def _gradient_summaries(self, optimizer: torch.optim.Optimizer) -> list[Tensor]:
        return gradient_summaries([p.grad for group in optimizer.param_groups for p in group["params"]
                                   if p.grad is not None])

    def _check(self, trainer: L.Trainer, module: L.LightningModule, optimizer: torch.optim.Optimizer,
               reading: Reading) -> None:
        """Stop, skip or let the step be, from its values read on the host."""
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.last_loss = reading.mean(LOSS)
        gradients_bad = not math.isfinite(sum(reading[GRADIENTS]))
        problems = [problem for problem, bad in (
            (f"the loss is {self.last_loss}", not math.isfinite(self.last_loss)),
            ("the gradient norm is not finite", gradients_bad and scaler is None),
            ("the estimator met logits with no valid distribution (NaN or +inf, or a row all -inf)",
             reading[INVALID_LOGITS] > 0),
        ) if bad]
        if not problems and gradients_bad:
            self._count_scaler_skip(trainer, module, scaler)
            return
        self.consecutive_scaler_skips = 0
        if not problems:
            return
        if self.action == "stop":
            raise NonFiniteError(
                f"non-finite values at step {trainer.global_step} (epoch {trainer.current_epoch}): "
                f"{'; '.join(problems)}. The weights are those before this step and the checkpoints already "
                "written are kept. Lower the learning rate, clip gradients (--gradient-clip-val), resume from the "
                "last checkpoint, or skip such steps with --on-nonfinite skip."
            )
        for group in optimizer.param_groups:
            for parameter in group["params"]:
                parameter.grad = None
        self.skipped_steps += 1
        module.log("train/skipped_steps", float(self.skipped_steps))

    def on_validation_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self._invalid_logits is not None:
            self._invalid_logits.zero_()

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        """Validation has no step to skip: logits without a distribution there stop the run."""
        if self._invalid_logits is None:
            return
        if sum_over_processes(trainer, self._invalid_logits.float()).item():
            raise NonFiniteError(
                f"validation after step {trainer.global_step} met logits with no valid distribution (NaN or +inf, "
                "or a row all -inf): the weights have diverged. The checkpoints already written are kept; lower "
                "the learning rate or clip gradients (--gradient-clip-val), and resume from an earlier checkpoint."
            )

    def _count_scaler_skip(self, trainer: L.Trainer, module: L.LightningModule, scaler) -> None:
        self.scaler_skipped_steps += 1
        self.consecutive_scaler_skips += 1
        module.log("train/scaler_skipped_steps", float(self.scaler_skipped_steps))
        if self.consecutive_scaler_skips >= self.max_consecutive_scaler_skips:
            raise NonFiniteError(
                f"the loss scaler skipped the last {self.consecutive_scaler_skips} optimizer steps (to step "
                f"{trainer.global_step}) for non-finite gradients: its scale has collapsed to {scaler.get_scale():.3g} "
                "and the run trains nothing. The checkpoints already written are kept; lower the learning rate, "
                "clip gradients (--gradient-clip-val), or train in bf16-mixed or 32-true precision."
            )

    def state_dict(self) -> dict[str, int]:
        return {"skipped_steps": self.skipped_steps, "scaler_skipped_steps": self.scaler_skipped_steps}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        self.skipped_steps = state_dict["skipped_steps"]
        self.scaler_skipped_steps = state_dict.get("scaler_skipped_steps", 0)


def gradient_summaries(gradients: list[Tensor]) -> list[Tensor]:
    """One float32 scalar per gradient that is finite exactly when all its entries are.

    Up to overflow: on an accelerator each gradient's 2-norm, in one fused kernel (as
    ``clip_grad_norm_(error_if_nonfinite=True)`` tests them; it overflows past entries
    of ~1e19); on a CPU, where that kernel is slower than a plain sum, each
    gradient's sum (which overflows only past ~1e33). The exact test, the largest
    magnitude, is 7x slower on a CPU.
    """
    if not gradients:
        return []
    if gradients[0].device.type == "cpu":
        return [gradient.sum(dtype=torch.float32) for gradient in gradients]
    return [norm.float() for norm in torch._foreach_norm(gradients)]


def _estimators(module: L.LightningModule) -> list[Estimator]:
    return [child for child in module.modules() if isinstance(child, Estimator)]
