"""A train.py run's learning curve from its TensorBoard events, as a Markdown table for RESULTS.md.

    python benchmarks/learning_curve.py runs/vae-fashion-mnist-reinmax/version_0 \
        --tags train/neg_elbo_epoch val/neg_elbo_epoch --every 10

One row per logged point of the first tag (every ``--every``-th, and always the
last), with the value of each tag at that step and the minutes since the run began.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def curve(run: Path, tags: list[str]) -> list[tuple[int, float, list[float | None]]]:
    """(step, minutes since the first event, each tag's value at that step) for each point of ``tags[0]``."""
    events = EventAccumulator(str(run), size_guidance={"scalars": 0}).Reload()
    missing = [tag for tag in tags if tag not in events.Tags()["scalars"]]
    if missing:
        raise SystemExit(f"{run} has no scalars {', '.join(missing)}; it has: {', '.join(events.Tags()['scalars'])}")
    series = {tag: {event.step: event for event in events.Scalars(tag)} for tag in tags}
    start = min(event.wall_time for event in series[tags[0]].values())
    return [(step, (event.wall_time - start) / 60, [series[tag][step].value if step in series[tag] else None
                                                     for tag in tags])
            for step, event in sorted(series[tags[0]].items())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a train.py run folder (its TensorBoard events)")
    parser.add_argument("--tags", nargs="+", required=True, help="scalar tags; the first gives the rows")
    parser.add_argument("--every", type=int, default=1, help="print every N-th point (and the last)")
    args = parser.parse_args()
    points = curve(args.run, args.tags)
    print("| point | step | minutes | " + " | ".join(args.tags) + " |")
    print("|--:|--:|--:|" + "--:|" * len(args.tags))
    for index, (step, minutes, values) in enumerate(points, start=1):
        if index % args.every == 0 or index in (1, len(points)):
            cells = " | ".join("–" if value is None else f"{value:.3f}" for value in values)
            print(f"| {index} | {step} | {minutes:.1f} | {cells} |")


if __name__ == "__main__":
    main()
