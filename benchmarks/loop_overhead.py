"""What Lightning costs: one epoch of train.py's VAE against a plain PyTorch loop.

    python benchmarks/loop_overhead.py [--rounds 2] [--data fashion-mnist]

Both sides train a fresh ``CategoricalVAE`` with train.py's defaults (10×30,
ReinMax, RAdam) from the same seed, on the same data tensors batched by the same
``TensorBatches``, for one epoch followed by a pass over the evaluation split.
The Lightning side is assembled by train.py's own functions, so it carries what
a user gets: the progress bar, TensorBoard logging, image logging, checkpoints
and the validation sanity check. Rounds alternate between the two sides, so a
change in the machine's load affects both; the ratio of the median times is
printed.
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


def config_for(data: str, output_dir: str) -> dict:
    config = {**train.DEFAULTS, "data": data, "max_epochs": 1, "accelerator": "cpu",
              "devices": 1, "output_dir": output_dir}
    return {key: (dict(value) if isinstance(value, dict) else value) for key, value in config.items()}


def lightning_epoch(config: dict) -> float:
    L.seed_everything(config["seed"], verbose=False)
    model = train.build_model(config)
    data = train.build_datamodule(config)
    run, _ = train.run_directory(config)
    trainer = train.build_trainer(config, run, model)
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    return time.perf_counter() - start


def plain_epoch(config: dict) -> float:
    L.seed_everything(config["seed"], verbose=False)
    model = train.build_model(config)
    data = train.build_datamodule(config)
    data.prepare_data()
    data.setup("fit")
    start = time.perf_counter()
    optimizer = model.configure_optimizers()
    model.train()
    for images in data.train_dataloader():
        loss = model.loss_terms(images)["neg_elbo"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        for images in data.val_dataloader():
            model.loss_terms(images)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", default="fashion-mnist")
    args = parser.parse_args()

    times: dict[str, list[float]] = {"plain PyTorch": [], "train.py (Lightning)": []}
    with tempfile.TemporaryDirectory() as output_dir:
        for round_index in range(args.rounds):
            os.environ.pop(train.RUN_VERSION_VARIABLE, None)  # a fresh run folder each round
            times["plain PyTorch"].append(plain_epoch(config_for(args.data, output_dir)))
            times["train.py (Lightning)"].append(lightning_epoch(config_for(args.data, output_dir)))
            print(f"round {round_index + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                  file=sys.stderr, flush=True)

    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"- command: `{shlex.join(['python', *sys.argv])}`")
    print(f"- torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, CPU")
    print("\n| loop | epoch + evaluation (s), median | all rounds (s) |\n|---|--:|---|")
    for name, values in times.items():
        print(f"| {name} | {medians[name]:.2f} | {', '.join(f'{v:.2f}' for v in values)} |")
    ratio = medians["train.py (Lightning)"] / medians["plain PyTorch"]
    print(f"\nLightning / plain: {ratio:.3f} (goal: at most 1.10)")


if __name__ == "__main__":
    main()
