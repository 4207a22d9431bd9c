"""The step's one read: the values callbacks provide, summed over processes and read on the host once."""

from __future__ import annotations

from types import SimpleNamespace

import lightning as L
import pytest
import torch

from callbacks.nonfinite import NonFiniteError, NonFiniteGuard
from callbacks.progress import LossProgressBar
from callbacks.step_read import Reading, StepRead
from tests.callbacks.test_nonfinite import Regression, batches
from tests.host_reads import HostReads


class Summing:
    """Stands in for a strategy of ``processes`` processes that all hold the same values."""

    def __init__(self, processes: int) -> None:
        self.processes, self.calls = processes, 0

    def reduce(self, values: torch.Tensor, reduce_op: str) -> torch.Tensor:
        assert reduce_op == "sum"
        self.calls += 1
        return values * self.processes


def trainer_of(processes: int) -> SimpleNamespace:
    return SimpleNamespace(world_size=processes, strategy=Summing(processes), callbacks=[])


class Subscriber:
    """Provides ``values`` under their names and keeps the readings it is given."""

    def __init__(self, read: StepRead, **values: torch.Tensor | list[torch.Tensor]) -> None:
        self.readings: list[Reading] = []
        for name, value in values.items():
            read.provide(name, lambda optimizer, value=value: value)
        read.listen(self.keep)

    def keep(self, trainer, module, optimizer, reading: Reading) -> None:
        self.readings.append(reading)


@pytest.mark.parametrize("processes", [1, 2])
def test_two_subscribers_get_their_values_by_name_from_one_collective_and_one_host_read(processes):
    read, trainer = StepRead(), trainer_of(processes)
    first = Subscriber(read, loss=torch.tensor(1.5), gradients=[torch.tensor(2.0), torch.tensor(-3.0)])
    second = Subscriber(read, flag=torch.tensor(True))
    reads = HostReads()
    with reads:
        reads.active = True
        read.on_before_optimizer_step(trainer, None, None)
        reads.active = False
    assert reads.total == 1 and trainer.strategy.calls == (processes > 1)
    assert first.readings == second.readings == [
        Reading({"loss": 1.5 * processes, "gradients": [2.0 * processes, -3.0 * processes], "flag": processes},
                processes)]
    assert first.readings[0].mean("loss") == 1.5 and "flag" in first.readings[0] and "other" not in first.readings[0]


def test_a_name_two_callbacks_provide_is_refused_and_subscribing_again_changes_nothing():
    read, trainer = StepRead(), trainer_of(1)
    subscriber = Subscriber(read, loss=torch.tensor(1.0))
    with pytest.raises(ValueError, match="^StepRead: two callbacks provide a value named 'loss'; give one of them "
                                         "another name.$"):
        Subscriber(read, loss=torch.tensor(2.0))
    read.listen(subscriber.keep)  # a second fit subscribes again
    read.on_before_optimizer_step(trainer, None, None)
    assert subscriber.readings == [Reading({"loss": 1.0}, 1)]


def test_a_trainer_has_one_step_read_added_by_its_first_subscriber():
    trainer = trainer_of(1)
    read = StepRead.of(trainer)
    assert StepRead.of(trainer) is read and trainer.callbacks == [read]
    given = StepRead()
    assert StepRead.of(SimpleNamespace(callbacks=[object(), given])) is given


def test_without_values_nothing_is_read():
    read, trainer = StepRead(), trainer_of(2)
    subscriber = Subscriber(read)
    read.on_before_optimizer_step(trainer, None, None)
    assert trainer.strategy.calls == 0 and subscriber.readings == [Reading({}, 2)]


def test_the_guard_and_the_progress_bar_share_one_read_and_the_bar_shows_the_guards_loss():
    bar, guard = LossProgressBar(), NonFiniteGuard("stop")
    model = Regression(bad_step=-1, bad_value=1.0)
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_model_summary=False, callbacks=[bar, guard])
    trainer.fit(model, batches(4))
    assert sum(isinstance(callback, StepRead) for callback in trainer.callbacks) == 1
    assert bar.loss is not None and bar.loss == guard.last_loss
    assert bar.get_metrics(trainer, model)["loss"] == guard.last_loss


@pytest.mark.parametrize("read_first", [True, False])
def test_the_guard_decides_on_this_steps_values_whatever_the_order_of_the_callbacks(read_first):
    guard, read = NonFiniteGuard("stop"), StepRead()
    model = Regression(bad_step=3, bad_value=float("nan"))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[read, guard] if read_first else [guard, read])
    with pytest.raises(NonFiniteError, match="non-finite values at step 3 "):
        trainer.fit(model, batches(8))
    assert trainer.callbacks.count(read) == 1 and sum(isinstance(c, StepRead) for c in trainer.callbacks) == 1
    torch.testing.assert_close(model.layer.weight, model.weights_seen[3], rtol=0, atol=0)
