"""The contract every registered estimator keeps, parametrised over the registry."""

from __future__ import annotations

import pytest
import torch

from zoo.estimators import PathwiseEstimator, Router, ScoreFunctionEstimator, get_estimator, list_estimators

PATHWISE = list_estimators("pathwise")
SCORE_FUNCTION = list_estimators("score-function")
ROUTERS = list_estimators("router")
INF = float("inf")


def loss_of(sample: torch.Tensor, seed: int = 0) -> torch.Tensor:
    weight = torch.randn(sample.shape, generator=torch.Generator().manual_seed(seed))
    return (sample * weight.to(sample.dtype)).sum() + (sample.sum(-1) ** 2).sum()


def test_the_families_split_the_registry_by_base_class():
    assert all(isinstance(get_estimator(name), PathwiseEstimator) for name in PATHWISE)
    assert all(isinstance(get_estimator(name), ScoreFunctionEstimator) for name in SCORE_FUNCTION)
    assert all(isinstance(get_estimator(name), Router) for name in ROUTERS)
    assert list_estimators() == sorted(PATHWISE + SCORE_FUNCTION + ROUTERS)


@pytest.mark.parametrize("name", list_estimators())
def test_every_estimator_knows_its_name(name):
    assert get_estimator(name).name == name
    assert name in repr(get_estimator(name))


@pytest.mark.parametrize("name", PATHWISE)
@pytest.mark.parametrize("shape", [(7,), (5, 3), (2, 3, 2), (4, 1, 9)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_forward_is_exactly_one_hot_and_keeps_shape_and_dtype(name, shape, dtype):
    logits = torch.randn(shape, dtype=dtype, requires_grad=True)
    sample, probs = get_estimator(name)(logits)
    assert sample.shape == probs.shape == logits.shape
    assert sample.dtype == probs.dtype == dtype
    assert set(sample.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(sample.sum(-1), torch.ones(shape[:-1], dtype=dtype))
    torch.testing.assert_close(probs, logits.float().softmax(-1).to(dtype))
    loss_of(sample).backward()
    assert logits.grad.dtype == dtype and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", PATHWISE)
def test_gradient_sums_to_zero_over_classes(name):
    logits = torch.randn(64, 5, dtype=torch.float64, requires_grad=True)
    sample, probs = get_estimator(name, tau=1.5)(logits)
    (loss_of(sample) + (probs**3).sum()).backward()
    assert logits.grad.abs().sum() > 0
    torch.testing.assert_close(logits.grad.sum(-1), torch.zeros(64, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", PATHWISE)
@pytest.mark.parametrize("num_classes", [2, 6, 40])
def test_masked_classes_are_never_sampled_and_get_zero_gradient(name, num_classes):
    logits = torch.randn(2000, num_classes)
    logits[::2, 0] = -INF  # even rows mask the first class,
    logits[1::2, -1] = -INF  # odd rows the last, next to a likely one
    logits[1::2, 0] = 3.0
    logits.requires_grad_()
    sample, probs = get_estimator(name)(logits)
    masked = torch.isinf(logits.detach())
    assert sample[masked].eq(0).all() and probs[masked].eq(0).all()
    (loss_of(sample) + probs.sum()).backward()
    assert logits.grad[masked].eq(0).all()
    assert torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("name", PATHWISE)
def test_non_contiguous_logits_give_the_same_result(name):
    base = torch.randn(6, 30, 4)
    strided = base.transpose(0, 1)  # (30, 6, 4), not contiguous
    assert not strided.is_contiguous()
    results = []
    for logits in (strided, strided.contiguous()):
        leaf = logits.detach().clone() if logits.is_contiguous() else logits.detach()
        leaf.requires_grad_()
        torch.manual_seed(3)
        sample, _ = get_estimator(name, tau=1.2)(leaf)
        loss_of(sample).backward()
        results.append((sample, leaf.grad))
    assert torch.equal(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])


@pytest.mark.parametrize("name", PATHWISE)
def test_same_seed_same_estimate_and_fresh_noise_otherwise(name):
    logits = torch.randn(500, 6)

    def run(seed):
        leaf = logits.clone().requires_grad_()
        torch.manual_seed(seed)
        sample, _ = get_estimator(name)(leaf)
        loss_of(sample).backward()
        return sample, leaf.grad

    first, again, other = run(0), run(0), run(1)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


@pytest.mark.parametrize("name", PATHWISE)
def test_bfloat16_under_autocast(name):
    layer = torch.nn.Linear(8, 3 * 4)
    inputs = torch.randn(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = layer(inputs).view(16, 3, 4)
        assert logits.dtype == torch.bfloat16
        sample, probs = get_estimator(name)(logits)
        loss = loss_of(sample) + probs.float().pow(2).sum()
    assert sample.dtype == torch.bfloat16
    assert torch.equal(sample.float().sum(-1), torch.ones(16, 3))
    loss.backward()
    assert torch.isfinite(layer.weight.grad).all() and layer.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", PATHWISE)
def test_pathwise_objective_averages_independent_single_sample_losses(name):
    logits = torch.randn(3, 4, 5, requires_grad=True)
    calls = []

    def f(samples):
        calls.append(samples.shape)
        return samples.argmax(-1).float().sum(-1)  # (K, 3)

    torch.manual_seed(0)
    value = get_estimator(name).objective(logits, f, num_samples=7)
    assert calls == [(7, 3, 4, 5)]
    torch.manual_seed(0)
    samples, _ = get_estimator(name)(logits.expand(7, 3, 4, 5))
    assert value.item() == pytest.approx(f(samples).mean().item())


@pytest.mark.parametrize("name", SCORE_FUNCTION)
def test_score_function_objective_value_is_the_mean_loss(name):
    logits = torch.randn(3, 4, 2, requires_grad=True)
    weight = torch.randn(4, 2)
    calls = []

    def f(samples):
        calls.append(samples.shape)
        return (samples * weight).sum((-1, -2))

    value = get_estimator(name).objective(logits, f, num_samples=6)
    if name == "exact":
        assert calls == [(16, 3, 4, 2)]
        expected = (logits.softmax(-1) * weight).sum((-1, -2)).mean()
        assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    else:
        assert calls == [(6, 3, 4, 2)]
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", SCORE_FUNCTION)
def test_score_function_gradients_reach_parameters_inside_f(name):
    decoder = torch.nn.Linear(4 * 2, 1)
    logits = torch.randn(5, 4, 2)
    get_estimator(name).objective(logits, lambda s: decoder(s.flatten(-2)).squeeze(-1), 4).backward()
    assert decoder.weight.grad is not None and decoder.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", SCORE_FUNCTION)
def test_score_function_masked_classes_carry_no_weight(name):
    logits = torch.randn(50, 3, 2)
    logits[:, 1, 0] = -INF
    logits.requires_grad_()
    seen = []

    def f(samples):
        seen.append(samples)
        return 1000.0 * samples[..., 1, 0] + samples[..., 1].sum(-1)

    value = get_estimator(name).objective(logits, f, 4)
    value.backward()
    if name != "exact":  # exact enumerates them, with probability zero
        assert seen[0][..., 1, 0].eq(0).all()
    assert value.item() < 1000.0 / 50
    assert logits.grad[:, 1, 0].eq(0).all() and torch.isfinite(logits.grad).all()
