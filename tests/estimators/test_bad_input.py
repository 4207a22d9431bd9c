"""Bad input gets a ValueError (or TypeError) that names the problem and the fix."""

from __future__ import annotations

import re

import pytest
import torch

from zoo.estimators import estimator_entry, get_estimator, list_estimators

PATHWISE = list_estimators("pathwise")
BINARY = [name for name in list_estimators() if estimator_entry(name).estimator_class.binary_only]
INF, NAN = float("inf"), float("nan")


def test_unknown_estimator_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown estimator 'reinmx'") as error:
        get_estimator("reinmx")
    for name in list_estimators():
        assert name in str(error.value)


def test_unknown_option_lists_the_valid_options():
    with pytest.raises(ValueError, match=re.escape("unknown option(s) temperature for estimator 'reinmax'")) as error:
        get_estimator("reinmax", temperature=1.3)
    assert "valid options: tau, validate_args" in str(error.value)
    with pytest.raises(ValueError, match="num_gumbel_samples, chunk_size, tau"):
        get_estimator("grmck", k=10)


@pytest.mark.parametrize("tau", [0.999, 0.5, 0.0, -1.0, INF, NAN])
def test_reinmax_rejects_tau_below_one(tau):
    with pytest.raises(ValueError, match=r"reinmax: temperature tau=.* must be finite and >= 1.0 .*needs tau >= 1"):
        get_estimator("reinmax", tau=tau)


@pytest.mark.parametrize("name", PATHWISE)
@pytest.mark.parametrize("tau", [0.0, -0.5, INF, NAN])
def test_every_pathwise_estimator_rejects_non_positive_or_infinite_tau(name, tau):
    with pytest.raises(ValueError, match=f"{re.escape(name)}: temperature tau="):
        get_estimator(name, tau=tau)


def test_assigning_a_bad_tau_raises_and_keeps_the_old_value():
    estimator = get_estimator("reinmax", tau=1.5)
    estimator.tau = 1.0
    with pytest.raises(ValueError, match="tau=0.9"):
        estimator.tau = 0.9
    assert estimator.tau == 1.0
    small = get_estimator("stgs", tau=1.0)
    small.tau = 0.1  # any positive tau is fine for STGS
    assert small.tau == 0.1


@pytest.mark.parametrize("k", [0, -3, 2.5])
def test_grmck_rejects_k_below_one(k):
    with pytest.raises(ValueError, match="num_gumbel_samples \\(K\\) must be an integer >= 1"):
        get_estimator("grmck", num_gumbel_samples=k)


def test_grmck_rejects_a_bad_chunk_size():
    with pytest.raises(ValueError, match="chunk_size must be None or an integer >= 1"):
        get_estimator("grmck", chunk_size=0)


def test_exact_refuses_beyond_its_limit():
    logits = torch.randn(2, 20, 4)
    with pytest.raises(ValueError, match=r"4\^20 = 1.1e\+12 configurations per example exceed the limit of 65536"):
        get_estimator("exact").objective(logits, lambda s: s.sum((-1, -2)))
    small = get_estimator("exact", max_configurations=15)
    with pytest.raises(ValueError, match="2\\^4 = 16 configurations"):
        small.objective(torch.randn(3, 4, 2), lambda s: s.sum((-1, -2)))


BAD_ROWS = {
    "nan": [0.0, NAN, 1.0],
    "plus-inf": [INF, 0.0, 1.0],
    "all-minus-inf": [-INF, -INF, -INF],
    "all-plus-inf": [INF, INF, INF],
}


def logits_with(bad_row: list[float]) -> torch.Tensor:
    logits = torch.randn(4, 3)
    logits[2] = torch.tensor(bad_row)
    return logits


@pytest.mark.parametrize("name", PATHWISE)
@pytest.mark.parametrize("row", BAD_ROWS, ids=list(BAD_ROWS))
def test_pathwise_estimators_reject_rows_without_a_distribution(name, row):
    with pytest.raises(ValueError, match=r"1 row\(s\) of logits have no valid distribution \(first at index \(2,\)\)"):
        get_estimator(name)(logits_with(BAD_ROWS[row]))


@pytest.mark.parametrize("name", ["reinforce", "exact"])
@pytest.mark.parametrize("row", BAD_ROWS, ids=list(BAD_ROWS))
def test_score_function_estimators_reject_rows_without_a_distribution(name, row):
    logits = logits_with(BAD_ROWS[row]).unsqueeze(1)
    with pytest.raises(ValueError, match="no valid distribution"):
        get_estimator(name).objective(logits, lambda s: s.sum((-1, -2)), 2)


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("row", [[NAN, 0.0], [-INF, -INF], [INF, INF]])
def test_binary_estimators_reject_rows_without_a_distribution(name, row):
    logits = torch.randn(4, 2)
    logits[1] = torch.tensor(row)
    with pytest.raises(ValueError, match=f"{name}: 1 row"):
        get_estimator(name).objective(logits.unsqueeze(1), lambda s: s.sum((-1, -2)), 2)


def test_validation_can_be_switched_off():
    get_estimator("st", validate_args=False)(logits_with(BAD_ROWS["nan"]))


@pytest.mark.parametrize("name", ["reinforce", "disarm", "rodeo", "exact"])
def test_score_function_estimators_cannot_be_called_on_logits_alone(name):
    with pytest.raises(TypeError, match=f"{name} is a score-function estimator.*est.objective"):
        get_estimator(name)(torch.randn(3, 2))


@pytest.mark.parametrize("name", ["reinforce", "rodeo"])
@pytest.mark.parametrize("num_samples", [1, 0])
def test_leave_one_out_estimators_need_two_samples(name, num_samples):
    with pytest.raises(ValueError, match=f"{name}: num_samples must be an integer >= 2"):
        get_estimator(name).objective(torch.randn(3, 2), lambda s: s.sum(-1), num_samples)


def test_disarm_needs_an_even_number_of_evaluations():
    with pytest.raises(ValueError, match="two per antithetic pair, so it must be even; got 3"):
        get_estimator("disarm").objective(torch.randn(3, 2), lambda s: s.sum(-1), 3)


@pytest.mark.parametrize("name", BINARY)
def test_binary_estimators_need_binary_variables(name):
    with pytest.raises(ValueError, match=rf"{name} needs binary variables \(2 classes\), got 4\. Use reinforce"):
        get_estimator(name).objective(torch.randn(3, 4), lambda s: s.sum(-1), 2)


@pytest.mark.parametrize("name", ["st", "reinforce", "exact"])
def test_a_loss_of_the_wrong_shape_is_named(name):
    logits = torch.randn(5, 3, 4)
    with pytest.raises(ValueError, match=r"f must return per-sample losses of shape \(num_samples, \*batch\)"):
        get_estimator(name).objective(logits, lambda s: s.sum(), 2)


def test_pathwise_objective_needs_at_least_one_sample():
    with pytest.raises(ValueError, match="st: num_samples must be an integer >= 1, got 0"):
        get_estimator("st").objective(torch.randn(3, 2), lambda s: s.sum(-1), 0)


@pytest.mark.parametrize("name", list_estimators())
def test_deferred_checks_set_a_flag_instead_of_raising_and_undeferring_restores_them(name):
    """In training the flag is read once a step (NonFiniteGuard); calling it must never read it."""
    estimator = get_estimator(name)
    flag = torch.zeros((), dtype=torch.bool)
    estimator.defer_checks(flag)
    good, bad = torch.randn(4, 1, 2), logits_with(BAD_ROWS["nan"])[:, :2].unsqueeze(1)
    estimator.objective(good, lambda s: s.sum((-1, -2)), 2)
    assert not flag
    estimator.objective(bad, lambda s: s.sum((-1, -2)), 2)
    assert flag
    estimator.objective(good, lambda s: s.sum((-1, -2)), 2)
    assert flag  # a flag is only ever raised; its reader clears it
    estimator.defer_checks(None)
    with pytest.raises(ValueError, match="no valid distribution"):
        estimator.objective(bad, lambda s: s.sum((-1, -2)), 2)
