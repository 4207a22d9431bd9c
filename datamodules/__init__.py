"""LightningDataModules for the zoo's data sets (images, ListOps, NAS)."""
