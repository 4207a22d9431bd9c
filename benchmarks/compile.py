"""``--compile`` model by model: a training step eager and compiled, and what compiling costs.

    python benchmarks/compile.py [--models vae bvae poly listops moe nas-net] [--steps 40] [--rounds 2]
    python benchmarks/compile.py --update [--steps 200]

Each model trains through train.py in this process at its recipe's sizes (the image
models on Fashion-MNIST, nas-net with the genotype GDAS's benchmark retrains, ListOps
on generated data), eager and compiled (inductor) in turn for ``--rounds`` rounds of
``--steps`` steps, so that a drifting load falls on both. A step is timed from its
batch's start to its end: forward, backward, the update and the callbacks. The
figure is the median over each run's steps after its third; the compiled run's
first step holds the compilation (``compiled in N s``), the eager run's first step
its own warm-up. Inductor's cache is a fresh folder, so the first round compiles
from nothing and the second finds its kernels in the cache (as a rerun of the same
command does). Validation is off. GDAS is not timed: ``--compile`` leaves its
network eager (``zoo/models/gdas.py`` says why).

``--update`` asks why compiling RAdam's update saves more of a VAE step than the
eager update takes: on the 10×30 VAE (batch 100, random images) it times each part
of a plain step (forward, backward, update) with the update eager (torch's foreach
RAdam), compiled, or left out, and counts the page faults each part causes
(``getrusage``'s minor faults: memory the allocator took back from the system).
The variants alternate step by step in one process.
"""

from __future__ import annotations

import argparse
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo import train  # noqa: E402

#: The genotype benchmarks/gdas.py retrains: the strong one of the NATS-Bench space.
STRONG_GENOTYPE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
#: What each model needs besides its recipe to run here.
MODELS = {
    "vae": ["--data", "fashion-mnist"],
    "bvae": ["--data", "fashion-mnist"],
    "poly": [],
    "listops": [],
    "moe": [],
    "nas-net": ["--data", "fashion-mnist", "--genotype", STRONG_GENOTYPE],
}
WARM_UP_STEPS = 3


class StepTimes(L.Callback):
    """Seconds of each training step, from its batch's start to its end."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self._start = 0.0

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch, index: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, index: int) -> None:
        self.seconds.append(time.perf_counter() - self._start)


def timed_run(model: str, steps: int, compiled: bool, output_dir: str) -> list[float]:
    """The step times of one in-process train.py run of ``model``."""
    times = StepTimes()
    arguments = ["--model", model, *MODELS[model], "--max-steps", str(steps), "--max-epochs", "-1",
                 "--checkpoint-every", "0", "--output-dir", output_dir, "--accelerator", "cpu", "--devices", "1",
                 "--trainer-arg", "enable_progress_bar=false", "--trainer-arg", "limit_val_batches=0",
                 "--trainer-arg", "enable_model_summary=false", *(["--compile"] if compiled else [])]
    torch._dynamo.reset()
    assert train.main(arguments, callbacks=[times]) == 0
    return times.seconds


def update_effect(steps: int) -> None:
    """Per step part: milliseconds and page faults, for each way of updating (see the module's docstring)."""
    from zoo.models import CategoricalVAE

    torch.manual_seed(0)
    images = torch.rand(100, 784)
    variants = {}
    for name in ("eager update", "compiled update", "no update"):
        model = CategoricalVAE()
        optimizer = torch.optim.RAdam(model.parameters(), lr=5e-4)
        step = {"eager update": optimizer.step, "no update": lambda: None,
                "compiled update": torch.compile(optimizer.step)}[name]
        variants[name] = (model, optimizer, step)
    parts = ("forward", "backward", "update")
    seconds = {name: {part: [] for part in parts} for name in variants}
    faults = {name: {part: 0 for part in parts} for name in variants}

    def measure(name: str, part: str, run, record: bool):
        start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        result = run()
        if record:
            seconds[name][part].append(time.perf_counter() - start)
            faults[name][part] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
        return result

    for index in range(steps + 5):
        record = index >= 5  # the first steps warm up (and compile)
        for name, (model, optimizer, step) in variants.items():
            optimizer.zero_grad(set_to_none=True)
            loss = measure(name, "forward", lambda model=model: model.loss_terms(images)["neg_elbo"], record)
            measure(name, "backward", loss.backward, record)
            measure(name, "update", step, record)
    print(f"- command: `{shlex.join(['python', *sys.argv])}`")
    print(f"- torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    print("\n| update | " + " | ".join(f"{part} ms (page faults a step)" for part in parts) + " | step ms |")
    print("|---|" + "--:|" * (len(parts) + 1))
    for name in variants:
        medians = [1e3 * statistics.median(seconds[name][part]) for part in parts]
        cells = [f"{median:.2f} ({faults[name][part] / steps:.0f})" for median, part in zip(medians, parts)]
        print(f"| {name} | " + " | ".join(cells) + f" | {sum(medians):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--update", action="store_true", help="why a compiled update saves more than it costs")
    args = parser.parse_args()
    if args.update:
        update_effect(args.steps)
        return

    rows = []
    with tempfile.TemporaryDirectory() as output_dir:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(output_dir) / "inductor-cache")
        for model in args.models:
            steady: dict[bool, list[float]] = {False: [], True: []}
            first: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(args.rounds):
                for compiled in (False, True):
                    seconds = timed_run(model, args.steps, compiled, output_dir)
                    first[compiled].append(seconds[0])
                    steady[compiled].extend(seconds[WARM_UP_STEPS:])
            eager, compiled = (1e3 * statistics.median(steady[side]) for side in (False, True))
            cold, *warm = first[True]
            rows.append(f"| {model} | {eager:.2f} | {compiled:.2f} | {compiled / eager:.2f} | {cold:.1f} | "
                        f"{', '.join(f'{seconds:.1f}' for seconds in warm)} | {statistics.median(first[False]):.2f} |")
            print(f"{model} done", file=sys.stderr, flush=True)
    print(f"- command: `{shlex.join(['python', *sys.argv])}`")
    print(f"- torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, CPU")
    print("\n| model | eager step (ms) | compiled step (ms) | compiled / eager | compiled first step (s), cold cache | "
          "the same, warm cache | eager first step (s) |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    print(*rows, sep="\n")


if __name__ == "__main__":
    main()
