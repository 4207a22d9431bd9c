"""Every model of the registry with every estimator, through train.py: one training step, or a refusal by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.runs import small_run
from zoo import train
from zoo.estimators import estimator_entry, list_estimators
from zoo.models import list_models, model_card

PATHWISE = set(list_estimators("pathwise"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("data")


def smallest_setting(model: str, estimator: str) -> list[str]:
    """The settings ``estimator`` needs of a model: binary variables, enough samples, a temperature it allows."""
    entry = estimator_entry(estimator)
    accepted = model_card(model).arguments
    flags = ["--tau", "1.0"] if estimator in PATHWISE else []
    if entry.estimator_class.binary_only and "categories" in accepted:
        flags += ["--categories", "2"]
    if entry.estimator_class.min_num_samples > 1 and "num_samples" in accepted:
        flags += ["--num-samples", str(entry.estimator_class.min_num_samples)]
    return flags


def refusal(model: str, estimator: str) -> str | None:
    """What train.py must say when ``model`` cannot use ``estimator``; None when it can."""
    card = model_card(model)
    if not card.takes_estimator:
        return "takes no estimator"
    if estimator not in card.valid_estimators():
        return f"{estimator!r} is not one. Valid estimators: {', '.join(card.valid_estimators())}"
    return None


@pytest.mark.parametrize("estimator", list_estimators())
@pytest.mark.parametrize("model", list_models())
def test_every_model_takes_a_step_with_every_estimator_or_refuses_it_by_name(model, estimator, data, tmp_path,
                                                                             capsys, monkeypatch):
    arguments = [*small_run(model, data, batch_size=8), "--estimator", estimator,
                 *smallest_setting(model, estimator), "--output-dir", str(tmp_path), "--accelerator", "cpu",
                 "--devices", "1", "--max-steps", "1", "--trainer-arg", "limit_val_batches=1",
                 "--trainer-arg", "enable_progress_bar=false"]
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


BINARY_ONLY = [name for name in list_estimators() if estimator_entry(name).estimator_class.binary_only]
WITH_CATEGORIES = [model for model in list_models() if "categories" in model_card(model).arguments]


@pytest.mark.parametrize("estimator", BINARY_ONLY)
@pytest.mark.parametrize("model", WITH_CATEGORIES)
def test_a_binary_only_estimator_is_refused_by_name_for_more_classes(model, estimator, data, tmp_path, capsys):
    arguments = [*small_run(model, data), "--estimator", estimator, "--categories", "4",
                 "--num-samples", str(estimator_entry(estimator).estimator_class.min_num_samples),
                 "--output-dir", str(tmp_path), "--accelerator", "cpu", "--devices", "1", "--max-steps", "1"]
    with pytest.raises(SystemExit) as stopped:
        train.main(arguments)
    assert stopped.value.code == 2
    assert f"{estimator} needs binary variables (2 classes), got 4" in capsys.readouterr().err
