"""The NaN/inf guard: it stops before the bad step, or skips it, and says which step."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision
from torch import nn

from callbacks.nonfinite import MAX_CONSECUTIVE_SCALER_SKIPS, NonFiniteError, NonFiniteGuard
from zoo.estimators import get_estimator


class Regression(L.LightningModule):
    """A linear fit whose loss is replaced by ``bad_value`` at step ``bad_step``."""

    def __init__(self, bad_step: int, bad_value: float, where: str = "loss") -> None:
        super().__init__()
        self.layer = nn.Linear(3, 1)
        self.bad_step, self.bad_value, self.where = bad_step, bad_value, where
        self.weights_seen: list[torch.Tensor] = []

    def training_step(self, batch, batch_index):
        self.weights_seen.append(self.layer.weight.detach().clone())
        inputs, targets = batch
        loss = (self.layer(inputs) - targets).pow(2).mean()
        if self.where == "loss" and self.global_step == self.bad_step:
            loss = loss * self.bad_value
        return loss

    def on_after_backward(self) -> None:
        if self.where == "grad" and self.global_step == self.bad_step:  # a finite loss, a broken gradient
            self.layer.weight.grad[0, 0] = self.bad_value
        if self.where == "every-grad":
            self.layer.weight.grad[0, 0] = self.bad_value

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def batches(count: int = 8):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(count * 4, 3, generator=generator)
    return torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(inputs, inputs.sum(1, keepdim=True)), batch_size=4
    )


def fit(model: L.LightningModule, guard: NonFiniteGuard | None, count: int = 8, **settings) -> L.Trainer:
    """One epoch of ``count`` batches under the guard (none: Lightning alone)."""
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[] if guard is None else [guard],
        **settings,
    )
    trainer.fit(model, batches(count))
    return trainer


def cpu_loss_scaler(init_scale: float) -> MixedPrecision:
    """16-mixed on the CPU, with the loss scaler a GPU run has."""
    return MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu", init_scale=init_scale))


@pytest.mark.parametrize("where, bad_value", [("loss", float("nan")), ("loss", float("inf")), ("grad", float("nan"))])
def test_stop_raises_before_the_bad_step_and_names_it(where, bad_value):
    model = Regression(bad_step=3, bad_value=bad_value, where=where)
    with pytest.raises(NonFiniteError, match="non-finite values at step 3 .*--on-nonfinite skip"):
        fit(model, NonFiniteGuard("stop"))
    torch.testing.assert_close(model.layer.weight, model.weights_seen[3], rtol=0, atol=0)  # the step was not taken
    assert torch.isfinite(model.layer.weight).all()


def test_skip_drops_the_bad_step_and_trains_on():
    model = Regression(bad_step=3, bad_value=float("nan"))
    guard = NonFiniteGuard("skip")
    trainer = fit(model, guard)
    assert trainer.global_step == 8 and guard.skipped_steps == 1
    torch.testing.assert_close(model.weights_seen[4], model.weights_seen[3], rtol=0, atol=0)  # step 3 changed nothing
    assert not torch.equal(model.weights_seen[5], model.weights_seen[4])  # later steps do
    assert torch.isfinite(model.layer.weight).all()
    assert guard.state_dict() == {"skipped_steps": 1, "scaler_skipped_steps": 0}


def test_a_finite_run_is_untouched():
    guarded, plain = Regression(bad_step=-1, bad_value=1.0), Regression(bad_step=-1, bad_value=1.0)
    plain.load_state_dict(guarded.state_dict())
    fit(guarded, NonFiniteGuard("stop"))
    fit(plain, None)
    torch.testing.assert_close(guarded.layer.weight, plain.layer.weight, rtol=0, atol=0)


def test_an_unknown_action_is_refused():
    with pytest.raises(ValueError, match="action must be one of stop, skip, got 'ignore'"):
        NonFiniteGuard("ignore")


def test_a_loss_scaler_overflow_is_skipped_and_counted_not_a_failure():
    """A scale far too large overflows float16 gradients: the scaler skips those steps and halves it."""
    model = Regression(bad_step=-1, bad_value=1.0)
    guard = NonFiniteGuard("stop")
    trainer = fit(model, guard, count=24, plugins=[cpu_loss_scaler(2.0**24)])
    assert trainer.global_step == 24
    assert 1 <= guard.scaler_skipped_steps < 24 and guard.skipped_steps == 0
    assert torch.equal(model.weights_seen[1], model.weights_seen[0])  # the first step overflowed and was skipped
    assert not torch.equal(model.layer.weight, model.weights_seen[guard.scaler_skipped_steps])  # then it trained
    assert guard.state_dict() == {"skipped_steps": 0, "scaler_skipped_steps": guard.scaler_skipped_steps}


def test_a_collapsing_loss_scale_stops_the_run_with_a_message():
    model = Regression(bad_step=-1, bad_value=float("inf"), where="every-grad")
    guard = NonFiniteGuard("skip")  # skipping is the scaler's; a collapse stops even so
    with pytest.raises(
        NonFiniteError,
        match=rf"the loss scaler skipped the last {MAX_CONSECUTIVE_SCALER_SKIPS} "
        r"optimizer steps .* its scale has collapsed .* bf16-mixed",
    ):
        fit(model, guard, count=MAX_CONSECUTIVE_SCALER_SKIPS + 5, plugins=[cpu_loss_scaler(2.0**16)])
    assert guard.scaler_skipped_steps == MAX_CONSECUTIVE_SCALER_SKIPS
    torch.testing.assert_close(model.layer.weight, model.weights_seen[0], rtol=0, atol=0)


def test_a_nan_loss_under_a_loss_scaler_is_still_the_guards():
    model = Regression(bad_step=3, bad_value=float("nan"))
    with pytest.raises(NonFiniteError, match="non-finite values at step 3 .*the loss is nan"):
        fit(model, NonFiniteGuard("stop"), plugins=[cpu_loss_scaler(2.0**8)])


class Categorical(Regression):
    """Fits through an estimator's sample; its logits turn NaN at ``bad_step``."""

    def __init__(self, bad_step: int) -> None:
        super().__init__(bad_step, float("nan"), where="logits")
        self.estimator = get_estimator("reinmax")

    def training_step(self, batch, batch_index):
        self.weights_seen.append(self.layer.weight.detach().clone())
        inputs, targets = batch
        logits = torch.cat((self.layer(inputs), torch.zeros_like(targets)), -1)
        if self.global_step == self.bad_step:
            logits = logits * self.bad_value
        sample, _ = self.estimator(logits)
        return (sample[:, :1] - targets.sigmoid()).pow(2).mean()


@pytest.mark.parametrize("action", ["stop", "skip"])
def test_logits_without_a_distribution_are_read_with_the_step_flags_not_raised_by_the_estimator(action):
    model = Categorical(bad_step=3)
    guard = NonFiniteGuard(action)
    if action == "stop":
        with pytest.raises(NonFiniteError, match="step 3 .*the estimator met logits with no valid distribution"):
            fit(model, guard)
    else:
        assert fit(model, guard).global_step == 8 and guard.skipped_steps == 1
        torch.testing.assert_close(model.weights_seen[4], model.weights_seen[3], rtol=0, atol=0)
    with pytest.raises(ValueError, match="no valid distribution"):  # after fit, direct calls check eagerly
        model.estimator(torch.full((2, 3), float("nan")))


class NaNInThirdBatch(Regression):
    def training_step(self, batch, batch_index):
        loss = super().training_step(batch, batch_index)
        return loss * float("nan") if batch_index == 2 else loss


def test_with_accumulated_gradients_every_backward_passs_loss_is_checked_and_averaged():
    """A NaN loss in the first of two accumulated batches is the guard's, though the second's loss is
    finite; under a loss scaler the NaN gradients alone would pass for an overflow."""
    guard = NonFiniteGuard("skip")
    trainer = fit(
        NaNInThirdBatch(bad_step=-1, bad_value=1.0), guard, accumulate_grad_batches=2, plugins=[cpu_loss_scaler(2.0**8)]
    )
    assert trainer.global_step == 4 and guard.skipped_steps == 1 and guard.scaler_skipped_steps == 0
    assert guard.last_loss is not None and math.isfinite(guard.last_loss)
