"""The GPU check: does every model train on this machine's accelerator, and what does the zoo cost there?

    python benchmarks/gpu.py --fetch            # where pip reaches PyPI: the reinmax wheel, into runs/gpu-check/
    PYTHONPATH=. python benchmarks/gpu.py       # on the GPU machine: about 3 minutes, offline
    python benchmarks/gpu.py --tiny --output X  # every part at toy sizes on the CPU (the test suite runs it)

Its parts, all in this process, each on generated data (random MNIST-format images,
ListOps expressions from the published generator, the NAS modules' synthetic set),
so the machine needs no data set:

* ``versions``: Python, torch, Lightning and the device;
* ``estimators``: ``estimators.py``'s step (forward and backward of one sample) for
  every pathwise estimator, the ``reinmax`` package and ``st``, in float32 and
  bfloat16 at its four shapes: milliseconds and peak memory;
* ``loop``: ``loop_overhead.py``'s ratio of a steady train.py epoch of the VAE to a
  plain PyTorch loop's, both keeping the data on the device; then with ``--compile``,
  beside plain loops compiled in the default mode and in ``reduce-overhead`` (CUDA graphs);
* ``training``: 200 steps of every model through ``train.py`` at its default size in
  bf16-mixed and 16-mixed (ListOps and GDAS in 32-true too): whether the loss stayed
  finite, the loss scaler's skipped steps, milliseconds a step (steps 20 to 200, the
  device synchronised only at both ends) and peak device memory;
* ``compile``: the same in bf16-mixed with ``--compile`` for the models of
  ``COMPILE_TIMED``, with the first step's seconds (the compilation).

The record goes to ``benchmarks/results/gpu/<device>.json`` and a table is printed.
The ``reinmax`` package, the reference of the estimator part, is imported from a
wheel under ``runs/gpu-check/`` when it is not installed (the GPU machine is offline).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ROOT / "runs" / "gpu-check"
REFERENCE_PACKAGE = "reinmax==0.1.0"
RESULTS = Path(__file__).resolve().parent / "results" / "gpu"
MIXED = ("bf16-mixed", "16-mixed")
#: Models whose per-step time and memory are also taken in full precision.
TIMED_IN_FULL_PRECISION = ("listops", "gdas")
TIMING_STARTS_AT = 20  # steps before it warm up (allocator, cuDNN's choice of kernels)
#: Models also timed compiled: those with the most small operators a step, within two minutes of compiling.
COMPILE_TIMED = ("vae", "listops", "moe")

sys.path.insert(0, str(ROOT))
sys.path.extend(str(wheel) for wheel in sorted(WHEELS.glob("*.whl")))  # a pure-Python wheel imports as a zip

import estimators  # noqa: E402
import lightning as L  # noqa: E402
import loop_overhead  # noqa: E402
import torch  # noqa: E402

from callbacks.nonfinite import NonFiniteGuard  # noqa: E402
from datamodules.tiny import write_images, write_listops  # noqa: E402
from tests.runs import small_run  # noqa: E402
from zoo import train  # noqa: E402
from zoo.models import list_models, model_card  # noqa: E402


class StepTimer(L.Callback):
    """Milliseconds a batch after the first ``start_at``, peak device memory, and the guard's counts."""

    def __init__(self, start_at: int) -> None:
        self.start_at = start_at
        self.record: dict[str, Any] = {}
        self._start: float | None = None
        self._steps = 0
        self._first_started = 0.0
        self._first_step_s: float | None = None

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(module.device)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, index: int) -> None:
        if self._steps == 0:
            self._first_started = time.perf_counter()
        if self._steps == 1:
            loop_overhead.synchronize(module.device)
            self._first_step_s = time.perf_counter() - self._first_started
        if self._steps == self.start_at:
            loop_overhead.synchronize(module.device)
            self._start = time.perf_counter()
        self._steps += 1

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        loop_overhead.synchronize(module.device)
        timed = self._steps - self.start_at
        guard = next(callback for callback in trainer.callbacks if isinstance(callback, NonFiniteGuard))
        self.record = {
            "batches": self._steps,
            "ms_per_batch": 1e3 * (time.perf_counter() - self._start) / timed if self._start and timed else None,
            "peak_memory_mb": (torch.cuda.max_memory_allocated(module.device) / 1e6
                               if module.device.type == "cuda" else None),
            "final_loss": guard.last_loss,
            "finite": guard.last_loss is not None and math.isfinite(guard.last_loss),
            "scaler_skipped_steps": guard.scaler_skipped_steps,
            "first_step_s": self._first_step_s,
        }


def versions(device: torch.device) -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "lightning": L.__version__,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else estimators.cpu_model(),
            "cuda": torch.version.cuda if device.type == "cuda" else None, "threads": torch.get_num_threads()}


def estimator_part(device: torch.device, tiny: bool) -> list[dict[str, Any]]:
    shapes = [(64, 4)] if tiny else estimators.parse_shapes(estimators.SHAPES)
    effort = estimators.QUICK if tiny else estimators.Effort(seconds_per_cell=0.25, max_repeats=20)
    rows = []
    for dtype_name, dtype in estimators.DTYPES.items():
        for shape in shapes:
            results = estimators.benchmark(shape, dtype, device, 1.0, effort)
            reference, st = results[estimators.REFERENCE].time_ms, results["st"].time_ms
            rows += [{"dtype": dtype_name, "shape": estimators.dims(shape), "estimator": name,
                      "ms": m.time_ms, "peak_mb": m.peak_mb, "vs_reference": m.time_ms / reference,
                      "vs_st": m.time_ms / st} for name, m in results.items()]
            print(f"estimators: {dtype_name} {estimators.dims(shape)} done", file=sys.stderr, flush=True)
    return rows


def loop_part(accelerator: str, images: Path, tiny: bool) -> dict[str, Any]:
    """The steady epochs of each side, eager, then compiled (at toy sizes by the eager backend, which is quick).

    The compiled comparison runs one round: each of its three sides compiles, which takes most of a minute.
    """
    record: dict[str, Any] = {}
    compiled = ["--compile", "eager" if tiny else "inductor"]
    for label, extra, modes in (("eager", [], ()), ("compiled", compiled, () if tiny else ("reduce-overhead",))):
        steady = loop_overhead.compare("mnist", rounds=1 if tiny or extra else 2, epochs=2 if tiny else 3,
                                       accelerator=accelerator, data_dir=str(images), extra=extra,
                                       compile_modes=modes)[0]["steady"]
        record[label] = {"steady_epoch_s": {side: statistics.median(times) for side, times in steady.items()},
                         "ratio": loop_overhead.steady_ratio(steady)}
    return record


def training_part(accelerator: str, images: Path, listops: Path, tiny: bool) -> list[dict[str, Any]]:
    steps = 4 if tiny else 200
    rows = []
    for model in list_models():
        precisions = [*(["32-true"] if model in TIMED_IN_FULL_PRECISION else []), *MIXED]
        for precision in precisions:
            rows.append({"model": model, "precision": precision,
                         **train_briefly(model, precision, accelerator, images, listops, steps, tiny)})
            print(f"training: {model} {precision}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def compile_part(accelerator: str, images: Path, listops: Path, tiny: bool) -> list[dict[str, Any]]:
    """``training``'s bf16-mixed runs of ``COMPILE_TIMED`` with ``--compile`` (at toy sizes, the first of them by
    the eager backend)."""
    compiled = ["--compile", "eager" if tiny else "inductor"]
    rows = []
    for model in COMPILE_TIMED[:1] if tiny else COMPILE_TIMED:
        rows.append({"model": model, "precision": "bf16-mixed",
                     **train_briefly(model, "bf16-mixed", accelerator, images, listops, 4 if tiny else 200, tiny,
                                     compiled)})
        print(f"compile: {model}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def train_briefly(model: str, precision: str, accelerator: str, images: Path, listops: Path, steps: int,
                  tiny: bool, extra: list[str] | None = None) -> dict[str, Any]:
    """``steps`` steps of ``model`` through train.py; what it reached, or why it failed."""
    plugins = []
    if accelerator == "cpu" and precision == "16-mixed":
        if model == "listops":
            return {"skipped": "oneDNN has no float16 LSTM on the CPU"}
        # On the CPU Lightning makes 16-mixed bfloat16; this is the float16 path a GPU takes.
        from lightning.pytorch.plugins import MixedPrecision

        plugins = [MixedPrecision("16-mixed", "cpu", torch.amp.GradScaler("cpu"))]
    timer = StepTimer(start_at=min(TIMING_STARTS_AT, steps // 2))
    optimizer_steps = 2 * steps if model == "gdas" else steps  # its weight and architecture steps
    with tempfile.TemporaryDirectory() as output:
        family = model_card(model).data_family  # its data: the images or expressions written for the check
        data = [] if family == "none" else ["--data-dir", str(listops if family == "listops" else images)]
        argv = [*small_run(model, Path(output), 20, small=tiny), *data, "--accelerator", accelerator,
                "--devices", "1", "--precision", precision, "--max-steps", str(optimizer_steps), "--output-dir", output,
                "--checkpoint-every", "0", "--trainer-arg", "limit_val_batches=0",
                "--trainer-arg", "enable_progress_bar=false", "--trainer-arg", "enable_model_summary=false",
                *(extra or [])]
        try:
            train.main(argv, callbacks=[timer], plugins=plugins)
        except SystemExit as stop:  # train.py's message is already on stderr
            return {"error": f"train.py exited with status {stop.code}", **timer.record}
        except Exception as error:  # noqa: BLE001 - one model's failure must not hide the others'
            return {"error": f"{type(error).__name__}: {error}", **timer.record}
    return timer.record


def write_data(folder: Path, tiny: bool) -> tuple[Path, Path]:
    """Random MNIST-format images (Fashion-MNIST's sizes) and ListOps expressions."""
    images = write_images(folder / "images", *((200, 40) if tiny else (60_000, 10_000)))
    if tiny:
        return images, write_listops(folder / "listops", 64)
    from datamodules.listops.files import write_lines
    from datamodules.listops.generator import generate_splits

    (folder / "listops").mkdir()
    for split, lines in generate_splits({"train": 20_000, "valid": 200, "test": 200}, seed=0).items():
        write_lines(folder / "listops" / f"{split}.tsv", lines)
    return images, folder / "listops"


def table(record: dict[str, Any]) -> str:
    lines = [f"# GPU check: {record['versions']['device']}", "",
             f"- command: `{record['command']}`; {record['date']}",
             f"- torch {record['versions']['torch']}, lightning {record['versions']['lightning']}, "
             f"CUDA {record['versions']['cuda']}", "",
             "## Estimators (ms a step; time / reinmax package, time / st)", "",
             "| dtype | shape | estimator | ms | peak MB | / package | / st |", "|---|---|---|--:|--:|--:|--:|"]
    lines += [f"| {r['dtype']} | {r['shape']} | {r['estimator']} | {r['ms']:.3f} | {r['peak_mb']:.1f} "
              f"| {r['vs_reference']:.2f} | {r['vs_st']:.2f} |" for r in record["estimators"]]
    for label, loop in record["loop"].items():
        lines += ["", f"## train.py against a plain loop (VAE), {label}: steady-epoch ratio {loop['ratio']:.3f}", "",
                  *(f"- {name}: {seconds:.2f} s an epoch" for name, seconds in loop["steady_epoch_s"].items())]
    eager = {row["model"]: row for row in record["training"] if row["precision"] == "bf16-mixed"}
    lines += ["", "## Compiled (bf16-mixed): ms a batch", "", "| model | eager | compiled | first step compiled (s) |",
              "|---|--:|--:|--:|"]
    lines += [f"| {row['model']} | {_number(eager[row['model']].get('ms_per_batch'), 1)} | "
              f"{row.get('error') or _number(row.get('ms_per_batch'), 1)} | {_number(row.get('first_step_s'), 1)} |"
              for row in record["compile"]]
    lines += ["", "## Training through train.py", "",
              "| model | precision | result | ms / batch | peak MB | final loss | scaler skips |",
              "|---|---|---|--:|--:|--:|--:|"]
    for row in record["training"]:
        result = row.get("error") or row.get("skipped") or ("finite" if row.get("finite") else "NOT FINITE")
        lines.append(f"| {row['model']} | {row['precision']} | {result} | {_number(row.get('ms_per_batch'), 1)} "
                     f"| {_number(row.get('peak_memory_mb'), 0)} | {_number(row.get('final_loss'), 4)} "
                     f"| {row.get('scaler_skipped_steps', '')} |")
    return "\n".join(lines)


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def fetch_reference() -> None:
    """Download the reference package's wheel for the offline GPU machine (pass runs/gpu-check along)."""
    WHEELS.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(WHEELS),
                    REFERENCE_PACKAGE], check=True)
    print(f"{REFERENCE_PACKAGE} -> {WHEELS}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="every part at toy sizes on the CPU")
    parser.add_argument("--fetch", action="store_true", help=f"download {REFERENCE_PACKAGE} into {WHEELS} and stop")
    parser.add_argument("--output", type=Path, help="the JSON record (default benchmarks/results/gpu/DEVICE.json)")
    args = parser.parse_args()
    if args.fetch:
        fetch_reference()
        return
    if not args.tiny and not torch.cuda.is_available():
        parser.error("no CUDA device here; --tiny runs the check's parts on the CPU")
    accelerator, device = ("cpu", torch.device("cpu")) if args.tiny else ("gpu", torch.device("cuda"))
    record: dict[str, Any] = {"command": shlex.join(["python", *sys.argv]),
                              "date": datetime.date.today().isoformat(), "versions": versions(device)}
    with tempfile.TemporaryDirectory() as folder:
        images, listops = write_data(Path(folder), args.tiny)
        record["estimators"] = estimator_part(device, args.tiny)
        record["loop"] = loop_part(accelerator, images, args.tiny)
        record["training"] = training_part(accelerator, images, listops, args.tiny)
        record["compile"] = compile_part(accelerator, images, listops, args.tiny)
    slug = re.sub(r"[^a-z0-9]+", "-", record["versions"]["device"].lower()).strip("-")
    output = args.output or RESULTS / f"{slug}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=1))
    print(table(record))
    print(f"\n-> {output}")


if __name__ == "__main__":
    main()
