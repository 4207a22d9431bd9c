"""LightningDataModules for the zoo's data sets (images, ListOps, NAS), and the one cache folder they share."""

from ._batching import ResumableEpochs
from ._downloads import DataUnavailableError, cache_dir

__all__ = ["DataUnavailableError", "ResumableEpochs", "cache_dir"]
