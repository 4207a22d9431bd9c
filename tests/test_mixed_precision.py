"""Every model trains under bf16-mixed and under 16-mixed with a loss scaler, through train.py.

On a CPU Lightning turns ``16-mixed`` into ``bf16-mixed``; the float16 path with its
loss scaler is what ``MixedPrecision("16-mixed", "cpu", GradScaler("cpu"))`` gives.
oneDNN has no float16 LSTM, so a model with one (ListOps) is skipped there, and ListOps'
float16 path is checked on its scores.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins import MixedPrecision

from callbacks.nonfinite import NonFiniteGuard
from tests.runs import small_run
from zoo import train
from zoo.models import list_models
from zoo.models.listops import ListOpsParser, mask_scores

STEPS = 12


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


class Keep(L.Callback):
    """Holds on to the trainer and the model a train.py run fitted."""

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.trainer, self.module = trainer, module


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("model", list_models())
def test_every_model_trains_in_mixed_precision_with_a_finite_loss(model, precision, data, tmp_path):
    check_mixed_precision(small_run(model, data, batch_size=8), precision, tmp_path)


def check_mixed_precision(model_arguments: list[str], precision: str, tmp_path: Path) -> None:
    """``STEPS`` steps in ``precision`` (16-mixed: float16 with a loss scaler) end with finite weights and loss."""
    arguments = [*model_arguments, "--accelerator", "cpu", "--devices", "1", "--max-steps", str(STEPS),
                 "--output-dir", str(tmp_path), "--trainer-arg", "limit_val_batches=1",
                 "--trainer-arg", "enable_progress_bar=false", "--trainer-arg", "enable_model_summary=false"]
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**12) if precision == "16-mixed" else None
    plugins = [MixedPrecision("16-mixed", "cpu", scaler)] if scaler is not None else []
    kept = Keep()
    try:
        assert train.main([*arguments, "--precision", precision], callbacks=[kept], plugins=plugins) == 0
    except RuntimeError as error:
        if scaler is None or "LSTM forward propagation primitive" not in str(error):
            raise
        pytest.skip("oneDNN has no float16 LSTM on the CPU; see the test of ListOps' float16 scores")
    trainer, module = kept.trainer, kept.module
    guard = next(callback for callback in trainer.callbacks if isinstance(callback, NonFiniteGuard))
    assert trainer.global_step == STEPS
    assert guard.last_loss is not None and torch.isfinite(torch.tensor(guard.last_loss))
    assert guard.skipped_steps == 0 and guard.scaler_skipped_steps < STEPS // 2
    assert all(torch.isfinite(parameter).all() for parameter in module.parameters())
    if scaler is not None:
        assert scaler.get_scale() > 0 and trainer.precision_plugin.scaler is scaler
        assert guard.last_loss < scaler.get_scale()  # the loss shown and checked is the unscaled one


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_listops_masks_scores_with_their_own_dtype_and_the_masked_pairs_are_never_chosen(dtype):
    scores = torch.randn(3, 5).to(dtype)
    valid = torch.arange(5) < torch.tensor([[5], [2], [0]])  # a full row, a partial one, a finished one
    masked = mask_scores(scores, valid)
    assert masked.dtype == dtype and torch.isfinite(masked).all()
    parser = ListOpsParser(hidden_size=8).train()
    for _ in range(20):
        sample = parser.select(masked)
        assert sample.dtype == dtype and torch.equal(sample.sum(-1), torch.ones(3, dtype=dtype))
        assert not sample[1, 2:].any()  # the finished row may pick anything; the others only valid pairs
