"""ReconstructionImages: originals above reconstructions, and prior samples, in TensorBoard."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks.images import GenerativeImageModel, ReconstructionImages
from zoo.models import ListOpsParser

from ..small_models import loader, small_vae


def test_a_validation_epoch_writes_both_grids_at_the_step(tmp_path):
    logger = TensorBoardLogger(tmp_path, name="", version="run")
    trainer = L.Trainer(accelerator="cpu", max_steps=3, logger=logger, callbacks=[ReconstructionImages(count=4)],
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        num_sanity_val_steps=0)
    trainer.fit(small_vae("st"), train_dataloaders=loader(6, 2), val_dataloaders=loader(8, 4))
    events = EventAccumulator(str(tmp_path / "run")).Reload()
    assert set(events.Tags()["images"]) == {"images/reconstructions", "images/prior_samples"}
    (pairs,) = events.Images("images/reconstructions")
    (samples,) = events.Images("images/prior_samples")
    assert pairs.step == samples.step == 3
    # Four originals above their four reconstructions: 2 rows of 28-pixel images with 1-pixel padding.
    assert (pairs.width, pairs.height) == (4 * 29 + 1, 2 * 29 + 1)


def test_only_models_that_reconstruct_and_generate_get_the_images():
    assert isinstance(small_vae("st"), GenerativeImageModel)
    assert not isinstance(ListOpsParser(hidden_size=4), GenerativeImageModel)
