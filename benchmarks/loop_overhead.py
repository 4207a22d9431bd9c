"""What Lightning costs: epochs of train.py's VAE against a plain PyTorch loop.

    python benchmarks/loop_overhead.py [--rounds 2] [--epochs 3] [--data fashion-mnist] [--accelerator gpu]

Both sides train a ``CategoricalVAE`` with train.py's defaults (10×30, ReinMax,
RAdam) from the same seed, on the same data tensors batched by the same
``TensorBatches``; an epoch is a pass over the training split followed by one over
the evaluation split. The Lightning side is assembled by train.py's own
functions, so it carries what a user gets: the progress bar, the non-finite guard,
TensorBoard logging, image logging and checkpoints (its epoch runs until the next
one starts, so the checkpoints written after validation count).

The sides alternate epoch by epoch in one process: before each Lightning epoch
the plain loop runs one of its own. A shared machine's load drifts over seconds,
and alternating epochs lets both sides see the same drift, which alternating whole
runs did not. The figure is the steady-state epoch (the median over each round's
epochs after its first), which is what a long run pays. On a GPU both sides keep
the data on the device (the data module does that under Lightning) and an epoch's
time ends when the device is done.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train  # noqa: E402

PLAIN, LIGHTNING = "plain PyTorch", "train.py (Lightning)"


def config_for(data: str, output_dir: str, accelerator: str = "cpu", data_dir: str | None = None) -> dict:
    config = {**train.DEFAULTS, "data": data, "data_dir": data_dir, "accelerator": accelerator,
              "devices": 1, "output_dir": output_dir}
    config = {key: (dict(value) if isinstance(value, dict) else value) for key, value in config.items()}
    train.fill_model_defaults(config)
    return config


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PlainLoop:
    """The same model and data, trained by hand: zero_grad, loss, backward, step; then evaluation."""

    def __init__(self, config: dict) -> None:
        self.device = torch.device("cuda" if config["accelerator"] == "gpu" else "cpu")
        L.seed_everything(config["seed"], verbose=False)
        self.model = train.build_model(config).to(self.device)
        self.data = train.build_datamodule(config)
        self.data.prepare_data()
        self.data.setup("fit")
        self.data.splits = {split: images.to(self.device) for split, images in self.data.splits.items()}
        self.optimizer = self.model.configure_optimizers()

    def epoch(self) -> float:
        """Seconds for one epoch of training and evaluation."""
        synchronize(self.device)
        start = time.perf_counter()
        self.model.train()
        for images in self.data.train_dataloader():
            self.optimizer.zero_grad(set_to_none=True)  # where Lightning clears them too
            self.model.loss_terms(images)["neg_elbo"].backward()
            self.optimizer.step()
        self.model.eval()
        with torch.no_grad():
            for images in self.data.val_dataloader():
                self.model.loss_terms(images)
        synchronize(self.device)
        return time.perf_counter() - start


class AlternatingEpochs(L.Callback):
    """Runs a plain epoch before each Lightning epoch, and times both.

    A Lightning epoch is timed from its start to the next one's (or to the end of
    training), so its validation and checkpoints are in it.
    """

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.seconds: dict[str, list[float]] = {PLAIN: [], LIGHTNING: []}
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._end_lightning_epoch(module.device)
        self.seconds[PLAIN].append(self.plain.epoch())
        synchronize(module.device)
        self._start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._end_lightning_epoch(module.device)

    def _end_lightning_epoch(self, device: torch.device) -> None:
        if self._start is not None:
            synchronize(device)
            self.seconds[LIGHTNING].append(time.perf_counter() - self._start)
            self._start = None


def alternating_run(config: dict) -> dict[str, list[float]]:
    """One round: a train.py fit with a plain epoch before each of its epochs."""
    timer = AlternatingEpochs(PlainLoop(config))
    L.seed_everything(config["seed"], verbose=False)
    model = train.build_model(config)
    data = train.build_datamodule(config)
    run, _ = train.run_directory(config)
    trainer = train.build_trainer(config, run, model, callbacks=[timer])
    trainer.fit(model, datamodule=data)
    return timer.seconds


def compare(data: str, rounds: int, epochs: int, accelerator: str = "cpu",
            data_dir: str | None = None) -> dict[str, list[float]]:
    """Each side's steady epochs (each round's epochs after its first)."""
    steady: dict[str, list[float]] = {PLAIN: [], LIGHTNING: []}
    with tempfile.TemporaryDirectory() as output_dir:
        for round_index in range(rounds):
            os.environ.pop(train.RUN_VERSION_VARIABLE, None)  # a fresh run folder each time
            seconds = alternating_run({**config_for(data, output_dir, accelerator, data_dir), "max_epochs": epochs})
            for side, times in seconds.items():
                steady[side].extend(times[1:])  # the first epoch warms up
            print(f"round {round_index + 1} done", file=sys.stderr, flush=True)
    return steady


def steady_ratio(steady: dict[str, list[float]]) -> float:
    """train.py's median steady epoch over the plain loop's."""
    return statistics.median(steady[LIGHTNING]) / statistics.median(steady[PLAIN])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args()

    steady = compare(args.data, args.rounds, args.epochs, args.accelerator, args.data_dir)
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else "CPU"
    print(f"- command: `{shlex.join(['python', *sys.argv])}`")
    print(f"- torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, {device}")
    print("\n| loop | steady epoch (s), median | steady epochs (s) |")
    print("|---|--:|---|")
    for side, times in steady.items():
        print(f"| {side} | {statistics.median(times):.2f} | {', '.join(f'{value:.2f}' for value in times)} |")
    paired = [ours / plain for ours, plain in zip(steady[LIGHTNING], steady[PLAIN])]
    print(f"\nLightning / plain, steady epoch: {steady_ratio(steady):.3f} (goal: at most 1.10); "
          f"median of the epoch-by-epoch ratios: {statistics.median(paired):.3f}")


if __name__ == "__main__":
    main()
