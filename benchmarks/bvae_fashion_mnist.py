"""The Bernoulli 2×200 VAE on Fashion-MNIST: the speed of each estimator's step, and what a fitted prior is worth.

    python benchmarks/bvae_fashion_mnist.py speed        # steps per second of every row, one process
    python benchmarks/bvae_fashion_mnist.py prior MODEL  # what a fitted prior would take off its test −ELBO

The rows are the paper's Fashion-MNIST rows of its Bernoulli table (K = 2: RLOO,
DisARM, RODEO, ReinMax; K = 3: RLOO, RODEO, ReinMax) on ``train.py``'s ``bvae``
(Adam lr 3e-4; ReinMax τ 1.1). ``speed`` interleaves their optimizer steps on one
batch of random binary images in one process. Their training and test −ELBO is a
study: ``python -m zoo.study run benchmarks/studies/bvae_fashion_mnist.yaml``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import zoo  # noqa: E402
from datamodules.images import ImageDataModule  # noqa: E402
from zoo.models import BernoulliVAE  # noqa: E402

ROWS = [("reinforce", 2), ("disarm", 2), ("rodeo", 2), ("reinmax", 2),
        ("reinforce", 3), ("rodeo", 3), ("reinmax", 3)]
#: ReinMax: the paper's lr 3e-4, τ 1.1. The REINFORCE family uses the same Adam lr,
#: the Fashion-MNIST setting of the DisARM and RODEO experiments.
LR = 3e-4
TAU = 1.1
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "bvae_fashion_mnist"
SPEED_RECORD = "speed.json"


def build(estimator: str, num_samples: int) -> BernoulliVAE:
    tau = {"tau": TAU} if estimator == "reinmax" else {}
    return BernoulliVAE(estimator=estimator, num_samples=num_samples, optimizer="adam", lr=LR, **tau)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    speed_parser = commands.add_parser("speed", help="steps per second of every row")
    speed_parser.add_argument("--rounds", type=int, default=4)
    speed_parser.add_argument("--steps-per-round", type=int, default=50)
    speed_parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where speed.json is kept")
    prior_parser = commands.add_parser("prior", help="the test −ELBO a fitted prior would save a trained model")
    prior_parser.add_argument("model", help="a release name or a train.py checkpoint of bvae")
    prior_parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()
    {"speed": speed, "prior": prior}[args.command](args)


if __name__ == "__main__":
    main()
