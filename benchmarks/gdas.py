"""GDAS with a pluggable estimator: the cost of a search step, searches, and the found genotypes retrained.

    python benchmarks/gdas.py speed [--steps 6]
    python benchmarks/gdas.py search --estimator stgs|reinmax [--epochs 10] [--steps-per-epoch 100] [--arch-lr 3e-4]
    python benchmarks/gdas.py retrain --genotype G|random --label NAME [--epochs 4]
    python benchmarks/gdas.py report

``speed`` times one step of the search at the paper's size (C = 16, N = 5, batch 64,
32×32 RGB inputs): the weight step and the architecture step, next to one SGD step
of a fixed network of the same size (the strong genotype of the issue) on the same
batch, and projects the seconds per search epoch of CIFAR-10 (25,000 images in the
training half, 391 steps).

``search`` runs the ``gdas`` model on Fashion-MNIST (padded to 32×32) at a
reduced size stated in the record (channels, cells per stage, epochs of a fixed
number of steps) and records the genotype, α's entropy and the supernet's test
accuracy under the argmax genotype after every epoch. ``retrain`` runs
``train.py --model nas-net`` from scratch on the whole Fashion-MNIST training set
with the NATS recipe (SGD 0.1, Nesterov, cosine) at an equal budget for every
genotype and records its test accuracy after every epoch; the run is kept under
``runs/benchmarks/gdas/``. Records go to ``benchmarks/results/gdas/``; ``report``
tabulates them. A release of a found genotype comes from ``train.py --model gdas``
and ``--model nas-net`` runs instead (``python -m zoo.release ... --found-by``), so
that both commands are recorded.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datamodules.nas import NASDataModule  # noqa: E402
from zoo.models import GDASSearch, NASNet  # noqa: E402
from zoo.models.nats import EXAMPLE, Genotype  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "gdas"
CIFAR10_SEARCH_STEPS = 25_000 // 64 + 1


def environment() -> dict[str, object]:
    return {"command": shlex.join(["python", *sys.argv]), "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"}


def speed(args: argparse.Namespace) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    search = GDASSearch(estimator="reinmax").to(device)
    fixed = NASNet(EXAMPLE).to(device)
    weight_optimizer = torch.optim.SGD(search.network.parameters(), lr=0.025, momentum=0.9, nesterov=True)
    architecture_optimizer = torch.optim.Adam([search.alpha], lr=3e-4, betas=(0.5, 0.999))
    fixed_optimizer = torch.optim.SGD(fixed.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    images = torch.randn(64, 3, 32, 32, device=device)
    labels = torch.randint(10, (64,), device=device)

    def search_step() -> None:
        for optimizer, trained in (
            (weight_optimizer, search.network.parameters()),
            (architecture_optimizer, [search.alpha]),
        ):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(search(images), labels).backward(inputs=list(trained))
            optimizer.step()

    def fixed_step() -> None:
        fixed_optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(fixed(images), labels).backward()
        fixed_optimizer.step()

    seconds: dict[str, list[float]] = {"GDAS search step (weights + α)": [], "fixed network, one SGD step": []}
    for index in range(args.steps + 1):
        for times, step in zip(seconds.values(), (search_step, fixed_step)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if index:  # the first step warms up
                times.append(time.perf_counter() - start)
    info = environment()
    print(
        f"- `{info['command']}`; {info['device']}, {info['threads']} threads; C = 16, N = 5, batch 64 of "
        f"3×32×32, {args.steps} timed steps after one warm-up; the sample differs every step\n"
    )
    print("| step | seconds / step | CIFAR-10 search epoch (391 steps), minutes | ratio |")
    print("|---|--:|--:|--:|")
    baseline = statistics.mean(seconds["fixed network, one SGD step"])
    for name, times in seconds.items():
        mean = statistics.mean(times)
        print(f"| {name} | {mean:.3f} | {mean * CIFAR10_SEARCH_STEPS / 60:.1f} | {mean / baseline:.2f} |")


class EpochRecord(L.Callback):
    """After every epoch: the record of the run so far, rewritten on disk."""

    def __init__(self, record: dict, path: Path) -> None:
        self.record, self.path = record, path
        self._start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        entry = {
            "epoch": trainer.current_epoch + 1,
            "seconds": time.perf_counter() - self._start,
            "test_accuracy": float(metrics["val/accuracy"]),
        }
        if isinstance(module, GDASSearch):
            entry.update(
                genotype=str(module.genotype),
                tau=module.estimator.tau,
                alpha_softmax=module.alpha.detach().softmax(-1).tolist(),
            )
        self.record["epochs"].append(entry)
        self.path.write_text(json.dumps(self.record, indent=1))


def fit(
    model: L.LightningModule, data: NASDataModule, record: dict, path: Path, epochs: int, steps_per_epoch: int | None
) -> None:
    args = dict(
        max_epochs=epochs,
        limit_train_batches=steps_per_epoch,
        accelerator="auto",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[EpochRecord(record, path)],
    )
    L.Trainer(**args).fit(model, datamodule=data)
    print(f"-> {path}")


def search(args: argparse.Namespace) -> None:
    L.seed_everything(args.seed, verbose=False)
    model = GDASSearch(
        channels=args.channels,
        cells_per_stage=args.cells,
        in_channels=1,
        estimator=args.estimator,
        arch_lr=args.arch_lr,
    )
    record = {
        **environment(),
        "kind": "search",
        "estimator": args.estimator,
        "seed": args.seed,
        "arch_lr": args.arch_lr,
        "channels": args.channels,
        "cells_per_stage": args.cells,
        "batch_size": 64,
        "steps_per_epoch": args.steps_per_epoch,
        "tau": [model.tau_start, model.tau_end],
        "epochs": [],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / (
        f"search-{args.estimator}-seed{args.seed}-{args.epochs}x{args.steps_per_epoch}-arch-lr{args.arch_lr:g}.json"
    )
    fit(
        model,
        NASDataModule("fashion-mnist", batch_size=64, mode="search"),
        record,
        path,
        args.epochs,
        args.steps_per_epoch,
    )


def retrain(args: argparse.Namespace) -> None:
    """``train.py --model nas-net`` on Fashion-MNIST, so that the run is also a release candidate."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from zoo import train

    if args.genotype == "random":
        genotype = str(Genotype.random(torch.Generator().manual_seed(args.seed)))
    else:
        genotype = str(Genotype.parse(args.genotype))
    output = Path("runs") / "benchmarks" / "gdas" / args.label
    command = [
        "--model",
        "nas-net",
        "--data",
        "fashion-mnist",
        "--genotype",
        genotype,
        "--model-arg",
        f"channels={args.channels}",
        "--model-arg",
        f"cells_per_stage={args.cells}",
        "--batch-size",
        str(args.batch_size),
        "--max-epochs",
        str(args.epochs),
        "--seed",
        str(args.seed),
        "--output-dir",
        str(output),
        "--trainer-arg",
        "enable_progress_bar=false",
    ]
    start = time.time()
    train.main(command)
    run = max(output.glob("*/version_*"), key=lambda path: path.stat().st_mtime)
    events = EventAccumulator(str(run)).Reload()
    accuracies = events.Scalars("val/accuracy")
    ends = [start] + [event.wall_time for event in accuracies]
    model = NASNet(genotype, channels=args.channels, cells_per_stage=args.cells, in_channels=1)
    record = {
        **environment(),
        "command": shlex.join(["python", "train.py", *command]),
        "kind": "retrain",
        "label": args.label,
        "genotype": genotype,
        "seed": args.seed,
        "channels": args.channels,
        "cells_per_stage": args.cells,
        "batch_size": args.batch_size,
        "run": str(run),
        "parameters": sum(p.numel() for p in model.parameters()),
        "epochs": [
            {"epoch": index + 1, "seconds": ends[index + 1] - ends[index], "test_accuracy": event.value}
            for index, event in enumerate(accuracies)
        ],
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"retrain-{args.label}-seed{args.seed}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"-> {path}")


def cell(genotype: str) -> str:
    """A genotype inside a markdown table cell, its bars escaped."""
    return genotype.replace("|", "\\|")


def report(args: argparse.Namespace) -> None:
    records = [json.loads(path.read_text()) for path in sorted(RESULTS_DIR.glob("*.json"))]
    searches = [record for record in records if record["kind"] == "search"]
    retrained = [record for record in records if record["kind"] == "retrain"]
    for record in searches:
        print(
            f"- `{record['command']}`; {record['device']}, {record['threads']} threads; C = {record['channels']}, "
            f"N = {record['cells_per_stage']}, {record['steps_per_epoch']} steps an epoch, "
            f"τ {record['tau'][0]:g} → {record['tau'][1]:g}, α's lr {record.get('arch_lr', 3e-4):g}; "
            "largest softmax(α) per edge at the end: "
            + ", ".join(f"{max(row):.2f}" for row in record["epochs"][-1]["alpha_softmax"])
            + "\n"
        )
        print("| epoch | minutes | supernet test acc. (argmax genotype) | τ | genotype |")
        print("|--:|--:|--:|--:|---|")
        for epoch in record["epochs"]:
            print(
                f"| {epoch['epoch']} | {epoch['seconds'] / 60:.1f} | {100 * epoch['test_accuracy']:.2f} | "
                f"{epoch['tau']:.2f} | `{cell(epoch['genotype'])}` |"
            )
        print()
    if retrained:
        first = retrained[0]
        print(
            f"Retrained from scratch, C = {first['channels']}, N = {first['cells_per_stage']}, batch "
            f"{first['batch_size']}, {len(first['epochs'])} epochs of Fashion-MNIST:\n"
        )
        print("| genotype | from | parameters | test accuracy | minutes |")
        print("|---|---|--:|--:|--:|")
        for record in retrained:
            last = record["epochs"][-1]
            minutes = sum(epoch["seconds"] for epoch in record["epochs"]) / 60
            print(
                f"| `{cell(record['genotype'])}` | {record['label']} | {record['parameters']:,} | "
                f"{100 * last['test_accuracy']:.2f} | {minutes:.1f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("speed", help="seconds per search step at C = 16, N = 5")
    timing.add_argument("--steps", type=int, default=6)
    searching = commands.add_parser("search", help="a reduced search on Fashion-MNIST")
    searching.add_argument("--estimator", default="reinmax")
    searching.add_argument("--epochs", type=int, default=10)
    searching.add_argument("--steps-per-epoch", type=int, default=100)
    searching.add_argument(
        "--arch-lr",
        type=float,
        default=3e-4,
        help="α's Adam learning rate (GDAS: 3e-4 over ~39,000 steps; scale it up for a short search)",
    )
    retraining = commands.add_parser("retrain", help="train a genotype from scratch on Fashion-MNIST")
    retraining.add_argument("--genotype", required=True, help="a NATS-Bench string, or 'random' (drawn with --seed)")
    retraining.add_argument("--label", required=True, help="where the genotype came from, e.g. reinmax or random")
    retraining.add_argument("--epochs", type=int, default=4)
    retraining.add_argument("--batch-size", type=int, default=256)
    for sub in (searching, retraining):
        sub.add_argument("--channels", type=int, default=8)
        sub.add_argument("--cells", type=int, default=1, help="cells per stage (N)")
        sub.add_argument("--seed", type=int, default=0)
    commands.add_parser("report", help="tables of the records")
    args = parser.parse_args()
    {"speed": speed, "search": search, "retrain": retrain, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
