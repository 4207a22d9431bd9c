"""What Lightning costs: epochs of train.py's VAE against a plain PyTorch loop.

    python benchmarks/loop_overhead.py [--rounds 2] [--epochs 3] [--data fashion-mnist] [--accelerator gpu]
    python benchmarks/loop_overhead.py --compile        # train.py --compile, and a plain compiled loop
    python benchmarks/loop_overhead.py --optimizer adam  # train.py's fused Adam against the loop's default Adam

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

The plain loop builds its optimizer as a user would (``torch.optim.RAdam(params,
lr)``, torch's default foreach update); train.py builds Adam fused. With
``--compile`` train.py runs with ``--compile`` and a third side joins the
alternation: the plain loop with its loss and its update compiled as PyTorch's
recipes do it, ``torch.compile(model.loss_terms)`` and a compiled function calling
``optimizer.step()``.
"""

from __future__ import annotations

import argparse
import importlib
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
from zoo import build, runs, train  # noqa: E402
from zoo.models import OPTIMIZERS  # noqa: E402
from zoo.settings import Settings  # noqa: E402

PLAIN, PLAIN_COMPILED, LIGHTNING = "plain PyTorch", "plain PyTorch, compiled", "train.py (Lightning)"


def config_for(data: str, output_dir: str, accelerator: str = "cpu", data_dir: str | None = None,
               epochs: int = 1, extra: list[str] | None = None) -> Settings:
    """train.py's settings for the default model on ``data`` (and ``extra`` flags), as its command line would
    resolve them."""
    arguments = ["--data", data, "--accelerator", accelerator, "--devices", "1", "--output-dir", output_dir,
                 "--max-epochs", str(epochs), *(extra or [])]
    return train.parse_settings(arguments + (["--data-dir", data_dir] if data_dir else []))


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PlainLoop:
    """The same model and data, trained by hand: zero_grad, loss, backward, step; then evaluation.

    ``backend``: the loss and the update compiled, as a user following PyTorch's recipes would, by that backend
    of ``torch.compile`` in ``mode`` (e.g. ``reduce-overhead``: CUDA graphs); None: eager.
    """

    def __init__(self, config: Settings, backend: str | None = None, mode: str | None = None) -> None:
        self.device = torch.device("cuda" if config.accelerator == "gpu" else "cpu")
        L.seed_everything(config.seed, verbose=False)
        self.model = build.build_model(config).to(self.device)
        self.data = build.build_datamodule(config)
        self.data.prepare_data()
        self.data.setup("fit")
        self.data.splits = {split: images.to(self.device) for split, images in self.data.splits.items()}
        self.optimizer = OPTIMIZERS[config.optimizer](self.model.parameters(), lr=config.lr)  # torch's defaults
        self.loss_terms, self.update = self.model.loss_terms, self.optimizer.step
        if backend is not None:
            self.loss_terms = torch.compile(self.model.loss_terms, fullgraph=True, backend=backend, mode=mode)
            self.update = torch.compile(lambda: self.optimizer.step(), backend=backend, mode=mode)

    def epoch(self) -> float:
        """Seconds for one epoch of training and evaluation."""
        synchronize(self.device)
        start = time.perf_counter()
        self.model.train()
        for images in self.data.train_dataloader():
            self.optimizer.zero_grad(set_to_none=True)  # where Lightning clears them too
            self.loss_terms(images)["neg_elbo"].backward()
            self.update()
        self.model.eval()
        with torch.no_grad():
            for images in self.data.val_dataloader():
                self.loss_terms(images)
        synchronize(self.device)
        return time.perf_counter() - start


class AlternatingEpochs(L.Callback):
    """Runs an epoch of each plain loop before each Lightning epoch, and times them all.

    A Lightning epoch is timed from its start to the next one's (or to the end of
    training), so its validation and checkpoints are in it.
    """

    def __init__(self, plains: dict[str, PlainLoop], breakdown: Breakdown | None = None) -> None:
        self.plains, self.breakdown = plains, breakdown
        self.seconds: dict[str, list[float]] = {**{side: [] for side in plains}, LIGHTNING: []}
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._end_lightning_epoch(module.device)
        if self.breakdown is not None:
            self.breakdown.side = PLAIN
        for side, plain in self.plains.items():
            self.seconds[side].append(plain.epoch())
        if self.breakdown is not None:
            self.breakdown.side = LIGHTNING
        synchronize(module.device)
        self._start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._end_lightning_epoch(module.device)

    def _end_lightning_epoch(self, device: torch.device) -> None:
        if self._start is not None:
            synchronize(device)
            self.seconds[LIGHTNING].append(time.perf_counter() - self._start)
            self._start = None


class Breakdown:
    """Where a step's milliseconds go, on each side: the model's forward pass (the
    loss), backward, the RAdam update and each callback's per-step hooks, timed by
    wrapping them; the rest of an epoch is the loop itself (data, hooks, Lightning)."""

    STEP_HOOKS = ("on_train_batch_start", "on_train_batch_end", "on_before_backward", "on_after_backward",
                  "on_before_optimizer_step", "on_before_zero_grad")

    def __init__(self) -> None:
        self.seconds: dict[str, dict[str, float]] = {PLAIN: {}, LIGHTNING: {}}
        self.side = LIGHTNING
        self._originals: list[tuple[object, str, bool, object]] = []  # owner, name, had its own, original

    def wrap(self, owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            result = original(*args, **kwargs)
            totals = self.seconds[self.side]
            totals[label] = totals.get(label, 0.0) + time.perf_counter() - start
            return result

        self._originals.append((owner, name, name in vars(owner), vars(owner).get(name)))
        setattr(owner, name, timed)

    def attach(self, trainer: L.Trainer, model: L.LightningModule) -> None:
        self.wrap(type(model), "loss_terms", "forward (loss)")
        self.wrap(torch.Tensor, "backward", "backward")
        # The functional update RAdam.step calls (torch.optim hides its submodules' names).
        self.wrap(importlib.import_module("torch.optim.radam"), "radam", "RAdam update")
        for callback in trainer.callbacks:
            for hook in self.STEP_HOOKS:
                if getattr(type(callback), hook) is not getattr(L.Callback, hook):
                    self.wrap(callback, hook, f"{type(callback).__name__}.{hook}")

    def detach(self) -> None:
        for owner, name, had_own, original in reversed(self._originals):
            setattr(owner, name, original) if had_own else delattr(owner, name)
        self._originals.clear()

    def table(self, epoch_seconds: dict[str, float], steps: int) -> list[str]:
        """Milliseconds a training step on each side, the rest being the loop's."""
        labels = list(dict.fromkeys([*self.seconds[PLAIN], *self.seconds[LIGHTNING]]))
        lines = [f"| ms a step (all epochs, validation included) | {PLAIN} | {LIGHTNING} |", "|---|--:|--:|"]
        for label in labels:
            lines.append(f"| {label} | " + " | ".join(f"{1e3 * self.seconds[side].get(label, 0.0) / steps:.3f}"
                                                     for side in (PLAIN, LIGHTNING)) + " |")
        rest = {side: epoch_seconds[side] - sum(self.seconds[side].values()) for side in (PLAIN, LIGHTNING)}
        lines.append("| the loop: data, hooks, logging, checkpoints, the rest | "
                     + " | ".join(f"{1e3 * rest[side] / steps:.3f}" for side in (PLAIN, LIGHTNING)) + " |")
        lines.append("| **epoch, a step** | " + " | ".join(f"**{1e3 * epoch_seconds[side] / steps:.3f}**"
                                                           for side in (PLAIN, LIGHTNING)) + " |")
        return lines


def alternating_run(config: Settings, breakdown: Breakdown | None = None,
                    compile_modes: tuple[str, ...] = ()) -> tuple[dict[str, list[float]], int]:
    """One round: a train.py fit with a plain epoch (with ``--compile`` a compiled plain epoch too, and one for each
    of ``compile_modes``) before each of its epochs; the times and the steps."""
    plains = {PLAIN: PlainLoop(config)}
    if config.compile:
        plains[PLAIN_COMPILED] = PlainLoop(config, config.compile)
        plains.update({f"{PLAIN_COMPILED} ({mode})": PlainLoop(config, config.compile, mode) for mode in compile_modes})
    timer = AlternatingEpochs(plains, breakdown)
    L.seed_everything(config.seed, verbose=False)
    model = build.build_model(config)
    data = build.build_datamodule(config)
    run, _ = runs.run_directory(config)
    trainer = build.build_trainer(config, run, model, callbacks=[timer])
    if breakdown is not None:
        breakdown.attach(trainer, model)
    try:
        trainer.fit(model, datamodule=data)
    finally:
        if breakdown is not None:
            breakdown.detach()
    return timer.seconds, trainer.global_step


def compare(data: str, rounds: int, epochs: int, accelerator: str = "cpu", data_dir: str | None = None,
            breakdown: Breakdown | None = None, extra: list[str] | None = None,
            compile_modes: tuple[str, ...] = ()) -> tuple[dict[str, dict[str, list[float]]], int]:
    """Each side's epochs, all of them and (``"steady"``) each round's after its first; and the
    training steps of each side over all rounds. ``extra``: train.py's flags beyond the defaults;
    ``compile_modes``: with ``--compile`` among them, plain loops compiled in these modes join."""
    seconds: dict[str, list[float]] = {}
    steady: dict[str, list[float]] = {}
    steps = 0
    with tempfile.TemporaryDirectory() as output_dir:
        for round_index in range(rounds):
            config = config_for(data, output_dir, accelerator, data_dir, epochs, extra)
            round_seconds, round_steps = alternating_run(config, breakdown, compile_modes)
            steps += round_steps
            for side, times in round_seconds.items():
                seconds.setdefault(side, []).extend(times)
                steady.setdefault(side, []).extend(times[1:])  # the first epoch warms up
            print(f"round {round_index + 1} done", file=sys.stderr, flush=True)
    return {"all": seconds, "steady": steady}, steps


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
    parser.add_argument("--breakdown", action="store_true",
                        help="also time the forward, backward, update and each callback's per-step hooks (eager)")
    parser.add_argument("--compile", action="store_true", help="train.py --compile, and a compiled plain loop")
    parser.add_argument("--optimizer", choices=["radam", "adam"], default="radam")
    args = parser.parse_args()
    if args.breakdown and args.compile:
        parser.error("--breakdown times the eager functions; it cannot go with --compile")

    breakdown = Breakdown() if args.breakdown else None
    extra = ["--optimizer", args.optimizer, *(["--compile"] if args.compile else [])]
    epochs, steps = compare(args.data, args.rounds, args.epochs, args.accelerator, args.data_dir, breakdown, extra)
    steady = epochs["steady"]
    device = torch.cuda.get_device_name() if args.accelerator == "gpu" else "CPU"
    print(f"- command: `{shlex.join(['python', *sys.argv])}`")
    print(f"- torch {torch.__version__}, lightning {L.__version__}, {torch.get_num_threads()} threads, {device}")
    print("\n| loop | steady epoch (s), median | steady epochs (s) |")
    print("|---|--:|---|")
    for side, times in steady.items():
        print(f"| {side} | {statistics.median(times):.2f} | {', '.join(f'{value:.2f}' for value in times)} |")
    paired = [ours / plain for ours, plain in zip(steady[LIGHTNING], steady[PLAIN])]
    print(f"\nLightning / plain, steady epoch: {steady_ratio(steady):.3f}; "
          f"median of the epoch-by-epoch ratios: {statistics.median(paired):.3f}")
    if PLAIN_COMPILED in steady:
        compiled = statistics.median(steady[PLAIN_COMPILED]) / statistics.median(steady[PLAIN])
        print(f"plain compiled / plain, steady epoch: {compiled:.3f}")
    if breakdown is not None:
        totals = {side: sum(times) for side, times in epochs["all"].items()}
        print("", *breakdown.table(totals, steps), sep="\n")


if __name__ == "__main__":
    main()
