"""Every model of the registry with every estimator, through train.py: one training step, or a refusal by name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.runs import SMALL_MOE
from zoo import runs, train
from zoo.estimators import estimator_entry, list_estimators
from zoo.models import list_models, model_card

ROOT = Path(__file__).resolve().parents[1]
PATHWISE = set(list_estimators("pathwise"))


@pytest.fixture(scope="module")
def data(tiny_mnist, tmp_path_factory) -> dict[str, Path]:
    """A tiny MNIST-format folder and a tiny ListOps folder."""
    listops = tmp_path_factory.mktemp("listops")
    subprocess.run([sys.executable, "-m", "datamodules.listops", "generate", "--out", str(listops),
                    "--train", "32", "--valid", "16", "--test", "16"], cwd=ROOT, check=True, capture_output=True)
    return {"images": tiny_mnist, "listops": listops}


def arguments_for(model: str, data: dict[str, Path]) -> list[str]:
    """Data and a size small enough for one step of ``model`` on a CPU in about a second."""
    return {
        "vae": ["--data", "mnist", "--data-dir", str(data["images"]), "--latents", "3", "--categories", "4",
                "--model-arg", "hidden_sizes=[16, 8]"],
        "bvae": ["--data", "mnist", "--data-dir", str(data["images"]), "--latents", "4", "--val-size", "10",
                 "--model-arg", "hidden_sizes=[16, 8]"],
        "poly": ["--model-arg", "variables=4"],
        "listops": ["--data", "listops", "--data-dir", str(data["listops"]), "--model-arg", "hidden_size=8"],
        "gdas": ["--data", "synthetic", "--model-arg", "channels=2", "--model-arg", "cells_per_stage=1"],
        "nas-net": ["--data", "synthetic", "--genotype", "|nor_conv_1x1~0|+|skip_connect~0|none~1|+|none~0|none~1|"
                    "avg_pool_3x3~2|", "--model-arg", "channels=2", "--model-arg", "cells_per_stage=1"],
        "moe": ["--data", "synthetic", *SMALL_MOE],
    }.get(model, [])


def refusal(model: str, estimator: str) -> str | None:
    """What train.py must say when ``model`` cannot use ``estimator``; None when it can."""
    card = model_card(model)
    if not card.takes_estimator:
        return "takes no estimator"
    if estimator not in card.valid_estimators():
        return f"{estimator!r} is not one. Valid estimators: {', '.join(card.valid_estimators())}"
    if model == "vae" and estimator_entry(estimator).estimator_class.binary_only:  # this VAE has 4 categories
        return f"{estimator} needs binary variables"
    return None


@pytest.mark.parametrize("model", list_models())
def test_every_registered_model_has_its_small_arguments(model, data):
    assert arguments_for(model, data)


@pytest.mark.parametrize("estimator", list_estimators())
@pytest.mark.parametrize("model", list_models())
def test_every_model_takes_a_step_with_every_estimator_or_refuses_it_by_name(model, estimator, data, tmp_path,
                                                                             capsys, monkeypatch):
    monkeypatch.setenv(runs.RUN_VERSION_VARIABLE, "0")  # main() hands the version on through it
    # Pathwise estimators at a temperature all of them allow; score-function ones with the two
    # evaluations an example that DisARM's antithetic pair needs.
    extra = ["--tau", "1.0"] if estimator in PATHWISE else ["--num-samples", "2"] if model in ("vae", "bvae") else []
    arguments = [
        *arguments_for(model, data),
        "--model",
        model,
        "--estimator",
        estimator,
        *extra,
        "--output-dir",
        str(tmp_path),
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--batch-size",
        "8",
        "--max-steps",
        "1",
        "--trainer-arg",
        "limit_val_batches=1",
        "--trainer-arg",
        "enable_progress_bar=false",
    ]
    expected = refusal(model, estimator)
    if expected is None:
        assert train.main(arguments) == 0
        checkpoint = next(tmp_path.rglob("last.ckpt"))
        assert torch.load(checkpoint, weights_only=True)["global_step"] >= 1
        return
    with pytest.raises(SystemExit) as stopped:
        train.main(arguments)
    assert stopped.value.code == 2
    assert expected in capsys.readouterr().err
