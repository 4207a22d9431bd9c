"""The Bernoulli 2×200 VAE on Fashion-MNIST: ReinMax against the REINFORCE family.

    python benchmarks/bvae_fashion_mnist.py run --estimator reinmax --num-samples 2 [--steps 100000] [--logits authors]
    python benchmarks/bvae_fashion_mnist.py speed        # steps per second, all rows, one process
    python benchmarks/bvae_fashion_mnist.py report       # the markdown tables for RESULTS.md
    python benchmarks/bvae_fashion_mnist.py prior MODEL  # what a fitted prior would take off its test −ELBO

The rows are the paper's Fashion-MNIST rows of its Bernoulli table (K = 2: RLOO,
DisARM, RODEO, ReinMax; K = 3: RLOO, RODEO, ReinMax). Each ``run`` trains
``train.py``'s ``bvae`` (784→200→200→200 LeakyReLU(0.3) networks, 200 binary
latents, Bernoulli(0.5) prior, dynamic binarization, train = the first 50,000
training images, batch 100, Adam) for a step budget with Lightning, and writes one
JSON record; ``speed`` writes ``speed.json`` beside them; ``report`` tabulates
every record it finds, with the steps per second of each row. Runs are separate
commands so that a budget larger than one sitting can be spread over several.
``--logits authors`` trains the ReinMax authors' two-class logits instead of the
zoo's, to measure what that difference of their script is worth.

The training −ELBO is measured as the paper's tables report it: the mean of the
per-batch training loss over the last 500 steps (one epoch of the 50,000 images).
The test −ELBO is one sample per image, averaged over the 10,000 test images.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import zoo  # noqa: E402
from datamodules.images import ImageDataModule  # noqa: E402
from zoo.models import BernoulliVAE  # noqa: E402

#: (estimator, K) rows of the paper's table, with the published 1M-step training −ELBO.
PUBLISHED = {
    ("disarm", 2): 237.68, ("rodeo", 2): 237.44, ("reinmax", 2): 234.86,
    ("rodeo", 3): 236.88, ("reinmax", 3): 234.53,
}
ROWS = [("reinforce", 2), ("disarm", 2), ("rodeo", 2), ("reinmax", 2),
        ("reinforce", 3), ("rodeo", 3), ("reinmax", 3)]
#: ReinMax: the paper's lr 3e-4, τ 1.1. The REINFORCE family uses the same Adam lr,
#: the Fashion-MNIST setting of the DisARM and RODEO experiments.
LR = 3e-4
TAU = 1.1
WINDOW = 500
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "bvae_fashion_mnist"
SPEED_RECORD = "speed.json"


class TrainingLoss(L.Callback):
    """The mean training loss of each block of ``window`` consecutive steps."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self.block_means: list[float] = []
        self._sum = 0.0
        self._count = 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_index) -> None:
        self._sum += float(outputs["loss"])
        self._count += 1
        if self._count == self.window:
            self.block_means.append(self._sum / self._count)
            self._sum, self._count = 0.0, 0


class AuthorsLogits(BernoulliVAE):
    """The authors' script's two-class logits ``[l, 1 − l]`` for the encoder's output ``l``.

    ``P(z=1) = σ(1 − 2l)``: the zoo's family ``[0, η]`` with ``η = 1 − 2l``, so
    under Adam the encoder's last layer moves η twice as far a step, and starts
    twice as spread around σ(1) instead of σ(0).
    """

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        logit = self.encoder(images)
        return torch.stack((logit, 1 - logit), dim=-1)


LOGITS = {"zoo": BernoulliVAE, "authors": AuthorsLogits}


def build(estimator: str, num_samples: int, logits: str = "zoo") -> BernoulliVAE:
    tau = {"tau": TAU} if estimator == "reinmax" else {}
    return LOGITS[logits](estimator=estimator, num_samples=num_samples, optimizer="adam", lr=LR, **tau)


def run(args: argparse.Namespace) -> None:
    L.seed_everything(args.seed, verbose=False)
    model = build(args.estimator, args.num_samples, args.logits)
    data = ImageDataModule("fashion-mnist", data_dir=args.data_dir, batch_size=100,
                           binarize="dynamic", val_size=10_000)
    losses = TrainingLoss()
    trainer = L.Trainer(max_steps=args.steps, max_epochs=-1, accelerator="auto", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, callbacks=[losses])
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    seconds = time.perf_counter() - start
    test = trainer.test(model, datamodule=data, verbose=False)[0]["test/neg_elbo_epoch"]
    record = {
        "estimator": args.estimator, "num_samples": args.num_samples, "seed": args.seed, "logits": args.logits,
        "steps": trainer.global_step, "lr": LR, "tau": TAU if args.estimator == "reinmax" else None,
        "train_neg_elbo": losses.block_means[-1], "test_neg_elbo": test,
        "train_neg_elbo_per_500_steps": losses.block_means, "seconds": seconds,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "torch": torch.__version__, "command": shlex.join(["python", *sys.argv]),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    variant = "" if args.logits == "zoo" else f"-{args.logits}-logits"
    path = args.results / f"{args.estimator}-K{args.num_samples}{variant}-seed{args.seed}-{trainer.global_step}.json"
    path.write_text(json.dumps(record, indent=1))
    print(f"{args.estimator} K={args.num_samples} ({args.logits} logits): "
          f"training −ELBO {record['train_neg_elbo']:.2f}, test −ELBO {test:.2f}, {seconds / 60:.1f} min -> {path}")


def speed(args: argparse.Namespace) -> None:
    """Optimizer steps per second of every row, interleaved in one process."""
    torch.manual_seed(0)
    images = (torch.rand(100, 784) < 0.3).float()
    models = {row: build(*row) for row in ROWS}
    optimizers = {row: model.configure_optimizers() for row, model in models.items()}
    times: dict[tuple[str, int], list[float]] = {row: [] for row in ROWS}
    for round_index in range(args.rounds):
        for row, model in models.items():
            start = time.perf_counter()
            for _ in range(args.steps_per_round):
                optimizers[row].zero_grad(set_to_none=True)
                model.loss_terms(images)["neg_elbo"].backward()
                optimizers[row].step()
            if round_index:  # the first round warms up
                times[row].append((time.perf_counter() - start) / args.steps_per_round)
    record = {
        "steps_per_second": {f"{estimator}-K{num_samples}": 1 / statistics.median(seconds)
                             for (estimator, num_samples), seconds in times.items()},
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU",
        "threads": torch.get_num_threads(), "command": shlex.join(["python", *sys.argv]),
    }
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / SPEED_RECORD).write_text(json.dumps(record, indent=1))
    for row, rate in record["steps_per_second"].items():
        print(f"{row}: {rate:.0f} steps / s")


def records_of(records: list[dict], estimator: str, num_samples: int, logits: str) -> list[dict]:
    """The records of one row; those written before ``--logits`` existed are the zoo's."""
    return [r for r in records
            if (r["estimator"], r["num_samples"], r.get("logits", "zoo")) == (estimator, num_samples, logits)]


def report(args: argparse.Namespace) -> None:
    records = [json.loads(path.read_text()) for path in sorted(args.results.glob("*.json"))
               if path.name != SPEED_RECORD]
    if not records:
        sys.exit(f"no results in {args.results}; run `{Path(__file__).name} run ...` first.")
    speed_path = args.results / SPEED_RECORD
    rates = json.loads(speed_path.read_text())["steps_per_second"] if speed_path.exists() else {}
    if rates:
        print(f"Steps per second: `{json.loads(speed_path.read_text())['command']}` (the model step alone).\n")
    print("| K | estimator | steps | seeds | training −ELBO | test −ELBO | published (1M steps) | steps / s |")
    print("|--:|---|--:|--:|--:|--:|--:|--:|")
    for (estimator, num_samples), logits in itertools.product(ROWS, LOGITS):
        mine = records_of(records, estimator, num_samples, logits)
        name = estimator if logits == "zoo" else f"{estimator}, {logits}' logits"
        for steps in sorted({r["steps"] for r in mine}):
            group = [r for r in mine if r["steps"] == steps]
            train = [r["train_neg_elbo"] for r in group]
            test = [r["test_neg_elbo"] for r in group]
            published = PUBLISHED.get((estimator, num_samples))
            print(f"| {num_samples} | {name} | {steps:,} | {len(group)} | {spread(train)} | "
                  f"{spread(test)} | {published if published else '–'} | "
                  f"{rates.get(f'{estimator}-K{num_samples}', float('nan')):.0f} |")


    print("\nTraining −ELBO (mean of the 500 steps before) along the way, the longest run of each row:\n")
    marks = [10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000]
    longest = max(r["steps"] for r in records)
    marks = [mark for mark in marks if mark <= longest]
    print("| K | estimator | " + " | ".join(f"{mark:,}" for mark in marks) + " |")
    print("|--:|---|" + "--:|" * len(marks))
    for estimator, num_samples in ROWS:
        mine = records_of(records, estimator, num_samples, "zoo")
        if mine:
            blocks = max(mine, key=lambda r: r["steps"])["train_neg_elbo_per_500_steps"]
            cells = [f"{blocks[mark // WINDOW - 1]:.2f}" if mark // WINDOW <= len(blocks) else "–" for mark in marks]
            print(f"| {num_samples} | {estimator} | " + " | ".join(cells) + " |")


def prior(args: argparse.Namespace) -> None:
    """The test −ELBO a trained model loses to its Bernoulli(0.5) prior, against the best factorized one.

    The paper's script learns a prior; the zoo's recipe keeps Bernoulli(0.5). For the
    trained encoder, the factorized prior closest in KL is each latent's mean posterior
    probability over the training images, so the KL it saves on the test images is
    the least a learned prior would take off the −ELBO (training with it, the encoder
    would adapt to it too).
    """
    if Path(args.model).is_file():
        model = BernoulliVAE.load_from_checkpoint(args.model, map_location="cpu", weights_only=True)
    else:
        model = zoo.load_pretrained(args.model)
    model.eval()
    data = ImageDataModule("fashion-mnist", data_dir=args.data_dir, batch_size=1000, binarize="dynamic",
                           val_size=10_000)
    data.setup()
    torch.manual_seed(0)
    with torch.no_grad():
        train = [model.encode(images).softmax(-1) for images in data.train_dataloader()]
        mean_posterior = torch.cat(train).mean(0).clamp(1e-6, 1 - 1e-6)  # (latents, 2)
        test = torch.cat(list(data.test_dataloader()))
        logits = model.encode(test)
        to_half = model.kl_to_prior(logits).mean().item()
        model.prior_logits = mean_posterior.log()
        to_fitted = model.kl_to_prior(logits).mean().item()
    print(f"{args.model}: test KL to Bernoulli(0.5) {to_half:.2f}, to the fitted factorized prior "
          f"{to_fitted:.2f}: a learned prior takes at least {to_half - to_fitted:.2f} nats off the test −ELBO")


def spread(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="train one row for a step budget")
    run_parser.add_argument("--estimator", required=True, choices=sorted({e for e, _ in ROWS}))
    run_parser.add_argument("--num-samples", type=int, required=True, choices=[2, 3])
    run_parser.add_argument("--steps", type=int, default=100_000)
    run_parser.add_argument("--seed", type=int, default=0)
    run_parser.add_argument("--data-dir", default=None)
    run_parser.add_argument("--logits", choices=sorted(LOGITS), default="zoo",
                            help="the zoo's two-class logits [0, η] or the authors' [l, 1 − l]")
    speed_parser = commands.add_parser("speed", help="steps per second of every row")
    speed_parser.add_argument("--rounds", type=int, default=4)
    speed_parser.add_argument("--steps-per-round", type=int, default=50)
    commands.add_parser("report", help="the markdown table of every recorded run")
    prior_parser = commands.add_parser("prior", help="the test −ELBO a fitted prior would save a trained model")
    prior_parser.add_argument("model", help="a release name or a train.py checkpoint of bvae")
    prior_parser.add_argument("--data-dir", default=None)
    for sub in commands.choices.values():
        sub.add_argument("--results", type=Path, default=RESULTS_DIR, help="where records are kept")
    args = parser.parse_args()
    {"run": run, "speed": speed, "report": report, "prior": prior}[args.command](args)


if __name__ == "__main__":
    main()
