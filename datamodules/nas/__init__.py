"""Image classification data for neural architecture search (GDAS on NATS-Bench) and retraining.

``sources`` reads each data set (CIFAR-10/100, ImageNet16-120, Fashion-MNIST,
synthetic) as uint8 tensors, ``batches`` cuts and augments batches in memory, and
``datamodule`` holds the search split and the Lightning interface.
"""

from .batches import LabelledBatches, PairedBatches, crop_and_flip
from .datamodule import MODES, NASDataModule, search_split
from .sources import DATASETS, DatasetInfo, Splits, describe, load, prepare

__all__ = ["DATASETS", "MODES", "DatasetInfo", "LabelledBatches", "NASDataModule",
           "PairedBatches", "Splits", "crop_and_flip", "describe", "load", "prepare",
           "search_split"]
