"""ListOps: the value semantics, the published format, the generator's statistics, batching."""

from __future__ import annotations

import collections
import os
import random
import re
from pathlib import Path

import pytest
import torch

from datamodules.listops import ListOpsDataModule, ListOpsFileError, generate_splits, parse, read_examples, value
from datamodules.listops.batches import BucketedBatches, encode
from datamodules.listops.expressions import ExpressionError, depth, model_tokens, paper_length, to_text
from datamodules.listops.files import Example, write_lines
from datamodules.listops.generator import DEFAULT_SIZES, MAX_DEPTH, random_expression

#: The published validation file, when the environment names it (CI does).
REFERENCE = os.environ.get("LISTOPS_VALID_FILE")
needs_reference = pytest.mark.skipif(not (REFERENCE and Path(REFERENCE).is_file()),
                                     reason="set LISTOPS_VALID_FILE to the published ListOps valid.tsv")


@pytest.mark.parametrize("text, expected", [
    ("[MIN 3 [MAX 1 9 ] 2 ]", 2),
    ("[MAX 2 9 [MIN 4 7 ] 0 ]", 9),
    ("[SM 9 8 7 ]", 4),
    ("[MED 1 2 3 ]", 2),
    ("[MED 1 2 3 4 ]", 2),  # even count: the mean of the middle two, 2.5, floored
    ("[MED 4 9 ]", 6),
    ("[MED 9 0 9 0 ]", 4),
    ("[SM [MED 7 5 ] [MIN 5 2 5 ] ]", 8),
    ("7", 7),
])
def test_values_of_hand_made_expressions(text, expected):
    assert value(parse(text)) == expected


def test_the_published_format_round_trips():
    published = "( ( ( ( ( [MIN 1 ) 6 ) 5 ) 0 ) ] )"
    tree = parse(published)
    assert tree == ("MIN", [1, 6, 5, 0]) and to_text(tree) == published
    rng = random.Random(0)
    for _ in range(200):
        tree = random_expression(rng)
        assert parse(to_text(tree)) == tree
        assert parse(" ".join(model_tokens(to_text(tree)))) == tree  # parentheses carry no information


def test_model_tokens_and_the_papers_length():
    tokens = model_tokens("( ( ( [MAX 2 ) ( ( [SM 1 ) 3 ] ) ) ] )")
    assert tokens == ["[MAX", "2", "[SM", "1", "3", "]", "]"]
    assert paper_length(tokens) == 9  # "[MAX" counts as "[" and "MAX"


@pytest.mark.parametrize("text, message", [
    ("", "empty"),
    ("[MIN 1 2 ] ]", "closes nothing"),
    ("[MIN 1 [MAX 2 3 ]", "not closed"),
    ("[FOO 1 2 ]", "unknown token '[FOO'"),
    ("[MIN 12 3 ]", "unknown token '12'"),
    ("[MIN ]", "[MIN has no arguments"),
    ("1 2", "2 expressions side by side"),
    ("( ( [MIN 1 ) 2 ] ) )", "unbalanced parentheses"),
])
def test_malformed_expressions_are_refused(text, message):
    with pytest.raises(ExpressionError, match=re.escape(message)):
        parse(text)


@pytest.mark.parametrize("line, message", [
    ("", "empty line"),
    ("7 [MAX 1 7 ]", "expected 'label<TAB>expression'"),
    ("x\t[MAX 1 7 ]", "label 'x' is not a digit 0-9"),
    ("12\t[MAX 1 7 ]", "label '12' is not a digit 0-9"),
    ("3\t[MAX 1 7 ]", "label 3 but the expression's value is 7"),
    ("7\t[MAX 1 7", "not closed"),
])
def test_a_bad_line_is_reported_with_its_file_and_line(tmp_path, line, message):
    path = tmp_path / "bad.tsv"
    path.write_text(f"2\t( ( [MIN 2 ) 5 ] )\n{line}\n")
    with pytest.raises(ListOpsFileError, match=r"bad\.tsv, line 2: .*" + re.escape(message)):
        read_examples(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no ListOps file at .*nothing.tsv"):
        read_examples(tmp_path / "nothing.tsv")


def test_generation_is_seeded_distinct_and_follows_the_procedure():
    sizes = {"train": 300, "valid": 50, "test": 50}
    splits = generate_splits(sizes, seed=3)
    assert splits == generate_splits(sizes, seed=3)
    assert splits != generate_splits(sizes, seed=4)
    rows = [row for split in splits.values() for row in split]
    assert [len(splits[split]) for split in sizes] == list(sizes.values())
    assert len({text for _, text in rows}) == len(rows)  # de-duplicated across the splits
    for label, text in rows:
        tree = parse(text)
        assert not isinstance(tree, int) and value(tree) == label
        assert depth(tree) <= MAX_DEPTH - 1  # nodes at depth 20 are digits
        stack = [tree]
        while stack:
            node = stack.pop()
            if not isinstance(node, int):
                assert 2 <= len(node[1]) <= 5
                stack.extend(node[1])


@pytest.fixture(scope="module")
def generated_pool() -> list[Example]:
    """The default pool's test split (10,000 examples): the de-duplication depends on the pool size."""
    return [Example(label, tuple(model_tokens(text))) for label, text in generate_splits(DEFAULT_SIZES)["test"]]


def describe(examples: list[Example]) -> dict[str, object]:
    count = len(examples)
    depths = collections.Counter(depth(parse(" ".join(example.tokens))) for example in examples)
    operators = collections.Counter(token for example in examples for token in example.tokens if token.startswith("["))
    labels = collections.Counter(example.label for example in examples)
    return {
        "depth 1": depths[1] / count,
        "depth >= 10": sum(n for d, n in depths.items() if d >= 10) / count,
        "short": sum(paper_length(list(example.tokens)) < 100 for example in examples) / count,
        "median length": sorted(paper_length(list(example.tokens)) for example in examples)[count // 2],
        "operators": {op: n / sum(operators.values()) for op, n in operators.items()},
        "labels": {label: n / count for label, n in labels.items()},
    }


@needs_reference
def test_the_published_validation_file_loads_and_its_labels_are_our_values():
    examples = read_examples(REFERENCE)  # check_labels: every published label is our value
    assert len(examples) == 1000
    assert sum(paper_length(list(example.tokens)) < 100 for example in examples) == 857


@needs_reference
def test_generated_statistics_match_the_published_validation_file(generated_pool):
    """Tolerances: about 4 standard errors of the published file's 1,000 examples.

    A share p estimated from 1,000 examples has standard error √(p(1−p)/1000):
    0.013 for the depth-1 share (p ≈ 0.2), 0.011 for the share under 100 tokens
    (p ≈ 0.86) and the depth ≥ 10 share (p ≈ 0.13), 0.0095 per label (p ≈ 0.1); an
    operator share from ~9,700 operators, 0.0044. The generated 10,000 add a third
    of that again.
    """
    ours, theirs = describe(generated_pool), describe(read_examples(REFERENCE))
    assert ours["depth 1"] == pytest.approx(theirs["depth 1"], abs=0.055)
    assert ours["depth >= 10"] == pytest.approx(theirs["depth >= 10"], abs=0.045)
    assert ours["short"] == pytest.approx(theirs["short"], abs=0.045)
    assert abs(ours["median length"] - theirs["median length"]) <= 3
    for shares in (ours["operators"], theirs["operators"]):
        assert set(shares) == {"[MIN", "[MAX", "[MED", "[SM"}
        assert all(share == pytest.approx(0.25, abs=0.02) for share in shares.values())
    for label in range(10):
        assert ours["labels"][label] == pytest.approx(theirs["labels"][label], abs=0.04)


def test_a_small_pool_keeps_more_short_expressions(generated_pool):
    """Why the pool size matters: de-duplication removes short expressions, the more the larger the pool."""
    small = generate_splits({"train": 2000, "valid": 0, "test": 0})["train"]
    small_depth_1 = sum(depth(parse(text)) == 1 for _, text in small) / len(small)
    assert small_depth_1 > describe(generated_pool)["depth 1"] + 0.08


def random_examples(count: int, seed: int = 0) -> list[Example]:
    rng = random.Random(seed)
    return [Example(value(tree), tuple(model_tokens(to_text(tree)))) for tree in
            (random_expression(rng) for _ in range(count))]


def test_encode_pads_with_zeros():
    examples = [Example(2, ("[MIN", "2", "5", "]")), Example(7, ("7",))]
    tokens, lengths, labels = encode(examples)
    assert tokens.shape == (2, 4) and lengths.tolist() == [4, 1] and labels.tolist() == [2, 7]
    assert tokens[1, 1:].eq(0).all() and tokens[0].ne(0).all()


def test_bucketed_batches_cover_every_example_once_with_little_padding():
    tokens, lengths, _ = encode(random_examples(1000))
    indices = torch.arange(1000)  # in place of labels: which examples each batch holds

    def epoch(batches: BucketedBatches) -> list[torch.Tensor]:
        return [batch_indices for _, _, batch_indices in batches]

    batches = BucketedBatches(tokens, lengths, indices, batch_size=16, shuffle=True, bucket_batches=10, seed=0)
    padded = 0
    for batch_tokens, batch_lengths, batch_indices in batches:
        assert batch_tokens.shape[1] == batch_lengths.max()
        assert torch.equal(batch_tokens, tokens[batch_indices, : batch_tokens.shape[1]])
        padded += batch_tokens.numel()
    assert torch.equal(torch.cat(epoch(batches)).sort().values, indices)
    unsorted = sum(int(chunk.max()) * len(chunk) for chunk in lengths[torch.randperm(1000)].split(16))
    assert padded < 0.5 * unsorted  # lengths vary from 3 to hundreds: buckets pad far less
    first = epoch(BucketedBatches(tokens, lengths, indices, batch_size=16, shuffle=True, bucket_batches=10, seed=0))
    again = BucketedBatches(tokens, lengths, indices, batch_size=16, shuffle=True, bucket_batches=10, seed=0)
    assert all(map(torch.equal, epoch(again), first))  # the same seed, the same order
    assert not all(map(torch.equal, epoch(again), first))  # the next epoch, another


def test_ranks_get_disjoint_equal_shares():
    tokens, lengths, _ = encode(random_examples(101))
    indices = torch.arange(101)  # the labels carry each example's index
    shares = [
        list(BucketedBatches(tokens, lengths, indices, batch_size=8, shuffle=True, rank=rank, world_size=2, seed=5))
        for rank in range(2)
    ]
    assert len(shares[0]) == len(shares[1]) == 7  # 13 batches, padded to 14
    members = [torch.cat([batch[2] for batch in share]) for share in shares]
    assert torch.cat(members).unique().numel() == 101


def test_the_datamodule_generates_once_into_the_cache(tmp_path):
    sizes = {"train": 120, "valid": 30, "test": 30}
    data = ListOpsDataModule(sizes=sizes, cache_dir=str(tmp_path), batch_size=8)
    data.prepare_data()
    files = sorted(data.files_dir.glob("*.tsv"))
    assert [path.name for path in files] == ["test.tsv", "train.tsv", "valid.tsv"]
    stamps = [path.stat().st_mtime_ns for path in files]
    again = ListOpsDataModule(sizes=sizes, cache_dir=str(tmp_path))
    again.prepare_data()
    assert again.files_dir == data.files_dir and [path.stat().st_mtime_ns for path in files] == stamps
    assert ListOpsDataModule(sizes=sizes, cache_dir=str(tmp_path), generation_seed=1).files_dir != data.files_dir
    data.setup("fit")
    tokens, lengths, labels = next(iter(data.train_dataloader()))
    assert tokens.dtype == torch.long and tokens.shape[0] == 8 == len(lengths) == len(labels)
    assert set(data.splits) == {"train", "val"}


def test_the_length_filter(tmp_path):
    long_tree = ("SM", [("MAX", [1, 2, 3, 4, 5]) for _ in range(13)])  # 13·7 + 2 tokens + 14 operators: 107
    rows = [(value(long_tree), to_text(long_tree)), (3, "( ( [MAX 1 ) 3 ] )")]
    for split in ("train", "valid", "test"):
        write_lines(tmp_path / f"{split}.tsv", rows)
    filtered = ListOpsDataModule(data_dir=str(tmp_path))
    filtered.setup("test")
    assert filtered.splits["test"][2].tolist() == [3]
    everything = ListOpsDataModule(data_dir=str(tmp_path), max_length=None)
    everything.setup("test")
    assert sorted(everything.splits["test"][2].tolist()) == sorted(label for label, _ in rows)


def test_missing_split_files_name_the_fix(tmp_path):
    write_lines(tmp_path / "valid.tsv", [(3, "( ( [MAX 1 ) 3 ] )")])
    with pytest.raises(
        FileNotFoundError, match=r"train\.tsv, test\.tsv not found .*python -m datamodules\.listops generate"
    ):
        ListOpsDataModule(data_dir=str(tmp_path)).prepare_data()


def test_the_command_line_writes_and_describes_files(tmp_path, capsys):
    from datamodules.listops.__main__ import main

    generate = ["generate", "--out", str(tmp_path), "--train", "40", "--valid", "5", "--test", "5", "--seed", "2"]
    assert main(generate) == 0
    assert [len(read_examples(tmp_path / f"{split}.tsv")) for split in ("train", "valid", "test")] == [40, 5, 5]
    capsys.readouterr()
    assert main(["stats", str(tmp_path / "train.tsv")]) == 0
    assert "depth" in capsys.readouterr().out
