"""Published NATS-Bench accuracies of a topology-space architecture, to score a searched genotype.

    python -m zoo.models.nats.benchmark GENOTYPE --benchmark-dir DIR

prints the architecture's NATS-Bench index and a markdown table row in the
ReinMax paper's GDAS table layout: CIFAR-10 valid and test, CIFAR-100 valid and
test, ImageNet16-120 valid and test, all after the 200-epoch schedule.

``DIR`` is NATS-Bench's fast-mode topology directory ``NATS-tss-v1_0-3ffb9-simple``
(from the NATS-Bench release, https://github.com/D-X-Y/NATS-Bench): ``meta.pickle.pbz2``
and one ``NNNNNN.pickle.pbz2`` record per architecture. Reading it needs the optional
``nats_bench`` package: ``pip install 'discrete-zoo[nats]'``.

The ``nats_bench`` package unpickles these files, and unpickling can run code, so
only point it at a directory you trust, in NATS-Bench's own format. This project's
own checkpoint loading never unpickles arbitrary objects.
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .genotype import EXAMPLE, Genotype, GenotypeError

#: The schedule the published accuracies come from ("12" is NATS-Bench's short one).
EPOCHS = "200"
#: Where to get the benchmark, for the errors that find it missing.
SOURCE = ("NATS-tss-v1_0-3ffb9-simple, from the NATS-Bench release "
          "(https://github.com/D-X-Y/NATS-Bench); pass the unpacked directory")
#: The column titles of :meth:`BenchmarkRecord.table_row`, in the paper's order.
COLUMNS = ("CIFAR-10 valid", "CIFAR-10 test", "CIFAR-100 valid", "CIFAR-100 test",
           "ImageNet16-120 valid", "ImageNet16-120 test")


class BenchmarkError(RuntimeError):
    """The benchmark directory cannot answer a lookup: it is missing, or lacks the architecture."""


@dataclass(frozen=True)
class BenchmarkRecord:
    """An architecture's NATS-Bench index and its published top-1 accuracies, in percent.

    Each accuracy is the mean over the training seeds the record holds, as NATS-Bench's
    tables report it; ``nats_bench``'s own default instead draws one seed at random.

    CIFAR-10 has two runs: ``cifar10_valid`` and ``cifar10_valid_test`` come from
    training on the train split (NATS-Bench's ``cifar10-valid``), ``cifar10_test``
    from training on train+valid (``cifar10``). The paper's table, following
    NATS-Bench, pairs ``cifar10_valid`` with ``cifar10_test``.
    """

    index: int
    genotype: Genotype
    cifar10_valid: float
    cifar10_valid_test: float
    cifar10_test: float
    cifar100_valid: float
    cifar100_test: float
    imagenet16_120_valid: float
    imagenet16_120_test: float

    def accuracies(self) -> tuple[float, ...]:
        """The six accuracies in the order of :data:`COLUMNS`."""
        return (self.cifar10_valid, self.cifar10_test, self.cifar100_valid, self.cifar100_test,
                self.imagenet16_120_valid, self.imagenet16_120_test)

    def table_row(self) -> str:
        """The six accuracies as a markdown table row, two decimals as the paper prints them."""
        return "| " + " | ".join(f"{accuracy:.2f}" for accuracy in self.accuracies()) + " |"


def lookup(genotype: Genotype | str, benchmark_dir: str | Path) -> BenchmarkRecord:
    """The published 200-epoch accuracies of ``genotype`` (a :class:`Genotype` or its NATS-Bench string).

    Raises :class:`GenotypeError` for a malformed string, :class:`BenchmarkError` when
    the directory, the architecture or its record file is missing, and
    :class:`ImportError` without ``nats_bench``. The directory's pickles are loaded by
    ``nats_bench``; see the module docstring on trusting them.
    """
    if isinstance(genotype, str):
        genotype = Genotype.parse(genotype)
    directory = Path(benchmark_dir).expanduser().resolve()
    api = _open(directory)
    text = str(genotype)
    index = api.query_index_by_arch(text)
    if index < 0:
        raise BenchmarkError(f"architecture {text!r} is not in the index of {directory / 'meta.pickle.pbz2'}; "
                             f"the file is not the NATS-Bench topology space's (it should list all 15,625); "
                             f"get {SOURCE}.")
    record = directory / f"{index:06d}.pickle.pbz2"
    # nats_bench also accepts the unpadded name.
    if not (record.is_file() or (directory / f"{index}.pickle.pbz2").is_file()):
        raise BenchmarkError(f"architecture {text!r} is NATS-Bench index {index}, but its record {record} "
                             f"is missing; the directory is incomplete: get {SOURCE}.")
    cifar10_valid = _results(api, index, "cifar10-valid")
    cifar10 = _results(api, index, "cifar10")
    cifar100 = _results(api, index, "cifar100")
    imagenet = _results(api, index, "ImageNet16-120")
    return BenchmarkRecord(
        index=index,
        genotype=genotype,
        cifar10_valid=cifar10_valid["valid-accuracy"],
        cifar10_valid_test=cifar10_valid["test-accuracy"],
        cifar10_test=cifar10["test-accuracy"],
        cifar100_valid=cifar100["valid-accuracy"],
        cifar100_test=cifar100["test-accuracy"],
        imagenet16_120_valid=imagenet["valid-accuracy"],
        imagenet16_120_test=imagenet["test-accuracy"],
    )


@functools.lru_cache(maxsize=4)
def _open(directory: Path) -> Any:
    """The ``nats_bench`` API over ``directory``, kept so that scoring many genotypes reads the index once."""
    try:
        from nats_bench import create
    except ImportError as error:
        raise ImportError("reading NATS-Bench needs the nats_bench package: "
                          "pip install 'discrete-zoo[nats]' (or pip install nats_bench).") from error
    if not directory.is_dir():
        raise BenchmarkError(f"no NATS-Bench directory at {directory}; get {SOURCE}.")
    if not (directory / "meta.pickle.pbz2").is_file():
        raise BenchmarkError(f"{directory} has no meta.pickle.pbz2, so it is not NATS-Bench's fast-mode topology "
                             f"directory; get {SOURCE}.")
    return create(str(directory), "tss", fast_mode=True, verbose=False)


def _results(api: Any, index: int, dataset: str) -> dict[str, float]:
    """One data set's seed-averaged metrics, with a clear error where the record lacks the 200-epoch schedule."""
    try:
        return api.get_more_info(index, dataset, hp=EPOCHS, is_random=False)
    except (KeyError, ValueError) as error:
        raise BenchmarkError(f"the record of NATS-Bench index {index} in {api.archive_dir} has no {EPOCHS}-epoch "
                             f"{dataset} results ({error}); get {SOURCE}.") from error


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.models.nats.benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("genotype", help=f"a NATS-Bench architecture string, e.g. {EXAMPLE!r}")
    parser.add_argument("--benchmark-dir", type=Path, required=True,
                        help="NATS-Bench's NATS-tss-v1_0-3ffb9-simple directory")
    args = parser.parse_args(argv)
    try:
        record = lookup(args.genotype, args.benchmark_dir)
    except (GenotypeError, BenchmarkError, ImportError) as error:
        parser.error(str(error))
    print(f"NATS-Bench index {record.index}: {record.genotype}")
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    print(record.table_row())
    return 0


if __name__ == "__main__":
    sys.exit(main())
