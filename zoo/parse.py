"""Show what a trained ListOps parser predicts for an expression and how it parses it.

    python -m zoo.parse "[MAX 2 9 [MIN 4 7 ] 0 ]" --pretrained listops-reinmax
    python -m zoo.parse "[MAX 2 9 [MIN 4 7 ] 0 ]" \
        --checkpoint runs/listops-listops-reinmax/version_0/checkpoints/last.ckpt

prints the predicted value next to the true one, and the induced tree with each
merge in parentheses.
"""

from __future__ import annotations

import argparse
import pickle
import sys

from datamodules.listops.expressions import ExpressionError, parse, value
from zoo.models import ListOpsParser
from zoo.pretrained import PretrainedError, get_release, list_pretrained, load_pretrained


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo.parse", description=__doc__.split("\n\n")[0])
    parser.add_argument("expression", help='a ListOps expression, e.g. "[MAX 2 9 [MIN 4 7 ] 0 ]"')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--pretrained", metavar="NAME", help="a released parser, e.g. listops-reinmax")
    source.add_argument("--checkpoint", help="a checkpoint written by train.py --model listops")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        truth = value(parse(args.expression))
    except ExpressionError as error:
        parser.error(f"malformed expression: {error}")
    model = (
        load_release(parser, args.pretrained)
        if args.pretrained is not None
        else load_checkpoint(parser, args.checkpoint)
    )
    prediction, tree = model.parse(args.expression)
    print(f"predicted: {prediction}   true value: {truth}")
    print(f"tree:      {tree}")
    return 0


def load_release(parser: argparse.ArgumentParser, name: str) -> ListOpsParser:
    try:
        release = get_release(name)
        if release.model != "listops":
            parser.error(
                f"{name!r} is a {release.model} release, not a ListOps parser; ListOps releases: "
                f"{', '.join(list_pretrained('listops*')) or 'none'}"
            )
        return load_pretrained(name)
    except PretrainedError as error:
        parser.error(f"--pretrained: {error}")


def load_checkpoint(parser: argparse.ArgumentParser, checkpoint: str) -> ListOpsParser:
    try:
        return ListOpsParser.load_from_checkpoint(checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        parser.error(f"no checkpoint at {checkpoint}")
    except (OSError, RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError):
        # Loading holds to tensors and plain values, so nothing in the file is executed.
        parser.error(
            f"{checkpoint} is not a ListOps parser checkpoint: it is corrupt or truncated, "
            "belongs to another model, or holds objects other than tensors and plain values"
        )


if __name__ == "__main__":
    sys.exit(main())
