"""The polynomial-programming toy: final exact loss per estimator, and ReinMax against RLOO.

    python benchmarks/poly.py estimators [--seeds 10] [--steps 8000]
    python benchmarks/poly.py reinmax-vs-rloo [--seeds 10] [--steps 8000]

``estimators``: the paper's setting (128 variables, 64 samples a step, Adam lr
1e-3, τ = 1, 8000 steps) for p ∈ {1.5, 2, 3}; the final *exact* expected loss,
mean ± std over seeds, next to the optimum 0.45^p. ``reinmax-vs-rloo``: the same
for ReinMax and RLOO with 4, 16 and 128 variables at 8, 64 and 256 samples a step
(p = 2). Each cell is train.py's ``PolynomialProgramming`` with one replica per
seed (independent copies trained in one model), stepped by a plain loop: the toy's
steps are so small that a trainer's per-step work would dominate.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo.models import PolynomialProgramming  # noqa: E402

ESTIMATORS = ["st", "reinmax", "stgs", "gst-1.0", "grmck", "reinforce"]


def final_losses(seeds: int, steps: int, **settings) -> list[float]:
    """The exact expected loss after ``steps`` steps of ``seeds`` independent replicas."""
    torch.manual_seed(0)
    model = PolynomialProgramming(replicas=seeds, **settings)
    optimizer = model.configure_optimizers()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        model.objective().backward()
        optimizer.step()
    return model.expected_losses().tolist()


def spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def estimators(args: argparse.Namespace) -> None:
    pnorms = [1.5, 2.0, 3.0]
    print("| estimator | " + " | ".join(f"p = {p}" for p in pnorms) + " |")
    print("|---|" + "--:|" * len(pnorms))
    print("| optimum 0.45^p | " + " | ".join(f"{0.45 ** p:.4f}" for p in pnorms) + " |")
    for name in args.estimators:
        cells = []
        for pnorm in pnorms:
            cells.append(spread(final_losses(args.seeds, args.steps, estimator=name, pnorm=pnorm)))
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def reinmax_vs_rloo(args: argparse.Namespace) -> None:
    print("| variables | samples a step | ReinMax | RLOO | optimum |")
    print("|--:|--:|--:|--:|--:|")
    for variables in (4, 16, 128):
        for num_samples in (8, 64, 256):
            cells = []
            for name in ("reinmax", "reinforce"):
                cells.append(spread(final_losses(args.seeds, args.steps, estimator=name, variables=variables,
                                                 num_samples=num_samples)))
            print(f"| {variables} | {num_samples} | {cells[0]} | {cells[1]} | {0.45 ** 2:.4f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    grid = commands.add_parser("estimators", help="final exact loss per estimator and p")
    grid.add_argument("--estimators", nargs="+", default=ESTIMATORS)
    commands.add_parser("reinmax-vs-rloo", help="ReinMax against RLOO over sizes and samples")
    for sub in commands.choices.values():
        sub.add_argument("--seeds", type=int, default=10)
        sub.add_argument("--steps", type=int, default=8000)
    args = parser.parse_args()
    start = time.perf_counter()
    print(f"- command: `{shlex.join(['python', *sys.argv])}`; CPU, {torch.get_num_threads()} threads; "
          "final exact expected loss, mean ± std over seeds\n")
    {"estimators": estimators, "reinmax-vs-rloo": reinmax_vs_rloo}[args.command](args)
    print(f"\n({(time.perf_counter() - start) / 60:.1f} min)")


if __name__ == "__main__":
    main()
