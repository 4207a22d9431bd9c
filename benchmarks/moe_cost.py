"""Routers on the Mixture-of-Experts transformer: the cost of sparse against dense routing.

    python benchmarks/moe_cost.py [--rounds 5]

Times a training step (forward, backward, AdamW) of ``--model moe`` at its defaults
on a fixed batch of 128 images, sparse routing (``switch``: only the chosen expert
runs) against dense (``st``: every expert on every token, as any pathwise estimator
needs in training), at 8 and 32 experts, interleaved in one process, and replays
the allocator's records for the peak memory of one step. The routers' accuracy at
equal steps is a study: ``python -m zoo.study run benchmarks/studies/moe_routers.yaml``.
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
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.estimators import peak_mb  # noqa: E402
from zoo.models import MoEClassifier  # noqa: E402

BATCH_SIZE = 128
RESULTS_DIR = Path(__file__).resolve().parent / "results" / "moe"
COST_RECORD = "cost.json"


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds after a warm-up round")
    parser.add_argument("--results", type=Path, default=RESULTS_DIR, help="where the record is kept")
    cost(parser.parse_args())


if __name__ == "__main__":
    main()
