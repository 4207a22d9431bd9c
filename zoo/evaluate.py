"""Re-measure a release's metrics on the data its manifest names, next to the recorded values.

    python -m zoo.evaluate vae-fashion-mnist-reinmax [--data-dir DIR]

Exit status 0 when every metric is within its recorded tolerance, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

import lightning as L

from datamodules.families import build_datamodule

from .models import model_card
from .pretrained import PretrainedError, Release, get_release, load_pretrained

#: The seed of every measurement: a model that samples in its test step (the VAEs) then
#: gives the same number on the same machine.
EVALUATION_SEED = 0
#: The test batches of a release's quick check, recorded beside its metrics: seconds, not minutes, to re-measure.
FIRST_BATCHES = 2


def measure(release: Release, model: L.LightningModule, data_dir: str | None = None,
            batches: int | None = None) -> dict[str, float]:
    """The release's metrics for ``model``: Lightning's test loop on the manifest's data, seeded; on its first
    ``batches`` test batches only, if given."""
    data = release.data
    datamodule = build_datamodule(model_card(release.model).data_family, data["name"], data_dir=data_dir,
                                  batch_size=data.get("batch_size", 100), binarize=data.get("binarize", "none"),
                                  val_size=data.get("val_size", 0))
    results = measure_test_split(model, datamodule, batches=batches)
    missing = [metric for metric in release.metrics if metric not in results]
    if missing:
        raise PretrainedError(f"the test loop of {release.name!r} logs no {', '.join(missing)}; "
                              f"it logs {', '.join(sorted(results))}.")
    return {metric: float(results[metric]) for metric in release.metrics}


def measure_test_split(model: L.LightningModule, datamodule: L.LightningDataModule, accelerator: str = "auto",
                 batches: int | None = None) -> dict[str, float]:
    """Every metric Lightning's test loop logs for ``model`` on ``datamodule``'s test split, seeded, on one
    device; on its first ``batches`` test batches only, if given."""
    L.seed_everything(EVALUATION_SEED, verbose=False)
    trainer = L.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_test_batches=batches)
    return {metric: float(value) for metric, value in trainer.test(model, datamodule=datamodule,
                                                                   verbose=False)[0].items()}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="a release, e.g. from zoo.list_pretrained()")
    parser.add_argument("--data-dir", help="where the data set is, if not in its usual places")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        release = get_release(args.name)
        measured = measure(release, load_pretrained(args.name), args.data_dir)
    except (PretrainedError, FileNotFoundError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    within = True
    print(f"{release.name}: {release.model} on {release.data['name']}")
    print("| metric | recorded | measured | tolerance | how |")
    print("|---|--:|--:|--:|---|")
    for metric, recorded in release.metrics.items():
        ok = abs(measured[metric] - recorded["value"]) <= recorded["tolerance"]
        within &= ok
        print(f"| {metric} | {recorded['value']:.4f} | {measured[metric]:.4f} | {recorded['tolerance']:g}"
              f"{'' if ok else ' (exceeded)'} | {recorded['how']} |")
    return 0 if within else 1


if __name__ == "__main__":
    sys.exit(main())
