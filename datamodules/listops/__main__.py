"""``python -m datamodules.listops``: write generated splits, or describe a file.

    python -m datamodules.listops generate --out DIR [--train 90000 --valid 1000 --test 10000 --seed 0]
    python -m datamodules.listops stats FILE [FILE ...]
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

from .expressions import OPEN, depth, paper_length, parse
from .files import read_examples, write_lines
from .generator import DEFAULT_SIZES, generate_splits


def generate(args: argparse.Namespace) -> None:
    sizes = {split: getattr(args, split) for split in DEFAULT_SIZES}
    for split, rows in generate_splits(sizes, args.seed).items():
        write_lines(args.out / f"{split}.tsv", rows)
        print(f"{args.out / f'{split}.tsv'}: {len(rows)} examples")


def stats(args: argparse.Namespace) -> None:
    """Depth, length, label and operator histograms, to compare generated data with published."""
    for path in args.files:
        examples = read_examples(path)
        count = len(examples)
        depths = collections.Counter(min(depth(parse(" ".join(example.tokens))), 10) for example in examples)
        labels = collections.Counter(example.label for example in examples)
        operators = collections.Counter(token for example in examples for token in example.tokens if token in OPEN)
        lengths = sorted(paper_length(list(example.tokens)) for example in examples)
        print(f"{path}: {count} examples")
        print(
            "  depth (10 = 10 or more): " + ", ".join(f"{d}: {100 * n / count:.1f}%" for d, n in sorted(depths.items()))
        )
        short = 100 * sum(n < 100 for n in lengths) / count
        print(f"  tokens: median {lengths[count // 2]}, fewer than 100: {short:.1f}%")
        print("  labels: " + ", ".join(f"{label}: {100 * n / count:.1f}%" for label, n in sorted(labels.items())))
        total = sum(operators.values())
        print("  operators: " + ", ".join(f"{op[1:]}: {100 * n / total:.1f}%" for op, n in sorted(operators.items())))


#: The most examples a split may ask for: ten times the published training set, minutes to generate.
MAX_EXAMPLES = 1_000_000


def example_count(text: str) -> int:
    """A number of examples: refused before generating when it is not a count this tool can make."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of examples, got {text!r}") from None
    if not 1 <= count <= MAX_EXAMPLES:
        raise argparse.ArgumentTypeError(f"must be from 1 to {MAX_EXAMPLES:,} examples, got {count}")
    return count


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m datamodules.listops", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    writer = commands.add_parser("generate", help="write train/valid/test.tsv, de-duplicated as one pool")
    writer.add_argument("--out", type=Path, required=True)
    for split, size in DEFAULT_SIZES.items():
        writer.add_argument(f"--{split}", type=example_count, default=size, help=f"examples (default {size})")
    writer.add_argument("--seed", type=int, default=0)
    reader = commands.add_parser("stats", help="histograms of ListOps files")
    reader.add_argument("files", nargs="+", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        {"generate": generate, "stats": stats}[args.command](args)
    except (OSError, ValueError) as error:  # a file that is missing, unreadable or not ListOps: the message names it
        parser.exit(2, f"{parser.prog} {args.command}: error: {error}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
