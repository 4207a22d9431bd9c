"""ListOps with the Gumbel Tree-LSTM: its speed here, and training scored on the published validation file.

    python benchmarks/listops.py speed [--batches 40]
    python benchmarks/listops.py train --reference PATH/TO/valid.tsv [--epochs 20] [--limit-train-batches N] [--resume]
    python benchmarks/listops.py score --reference PATH/TO/valid.tsv --pretrained listops-reinmax
    python benchmarks/listops.py report

``speed`` times training steps (forward, backward, RAdam) of the paper's model
(300-d, batch 16) on batches of the generated training set, with the candidates
reused after each merge (the default) and recomputed at every step (the authors'
way), alternating on the same batches in one process; it reports milliseconds per
batch, tokens per second and the projected time of an epoch of the generated
training set (< 100 tokens, length-bucketed).

``train`` trains ``train.py``'s ``listops`` model with the paper's recipe (ReinMax
τ 1.1, RAdam lr 7e-4, batch 16, clip 5, the learning rate halved after 4 epochs
without a better validation accuracy) on generated data (90,000 / 1,000 / 10,000,
seed 0), and after every epoch measures the accuracy on the published validation
file filtered to < 100 tokens, as the paper reports it. The record (one JSON file a
run, rewritten every epoch, so a stopped run keeps its curve) goes to
``benchmarks/results/listops/``; ``report`` tabulates the records. The run writes
``last.ckpt`` every 500 steps under ``runs/benchmarks/listops/``, and ``--resume``
continues it there, so the recipe's hours can be spread over several sittings.
``score`` gives that accuracy for a release or any checkpoint of the model.
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
from lightning.pytorch.callbacks import ModelCheckpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from callbacks.checkpoint import AtomicCheckpointIO  # noqa: E402
from callbacks.seeding import PerRankSeed  # noqa: E402
from datamodules.listops import ListOpsDataModule, read_examples  # noqa: E402
from datamodules.listops.batches import BucketedBatches, encode  # noqa: E402
from datamodules.listops.datamodule import PAPER_MAX_LENGTH  # noqa: E402
from datamodules.listops.expressions import paper_length  # noqa: E402
from zoo.models import ListOpsParser  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results" / "listops"
RUN_DIR = Path(__file__).resolve().parents[1] / "runs" / "benchmarks" / "listops"
PUBLISHED = {"reinmax": (67.65, 68.07), "stgs": (66.95, 67.30), "grmck": (66.53, 66.53),
             "gst-1.0": (66.28, 66.30), "st": (66.51, 66.26)}


def training_data(batch_size: int) -> ListOpsDataModule:
    data = ListOpsDataModule(batch_size=batch_size)
    data.prepare_data()
    data.setup("fit")
    return data


def speed(args: argparse.Namespace) -> None:
    data = training_data(args.batch_size)
    loader = data.train_dataloader()
    batches = [batch for batch, _ in zip(loader, range(args.batches))]
    torch.manual_seed(0)
    models = {"reused": ListOpsParser(), "recomputed": ListOpsParser(recompute_candidates=True)}
    models["recomputed"].load_state_dict(models["reused"].state_dict())
    optimizers = {name: model.configure_optimizers()["optimizer"] for name, model in models.items()}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    for index, (tokens, lengths, labels) in enumerate(batches):
        for name, model in models.items():
            start = time.perf_counter()
            optimizers[name].zero_grad(set_to_none=True)
            F.cross_entropy(model(tokens, lengths), labels).backward()
            optimizers[name].step()
            if index:  # the first batch warms up
                seconds[name].append(time.perf_counter() - start)
    tokens_timed = sum(int(lengths.sum()) for _, lengths, _ in batches[1:])
    print(
        f"- command: `{shlex.join(['python', *sys.argv])}`; CPU, {torch.get_num_threads()} threads; "
        f"{len(batches) - 1} training batches of {args.batch_size} "
        f"(mean {tokens_timed / (len(batches) - 1) / args.batch_size:.1f} tokens an example), "
        "300-d model, forward + backward + RAdam\n"
    )
    print("| candidates | ms / batch | tokens / s | projected epoch (min) | ratio |")
    print("|---|--:|--:|--:|--:|")
    baseline = sum(seconds["recomputed"])
    for name, times in seconds.items():
        epoch_minutes = statistics.mean(times) * len(loader) / 60
        print(
            f"| {name} | {1e3 * statistics.mean(times):.0f} | {tokens_timed / sum(times):,.0f} | "
            f"{epoch_minutes:.0f} | {sum(times) / baseline:.2f} |"
        )


def reference_batches(reference: Path) -> BucketedBatches:
    """The published file's expressions of fewer than 100 tokens, as the paper scores them."""
    examples = [
        example for example in read_examples(reference) if paper_length(list(example.tokens)) < PAPER_MAX_LENGTH
    ]
    return BucketedBatches(*encode(examples), batch_size=128)


def count_correct(module: ListOpsParser, batches: BucketedBatches) -> tuple[int, int]:
    """(correct, total) of ``module``'s predictions in eval mode, on the module's device."""
    module.eval()
    correct, total = torch.zeros((), dtype=torch.long, device=module.device), 0
    with torch.no_grad():
        for batch in batches:
            tokens, lengths, labels = (tensor.to(module.device) for tensor in batch)
            correct += (module(tokens, lengths).argmax(-1) == labels).sum()
            total += len(labels)
    return int(correct), total


class ReferenceAccuracy(L.Callback):
    """After every training epoch: accuracy on a fixed file, time per epoch, and the record on disk."""

    def __init__(self, reference: Path, record: dict, path: Path) -> None:
        self.batches = reference_batches(reference)
        self.record, self.path = record, path
        self._epoch_start = 0.0
        self._resumed_mid_epoch = False  # the epoch's time then covers only its remainder

    def on_train_epoch_start(self, trainer: L.Trainer, module: ListOpsParser) -> None:
        self._epoch_start = time.perf_counter()
        epochs = self.record["epochs"]
        self._resumed_mid_epoch = bool(epochs) and trainer.global_step > epochs[-1]["steps"]

    def on_train_epoch_end(self, trainer: L.Trainer, module: ListOpsParser) -> None:
        seconds = time.perf_counter() - self._epoch_start
        correct, total = count_correct(module, self.batches)
        module.train()
        metrics = trainer.callback_metrics
        self.record["epochs"].append(
            {
                "epoch": trainer.current_epoch + 1,
                "steps": trainer.global_step,
                "seconds": seconds,
                "train_accuracy": float(module.accuracy["train_accuracy"].compute()),  # before the module resets it
                "generated_valid_accuracy": float(metrics.get("val/accuracy", float("nan"))),
                "reference_accuracy": correct / total,
                "reference_examples": total,
                "lr": trainer.optimizers[0].param_groups[0]["lr"],
                "resumed": self._resumed_mid_epoch,
            }
        )
        self.path.write_text(json.dumps(self.record, indent=1))
        print(
            f"epoch {trainer.current_epoch + 1}: {seconds / 60:.1f} min, published valid accuracy "
            f"{100 * correct / total:.2f}%",
            flush=True,
        )


def train(args: argparse.Namespace) -> None:
    L.seed_everything(args.seed, verbose=False)
    model = ListOpsParser(estimator=args.estimator, **({"tau": args.tau} if args.tau else {}))
    record = {
        "estimator": args.estimator,
        "tau": getattr(model.estimator, "tau", None),
        "seed": args.seed,
        "batch_size": args.batch_size,
        "limit_train_batches": args.limit_train_batches,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        # The reference file's folder is this machine's business, not the record's.
        "command": shlex.join(["python", *sys.argv]).replace(str(args.reference), f"PATH/TO/{args.reference.name}"),
        "epochs": [],
    }
    args.results.mkdir(parents=True, exist_ok=True)
    name = f"{args.estimator}-seed{args.seed}" + (
        f"-limit{args.limit_train_batches}" if args.limit_train_batches else ""
    )
    path = args.results / f"{name}.json"
    checkpoints = args.run_dir / name
    checkpoint = checkpoints / "last.ckpt" if args.resume else None
    if checkpoint is not None:
        if not (checkpoint.is_file() and path.is_file()):
            sys.exit(f"--resume: no {checkpoint} with its record {path}; start without --resume.")
        earlier = json.loads(path.read_text())
        suffix = "" if earlier["command"].endswith("(then --resume)") else " (then --resume)"
        record["epochs"], record["command"] = earlier["epochs"], earlier["command"] + suffix
    trainer = L.Trainer(
        max_epochs=args.epochs,
        limit_train_batches=args.limit_train_batches,
        accelerator="auto",
        devices=1,
        gradient_clip_val=5.0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[
            ReferenceAccuracy(args.reference, record, path),
            ModelCheckpoint(
                dirpath=checkpoints, every_n_train_steps=500, save_top_k=0, save_last=True, enable_version_counter=False
            ),
            PerRankSeed(args.seed),
        ],
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(
        model, datamodule=ListOpsDataModule(batch_size=args.batch_size), ckpt_path=checkpoint, weights_only=True
    )
    print(f"-> {path}")


def score(args: argparse.Namespace) -> None:
    from zoo.pretrained import load_pretrained

    if args.pretrained:
        module, source = load_pretrained(args.pretrained), f"release {args.pretrained}"
    else:
        module = ListOpsParser.load_from_checkpoint(args.checkpoint, map_location="cpu", weights_only=True)
        source = str(args.checkpoint)
    correct, total = count_correct(module, reference_batches(args.reference))
    print(
        f"{source}: {100 * correct / total:.2f}% ({correct} of {total}) on {args.reference.name}, "
        f"expressions of fewer than {PAPER_MAX_LENGTH} tokens"
    )


def report(args: argparse.Namespace) -> None:
    records = [json.loads(path.read_text()) for path in sorted(args.results.glob("*.json"))]
    if not records:
        sys.exit(f"no records in {args.results}; run `{Path(__file__).name} train` first.")
    for record in records:
        published = PUBLISHED.get(record["estimator"])
        print(
            f"- `{record['command']}`; {record['device']}, {record['threads']} threads; "
            f"published 20-epoch accuracy: {published[0]}% valid / {published[1]}% test\n"
            if published
            else "\n"
        )
        print(
            "| epoch | steps | minutes | train acc. | generated valid acc. | published valid acc. (< 100 tokens) | lr |"
        )
        print("|--:|--:|--:|--:|--:|--:|--:|")
        for epoch in record["epochs"]:
            resumed = " (resumed; the part after)" if epoch.get("resumed") else ""
            print(
                f"| {epoch['epoch']} | {epoch['steps']:,} | {epoch['seconds'] / 60:.1f}{resumed} | "
                f"{100 * epoch['train_accuracy']:.2f} | {100 * epoch['generated_valid_accuracy']:.2f} | "
                f"{100 * epoch['reference_accuracy']:.2f} | {epoch['lr']:.2g} |"
            )
        print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    timing = commands.add_parser("speed", help="ms per batch, reused against recomputed candidates")
    timing.add_argument("--batches", type=int, default=40)
    timing.add_argument("--batch-size", type=int, default=16)
    run = commands.add_parser("train", help="train, scoring every epoch on the published validation file")
    run.add_argument("--reference", type=Path, required=True, help="the published ListOps valid.tsv")
    run.add_argument("--estimator", default="reinmax")
    run.add_argument("--tau", type=float, default=None, help="default: the model's (1.1)")
    run.add_argument("--epochs", type=int, default=20)
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--limit-train-batches", type=int, default=None, help="batches an epoch, for a short budget")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--run-dir", type=Path, default=RUN_DIR, help="where the run's checkpoints go")
    run.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    scoring = commands.add_parser("score", help="a release's or checkpoint's accuracy on the published file")
    scoring.add_argument("--reference", type=Path, required=True, help="the published ListOps valid.tsv")
    source = scoring.add_mutually_exclusive_group(required=True)
    source.add_argument("--pretrained", metavar="NAME", help="a released parser, e.g. listops-reinmax")
    source.add_argument("--checkpoint", type=Path, help="a checkpoint of train.py --model listops")
    commands.add_parser("report", help="the learning curves of every record")
    for sub in (run, commands.choices["report"]):
        sub.add_argument("--results", type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    {"speed": speed, "train": train, "score": score, "report": report}[args.command](args)


if __name__ == "__main__":
    main()
