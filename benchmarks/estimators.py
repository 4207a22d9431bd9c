"""Speed and peak memory of the pathwise estimators against the ``reinmax`` package.

Run from the repository root: ``python benchmarks/estimators.py [--quick] ...``;
the output is markdown, ready to paste into ``benchmarks/RESULTS.md``.

What one *step* is
    What a training step asks of an estimator. Leaf logits ``(N, C)`` and a fixed
    random ``weight`` of the same shape and dtype are made once per table; a step
    runs ``sample, probs = est(logits)``, back-propagates ``(sample * weight).sum()``
    and resets ``logits.grad = None``. Every pathwise estimator of
    :mod:`zoo.estimators` (with its default options) and the reference, the
    ``reinmax`` PyPI package, run in the same process and at the same ``--tau``.

Time
    After the memory step and one warm-up step, the median wall time of repeated
    steps (synchronised on CUDA), taken round-robin over the contenders so that a
    change in the machine's load affects them all alike. The warm-up step's time
    sets each contender's number of repeats, so that a cell takes about
    ``Effort.seconds_per_cell``; slow cells (GR-MCK on the larger shapes) get a
    single timed step. Each row shows its count.
    Every measured estimator and table starts from ``torch.manual_seed(0)``.

Peak memory
    On one separate, untimed step: the most memory allocated at any moment beyond
    what was allocated before the step (so the inputs are excluded and the
    gradient of the logits is included).

    * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``,
      minus ``torch.cuda.memory_allocated`` before the step.
    * CPU has no allocator statistics, so the step runs under
      ``torch.profiler.profile(profile_memory=True)`` and the allocator's records
      are replayed: sorted by time, the signed sizes (+ allocation, - free) are
      summed and the maximum of the running total is the peak. The records are read
      from ``prof.profiler.kineto_results.events()``, the raw results that
      ``torch.profiler._memory_profiler`` also reads, and not from
      ``prof.events()``: there each allocation made inside an operator is folded
      into that operator's ``cpu_memory_usage``, and only frees made outside every
      operator remain as ``"[memory]"`` events, so replaying those finds no peak
      and a temporary freed inside an operator would be lost anyway.
      :func:`check_cpu_peak` checks the replay on a 4 MiB ``torch.empty`` first.
"""

from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from reinmax import reinmax as reference_reinmax
from torch import Tensor
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from zoo.estimators import get_estimator, list_estimators  # noqa: E402

Pathwise = Callable[[Tensor], tuple[Tensor, Tensor]]
Step = Callable[[], None]

REFERENCE = "reinmax (PyPI)"
SHAPES = "3000x10,65536x2,16384x64,1048576x8"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
MB = 1e6


@dataclass(frozen=True)
class Effort:
    """How long to time each cell: about ``seconds_per_cell``, within the repeat bounds."""

    seconds_per_cell: float
    max_repeats: int


QUICK = Effort(seconds_per_cell=0.2, max_repeats=3)
FULL = Effort(seconds_per_cell=2.0, max_repeats=50)


@dataclass(frozen=True)
class Measurement:
    time_ms: float
    peak_mb: float
    repeats: int


def contenders(tau: float) -> dict[str, Pathwise]:
    """Our pathwise estimators by name, then the reference package."""
    ours: dict[str, Pathwise] = {
        name: get_estimator(name, tau=tau) for name in list_estimators("pathwise")
    }
    return {**ours, REFERENCE: lambda logits: reference_reinmax(logits, tau)}


def make_step(estimator: Pathwise, logits: Tensor, weight: Tensor) -> Step:
    def step() -> None:
        sample, _probs = estimator(logits)
        (sample * weight).sum().backward()
        # Dropped here rather than before the next step, so that every step (the
        # memory step included) starts from the inputs alone.
        logits.grad = None

    return step


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(step: Step, device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    step()
    synchronize(device)
    return time.perf_counter() - start


def repeat_count(warm_up_seconds: float, effort: Effort) -> int:
    return min(effort.max_repeats, max(1, round(effort.seconds_per_cell / warm_up_seconds)))


def cuda_peak_bytes(step: Step, device: torch.device) -> int:
    synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def cpu_peak_bytes(step: Step) -> int:
    """Replay the profiler's allocation records (see the module docstring)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    records = [
        event
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]" and event.device_type() == torch.autograd.DeviceType.CPU
    ]
    records.sort(key=lambda event: event.start_ns())
    total = peak = 0
    for record in records:
        total += record.nbytes()
        peak = max(peak, total)
    return peak


def check_cpu_peak() -> None:
    """Fail loudly if this torch's profiler no longer reports allocations as expected."""
    size = 1 << 22

    def allocate() -> None:
        torch.empty(size, dtype=torch.uint8).fill_(0)

    peak = cpu_peak_bytes(allocate)
    if peak != size:
        raise RuntimeError(f"CPU peak-memory replay saw {peak} bytes for a {size}-byte tensor.")


def peak_mb(step: Step, device: torch.device) -> float:
    peak = cuda_peak_bytes(step, device) if device.type == "cuda" else cpu_peak_bytes(step)
    return peak / MB


def measure(steps: dict[str, Step], device: torch.device, effort: Effort) -> dict[str, Measurement]:
    """Each step's peak memory, then its median time over repeats taken round-robin.

    Interleaving the contenders' repeats spreads any drift in the machine's load
    evenly over them, so that the ratios between them stay meaningful.
    """
    peaks = {}
    for name, step in steps.items():
        torch.manual_seed(0)
        peaks[name] = peak_mb(step, device)
    repeats = {name: repeat_count(seconds(step, device), effort) for name, step in steps.items()}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for round_index in range(max(repeats.values())):
        for name, step in steps.items():
            if round_index < repeats[name]:
                times[name].append(seconds(step, device))
    return {
        name: Measurement(1e3 * statistics.median(times[name]), peaks[name], repeats[name])
        for name in steps
    }


def benchmark(
    shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, tau: float, effort: Effort
) -> dict[str, Measurement]:
    torch.manual_seed(0)
    logits = torch.randn(shape, dtype=dtype, device=device, requires_grad=True)
    weight = torch.randn(shape, dtype=dtype, device=device)
    steps = {name: make_step(estimator, logits, weight) for name, estimator in contenders(tau).items()}
    return measure(steps, device, effort)


def format_table(results: dict[str, Measurement]) -> list[str]:
    reference, st = results[REFERENCE].time_ms, results["st"].time_ms
    lines = [
        f"| estimator | time (ms) | peak (MB) | time / {REFERENCE} | time / st | repeats |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for name, m in results.items():
        lines.append(
            f"| {name} | {m.time_ms:.3f} | {m.peak_mb:.1f} | {m.time_ms / reference:.2f} "
            f"| {m.time_ms / st:.2f} | {m.repeats} |"
        )
    return lines


def grmck_memory(device: torch.device, tau: float, effort: Effort) -> list[str]:
    """GR-MCK, K=1000 on 512×128×2 float32: streamed noise vs the materialised form."""
    k, shape = 1000, (512, 128, 2)
    torch.manual_seed(0)
    logits = torch.randn(shape, device=device, requires_grad=True)
    weight = torch.randn(shape, device=device)
    variants = {"streamed (chunk_size=None)": None, f"materialised (chunk_size={k})": k}
    steps = {
        name: make_step(
            get_estimator("grmck", num_gumbel_samples=k, chunk_size=chunk, tau=tau), logits, weight
        )
        for name, chunk in variants.items()
    }
    results = measure(steps, device, effort)
    streamed, materialised = results.values()
    rows = [
        f"| {name} | {m.time_ms:.1f} | {m.peak_mb:.1f} | {m.repeats} |"
        for name, m in results.items()
    ]
    return [
        f"## GR-MCK memory · {device.type} · K={k} · {dims(shape)} float32",
        "",
        "| variant | time (ms) | peak (MB) | repeats |",
        "|---|--:|--:|--:|",
        *rows,
        "",
        f"Streamed / materialised peak memory: {streamed.peak_mb / materialised.peak_mb:.1%} "
        "(goal: at most 10%).",
    ]


def dims(shape: tuple[int, ...]) -> str:
    return "×".join(map(str, shape))


def header(devices: list[torch.device], tau: float) -> list[str]:
    gpu = torch.cuda.get_device_name() if any(d.type == "cuda" for d in devices) else "none"
    return [
        "# Estimator benchmark",
        "",
        f"- command: `{shlex.join(['python', *sys.argv])}`",
        f"- CPU: {cpu_model()}; torch.get_num_threads() = {torch.get_num_threads()}",
        f"- torch {torch.__version__}; GPU: {gpu}",
        f"- tau = {tau}; one step = forward + backward of `(sample * weight).sum()`",
        "- time: median wall time of a step; peak: most memory allocated during a step "
        "beyond its inputs (MB = 1e6 bytes)",
    ]


def cpu_model() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    models = (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    return next(models, platform.processor() or "unknown")


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    try:
        shapes = [tuple(int(size) for size in item.split("x")) for item in text.split(",")]
    except ValueError:
        message = f"shapes look like 3000x10,65536x2; got {text!r}"
        raise argparse.ArgumentTypeError(message) from None
    if any(len(shape) < 2 or min(shape) < 1 for shape in shapes):
        raise argparse.ArgumentTypeError(f"each shape needs >= 2 positive sizes; got {text!r}")
    return shapes


def parse_tau(text: str) -> float:
    tau = float(text)
    if not 1.0 <= tau < float("inf"):
        raise argparse.ArgumentTypeError(f"ReinMax (ours and PyPI's) needs tau >= 1; got {tau}")
    return tau


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="few repeats: a smoke run")
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all",
                        help="'all' (default) is CPU, and CUDA when available")
    parser.add_argument("--dtype", choices=[*DTYPES, "all"], default="all")
    parser.add_argument("--tau", type=parse_tau, default=1.0, help="temperature, >= 1 (default 1)")
    parser.add_argument("--shapes", type=parse_shapes, default=parse_shapes(SHAPES),
                        help=f"logits shapes (default {SHAPES})")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    return args


def selected_devices(choice: str) -> list[torch.device]:
    cuda = [torch.device("cuda")] if torch.cuda.is_available() else []
    return {"cpu": [torch.device("cpu")], "cuda": cuda, "all": [torch.device("cpu"), *cuda]}[choice]


def main() -> None:
    args = parse_args()
    devices = selected_devices(args.device)
    dtypes = list(DTYPES.values()) if args.dtype == "all" else [DTYPES[args.dtype]]
    effort = QUICK if args.quick else FULL
    if torch.device("cpu") in devices:
        check_cpu_peak()

    print(*header(devices, args.tau), sep="\n")
    for device in devices:
        for dtype in dtypes:
            for shape in args.shapes:
                dtype_name = str(dtype).removeprefix("torch.")
                table = format_table(benchmark(shape, dtype, device, args.tau, effort))
                title = f"## {device.type} · {dtype_name} · {dims(shape)}"
                print(f"\n{title}\n", *table, sep="\n", flush=True)
    for device in devices:
        print("", *grmck_memory(device, args.tau, effort), sep="\n", flush=True)


if __name__ == "__main__":
    main()
