"""What Lightning costs: epochs of train.py's VAE against a plain PyTorch loop.

    python benchmarks/loop_overhead.py [--rounds 2] [--epochs 3] [--data fashion-mnist] [--accelerator gpu]

Both sides train a fresh ``CategoricalVAE`` with train.py's defaults (10×30,
ReinMax, RAdam) from the same seed, on the same data tensors batched by the same
``TensorBatches``; an epoch is a pass over the training split followed by one over
the evaluation split. The Lightning side is assembled by train.py's own
functions, so it carries what a user gets: the progress bar, TensorBoard logging,
image logging and checkpoints. Two figures per side: the whole run (start-up,
sanity check and final checkpoint included) and the steady-state time of an
epoch (the median over epochs after the first), which is what a long run pays.
Rounds alternate between the two sides, so a change in the machine's load
affects both. On a GPU both sides keep the data on the device (the data module
does that under Lightning) and an epoch's time ends when the device is done.
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


def config_for(data: str, output_dir: str, accelerator: str = "cpu", data_dir: str | None = None) -> dict:
    config = {**train.DEFAULTS, "data": data, "data_dir": data_dir, "accelerator": accelerator,
              "devices": 1, "output_dir": output_dir}
    config = {key: (dict(value) if isinstance(value, dict) else value) for key, value in config.items()}
    train.fill_model_defaults(config)
    return config


class EpochTimer(L.Callback):
    """Wall time of each training epoch, its validation and checkpoints included."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        synchronize(module.device)
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        synchronize(module.device)
        self.seconds.append(time.perf_counter() - self._start)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def lightning_run(config: dict) -> tuple[float, list[float]]:
    L.seed_everything(config["seed"], verbose=False)
    model = train.build_model(config)
    data = train.build_datamodule(config)
    run, _ = train.run_directory(config)
    trainer = train.build_trainer(config, run, model)
    timer = EpochTimer()
    trainer.callbacks.insert(0, timer)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - start, timer.seconds


def plain_run(config: dict) -> tuple[float, list[float]]:
    L.seed_everything(config["seed"], verbose=False)
    device = torch.device("cuda" if config["accelerator"] == "gpu" else "cpu")
    model = train.build_model(config).to(device)
    data = train.build_datamodule(config)
    data.prepare_data()
    data.setup("fit")
    data.splits = {split: images.to(device) for split, images in data.splits.items()}
    start = time.perf_counter()
    optimizer = model.configure_optimizers()
    epochs = []
    for _ in range(config["max_epochs"]):
        synchronize(device)
        epoch_start = time.perf_counter()
        model.train()
        for images in data.train_dataloader():
            optimizer.zero_grad(set_to_none=True)  # where Lightning clears them too
            loss = model.loss_terms(images)["neg_elbo"]
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            for images in data.val_dataloader():
                model.loss_terms(images)
        synchronize(device)
        epochs.append(time.perf_counter() - epoch_start)
    return time.perf_counter() - start, epochs


SIDES = {"plain PyTorch": plain_run, "train.py (Lightning)": lightning_run}


def compare(data: str, rounds: int, epochs: int, accelerator: str = "cpu",
            data_dir: str | None = None) -> dict[str, dict[str, list[float]]]:
    """Each side's steady epochs (after its first) and whole runs, the sides alternating."""
    times = {name: {"epochs": [], "runs": []} for name in SIDES}
    with tempfile.TemporaryDirectory() as output_dir:
        for round_index in range(rounds):
            for name, run in SIDES.items():
                os.environ.pop(train.RUN_VERSION_VARIABLE, None)  # a fresh run folder each time
                total, per_epoch = run({**config_for(data, output_dir, accelerator, data_dir), "max_epochs": epochs})
                times[name]["runs"].append(total)
                times[name]["epochs"].extend(per_epoch[1:])  # the first epoch warms up
            print(f"round {round_index + 1} done", file=sys.stderr, flush=True)
    return times


def steady_ratio(times: dict[str, dict[str, list[float]]]) -> float:
    """train.py's median steady epoch over the plain loop's."""
    plain, ours = (statistics.median(times[name]["epochs"]) for name in SIDES)
    return ours / plain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu")
    args = parser.parse_args()

    times = compare(args.data, args.rounds, args.epochs, args.accelerator, args.data_dir)
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else "CPU"
    print(f"- command: `{shlex.join(['python', *sys.argv])}`")
    print(f"- torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, {device}")
    print("\n| loop | steady epoch (s), median | whole run (s), median | steady epochs (s) |")
    print("|---|--:|--:|---|")
    for name in SIDES:
        print(f"| {name} | {statistics.median(times[name]['epochs']):.2f} | {statistics.median(times[name]['runs']):.2f} "
              f"| {', '.join(f'{v:.2f}' for v in times[name]['epochs'])} |")
    whole_plain, whole_ours = (statistics.median(times[name]["runs"]) for name in SIDES)
    print(f"\nLightning / plain, steady epoch: {steady_ratio(times):.3f} (goal: at most 1.10); "
          f"whole run: {whole_ours / whole_plain:.3f}")


if __name__ == "__main__":
    main()
