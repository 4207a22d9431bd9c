"""Training and test −ELBO of the 10×30 categorical VAE on Fashion-MNIST, per estimator.

    python benchmarks/vae_fashion_mnist.py [--epochs 10] [--seeds 0 1] [--estimators ...]

Each run is ``train.py``'s model and data module (the paper's MNIST-VAE 10×30
architecture, batch 100, grey levels) trained in this process with Lightning. The
training −ELBO of an epoch is the mean of its per-batch losses, as the paper
reports it; the test −ELBO is measured on the 10,000 test images after each
epoch (the data module's validation split). Output is markdown for
``benchmarks/RESULTS.md``.
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
from datamodules.images import ImageDataModule  # noqa: E402
from zoo.models import CategoricalVAE  # noqa: E402

# ReinMax: the paper's 10×30 row. The baselines share its optimiser and learning
# rate; ST uses τ = 1 (where it is unbiased for linear losses) and the Gumbel
# family τ = 0.5, a common choice, since the paper does not list their settings.
SETTINGS: dict[str, dict] = {
    "reinmax": dict(tau=1.3),
    "st": dict(tau=1.0),
    "stgs": dict(tau=0.5),
    "gst-1.0": dict(tau=0.5),
    "grmck": dict(tau=0.5),
}
COMMON = dict(categories=10, latents=30, optimizer="radam", lr=5e-4)


class EpochHistory(L.Callback):
    """The epoch-level training and test −ELBO, in order.

    Read from the model's running means when validation ends an epoch, before the
    model logs and resets them.
    """

    def __init__(self) -> None:
        self.train: list[float] = []
        self.test: list[float] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.train.append(float(module.epoch_means["train_terms"].compute()["neg_elbo"]))
            self.test.append(float(module.epoch_means["val_terms"].compute()["neg_elbo"]))


def run(estimator: str, seed: int, epochs: int, data_dir: str | None) -> tuple[EpochHistory, float]:
    L.seed_everything(seed, verbose=False)
    model = CategoricalVAE(estimator=estimator, **COMMON, **SETTINGS[estimator])
    data = ImageDataModule("fashion-mnist", data_dir=data_dir, batch_size=100)
    history = EpochHistory()
    trainer = L.Trainer(max_epochs=epochs, accelerator="auto", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[history])
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return history, (time.perf_counter() - start) / epochs


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--estimators", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    results = {}
    for estimator in args.estimators:
        runs = [run(estimator, seed, args.epochs, args.data_dir) for seed in args.seeds]
        results[estimator] = runs
        finals = ", ".join(f"{h.train[-1]:.2f}/{h.test[-1]:.2f} ({t:.1f} s/epoch)" for h, t in runs)
        print(f"done: {estimator}: final train/test −ELBO per seed: {finals}", file=sys.stderr, flush=True)

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    print(f"- command: `{shlex.join(['python', *sys.argv])}`")
    print(f"- device: {device}; torch {torch.__version__}; seeds {args.seeds}; mean ± std over seeds")
    print("- settings: RAdam, lr 5e-4, batch 100, grey levels; " + ", ".join(
        f"{name} τ={SETTINGS[name]['tau']}" for name in args.estimators))
    print("\nFinal epoch:\n")
    print("| estimator | training −ELBO | test −ELBO | s / epoch |")
    print("|---|--:|--:|--:|")
    for estimator, runs in results.items():
        train = [history.train[-1] for history, _ in runs]
        test = [history.test[-1] for history, _ in runs]
        seconds = statistics.mean(per_epoch for _, per_epoch in runs)
        print(f"| {estimator} | {summary(train)} | {summary(test)} | {seconds:.1f} |")
    print("\nPer epoch (training −ELBO / test −ELBO, mean over seeds):\n")
    print("| epoch | " + " | ".join(results) + " |")
    print("|---" * (len(results) + 1) + "|")
    for epoch in range(args.epochs):
        cells = []
        for runs in results.values():
            train = statistics.mean(history.train[epoch] for history, _ in runs)
            test = statistics.mean(history.test[epoch] for history, _ in runs)
            cells.append(f"{train:.2f} / {test:.2f}")
        print(f"| {epoch + 1} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
