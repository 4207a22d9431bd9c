"""LightningDataModules for the zoo's data sets (images, ListOps, NAS), and the one cache folder they share."""

from ._downloads import DataUnavailableError, cache_dir

__all__ = ["DataUnavailableError", "cache_dir"]
