"""Data families: which --data names a model of each family accepts, and the data module it gets."""

from __future__ import annotations

import pytest
from lightning.pytorch import LightningDataModule

from datamodules.families import FAMILIES, build_datamodule, valid_data
from datamodules.images import ImageDataModule
from datamodules.listops import ListOpsDataModule
from datamodules.nas import NASDataModule
from datamodules.steps import StepsDataModule

MODULES = {"images": ImageDataModule, "listops": ListOpsDataModule, "none": StepsDataModule,
           "nas-search": NASDataModule, "classification": NASDataModule}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_builds_its_data_module_for_each_of_its_names(family, tmp_path):
    assert valid_data(family)
    for data in valid_data(family):
        module = build_datamodule(family, data, data_dir=str(tmp_path), batch_size=7)
        assert isinstance(module, LightningDataModule) and type(module) is MODULES[family]
        assert getattr(module, "batch_size", 7) == 7


def test_the_nas_families_differ_in_mode_and_the_images_take_their_options(tmp_path):
    assert build_datamodule("nas-search", "synthetic").mode == "search"
    assert build_datamodule("classification", "synthetic").mode == "train"
    images = build_datamodule("images", "fashion-mnist", binarize="dynamic", val_size=5)
    assert (images.name, images.binarize, images.val_size) == ("fashion-mnist", "dynamic", 5)


def test_data_of_another_family_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="unknown data 'listops' for this model; valid choices: mnist, fashion-mnist"):
        build_datamodule("images", "listops")
