"""Gradient-estimate quality: the paper's analysis on the 8×4 VAE, and the callback's cost.

    python benchmarks/gradient_quality.py analysis [--epochs 20]   # trains, writes JSON records
    python benchmarks/gradient_quality.py report                   # tables for RESULTS.md, PNG plots
    python benchmarks/gradient_quality.py overhead [--every 1000] [--steps 200]

``analysis`` reproduces the paper's study of gradient accuracy on the categorical
VAE with 4 latents of 8 categories (4,096 codes, so the GradientQuality callback's
reference is the exact gradient by enumeration), on Fashion-MNIST. The VAE is
trained once with each of ST, STGS, GST-1.0, GR-MCK and ReinMax (Adam lr 5e-4 and
τ 1.3, ReinMax's setting for this size in the paper, for all five); along each run
the callback scores all five estimators on the same probe batch. Then, at the final
parameters of the ReinMax run, it measures the relative bias and standard deviation
of STGS, ST and ReinMax over a grid of temperatures (ReinMax only at τ ≥ 1, its
valid range): the paper's temperature study.

``overhead`` times one measurement of the callback at its default settings on
train.py's default model (the 10×30 categorical VAE with ReinMax; 10^30
configurations, so the reference is RLOO with 1,000 evaluations) and a training
step of the same model on Fashion-MNIST batches, alternating, in one process, and
reports the measurement's cost as a share of the training time between two
measurements.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from callbacks.gradient_quality import GradientQuality  # noqa: E402
from datamodules.images import ImageDataModule  # noqa: E402
from zoo.models import CategoricalVAE, estimator_at  # noqa: E402

#: The estimators of the paper's cosine study, each trained with and all scored on every run.
ANALYSED = ["st", "stgs", "gst-1.0", "grmck", "reinmax"]
#: The temperature study's estimators and grid; ReinMax is defined for τ ≥ 1 only.
TEMPERATURE_ESTIMATORS = ["stgs", "st", "reinmax"]
TEMPERATURES = [0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 1.3, 1.5, 2.0, 3.0]
MINIMUM_TAU = {"reinmax": 1.0}
#: The paper's ReinMax setting for the 8×4 VAE, used for every estimator.
SETTINGS = {"categories": 8, "latents": 4, "optimizer": "adam", "lr": 5e-4, "tau": 1.3}
STEPS_PER_EPOCH = 600  # 60,000 Fashion-MNIST training images in batches of 100
SHOWN_EPOCHS = (0, 1, 2, 5, 10, 15, 20)
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "gradient_quality"


class QualityHistory(GradientQuality):
    """The GradientQuality callback, keeping every measurement for the report."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.history: list[dict[str, float]] = []

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_index: int) -> None:
        super().on_train_batch_start(trainer, module, batch, batch_index)
        if trainer.global_step % self.every_n_steps == 0:
            self.history.append({"step": trainer.global_step, **self.last})


def train_and_score(estimator: str, args: argparse.Namespace) -> tuple[CategoricalVAE, QualityHistory, dict]:
    """Train the 8×4 VAE with ``estimator``, scoring all of ANALYSED along the way."""
    L.seed_everything(args.seed, verbose=False)
    model = CategoricalVAE(estimator=estimator, **SETTINGS)
    quality = QualityHistory(every_n_steps=args.every, num_samples=args.num_samples,
                             estimators=ANALYSED, seed=args.seed)
    trainer = L.Trainer(max_epochs=args.epochs, limit_train_batches=args.limit_train_batches,
                        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[quality])
    start = time.perf_counter()
    trainer.fit(model, datamodule=ImageDataModule("fashion-mnist", data_dir=args.data_dir))
    seconds = time.perf_counter() - start
    quality.history.append({"step": trainer.global_step, **quality.measure(model, trainer.global_step)})
    run = {"history": quality.history, "seconds": seconds,
           "train_neg_elbo": float(trainer.callback_metrics["train/neg_elbo_epoch"])}
    print(f"{estimator}: training −ELBO of the last epoch {run['train_neg_elbo']:.2f}, "
          f"final cosine {quality.history[-1][f'grad_quality/{estimator}/cosine']:.3f}, "
          f"{seconds / 60:.1f} min", flush=True)
    return model, quality, run


def temperature_study(model: CategoricalVAE, probe_batch: torch.Tensor, num_samples: int,
                      seed: int) -> dict[str, list[dict[str, float]]]:
    """Relative bias and std of each of TEMPERATURE_ESTIMATORS over TEMPERATURES, at fixed parameters."""
    quality = GradientQuality(num_samples=num_samples, seed=seed)
    quality.probe_batch = probe_batch
    reference = quality.reference(model.gradient_probe(probe_batch))
    study: dict[str, list[dict[str, float]]] = {}
    for name in TEMPERATURE_ESTIMATORS:
        study[name] = []
        for tau in (t for t in TEMPERATURES if t >= MINIMUM_TAU.get(name, 0.0)):
            model.estimator = estimator_at(name, tau, None)
            metrics = quality.measure(model, step=0, reference=reference)
            study[name].append({"tau": tau, **{statistic: metrics[f"grad_quality/{name}/{statistic}"]
                                               for statistic in ("bias", "std", "cosine")}})
    return study


def analysis(args: argparse.Namespace) -> None:
    runs, temperature = {}, {}
    for estimator in ANALYSED:
        model, quality, runs[estimator] = train_and_score(estimator, args)
        if estimator == "reinmax":
            temperature = temperature_study(model, quality.probe_batch, args.temperature_samples, args.seed)
    record = {
        "settings": {**SETTINGS, "epochs": args.epochs, "every_n_steps": args.every,
                     "num_samples": args.num_samples, "temperature_samples": args.temperature_samples,
                     "seed": args.seed, "limit_train_batches": args.limit_train_batches},
        "runs": runs, "temperature": temperature,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "command": shlex.join(["python", *sys.argv]),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / "analysis.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"-> {path}")


def report(args: argparse.Namespace) -> None:
    path = args.results / "analysis.json"
    if not path.exists():
        sys.exit(f"no {path}; run `{Path(__file__).name} analysis` first.")
    record = json.loads(path.read_text())
    runs = record["runs"]
    print(f"- command: `{record['command']}`; torch {record['torch']}, {record['threads']} threads\n")

    print(f"Cosine of each estimator's mean to the exact gradient along its own training run "
          f"({STEPS_PER_EPOCH} steps an epoch; the last column: the last epoch's training −ELBO):\n")
    steps = [entry["step"] for entry in runs[ANALYSED[0]]["history"]]
    shown = [step for step in steps if step / STEPS_PER_EPOCH in SHOWN_EPOCHS] or steps
    header = " | ".join(f"epoch {step / STEPS_PER_EPOCH:g}" for step in shown)
    print(f"| trained and scored | {header} | mean | −ELBO |")
    print("|---|" + "--:|" * (len(shown) + 2))
    for name in ANALYSED:
        cosines = {entry["step"]: entry[f"grad_quality/{name}/cosine"] for entry in runs[name]["history"]}
        print(f"| {name} | " + " | ".join(f"{cosines[step]:.3f}" for step in shown)
              + f" | {statistics.mean(cosines.values()):.3f} | {runs[name]['train_neg_elbo']:.2f} |")

    print("\nEvery estimator scored on the same parameters, along the ReinMax run: "
          "cosine / relative bias / relative std:\n")
    history = {entry["step"]: entry for entry in runs["reinmax"]["history"]}
    print(f"| scored | {header} | mean |")
    print("|---|" + "--:|" * (len(shown) + 1))
    for name in ANALYSED:
        cells = [" / ".join(f"{history[step][f'grad_quality/{name}/{statistic}']:.2f}"
                            for statistic in ("cosine", "bias", "std")) for step in shown]
        means = " / ".join(
            f"{statistics.mean(entry[f'grad_quality/{name}/{statistic}'] for entry in history.values()):.2f}"
            for statistic in ("cosine", "bias", "std")
        )
        print(f"| {name} | " + " | ".join(cells) + f" | {means} |")

    print("\nTemperature study at the ReinMax run's final parameters: relative bias / relative std:\n")
    study = record["temperature"]
    print("| τ | " + " | ".join(study) + " |")
    print("|--:|" + "--:|" * len(study))
    for tau in TEMPERATURES:
        cells = []
        for rows in study.values():
            row = next((row for row in rows if row["tau"] == tau), None)
            cells.append(f"{row['bias']:.3f} / {row['std']:.3f}" if row else "–")
        print(f"| {tau:g} | " + " | ".join(cells) + " |")
    plot(record, args.results / "gradient_quality.png")
    print("\n![gradient quality](results/gradient_quality/gradient_quality.png)")


def plot(record: dict, path: Path) -> None:
    """Cosine along training, and bias and std against τ, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (cosine_axes, bias_axes, std_axes) = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, run in record["runs"].items():
        epochs = [entry["step"] / STEPS_PER_EPOCH for entry in run["history"]]
        cosine_axes.plot(epochs, [entry[f"grad_quality/{name}/cosine"] for entry in run["history"]], label=name)
    cosine_axes.set(
        xlabel="epoch",
        ylabel="cos(mean estimate, exact gradient)",
        title="8×4 VAE, Fashion-MNIST: each estimator on its own run",
    )
    for name, rows in record["temperature"].items():
        taus = [row["tau"] for row in rows]
        bias_axes.plot(taus, [row["bias"] for row in rows], marker="o", label=name)
        std_axes.plot(taus, [row["std"] for row in rows], marker="o", label=name)
    bias_axes.set(xscale="log", xlabel="τ", ylabel="‖mean − g*‖ / ‖g*‖", title="relative bias")
    std_axes.set(xscale="log", xlabel="τ", ylabel="‖std‖ / ‖g*‖", title="relative standard deviation")
    for axes in (cosine_axes, bias_axes, std_axes):
        axes.grid(alpha=0.3)
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def overhead(args: argparse.Namespace) -> None:
    L.seed_everything(0, verbose=False)
    model = CategoricalVAE()
    optimizer = model.configure_optimizers()
    data = ImageDataModule("fashion-mnist", data_dir=args.data_dir)
    data.prepare_data()
    data.setup("fit")
    loader = data.train_dataloader()
    batches = (batch for _ in iter(int, 1) for batch in loader)  # epoch after epoch
    callback = GradientQuality(every_n_steps=args.every)
    callback.probe_batch = next(batches)[: callback.probe_batch_size]

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
    print(
        f"- training step: {step * 1e3:.1f} ms; one measurement (num_samples={callback.num_samples}, "
        f"probe {callback.probe_batch_size}, RLOO reference of {callback.reference_samples} "
        f"evaluations): {measure:.2f} s"
    )
    print(f"- every {args.every} steps the callback takes {100 * share:.1f}% of the training time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    study = commands.add_parser("analysis", help="cosine along training, and the temperature study")
    study.add_argument("--epochs", type=int, default=20)
    study.add_argument("--every", type=int, default=STEPS_PER_EPOCH, help="steps between measurements")
    study.add_argument("--num-samples", type=int, default=100, help="estimates per measurement")
    study.add_argument("--temperature-samples", type=int, default=1000, help="estimates per τ")
    study.add_argument("--limit-train-batches", type=int, default=None, help="for a quick check")
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--data-dir", default=None)
    commands.add_parser("report", help="the tables and the plot of the analysis")
    for sub in (study, commands.choices["report"]):
        sub.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the record is kept")
    cost = commands.add_parser("overhead", help="the callback's share of training time")
    cost.add_argument("--every", type=int, default=1000)
    cost.add_argument("--steps", type=int, default=200, help="training steps timed per round")
    cost.add_argument("--rounds", type=int, default=3)
    cost.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    {"analysis": analysis, "report": report, "overhead": overhead}[args.command](args)


if __name__ == "__main__":
    main()
