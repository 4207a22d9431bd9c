"""Gradient-estimate quality: what the GradientQuality callback costs.

    python benchmarks/gradient_quality.py overhead [--every 1000] [--steps 200]

``overhead`` times one measurement of the callback at its default settings on
train.py's default model (the 10×30 categorical VAE with ReinMax; 10^30
configurations, so the reference is RLOO with 1,000 evaluations) and a training
step of the same model on Fashion-MNIST batches, alternating, in one process, and
reports the measurement's cost as a share of the training time between two
measurements.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from callbacks.gradient_quality import GradientQuality  # noqa: E402
from datamodules.images import ImageDataModule  # noqa: E402
from zoo.models import CategoricalVAE  # noqa: E402


def overhead(args: argparse.Namespace) -> None:
    L.seed_everything(0, verbose=False)
    model = CategoricalVAE()
    optimizer = model.configure_optimizers()
    data = ImageDataModule("fashion-mnist", data_dir=args.data_dir)
    data.prepare_data()
    data.setup("fit")
    batches = iter(data.train_dataloader())
    callback = GradientQuality(every_n_steps=args.every)
    callback._probe_batch = next(batches)[: callback.probe_batch_size]

    step_seconds, measure_seconds = [], []
    for round_index in range(args.rounds + 1):
        start = time.perf_counter()
        for _ in range(args.steps):
            optimizer.zero_grad(set_to_none=True)
            model.loss_terms(next(batches))["neg_elbo"].backward()
            optimizer.step()
        steps = (time.perf_counter() - start) / args.steps
        start = time.perf_counter()
        callback.measure(model, step=round_index)
        measure = time.perf_counter() - start
        if round_index:  # the first round warms up
            step_seconds.append(steps)
            measure_seconds.append(measure)

    step, measure = statistics.median(step_seconds), statistics.median(measure_seconds)
    share = measure / (measure + args.every * step)
    print(f"- command: `{shlex.join(['python', *sys.argv])}`; CPU, {torch.get_num_threads()} threads")
    print(f"- training step: {step * 1e3:.1f} ms; one measurement (num_samples={callback.num_samples}, "
          f"probe {callback.probe_batch_size}, RLOO reference of {callback.reference_samples} "
          f"evaluations): {measure:.2f} s")
    print(f"- every {args.every} steps the callback takes {100 * share:.1f}% of the training time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cost = commands.add_parser("overhead", help="the callback's share of training time")
    cost.add_argument("--every", type=int, default=1000)
    cost.add_argument("--steps", type=int, default=200, help="training steps timed per round")
    cost.add_argument("--rounds", type=int, default=3)
    cost.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    {"overhead": overhead}[args.command](args)


if __name__ == "__main__":
    main()
