"""The NaN/inf guard: it stops before the bad step, or skips it, and says which step."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import nn

from callbacks.nonfinite import NonFiniteError, NonFiniteGuard


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

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def batches(count: int = 8):
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(count * 4, 3, generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(inputs, inputs.sum(1, keepdim=True)), batch_size=4)


def fit(model: L.LightningModule, guard: NonFiniteGuard) -> L.Trainer:
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[guard])
    trainer.fit(model, batches())
    return trainer


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
    assert guard.state_dict() == {"skipped_steps": 1}


def test_a_finite_run_is_untouched():
    guarded, plain = Regression(bad_step=-1, bad_value=1.0), Regression(bad_step=-1, bad_value=1.0)
    plain.load_state_dict(guarded.state_dict())
    fit(guarded, NonFiniteGuard("stop"))
    L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).fit(plain, batches())
    torch.testing.assert_close(guarded.layer.weight, plain.layer.weight, rtol=0, atol=0)


def test_an_unknown_action_is_refused():
    with pytest.raises(ValueError, match="action must be one of stop, skip, got 'ignore'"):
        NonFiniteGuard("ignore")
