"""NATS-Bench lookup: published accuracies by genotype, the space's strings, and every missing piece."""

from __future__ import annotations

import bz2
import itertools
import os
import pickle
import re
import sys
from pathlib import Path

import pytest

from zoo.models.nats import OPERATIONS, Genotype, GenotypeError
from zoo.models.nats.benchmark import COLUMNS, BenchmarkError, BenchmarkRecord, lookup, main

#: A few records in NATS-Bench's fast-mode topology format, when the environment names them (CI does).
FIXTURE = os.environ.get("NATS_BENCH_FIXTURE")
needs_fixture = pytest.mark.skipif(not (FIXTURE and Path(FIXTURE).is_dir()),
                                   reason="set NATS_BENCH_FIXTURE to a NATS-tss-v1_0-3ffb9-simple directory")

#: The architectures whose records the fixture holds, by index.
RECORDED = {
    0: "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|",
    11: "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|none~0|nor_conv_3x3~1|avg_pool_3x3~2|",
    284: "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|none~0|nor_conv_1x1~1|none~2|",
}
#: A strong architecture of the space, index 9930, whose record the fixture lacks.
UNRECORDED = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def api():
    """``nats_bench``'s own reader over the fixture, the reference the lookup must agree with."""
    nats_bench = pytest.importorskip("nats_bench")
    return nats_bench.create(FIXTURE, "tss", fast_mode=True, verbose=False)


def write_pbz2(path: Path, value: object) -> None:
    """A file in NATS-Bench's storage format: a bz2-compressed pickle."""
    with bz2.open(path, "wb") as handle:
        pickle.dump(value, handle)


@needs_fixture
@pytest.mark.parametrize("index", sorted(RECORDED))
def test_lookup_matches_nats_bench_seed_means(api, index):
    assert api.meta_archs[index] == RECORDED[index]
    record = lookup(RECORDED[index], FIXTURE)
    assert record.index == index
    assert record.genotype == Genotype.parse(RECORDED[index])

    def info(dataset: str) -> dict:
        return api.get_more_info(index, dataset, hp="200", is_random=False)

    assert record.cifar10_valid == info("cifar10-valid")["valid-accuracy"]
    assert record.cifar10_valid_test == info("cifar10-valid")["test-accuracy"]
    assert record.cifar10_test == info("cifar10")["test-accuracy"]
    assert record.cifar100_valid == info("cifar100")["valid-accuracy"]
    assert record.cifar100_test == info("cifar100")["test-accuracy"]
    assert record.imagenet16_120_valid == info("ImageNet16-120")["valid-accuracy"]
    assert record.imagenet16_120_test == info("ImageNet16-120")["test-accuracy"]


@needs_fixture
def test_index_0_reads_the_published_means_in_the_papers_column_order():
    pytest.importorskip("nats_bench")
    record = lookup(Genotype.parse(RECORDED[0]), FIXTURE)
    # Means over seeds 777, 888 and 999; a single seed (nats_bench's default draw) differs,
    # e.g. seed 999 gives 82.24 for CIFAR-10 valid.
    expected = (81.983, 85.863, 52.700, 52.913, 28.211, 26.633)
    assert record.accuracies() == pytest.approx(expected, abs=1e-3)
    assert record.table_row() == "| 81.98 | 85.86 | 52.70 | 52.91 | 28.21 | 26.63 |"


@needs_fixture
def test_every_architecture_string_of_the_space_round_trips(api):
    assert len(api.meta_archs) == len(OPERATIONS) ** 6
    genotypes = set()
    for text in api.meta_archs:
        genotype = Genotype.parse(text)
        assert str(genotype) == text
        genotypes.add(genotype)
    assert genotypes == {Genotype(operations) for operations in itertools.product(OPERATIONS, repeat=6)}


@needs_fixture
def test_an_architecture_without_its_record_file_names_the_index_and_file():
    pytest.importorskip("nats_bench")
    with pytest.raises(BenchmarkError, match=r"index 9930.*009930\.pickle\.pbz2.*missing"):
        lookup(UNRECORDED, FIXTURE)


def test_a_missing_directory_is_named_with_where_to_get_the_benchmark(tmp_path):
    pytest.importorskip("nats_bench")
    missing = tmp_path / "NATS-tss-v1_0-3ffb9-simple"
    expected = rf"no NATS-Bench directory at {re.escape(str(missing))};.*NATS-Bench release"
    with pytest.raises(BenchmarkError, match=expected):
        lookup(UNRECORDED, missing)


def test_a_directory_without_the_index_is_not_taken_for_the_benchmark(tmp_path):
    pytest.importorskip("nats_bench")
    with pytest.raises(BenchmarkError, match=r"no meta\.pickle\.pbz2.*NATS-tss-v1_0-3ffb9-simple"):
        lookup(UNRECORDED, tmp_path)


def test_an_architecture_missing_from_the_index_is_refused(tmp_path):
    pytest.importorskip("nats_bench")
    write_pbz2(tmp_path / "meta.pickle.pbz2", {"meta_archs": [RECORDED[0]]})
    with pytest.raises(BenchmarkError, match=r"not in the index of .*meta\.pickle\.pbz2.*15,625"):
        lookup(UNRECORDED, tmp_path)


def test_a_record_without_the_200_epoch_results_is_refused(tmp_path):
    pytest.importorskip("nats_bench")
    write_pbz2(tmp_path / "meta.pickle.pbz2", {"meta_archs": [RECORDED[0]]})
    write_pbz2(tmp_path / "000000.pickle.pbz2", {})  # a record with no schedules at all
    with pytest.raises(BenchmarkError, match=r"index 0 .*no 200-epoch cifar10-valid results"):
        lookup(RECORDED[0], tmp_path)


def test_a_malformed_genotype_is_refused_before_any_file_is_read(tmp_path):
    with pytest.raises(GenotypeError, match="expected the form"):
        lookup("|nor_conv_3x3~0|", tmp_path / "absent")


def test_without_nats_bench_the_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nats_bench", None)  # makes ``import nats_bench`` fail
    with pytest.raises(ImportError, match=r"pip install 'discrete-zoo\[nats\]'"):
        lookup(RECORDED[0], tmp_path)


def test_the_table_row_follows_the_column_titles():
    record = BenchmarkRecord(index=7, genotype=Genotype.parse(UNRECORDED), cifar10_valid=1.0,
                             cifar10_valid_test=99.0, cifar10_test=2.0, cifar100_valid=3.0, cifar100_test=4.0,
                             imagenet16_120_valid=5.0, imagenet16_120_test=6.004)
    assert len(record.accuracies()) == len(COLUMNS)
    assert record.table_row() == "| 1.00 | 2.00 | 3.00 | 4.00 | 5.00 | 6.00 |"


@needs_fixture
def test_the_command_line_prints_the_index_and_the_row(capsys):
    pytest.importorskip("nats_bench")
    assert main([RECORDED[284], "--benchmark-dir", FIXTURE]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"NATS-Bench index 284: {RECORDED[284]}"
    assert lines[1] == "| " + " | ".join(COLUMNS) + " |"
    assert lines[-1] == lookup(RECORDED[284], FIXTURE).table_row()


@pytest.mark.parametrize("argv, message", [
    (["|nor_conv_3x3~0|+|none~0|", "--benchmark-dir", "."], "expected the form"),
    ([UNRECORDED], "--benchmark-dir"),
])
def test_the_command_line_exits_2_with_the_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err
