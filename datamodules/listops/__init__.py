"""ListOps (Nangia & Bowman 2018): nested list operations whose value a parser must learn.

``expressions`` holds the syntax and semantics, ``generator`` the published
procedure, ``files`` the ``label<TAB>expression`` reader and writer, ``batches``
length-bucketed batching, ``datamodule`` the LightningDataModule; ``python -m
datamodules.listops`` generates files and describes them.
"""

from .datamodule import ListOpsDataModule
from .expressions import VOCABULARY, ExpressionError, parse, value
from .files import Example, ListOpsFileError, read_examples
from .generator import generate_splits

__all__ = ["Example", "ExpressionError", "ListOpsDataModule", "ListOpsFileError", "VOCABULARY",
           "generate_splits", "parse", "read_examples", "value"]
