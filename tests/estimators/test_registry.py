"""The estimator registry: a class registers once, its options and constraints are read from it."""

from __future__ import annotations

import pytest
import torch

from zoo.estimators import (
    FAMILIES,
    PathwiseEstimator,
    ReinMax,
    _registry,
    estimator_entry,
    estimator_options,
    get_estimator,
    list_estimators,
    markdown_table,
    register_estimator,
)


@pytest.fixture
def registry(monkeypatch):
    """The registry, restored after the test."""
    monkeypatch.setattr(_registry, "_REGISTRY", dict(_registry._REGISTRY))
    return _registry._REGISTRY


def test_a_new_estimator_is_one_registered_class(registry):
    @register_estimator("halved-st", summary="ST with half its gradient", scale=0.5)
    class ScaledST(PathwiseEstimator):
        def __init__(self, *, scale: float, tau: float = 1.0, validate_args: bool = True) -> None:
            super().__init__(tau=tau, validate_args=validate_args)
            self.scale = scale

        def draw(self, logits):
            probs = self.probabilities(logits)
            return torch.nn.functional.one_hot(probs.argmax(-1), probs.shape[-1]).to(probs), probs, (probs,)

        def logits_grad(self, saved, tau, grad_sample, grad_probs):
            (probs,) = saved
            return self.scale * probs * (grad_sample - (probs * grad_sample).sum(-1, keepdim=True))

    assert "halved-st" in list_estimators("pathwise") and "halved-st" not in list_estimators("score-function")
    assert estimator_options("halved-st") == {"tau": 1.0, "validate_args": True}  # scale is the entry's
    assert get_estimator("halved-st", tau=2.0).scale == 0.5
    assert "| `halved-st` | pathwise | ST with half its gradient | `tau` (τ > 0) |" in markdown_table()
    assert ScaledST.name == "halved-st"  # from its registration, not written twice
    with pytest.raises(ValueError, match="an estimator named 'halved-st' is already registered"):
        register_estimator("halved-st", summary="again")(ScaledST)
    with pytest.raises(ValueError, match="ScaledST is registered already as 'halved-st'; a class with several "
                                         "entries names them by a name property of its options"):
        register_estimator("thirded-st", summary="ST with a third of its gradient", scale=1 / 3)(ScaledST)


def test_a_class_outside_the_families_is_refused(registry):
    from zoo.estimators import Estimator

    with pytest.raises(ValueError, match="derive from PathwiseEstimator, ScoreFunctionEstimator or Router"):
        register_estimator("loose", summary="no family")(type("Loose", (Estimator,), {}))


def test_one_class_serves_several_entries_with_their_fixed_options():
    assert get_estimator("gst-1.0").gap == 1.0 and get_estimator("gst-p").gap is None
    assert "gap" not in estimator_options("gst-1.0")
    with pytest.raises(ValueError, match="unknown option\\(s\\) gap for estimator 'gst-p'; valid options: tau"):
        get_estimator("gst-p", gap=2.0)


@pytest.mark.parametrize("name", list_estimators())
def test_each_entry_names_its_family_and_constraints(name):
    entry = estimator_entry(name)
    assert entry.family in FAMILIES and entry.summary
    built = get_estimator(name)
    assert built.name == name and type(built) is entry.estimator_class
    assert ("binary variables only" in entry.constraints()) == entry.estimator_class.binary_only
    if "tau" in entry.options():
        assert any(limit.startswith("τ") for limit in entry.constraints())


def test_reinmax_states_its_temperature_floor():
    assert estimator_entry("reinmax").constraints() == ["τ ≥ 1"]
    assert ReinMax.min_tau == 1.0


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as refusal:
        get_estimator("reinmx")
    assert str(refusal.value) == f"unknown estimator 'reinmx'; valid estimators: {', '.join(list_estimators())}."
    with pytest.raises(ValueError) as refusal:
        list_estimators("pathwsie")
    assert str(refusal.value) == (f"family must be None or one of {', '.join(map(repr, FAMILIES))}, "
                                  "got 'pathwsie'.")
