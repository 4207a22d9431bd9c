"""RODEO: RLOO plus discrete-Stein control variates, trained online.

The estimate is checked against the definitions written out one example, sample
and point at a time; its mean against the exact gradient (Monte Carlo, four and a
half standard errors, fixed seeds) with control variates switched on; and its
variance, once the control variates are trained, against RLOO's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.estimators import estimator_options, get_estimator
from zoo.estimators.rodeo import RODEO, ControlNet

Z_TOLERANCE = 4.5
NETWORK_PARAMETERS = {
    "control.taylor_in.weight",
    "control.taylor_in.bias",
    "control.value_in.weight",
    "control.value_in.bias",
    "control.out.weight",
    "control.out.bias",
}
CONTROL_PARAMETERS = NETWORK_PARAMETERS | {"scalar_cv_weight", "vector_cv_weight"}


def nonlinear_loss(weight: Tensor) -> Callable[[Tensor], Tensor]:
    """A loss with interactions, differentiable in the sample: (S, *batch, D, 2) → (S, *batch)."""

    def f(samples: Tensor) -> Tensor:
        bits = samples[..., 1]
        level = (bits * weight.to(samples.dtype)).sum(-1)
        return (level - 0.7) ** 2 + torch.sin(3.0 * level) * bits[..., 0]

    return f


def switch_on(estimator: RODEO, scalar: float = 0.6, vector: float = -0.7) -> RODEO:
    """Give the control variates non-zero weights, so that they change the estimate."""
    with torch.no_grad():
        estimator.scalar_cv_weight.fill_(scalar)
        estimator.vector_cv_weight.fill_(vector)
    return estimator


def recording(f: Callable[[Tensor], Tensor], seen: list[Tensor]) -> Callable[[Tensor], Tensor]:
    def wrapped(samples: Tensor) -> Tensor:
        seen.append(samples)
        return f(samples)

    return wrapped


def network_as_written(net: ControlNet, taylor: Tensor, value: Tensor) -> Tensor:
    """``Linear(H, 2)(LeakyReLU(Linear(1, H)(t) + Linear(1, H)(v)))``, first axis (h⁰, h¹)."""
    hidden = net.taylor_in(taylor.unsqueeze(-1)) + net.value_in(value.unsqueeze(-1)).unsqueeze(-2)
    return net.out(F.leaky_relu(hidden, 0.3)).movedim(-1, 0)


def reference_estimate(
    estimator: RODEO, logits: Tensor, f: Callable[[Tensor], Tensor], samples: Tensor
) -> Tensor:
    """``ĝ_η`` per example ``(N, D)`` from the definitions, with loops everywhere.

    ``logits`` is ``(N, D, 2)`` and ``samples`` ``(K, N, D, 2)``. Differentiable in
    the control parameters only.
    """
    leaf = samples.clone().requires_grad_()
    losses = f(leaf)
    (grad,) = torch.autograd.grad(losses.sum(), leaf)
    losses, slopes, bits = losses.detach(), grad[..., 1] - grad[..., 0], samples[..., 1]
    probs = torch.sigmoid(logits[..., 1] - logits[..., 0])
    num_samples, num_examples, num_variables = bits.shape
    net, alpha, beta = estimator.control, estimator.scalar_cv_weight, estimator.vector_cv_weight

    def stein(u: Callable[[Tensor], Tensor], b: Tensor, p: Tensor) -> Tensor:
        """The Gibbs Stein operator: (1/D) Σ_i q(¬b_i) (u(b with bit i flipped) − u(b))."""
        total = 0.0
        for i in range(num_variables):
            flipped = b.clone()
            flipped[i] = 1.0 - b[i]
            total = total + (p[i] if b[i] == 0 else 1.0 - p[i]) * (u(flipped) - u(b))
        return total / num_variables

    estimates = []
    for n in range(num_examples):
        p = probs[n]
        scalar_cvs, vector_cvs = [], []
        for k in range(num_samples):

            def h(y: Tensor, k: int = k, n: int = n) -> Tensor:  # h_k(y): the mean over the other samples
                outputs = [
                    network_as_written(net, slopes[j, n] @ (y - bits[j, n]), losses[j, n])
                    for j in range(num_samples)
                    if j != k
                ]
                return torch.stack(outputs).mean(0)

            scalar_cvs.append(stein(lambda y: h(y)[0], bits[k, n], p))
            vector_cvs.append(stein(lambda y, p=p: h(y)[1] * (y - p), bits[k, n], p))
        total = 0.0
        for k in range(num_samples):
            others = [j for j in range(num_samples) if j != k]
            baseline = sum(losses[j, n] + alpha * scalar_cvs[j] for j in others) / len(others)
            total = total + (losses[k, n] - baseline) * (bits[k, n] - p) + beta * vector_cvs[k]
        estimates.append(total / num_samples)
    return torch.stack(estimates)


def test_registered_with_its_options_and_learnable_parts():
    assert estimator_options("rodeo") == {"hidden_size": 100, "validate_args": True}
    estimator = get_estimator("rodeo", hidden_size=8)
    assert {name for name, _ in estimator.named_parameters()} == CONTROL_PARAMETERS
    assert set(estimator.state_dict()) == CONTROL_PARAMETERS
    assert estimator.scalar_cv_weight.item() == estimator.vector_cv_weight.item() == 0.0
    assert "hidden_size=8" in repr(estimator)


@pytest.mark.parametrize("hidden_size", [0, -2, 2.5])
def test_hidden_size_must_be_a_positive_integer(hidden_size):
    with pytest.raises(ValueError, match="rodeo: hidden_size must be an integer >= 1"):
        get_estimator("rodeo", hidden_size=hidden_size)


def test_a_loss_of_the_wrong_shape_is_named():
    message = r"rodeo: f must return per-sample losses of shape \(num_samples, \*batch\)"
    with pytest.raises(ValueError, match=message):
        get_estimator("rodeo").objective(torch.randn(5, 3, 2), lambda s: s.sum(), 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_control_net_evaluates_the_network_as_written(dtype):
    """The sorted-kinks evaluation equals the plain network, in value and gradient."""
    torch.manual_seed(0)
    net = ControlNet(12)
    with torch.no_grad():  # units with a zero slope are constant in t, on either side of 0
        net.taylor_in.weight[:3] = torch.tensor([[0.0], [-0.0], [0.0]])
        net.value_in.weight[:3] = 0.0
        net.value_in.bias[:3] = torch.tensor([1.0, 2.0, -0.5]) - net.taylor_in.bias[:3]
    taylor = torch.randn(3, 4, 9, dtype=dtype) * 3
    value = torch.randn(3, 4, dtype=dtype)
    value[0, 0] = 0.0  # the first points of this pair lie exactly on kinks
    with torch.no_grad():
        kinks = -(net.taylor_in.bias + net.value_in.bias) / net.taylor_in.weight[:, 0]
    taylor[0, 0, :4] = kinks[3:7]
    plain_net = copy.deepcopy(net).double()  # float32 parameters, computed in dtype
    fast, plain = net(taylor, value), network_as_written(plain_net, taylor.double(), value.double())
    assert fast.shape == (2, 3, 4, 9) and fast.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(fast, plain.to(dtype), rtol=0, atol=tolerance)
    weight = torch.randn(fast.shape, dtype=torch.float64)
    weight[:, 0, 0, :4] = 0.0  # at a kink any slope between the two sides is right
    fast_grads = torch.autograd.grad((fast * weight).sum(), list(net.parameters()))
    plain_grads = torch.autograd.grad((plain * weight).sum(), list(plain_net.parameters()))
    for fast_grad, plain_grad in zip(fast_grads, plain_grads):
        torch.testing.assert_close(fast_grad, plain_grad.float(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("num_samples", [2, 3])
def test_untrained_rodeo_is_rloo_for_the_same_samples(num_samples):
    logits = torch.randn(6, 5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    f = nonlinear_loss(torch.linspace(-1.0, 1.5, 5))
    results = []
    for name in ("reinforce", "rodeo"):
        estimator, seen, leaf = get_estimator(name), [], logits.clone().requires_grad_()
        torch.manual_seed(1)  # after construction: the network's initialisation draws too
        estimator.objective(leaf, recording(f, seen), num_samples).backward()
        results.append((seen[0].detach(), leaf.grad))
    (rloo_samples, rloo_grad), (rodeo_samples, rodeo_grad) = results
    assert torch.equal(rloo_samples, rodeo_samples)
    assert rodeo_grad.abs().max() > 0.01
    torch.testing.assert_close(rodeo_grad, rloo_grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("num_samples", [2, 3])
def test_estimate_and_its_training_gradient_match_the_definitions(num_samples):
    """The logits get exactly ĝ/N, so the variance term leaks nothing into them; the
    control parameters get the gradient of mean(ĝ²)."""
    torch.manual_seed(0)
    estimator = switch_on(get_estimator("rodeo", hidden_size=6)).double()
    logits = torch.randn(2, 3, 2, dtype=torch.float64)
    f = nonlinear_loss(torch.tensor([0.8, -1.1, 0.6]))
    seen, leaf = [], logits.clone().requires_grad_()
    estimator.objective(leaf, recording(f, seen), num_samples).backward()
    expected = reference_estimate(estimator, logits, f, seen[0].detach())
    torch.testing.assert_close(leaf.grad[..., 1], expected.detach() / 2, rtol=0, atol=1e-12)
    torch.testing.assert_close(leaf.grad[..., 0], -expected.detach() / 2, rtol=0, atol=1e-12)
    parameters = list(estimator.parameters())
    expected_grads = torch.autograd.grad(expected.square().mean(), parameters)
    for parameter, expected_grad in zip(parameters, expected_grads):
        assert expected_grad.abs().max() > 0
        torch.testing.assert_close(parameter.grad, expected_grad, rtol=1e-9, atol=1e-12)


def test_control_variates_train_from_zero():
    """At α = β = 0 the network has no effect yet, so only α and β get a gradient."""
    estimator = get_estimator("rodeo", hidden_size=8)
    logits = torch.randn(20, 5, 2, requires_grad=True)
    estimator.objective(logits, nonlinear_loss(torch.linspace(-1.0, 1.5, 5)), 2).backward()
    grads = {name: parameter.grad for name, parameter in estimator.named_parameters()}
    assert grads["scalar_cv_weight"] != 0 and grads["vector_cv_weight"] != 0
    assert all(grads[name].eq(0).all() for name in NETWORK_PARAMETERS)


def per_example_estimates(
    estimator: RODEO, logits: Tensor, f: Callable[[Tensor], Tensor], rows: int, num_samples: int
) -> Tensor:
    """``rows`` independent estimates of each example's ∇η E[f], ``(rows, *logits.shape[:-1])``.

    The objective averages over examples, so each example's gradient is scaled back up.
    """
    leaf = logits.expand(rows, *logits.shape).clone().requires_grad_()
    estimator.objective(leaf, f, num_samples).backward()
    return leaf.grad[..., 1] * leaf.shape[:-2].numel()


def train_control_variates(
    estimator: RODEO,
    logits: Tensor,
    f: Callable[[Tensor], Tensor],
    num_samples: int,
    steps: int,
    rows: int,
) -> RODEO:
    """Adam on the objective's gradient for the control parameters alone."""
    optimiser = torch.optim.Adam(estimator.parameters(), lr=1e-2)
    for _ in range(steps):
        optimiser.zero_grad()
        per_example_estimates(estimator, logits, f, rows, num_samples)
        optimiser.step()
    return estimator


@pytest.mark.parametrize("num_samples", [2, 3])
@pytest.mark.parametrize("control", ["random", "trained"])
def test_unbiased_with_the_control_variates_on(control, num_samples):
    """A trained network would learn to exploit any dependence of h_k on b_k."""
    torch.manual_seed(0)
    logits = torch.tensor(
        [
            [[0.0, 0.7], [0.2, -0.9], [0.0, 0.1], [0.5, 0.5]],
            [[0.3, -0.4], [0.0, 1.2], [-0.5, 0.0], [0.1, 0.6]],
            [[0.0, 0.0], [1.0, 0.0], [0.0, -0.3], [0.2, 0.8]],
        ]
    )
    weight = torch.tensor([[1.0, -0.5, 0.8, 0.3], [-1.2, 0.4, 0.9, 1.1], [0.5, 0.5, -0.7, 1.5]])
    f = nonlinear_loss(weight)
    estimator = get_estimator("rodeo", hidden_size=8)
    if control == "random":
        switch_on(estimator)
    else:
        train_control_variates(estimator, logits, f, num_samples, steps=100, rows=64)
        assert estimator.vector_cv_weight.abs() > 0.1
    estimates = per_example_estimates(estimator, logits, f, 20_000, num_samples).double()
    exact = logits.double().requires_grad_()
    get_estimator("exact").objective(exact, f).backward()
    truth = exact.grad[..., 1] * len(logits)
    standard_error = estimates.std(0) / len(estimates) ** 0.5
    z = (estimates.mean(0) - truth).abs() / standard_error
    assert z.max() < Z_TOLERANCE, f"mean is {z.max():.1f} standard errors from the exact gradient"


@pytest.mark.parametrize("num_samples", [2, 3])
def test_trained_control_variates_reduce_the_variance(num_samples):
    torch.manual_seed(0)
    logits = torch.stack((torch.zeros(8), torch.linspace(-1.5, 1.5, 8)), dim=-1)
    f = nonlinear_loss(torch.randn(8))
    estimator = get_estimator("rodeo", hidden_size=16)
    train_control_variates(estimator, logits.unsqueeze(0), f, num_samples, steps=200, rows=128)
    torch.manual_seed(1)
    rodeo = per_example_estimates(estimator, logits, f, 20_000, num_samples)
    torch.manual_seed(1)
    rloo = per_example_estimates(get_estimator("reinforce"), logits, f, 20_000, num_samples)
    ratio = rodeo.var(0).sum() / rloo.var(0).sum()
    assert ratio < 0.7, f"RODEO's variance is {ratio:.2f} of RLOO's"


def test_value_is_the_mean_loss_and_f_is_called_once_with_every_sample():
    estimator = switch_on(get_estimator("rodeo"))
    logits = torch.randn(7, 5, 2, requires_grad=True)
    f = nonlinear_loss(torch.linspace(-1.0, 1.5, 5))
    seen = []
    value = estimator.objective(logits, recording(f, seen), 3)
    assert [samples.shape for samples in seen] == [(3, 7, 5, 2)]
    assert value.item() == pytest.approx(f(seen[0].detach()).mean().item(), rel=1e-6)


def test_parameters_inside_f_get_the_gradient_of_the_mean_loss():
    decoder = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
    logits = torch.randn(8, 5, 2, requires_grad=True)
    seen = []

    def f(samples):
        seen.append(samples.detach())
        return decoder(samples.flatten(-2)).squeeze(-1)

    switch_on(get_estimator("rodeo")).objective(logits, f, 3).backward()
    got = [parameter.grad.clone() for parameter in decoder.parameters()]
    expected = torch.autograd.grad(f(seen[0]).mean(), list(decoder.parameters()))
    for got_grad, expected_grad in zip(got, expected):
        torch.testing.assert_close(got_grad, expected_grad)


def test_without_autograd_only_the_mean_loss_is_computed():
    estimator = switch_on(get_estimator("rodeo"))
    logits = torch.randn(7, 5, 2)
    f = nonlinear_loss(torch.linspace(-1.0, 1.5, 5))
    seen = []
    torch.manual_seed(3)
    training_value = estimator.objective(logits.clone().requires_grad_(), f, 2)
    torch.manual_seed(3)
    with torch.no_grad():
        value = estimator.eval().objective(logits, recording(f, seen), 2)
    assert len(seen) == 1 and not seen[0].requires_grad
    assert not value.requires_grad
    assert value.item() == pytest.approx(training_value.item())


@pytest.mark.parametrize("detached_input", [False, True])
def test_a_loss_with_no_gradient_in_its_input_still_works(detached_input):
    """Zero slopes: the control variates see only the other samples' losses."""
    decoder = torch.nn.Linear(10, 1)
    logits = torch.randn(8, 5, 2, requires_grad=True)

    def f(samples):
        if detached_input:  # f has parameters, but no gradient reaches the samples
            return decoder(samples.detach().flatten(-2)).squeeze(-1) ** 2
        return samples.argmax(-1).float().sum(-1) ** 2  # no gradient at all

    estimator = switch_on(get_estimator("rodeo"))
    value = estimator.objective(logits, f, 3)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    assert estimator.control.out.weight.grad.abs().sum() > 0


def test_bfloat16_logits_under_autocast():
    layer = torch.nn.Linear(6, 4 * 2)
    inputs = torch.randn(16, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(inputs).view(16, 4, 2)
        assert logits.dtype == torch.bfloat16
        estimator = switch_on(get_estimator("rodeo"))
        value = estimator.objective(logits, nonlinear_loss(torch.ones(4)), 2)
    value.backward()
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0
