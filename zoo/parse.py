"""Show what a trained ListOps parser predicts for an expression and how it parses it.

    python -m zoo.parse "[MAX 2 9 [MIN 4 7 ] 0 ]" --checkpoint runs/listops-listops-reinmax/version_0/checkpoints/last.ckpt

prints the predicted value next to the true one, and the induced tree with each
merge in parentheses.
"""

from __future__ import annotations

import argparse
import pickle
import sys

from datamodules.listops.expressions import ExpressionError, parse, value
from zoo.models import ListOpsParser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zoo.parse", description=__doc__.split("\n\n")[0])
    parser.add_argument("expression", help='a ListOps expression, e.g. "[MAX 2 9 [MIN 4 7 ] 0 ]"')
    parser.add_argument("--checkpoint", required=True, help="a checkpoint written by train.py --model listops")
    args = parser.parse_args(argv)
    try:
        truth = value(parse(args.expression))
    except ExpressionError as error:
        parser.error(f"malformed expression: {error}")
    try:
        model = ListOpsParser.load_from_checkpoint(args.checkpoint, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        parser.error(f"no checkpoint at {args.checkpoint}")
    except (OSError, RuntimeError, KeyError, TypeError, EOFError, pickle.UnpicklingError):
        # Loading holds to tensors and plain values, so nothing in the file is executed.
        parser.error(f"{args.checkpoint} is not a ListOps parser checkpoint: it is corrupt or truncated, "
                     "belongs to another model, or holds objects other than tensors and plain values")
    prediction, tree = model.parse(args.expression)
    print(f"predicted: {prediction}   true value: {truth}")
    print(f"tree:      {tree}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
