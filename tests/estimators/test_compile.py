"""Every estimator under ``torch.compile``: captured whole where it declares it can be, with its default checks.

The graphs are built with the ``aot_eager`` backend, which traces the forward and
backward graphs as inductor receives them but runs them with torch's own kernels,
so a compiled estimate can be compared with the eager one drawn from the same seed.
"""

from __future__ import annotations

import pytest
import torch

from tests.estimators.test_monte_carlo import assert_means_agree
from zoo.estimators import InvalidLogitsError, get_estimator, list_estimators

#: GR-MCK's K draws come from a generator of its own eagerly, from the global one when compiled.
SAME_DRAWS_COMPILED = [name for name in list_estimators() if name != "grmck"]


def loss_function(name: str, num_classes: int):
    """A loss of the estimator's sample (its objective for the score-function family), its routing for routers."""
    estimator = get_estimator(name)
    weight = torch.linspace(-1.0, 2.0, 6 * 3 * num_classes).view(6, 3, num_classes)
    if estimator.family == "pathwise":
        def loss(logits):
            sample, probs = estimator(logits)
            return (sample * weight).sum() + (probs**2).sum()
    elif estimator.family == "score-function":
        def loss(logits):
            return estimator.objective(logits, lambda codes: (codes * weight).sum((-1, -2)) ** 2, 4)
    else:
        def loss(logits):
            routing = estimator(logits.flatten(0, 1))
            return (routing.gate * weight.flatten(0, 1)[:, 0]).sum() + (routing.probs**2).sum()
    return estimator, loss


def value_and_gradient(loss, seed: int, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    logits = torch.randn(6, 3, num_classes, requires_grad=True)
    value = loss(logits)
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize("name", SAME_DRAWS_COMPILED)
def test_a_compiled_estimator_gives_the_eager_estimate_with_its_default_checks(name):
    torch._dynamo.reset()
    estimator, loss = loss_function(name, num_classes=2)
    assert estimator.validate_args
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=estimator.graph_break is None)
    for seed in (0, 1):  # the second call runs the compiled graph without compiling
        expected = value_and_gradient(loss, seed, 2)
        got = value_and_gradient(compiled, seed, 2)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_only_rodeo_declares_a_graph_break():
    assert [name for name in list_estimators() if get_estimator(name).graph_break] == ["rodeo"]


def test_compiled_grmck_has_the_mean_and_variance_of_eager_grmck():
    torch._dynamo.reset()
    torch.manual_seed(0)
    rows, weight = 20_000, torch.tensor([0.4, -1.2, 2.0, 0.1], dtype=torch.float64)
    logits = torch.tensor([1.0, -0.5, 0.3, 0.0], dtype=torch.float64).expand(rows, 4)
    estimator = get_estimator("grmck", num_gumbel_samples=20)

    def gradients(draw):
        leaf = logits.clone().requires_grad_()
        (draw(leaf) * weight).sum().backward()
        return leaf.grad

    eager = gradients(lambda leaf: estimator(leaf)[0])
    compiled = gradients(torch.compile(lambda leaf: estimator(leaf)[0], backend="aot_eager", fullgraph=True))
    assert_means_agree(compiled, eager)
    torch.testing.assert_close(compiled.var(0), eager.var(0), rtol=0.1, atol=1e-6)


@pytest.mark.parametrize("name", ["reinmax", "reinforce"])
def test_bad_logits_raise_eagerly_and_set_the_deferred_flag_when_compiled(name):
    torch._dynamo.reset()
    estimator, loss = loss_function(name, num_classes=4)
    logits = torch.zeros(6, 3, 4)
    logits[2, 1, 0] = float("nan")
    with pytest.raises(InvalidLogitsError):
        loss(logits)
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    compiled(logits)  # a compiled graph cannot raise on a value: without a flag the check is skipped
    flag = torch.zeros((), dtype=torch.bool)
    estimator.defer_checks(flag)
    compiled(torch.zeros(6, 3, 4))
    assert not flag
    compiled(logits)
    assert flag
