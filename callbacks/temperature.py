"""Temperature schedules: the estimator's τ as a function of the training step or epoch."""

from __future__ import annotations

import math
from typing import Literal

import lightning as L

from zoo.models import logger_writes_this_step

SCHEDULES = ("constant", "linear", "exponential")
INTERVALS = ("step", "epoch")


class TemperatureSchedule(L.Callback):
    """Set ``module.estimator.tau`` from ``start`` to ``end`` over ``duration`` steps or epochs.

    ``linear`` interpolates, ``exponential`` interpolates ``log τ`` (a constant decay
    factor per step), and after ``duration`` the temperature stays at ``end``.
    ``constant`` holds ``start``. τ is a function of the trainer's step or epoch
    counter alone, so a resumed run continues the schedule where it stopped. Both
    ends are checked against the estimator's range (ReinMax needs τ ≥ 1) before
    training starts. The value in use is logged as ``train/tau``.
    """

    def __init__(
        self,
        start: float,
        end: float | None = None,
        schedule: Literal["constant", "linear", "exponential"] = "constant",
        duration: int | None = None,
        interval: Literal["step", "epoch"] = "step",
    ) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown temperature schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}.")
        if interval not in INTERVALS:
            raise ValueError(f"unknown schedule interval {interval!r}; valid intervals: {', '.join(INTERVALS)}.")
        if schedule != "constant":
            if end is None or duration is None or duration < 1:
                raise ValueError(
                    f"a {schedule} temperature schedule needs an end temperature and a duration "
                    f">= 1 {interval}s; got end={end!r}, duration={duration!r}."
                )
            if schedule == "exponential" and not (start > 0 and end > 0):
                raise ValueError(
                    f"an exponential temperature schedule needs positive temperatures; got {start} → {end}."
                )
        self.start = float(start)
        self.end = float(start if end is None or schedule == "constant" else end)
        self.schedule = schedule
        self.duration = duration
        self.interval = interval

    def value(self, time: int) -> float:
        """τ after ``time`` steps or epochs."""
        if self.schedule == "constant":
            return self.start
        progress = min(time / self.duration, 1.0)
        if self.schedule == "linear":
            return self.start + (self.end - self.start) * progress
        return math.exp(math.log(self.start) + (math.log(self.end) - math.log(self.start)) * progress)

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        estimator = getattr(module, "estimator", None)
        if estimator is None or not hasattr(estimator, "tau"):
            name = getattr(estimator, "name", type(module).__name__)
            raise ValueError(
                f"{name} has no temperature, so a temperature schedule cannot drive it; "
                "drop the schedule or choose a pathwise estimator."
            )
        initial = estimator.tau
        for value in (self.start, self.end):
            estimator.tau = value  # the estimator's own range check names the fix
        estimator.tau = initial

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.on_train_epoch_start(trainer, module)  # a run resumed in mid-epoch gets no epoch start

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.interval == "epoch":
            self._apply(module, self.value(trainer.current_epoch))

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, batch_index: int) -> None:
        if self.interval == "step":
            self._apply(module, self.value(trainer.global_step))
        if logger_writes_this_step(trainer):
            module.log("train/tau", module.estimator.tau)

    @staticmethod
    def _apply(module: L.LightningModule, tau: float) -> None:
        module.estimator.tau = tau

