"""Temperature schedules: their values, what they set during training, bad input."""

from __future__ import annotations

import math

import lightning as L
import pytest

from callbacks.temperature import TemperatureSchedule
from tests.small_models import RecordingLogger, loader, small_vae


def test_values_of_each_schedule():
    assert TemperatureSchedule(1.5).value(10**6) == 1.5
    linear = TemperatureSchedule(2.0, 1.0, "linear", duration=4)
    assert [linear.value(t) for t in (0, 1, 2, 4, 9)] == [2.0, 1.75, 1.5, 1.0, 1.0]
    exponential = TemperatureSchedule(10.0, 0.1, "exponential", duration=4)
    values = [exponential.value(t) for t in range(6)]
    assert values[0] == pytest.approx(10.0) and values[4] == pytest.approx(0.1) and values[5] == values[4]
    ratios = [later / earlier for earlier, later in zip(values[:4], values[1:5])]
    assert ratios == pytest.approx([math.pow(0.01, 0.25)] * 4)  # a constant decay factor


class TauRecorder(L.Callback):
    def __init__(self) -> None:
        self.taus: list[float] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
        self.taus.append(module.estimator.tau)


def fit(model, schedule, tmp_path, steps: int = 6, batches_per_epoch: int = 3, logger=False) -> TauRecorder:
    recorder = TauRecorder()
    trainer = L.Trainer(accelerator="cpu", logger=logger, log_every_n_steps=2, max_steps=steps,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path,
                        callbacks=[schedule, recorder])
    trainer.fit(model, train_dataloaders=loader(2 * batches_per_epoch, 2))
    return recorder


def test_a_per_step_schedule_sets_tau_before_each_step_and_logs_it(tmp_path):
    schedule = TemperatureSchedule(2.0, 1.0, "linear", duration=4)
    logger = RecordingLogger()
    recorder = fit(small_vae("reinmax", tau=3.0), schedule, tmp_path, logger=logger)
    assert recorder.taus == [schedule.value(step) for step in range(6)]
    logged = [(step, metrics["train/tau"]) for step, metrics in logger.calls if "train/tau" in metrics]
    assert logged == [(1, 1.75), (3, 1.25), (5, 1.0)]


def test_a_per_epoch_schedule_changes_tau_only_between_epochs(tmp_path):
    schedule = TemperatureSchedule(1.0, 0.25, "exponential", duration=2, interval="epoch")
    recorder = fit(small_vae("stgs"), schedule, tmp_path)
    assert recorder.taus == pytest.approx([1.0] * 3 + [0.5] * 3)


def test_a_schedule_outside_the_estimators_range_fails_before_training(tmp_path):
    model = small_vae("reinmax", tau=2.0)
    with pytest.raises(ValueError, match=r"reinmax: temperature tau=0\.5 is out of range; it must be finite and >= 1"):
        fit(model, TemperatureSchedule(2.0, 0.5, "linear", duration=10), tmp_path)
    assert model.estimator.tau == 2.0


def test_an_estimator_without_temperature_is_named(tmp_path):
    with pytest.raises(ValueError, match="reinforce has no temperature"):
        fit(small_vae("reinforce"), TemperatureSchedule(1.0), tmp_path)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (
            dict(start=1.0, schedule="cosine"),
            "unknown temperature schedule 'cosine'; valid schedules: constant, linear, exponential",
        ),
        (dict(start=1.0, interval="batch"), "unknown schedule interval 'batch'; valid intervals: step, epoch"),
        (
            dict(start=1.0, end=0.5, schedule="linear"),
            "a linear temperature schedule needs an end temperature and a duration",
        ),
        (dict(start=1.0, end=0.0, schedule="exponential", duration=3), "needs positive temperatures"),
    ],
)
def test_bad_schedules_are_named(arguments, message):
    with pytest.raises(ValueError, match=message):
        TemperatureSchedule(**arguments)
