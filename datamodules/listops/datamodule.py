"""The ListOps DataModule: files from ``data_dir``, or data generated once into a cache."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from lightning.pytorch import LightningDataModule

from .._batching import ResumableOrder
from .._downloads import cache_dir as zoo_cache_dir
from .batches import BucketedBatches, encode
from .expressions import paper_length
from .files import Example, read_examples, write_lines
from .generator import DEFAULT_SIZES, generate_splits

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
#: Each split's file, named as in the published data set.
FILES = {"train": "train.tsv", "val": "valid.tsv", "test": "test.tsv"}
#: The paper trains and evaluates on expressions of fewer than 100 tokens.
PAPER_MAX_LENGTH = 100


class ListOpsDataModule(ResumableOrder, LightningDataModule):
    """ListOps as ``(tokens, lengths, labels)`` batches of similar lengths.

    With ``data_dir`` the splits are its ``train.tsv``, ``valid.tsv`` and
    ``test.tsv`` (``python -m datamodules.listops generate`` writes them). Without,
    ``prepare_data`` generates ``sizes`` with ``generation_seed`` once into
    ``cache_dir/listops/<settings>/`` and later runs read them from there: no
    download is needed. ``max_length`` drops examples of ``max_length`` tokens or
    more, counted as the paper counts (the default, 100, is its filter; ``None``
    keeps every example). The validation loader serves ``val`` (``valid.tsv``) and the test
    loader ``test``.
    """

    def __init__(
        self,
        data_dir: str | None = None,
        batch_size: int = 16,
        eval_batch_size: int = 128,
        max_length: int | None = PAPER_MAX_LENGTH,
        sizes: dict[str, int] | None = None,
        generation_seed: int = 0,
        cache_dir: str | None = None,
        bucket_batches: int = 50,
    ) -> None:
        super().__init__()
        sizes = dict(sizes or DEFAULT_SIZES)
        if set(sizes) != set(DEFAULT_SIZES):  # the generator's splits, named as their files
            raise ValueError(f"sizes must give {', '.join(DEFAULT_SIZES)}, got {sorted(sizes)}.")
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be >= 2 or None, got {max_length}.")
        self.data_dir = Path(data_dir) if data_dir else None
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.max_length = max_length
        self.sizes = sizes
        self.generation_seed = generation_seed
        self.cache_dir = Path(cache_dir) if cache_dir else zoo_cache_dir()
        self.bucket_batches = bucket_batches
        self.splits: dict[str, tuple] = {}

    @property
    def files_dir(self) -> Path:
        """Where the split files are: ``data_dir``, or the cache folder of these generation settings."""
        if self.data_dir is not None:
            return self.data_dir
        settings = json.dumps({"seed": self.generation_seed, **self.sizes}, sort_keys=True)
        return self.cache_dir / "listops" / hashlib.sha256(settings.encode()).hexdigest()[:12]

    def prepare_data(self) -> None:
        if self.data_dir is not None:
            missing = [name for name in FILES.values() if not (self.data_dir / name).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"ListOps: {', '.join(missing)} not found in {self.data_dir}. Write the splits with "
                    f"`python -m datamodules.listops generate --out {self.data_dir}`, or leave data_dir "
                    "unset to generate them into the cache."
                )
            return
        folder = self.files_dir
        if all((folder / name).is_file() for name in FILES.values()):
            return
        log.info("generating ListOps %s (seed %d) into %s", self.sizes, self.generation_seed, folder)
        for split, rows in generate_splits(self.sizes, self.generation_seed).items():
            write_lines(folder / f"{split}.tsv", rows)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage, SPLITS)
        for split in wanted:
            if split not in self.splits:
                self.splits[split] = encode(self._kept(read_examples(self.files_dir / FILES[split]), split))

    def _kept(self, examples: list[Example], split: str) -> list[Example]:
        if self.max_length is None:
            return examples
        kept = [example for example in examples if paper_length(list(example.tokens)) < self.max_length]
        if not kept:
            raise ValueError(f"ListOps {split}: no example is shorter than max_length={self.max_length} tokens.")
        log.info(
            "ListOps %s: %d of %d examples have fewer than %d tokens", split, len(kept), len(examples), self.max_length
        )
        return kept

    def train_dataloader(self) -> BucketedBatches:
        return self._batches("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> BucketedBatches:
        return self._batches("val", self.eval_batch_size)

    def test_dataloader(self) -> BucketedBatches:
        return self._batches("test", self.eval_batch_size)

    def _batches(self, split: str, batch_size: int, shuffle: bool = False) -> BucketedBatches:
        if split not in self.splits:
            raise RuntimeError(f"{type(self).__name__}: call setup() before asking for {split} batches.")
        return BucketedBatches(
            *self.splits[split],
            batch_size,
            shuffle=shuffle,
            bucket_batches=self.bucket_batches,
            **self.placement(split, shuffle),
        )
