"""Checkpoints are written whole or not at all."""

from __future__ import annotations

import pytest
import torch

from callbacks import checkpoint
from callbacks.checkpoint import AtomicCheckpointIO


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weights": torch.ones(3)}, path)

    def crash_halfway(obj, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(checkpoint.torch, "save", crash_halfway)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "weights": torch.zeros(3)}, path)
    kept = torch.load(path, weights_only=True)
    assert kept["global_step"] == 1 and torch.equal(kept["weights"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".last.ckpt.partial", "last.ckpt"]

    monkeypatch.undo()
    io.save_checkpoint({"global_step": 3}, path)  # the next save replaces both
    assert torch.load(path, weights_only=True)["global_step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_the_best_checkpoint_is_a_link_to_its_epochs_last_and_replaces_the_one_before(tmp_path):
    import lightning as L

    from callbacks.checkpoint import RunCheckpoints

    class Scores(L.LightningModule):
        """Validation scores 3, 1, 2 over three epochs: the second epoch's is the best."""

        def __init__(self) -> None:
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(1))

        def training_step(self, batch, batch_index):
            return (self.weight * batch).sum()

        def validation_step(self, batch, batch_index):
            self.log("score", [3.0, 1.0, 2.0][self.current_epoch])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    checkpoints = RunCheckpoints(tmp_path, monitor="score", mode="min")
    data = torch.utils.data.DataLoader(torch.ones(4, 1), batch_size=2)
    trainer = L.Trainer(max_epochs=3, callbacks=[checkpoints], logger=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, accelerator="cpu", devices=1)
    trainer.fit(Scores(), data, data)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best-epoch=1-step=4.ckpt", "last.ckpt"]
    best = torch.load(tmp_path / "best-epoch=1-step=4.ckpt", weights_only=True)
    assert best["global_step"] == 4 and best["callbacks"]["RunCheckpoints"]["best_score"] == 1.0
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 6


def test_a_best_score_from_lightnings_model_checkpoint_is_taken_over_and_nan_never_improves(tmp_path):
    from callbacks.checkpoint import RunCheckpoints

    checkpoints = RunCheckpoints(tmp_path, monitor="val/loss", mode="min")
    old = {"callbacks": {"ModelCheckpoint{'monitor': 'val/loss', 'mode': 'min'}": {
        "monitor": "val/loss", "best_model_score": torch.tensor(2.5), "best_model_path": "/runs/best.ckpt"}}}
    checkpoints.on_load_checkpoint(None, None, old)
    assert checkpoints.best_score == 2.5 and str(checkpoints.best_path) == "/runs/best.ckpt"
    assert checkpoints._improves(2.0) and not checkpoints._improves(3.0) and not checkpoints._improves(float("nan"))


@pytest.mark.parametrize("key", ["RunCheckpoints", "ModelCheckpoint{'monitor': 'valid/accuracy', 'mode': 'max'}"])
def test_a_checkpoint_from_before_the_stage_rename_keeps_its_best_score(tmp_path, key):
    from callbacks.checkpoint import RunCheckpoints

    checkpoints = RunCheckpoints(tmp_path, monitor="val/accuracy", mode="max")
    if key == "RunCheckpoints":
        checkpoints.load_state_dict({"monitor": "valid/accuracy", "best_score": 0.75, "best_path": "/runs/b.ckpt"})
    else:
        checkpoints.on_load_checkpoint(None, None, {"callbacks": {key: {
            "monitor": "valid/accuracy", "best_model_score": torch.tensor(0.75), "best_model_path": "/runs/b.ckpt"}}})
    assert checkpoints.best_score == 0.75 and not checkpoints._improves(0.7) and checkpoints._improves(0.8)


def test_a_file_system_without_hard_links_gets_a_copy(tmp_path, monkeypatch):
    from callbacks.checkpoint import link_or_copy

    source = tmp_path / "last.ckpt"
    source.write_bytes(b"weights")

    def no_links(*arguments):
        raise OSError("hard links are not supported")

    monkeypatch.setattr(checkpoint.os, "link", no_links)
    link_or_copy(source, tmp_path / "best.ckpt")
    assert (tmp_path / "best.ckpt").read_bytes() == b"weights"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best.ckpt", "last.ckpt"]
