"""Turn a train.py run into a release: safetensors weights, measured metrics, and a manifest entry.

    python -m zoo.release runs/vae-fashion-mnist-reinmax/version_0 --name vae-fashion-mnist-reinmax \\
        --tolerance 0.5 [--dtype float16] [--note TEXT]
    python -m zoo.release NAS_NET_RUN --name ... --tolerance 0.002 --found-by GDAS_RUN

The weights are those of the run's ``checkpoints/last.ckpt`` (read as tensors only),
stored in ``--dtype``; the metrics are measured by :func:`zoo.evaluate.measure` on
the file just written, so they are those of the stored precision. The command is
the one ``train.py`` recorded in the run's ``config.yaml``; a retrained genotype
also records the search run's command (``found_by``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml

from callbacks.checkpoint import write_text_atomically

from .evaluate import EVALUATION_SEED, FIRST_BATCHES, measure
from .models import get_model_class, model_card
from .models._heat_map import save_png
from .pretrained import MANIFEST, Release, load_weights, read_weights, sha256_of
from .runs import load_failure

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
#: Where a release's figure goes (a model with ``release_figure()``, e.g. GDAS's softmax(α)).
FIGURES = MANIFEST.parents[1] / "benchmarks" / "results" / "releases"


def trained_model(run: Path, checkpoint: Path | None = None
                  ) -> tuple[dict[str, Any], dict[str, Any], L.LightningModule]:
    """A train.py run's ``config.yaml``, its checkpoint (read as tensors only) and the model it holds."""
    if not (run / "config.yaml").is_file():
        raise ValueError(f"{run} is not a train.py run folder: it has no config.yaml.")
    try:
        config = yaml.safe_load((run / "config.yaml").read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read {run / 'config.yaml'}: {error}") from error
    checkpoint = checkpoint or run / "checkpoints" / "last.ckpt"
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever fails to load is no checkpoint to release
        raise ValueError(f"cannot read the checkpoint {checkpoint}: {load_failure(error)}.") from error
    saved["hyper_parameters"] = json.loads(json.dumps(dict(saved["hyper_parameters"])))  # tuples → lists, as in JSON
    model = get_model_class(config["model"])(**saved["hyper_parameters"])
    model.load_state_dict(saved["state_dict"])
    return config, saved, model


def search_provenance(search_run: Path, genotype: str) -> dict[str, Any]:
    """How a ``nas-net`` release's genotype was found: the ``gdas`` run, which must have found exactly it."""
    config, _, search = trained_model(search_run)
    if config["model"] != "gdas":
        raise ValueError(f"--found-by must be a gdas search run; {search_run} trained {config['model']!r}.")
    found = str(search.genotype)
    if found != genotype:
        raise ValueError(f"the search run {search_run} found {found}, not the released genotype {genotype}; "
                         "release the retraining of the genotype that search found.")
    return {"model": "gdas", "estimator": config["estimator"], "tau": tau_schedule(search),
            "command": config["command"], "genotype": found}


def tau_schedule(model: Any) -> list[float] | None:
    """The temperature a model anneals over its run, ``[start, end]`` (GDAS's search), or None for a fixed τ."""
    if hasattr(model, "tau_start") and hasattr(model, "tau_end"):
        return [model.tau_start, model.tau_end]
    return None


def release(run: Path, name: str, tolerance: float, dtype: str = "float16", note: str | None = None,
            manifest: Path | None = None, checkpoint: Path | None = None, data_dir: str | None = None,
            found_by: Path | None = None, figures: Path = FIGURES) -> dict[str, Any]:
    """Write ``name``'s weights beside ``manifest``, measure them, and record the entry; returns the entry.

    ``found_by`` is the ``gdas`` run whose genotype a ``nas-net`` run retrained; its
    command and τ schedule are recorded, so the whole release is reproducible. A model
    with a ``release_figure()`` (an ``(H, W, 3)`` image) gets it written to
    ``figures/NAME.png``, linked from the entry relative to the manifest's repository.
    """
    from safetensors.torch import save_file

    manifest = MANIFEST if manifest is None else manifest
    manifest_document(manifest)  # a manifest that cannot take the entry is refused before anything is written
    config, saved, model = trained_model(run, checkpoint)
    model_class = type(model)
    hyper_parameters = saved["hyper_parameters"]
    provenance = None
    if found_by is not None:
        if "genotype" not in hyper_parameters:
            raise ValueError(f"--found-by is for nas-net runs; {run} trained {config['model']!r}.")
        provenance = search_provenance(found_by, hyper_parameters["genotype"])
    stored = {key: (value.to(DTYPES[dtype]) if value.is_floating_point() else value).contiguous()
              for key, value in model.state_dict().items()}
    path = manifest.parent / f"{name}.safetensors"
    # Measured before it replaces anything: a failure leaves an earlier release of this name intact.
    partial = path.with_name(f".{path.name}.partial")
    save_file(stored, str(partial), metadata={"name": name, "model": config["model"]})
    entry: dict[str, Any] = {
        "model": config["model"],
        "hyper_parameters": hyper_parameters,
        "data": {"name": config["data"], "binarize": config["binarize"], "val_size": config["val_size"],
                 "batch_size": config["batch_size"]},
        "estimator": config["estimator"],
        "tau": config["tau"] if config["estimator"] else None,
        "command": config["command"],
        "trained_steps": int(saved["global_step"]),
        "metrics": {},
        "parameters": sum(parameter.numel() for parameter in model.parameters()),
        "file": path.name,
        "size_bytes": partial.stat().st_size,
        "sha256": sha256_of(partial),
        "dtype": dtype,
        "url": None,
    }
    if schedule := tau_schedule(model):
        entry["tau_schedule"] = schedule
    if provenance:
        entry["found_by"] = provenance
    if note:
        entry["note"] = note
    stored_model = model_class(**hyper_parameters)
    load_weights(stored_model, read_weights(partial), name)
    metric = model_card(config["model"]).test_metric
    draft = Release(name, {**entry, "metrics": {metric: {}}})
    try:
        value = measure(draft, stored_model.eval(), data_dir)[metric]
        quick = measure(draft, stored_model, data_dir, batches=FIRST_BATCHES)[metric]
    except BaseException:
        partial.unlink()
        raise
    entry["metrics"] = {metric: {
        "value": round(value, 6), "tolerance": tolerance,
        "how": f"Lightning's test loop on the {config['data']} test split with the {dtype} weights, seed "
               f"{EVALUATION_SEED} (python -m zoo.evaluate {name})",
        "first_batches": {"batches": FIRST_BATCHES, "value": round(quick, 6)},
    }}
    os.replace(partial, path)
    if hasattr(stored_model, "release_figure"):
        figures.mkdir(parents=True, exist_ok=True)
        save_png(stored_model.release_figure(), figures / f"{name}.png")
        entry["figure"] = Path(os.path.relpath(figures / f"{name}.png", manifest.resolve().parents[1])).as_posix()
    write_entry(manifest, name, entry)
    return entry


def manifest_document(manifest: Path) -> dict[str, Any]:
    """The manifest's JSON document, or a new one if there is no file."""
    if manifest.is_dir():
        raise ValueError(f"--manifest {manifest} is a folder; pass the manifest.json file to add the release to.")
    if not manifest.exists():
        return {"schema": 1, "releases": {}}
    try:
        document = json.loads(manifest.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the manifest {manifest}: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("releases"), dict):
        raise ValueError(f"{manifest} is not a release manifest: it has no 'releases' mapping.")
    return document


def write_entry(manifest: Path, name: str, entry: dict[str, Any]) -> None:
    """Add or replace one entry; the manifest is rewritten atomically."""
    document = manifest_document(manifest)
    document["releases"][name] = entry
    document["releases"] = dict(sorted(document["releases"].items()))
    write_text_atomically(manifest, json.dumps(document, indent=1) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo.release", description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a train.py run folder (with config.yaml and checkpoints/)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--tolerance", type=float, required=True,
                        help="how far a re-measurement may fall from the recorded metric")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float16")
    parser.add_argument("--found-by", type=Path, help="the gdas search run whose genotype this nas-net run retrained")
    parser.add_argument("--note", help="anything else a user should know")
    parser.add_argument("--checkpoint", type=Path, help="default: the run's checkpoints/last.ckpt")
    parser.add_argument("--manifest", type=Path, help="default: the repository's checkpoints/manifest.json")
    parser.add_argument("--data-dir", help="where the data set is, if not in its usual places")
    parser.add_argument("--figures", type=Path, default=FIGURES,
                        help="where a model's release figure goes (default: benchmarks/results/releases)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        entry = release(args.run, args.name, args.tolerance, args.dtype, args.note, args.manifest, args.checkpoint,
                        args.data_dir, args.found_by, args.figures)
    except (ValueError, FileNotFoundError) as error:  # a file or the data does not fit: the message says how
        parser.error(str(error))
    print(json.dumps({args.name: entry}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
