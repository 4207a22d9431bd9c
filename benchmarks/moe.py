"""Routers on the Mixture-of-Experts transformer: accuracy at equal steps, and sparse against dense cost.

    python benchmarks/moe.py run --estimator sparsemixer --seed 0   # one training run, one JSON record
    python benchmarks/moe.py all                                     # every missing (router, seed) run
    python benchmarks/moe.py cost                                    # step time and peak memory, one process
    python benchmarks/moe.py report                                  # the markdown tables for RESULTS.md

Each ``run`` trains ``--model moe`` at its defaults (width 128, 4 blocks, 8 experts in
blocks 2 and 4, capacity factor 1.25, AdamW lr 1e-3 cosine over the passes) on
Fashion-MNIST for ``--passes`` passes of ``--batches`` batches of 128 (a pass is
16,000 shuffled training images by default, so that ten runs fit a few CPU hours),
and measures the test accuracy on all 10,000 test images after each pass. The
routers: ``switch`` and ``sparsemixer`` compute only the chosen expert; ``reinmax``
and ``st`` run every expert in training (their gradient needs them); ``soft`` mixes
every expert always. ``cost`` times a training step of sparse routing (``switch``)
against dense (``st``) at 8 and 32 experts, interleaved in one process, and replays
the allocator's records for the peak memory of one step.
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
from benchmarks.estimators import peak_mb  # noqa: E402
from datamodules.nas import NASDataModule  # noqa: E402
from zoo.models import MoEClassifier  # noqa: E402

ROUTERS = ("switch", "sparsemixer", "reinmax", "st", "soft")
SEEDS = (0, 1)
BATCH_SIZE = 128
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "moe"
COST_RECORD = "cost.json"


class TestAccuracy(L.Callback):
    """The validation accuracy (the test split here) after each pass, and the seconds spent training."""

    def __init__(self) -> None:
        self.accuracy: list[float] = []
        self.training_seconds = 0.0

    def on_train_epoch_start(self, trainer, module) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, module) -> None:
        self.training_seconds += time.perf_counter() - self._start

    def on_validation_epoch_start(self, trainer, module) -> None:
        self._validation_start = time.perf_counter()

    def on_validation_epoch_end(self, trainer, module) -> None:
        # Lightning validates inside the training epoch: its time is not training time.
        self.training_seconds -= time.perf_counter() - self._validation_start
        self.accuracy.append(float(trainer.callback_metrics["val/accuracy"]))


def run(args: argparse.Namespace) -> Path:
    L.seed_everything(args.seed, verbose=False)
    model = MoEClassifier(estimator=args.estimator)
    data = NASDataModule("fashion-mnist", data_dir=args.data_dir, batch_size=BATCH_SIZE, mode="train")
    accuracy = TestAccuracy()
    trainer = L.Trainer(max_epochs=args.passes, limit_train_batches=args.batches, accelerator="auto", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, callbacks=[accuracy])
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    record = {
        "estimator": args.estimator, "seed": args.seed, "passes": args.passes, "batches": args.batches,
        "batch_size": BATCH_SIZE, "test_accuracy_per_pass": accuracy.accuracy,
        "seconds_per_step": accuracy.training_seconds / trainer.global_step,
        "seconds": time.perf_counter() - start, "steps": trainer.global_step,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "threads": torch.get_num_threads(), "torch": torch.__version__, "command": shlex.join(["python", *sys.argv]),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"{args.estimator}-seed{args.seed}-{args.passes}x{args.batches}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"{args.estimator} seed {args.seed}: test accuracy {accuracy.accuracy[-1]:.4f}, "
          f"{record['seconds'] / 60:.1f} min -> {path}", flush=True)
    return path


def run_all(args: argparse.Namespace) -> None:
    """Every router and seed without a record yet, seed by seed, so that a stopped sweep continues."""
    for seed in SEEDS:
        for estimator in ROUTERS:
            if (args.results / f"{estimator}-seed{seed}-{args.passes}x{args.batches}.json").exists():
                continue
            run(argparse.Namespace(**{**vars(args), "estimator": estimator, "seed": seed}))


def cost(args: argparse.Namespace) -> None:
    """Median step time and peak memory of sparse (switch) and dense (st) routing at 8 and 32 experts."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    images = torch.randn(BATCH_SIZE, 1, 32, 32, device=device)
    labels = torch.randint(10, (BATCH_SIZE,), device=device)
    steps = {}
    for experts in (8, 32):
        for estimator in ("switch", "st"):
            model = MoEClassifier(estimator=estimator, num_experts=experts).to(device).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

            def step(model=model, optimizer=optimizer) -> None:
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(model(images), labels).backward()
                optimizer.step()

            steps[(experts, estimator)] = step
    memory = {key: peak_mb(step, device) for key, step in steps.items()}
    times: dict[tuple[int, str], list[float]] = {key: [] for key in steps}
    for round_index in range(args.rounds + 1):
        for key, step in steps.items():
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if round_index:  # the first round warms up
                times[key].append(time.perf_counter() - start)
    record = {
        "rows": [{"experts": experts, "estimator": estimator, "ms_per_step": 1000 * statistics.median(times[key]),
                  "peak_mb": memory[key]} for key in steps for experts, estimator in [key]],
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "threads": torch.get_num_threads(), "command": shlex.join(["python", *sys.argv]),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / COST_RECORD).write_text(json.dumps(record, indent=1))
    print_cost(record)


def print_cost(record: dict) -> None:
    rows = {(row["experts"], row["estimator"]): row for row in record["rows"]}
    print(f"`{record['command']}` ({record['device']}, {record['threads']} threads), batch {BATCH_SIZE}:\n")
    print("| experts | sparse (switch) ms / step | dense (st) ms / step | dense ÷ sparse | sparse peak MB | "
          "dense peak MB | dense ÷ sparse |")
    print("|--:|--:|--:|--:|--:|--:|--:|")
    for experts in sorted({experts for experts, _ in rows}):
        sparse, dense = rows[(experts, "switch")], rows[(experts, "st")]
        print(f"| {experts} | {sparse['ms_per_step']:.0f} | {dense['ms_per_step']:.0f} | "
              f"{dense['ms_per_step'] / sparse['ms_per_step']:.2f} | {sparse['peak_mb']:.0f} | "
              f"{dense['peak_mb']:.0f} | {dense['peak_mb'] / sparse['peak_mb']:.2f} |")


def report(args: argparse.Namespace) -> None:
    records = [json.loads(path.read_text()) for path in sorted(args.results.glob("*-seed*.json"))]
    if not records:
        sys.exit(f"no results in {args.results}; run `{Path(__file__).name} all` first.")
    curves = {estimator: [r["test_accuracy_per_pass"] for r in records if r["estimator"] == estimator]
              for estimator in ROUTERS}
    curves = {estimator: runs for estimator, runs in curves.items() if runs}
    steps_per_pass = records[0]["batches"]
    passes = min(len(run) for runs in curves.values() for run in runs)
    means = {estimator: [statistics.mean(run[index] for run in runs) for index in range(passes)]
             for estimator, runs in curves.items()}
    print("Test accuracy after each pass (mean over seeds):\n")
    print("| step | " + " | ".join(means) + " |")
    print("|--:|" + "--:|" * len(means))
    for index in range(passes):
        print(f"| {(index + 1) * steps_per_pass:,} | " + " | ".join(f"{means[e][index]:.4f}" for e in means) + " |")
    target = means.get("switch", [None])[-1]
    print("\n| router | seeds | final test accuracy | steps to Switch's final accuracy | s / step |")
    print("|---|--:|--:|--:|--:|")
    for estimator, runs in curves.items():
        finals = [run[passes - 1] for run in runs]
        spread = f"{statistics.mean(finals):.4f}" + (f" ± {statistics.stdev(finals):.4f}" if len(finals) > 1 else "")
        reached = next((index + 1 for index, value in enumerate(means[estimator]) if target and value >= target), None)
        seconds = statistics.mean(r["seconds_per_step"] for r in records if r["estimator"] == estimator)
        print(f"| {estimator} | {len(runs)} | {spread} | "
              f"{f'{reached * steps_per_pass:,}' if reached else 'not reached'} | {seconds:.2f} |")
    cost_path = args.results / COST_RECORD
    if cost_path.exists():
        print()
        print_cost(json.loads(cost_path.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train one router for one seed")
    run_parser.add_argument("--estimator", required=True, choices=ROUTERS)
    run_parser.add_argument("--seed", type=int, default=0)
    all_parser = commands.add_parser("all", help="every router and seed without a record")
    for sub in (run_parser, all_parser):
        sub.add_argument("--passes", type=int, default=6)
        sub.add_argument("--batches", type=int, default=125, help="training batches a pass")
        sub.add_argument("--data-dir", default=None)
    cost_parser = commands.add_parser("cost", help="step time and peak memory of sparse and dense routing")
    cost_parser.add_argument("--rounds", type=int, default=5)
    commands.add_parser("report", help="the markdown tables of every record")
    for sub in commands.choices.values():
        sub.add_argument("--results", type=Path, default=RESULTS_DIR, help="where records are kept")
    args = parser.parse_args()
    {"run": run, "all": run_all, "cost": cost, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
