"""The routers against their definitions (the MoE spec): exact expectations over the sample and the coin.

SparseMixer's training routing is a deterministic function of its draw (the expert
and the coin), so its expected forward value and expected gradient are finite sums
over the draws; for a loss linear in the mixing weights, ``L = Σ_j w_j·z_j``, they
have closed forms from the definitions, checked here in float64 to rounding.
"""

from __future__ import annotations

import math

import pytest
import torch

from zoo.estimators import InvalidLogitsError, Routing, get_estimator, list_estimators
from zoo.estimators.routers import masked_by_jitter

# Per version: P(full step | D is not the top expert), the coin's other value, the gradient's factor.
RULES = {1: (0.5, 0.5, 2.0), 2: (0.25, 1 / 3, 1.0)}


def problem(seed: int, num_experts: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Close logits (nothing masked at ε = 0.5) and the weights of a linear loss."""
    generator = torch.Generator().manual_seed(seed)
    logits = 2.0 + 0.3 * torch.rand(num_experts, generator=generator, dtype=torch.float64)
    return logits, torch.randn(num_experts, generator=generator, dtype=torch.float64)


def softmax_row_jacobian(probs: torch.Tensor, row: int) -> torch.Tensor:
    """∂π_row/∂s = π_row·(e_row − π)."""
    return probs[row] * (torch.nn.functional.one_hot(torch.tensor(row), len(probs)).double() - probs)


def test_the_routers_are_their_own_family():
    assert list_estimators("router") == ["soft", "sparsemixer", "switch"]


@pytest.mark.parametrize("seed", range(3))
def test_the_jitter_mask_follows_its_rule_and_never_masks_the_top(seed):
    logits = 3 * torch.randn(64, 6, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    masked = masked_by_jitter(logits, 0.1) == torch.finfo(torch.float64).min
    top = logits.max(-1, keepdim=True).values
    for row, column in torch.cartesian_prod(torch.arange(64), torch.arange(6)).tolist():
        s, m = logits[row, column].item(), top[row, 0].item()
        assert masked[row, column].item() == ((m - s) / max(abs(s), m) > 0.2), (row, column)
    assert not masked.gather(-1, logits.argmax(-1, keepdim=True)).any()


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("seed", range(4))
def test_sparsemixer_matches_its_definition_in_expectation_over_the_sample_and_the_coin(version, seed):
    logits, weights = problem(seed)
    router = get_estimator("sparsemixer", version=version, jitter=0.5)
    probs = torch.softmax(logits, -1)
    top = int(probs.argmax())
    full_step_chance, other, factor = RULES[version]
    expected_value = torch.zeros_like(logits)
    expected_gradient = torch.zeros_like(logits)
    for expert in range(len(logits)):
        for full_step, chance in ((True, full_step_chance), (False, 1 - full_step_chance)):
            probability = probs[expert] * (float(full_step) if expert == top else chance)
            if probability == 0:
                continue
            leaf = logits.clone().requires_grad_()
            routing = router.routed(torch.softmax(leaf, -1), torch.tensor(expert), torch.tensor(full_step or
                                                                                                 expert == top))
            z = routing.mixing_weights()
            (z @ weights).backward()
            expected_value += probability * z.detach()
            expected_gradient += probability * leaf.grad
    # The definition: z = π_D·c·e_D with E[c | D = top] = 1, E[c | D ≠ top] = chance + (1 − chance)·other;
    # the gradient of L = w·z is factor·w_D·∂π_D/∂s whatever the coin.
    mean_coin = torch.full_like(logits, full_step_chance + (1 - full_step_chance) * other)
    mean_coin[top] = 1.0
    torch.testing.assert_close(expected_value, probs**2 * mean_coin, rtol=0, atol=1e-12)
    definition = sum(probs[d] * factor * weights[d] * softmax_row_jacobian(probs, d) for d in range(len(logits)))
    torch.testing.assert_close(expected_gradient, definition, rtol=0, atol=1e-12)


@pytest.mark.parametrize("version", [1, 2])
def test_sparsemixer_draws_the_expert_from_the_masked_softmax_and_the_coin_at_its_rate(version):
    torch.manual_seed(version)
    logits = torch.tensor([[2.0, 1.9, 1.8, 0.5]]).expand(200_000, 4)  # the last expert is masked at ε = 0.1
    router = get_estimator("sparsemixer", version=version)
    routing = router(logits)
    probs = torch.softmax(masked_by_jitter(logits[:1], 0.1), -1)[0]
    assert probs[3] == 0
    frequencies = torch.bincount(routing.expert, minlength=4).double() / len(logits)
    torch.testing.assert_close(frequencies, probs.double(), rtol=0, atol=4 * math.sqrt(0.25 / len(logits)))
    gate = probs[routing.expert]
    full_step = torch.isclose(routing.gate, gate)
    full_step_chance, other, _ = RULES[version]
    assert full_step[routing.expert == 0].all()
    away = routing.expert != 0
    assert torch.allclose(routing.gate[away & ~full_step], gate[away & ~full_step] * other)
    assert abs(full_step[away].double().mean().item() - full_step_chance) < 4 * math.sqrt(0.25 / away.sum().item())


@pytest.mark.parametrize("version", [1, 2])
def test_sparsemixer_evaluates_at_the_top_expert_with_its_gate_and_no_coin(version):
    logits, weights = problem(0)
    router = get_estimator("sparsemixer", version=version).eval()
    leaf = logits.clone().requires_grad_()
    routing = router(leaf)
    probs = torch.softmax(masked_by_jitter(logits, 0.1), -1)
    top = int(probs.argmax())
    assert routing.expert.item() == top and routing.gate.item() == pytest.approx(probs[top].item())
    routing.gate.backward()
    torch.testing.assert_close(leaf.grad, softmax_row_jacobian(probs, top), rtol=0, atol=1e-12)


def test_a_masked_expert_takes_no_gradient():
    logits = torch.tensor([3.0, 2.9, -1.0], dtype=torch.float64, requires_grad=True)
    router = get_estimator("sparsemixer")
    routing = router.routed(torch.softmax(masked_by_jitter(logits, 0.1), -1), torch.tensor(1), torch.tensor(False))
    routing.gate.backward()
    assert logits.grad[2] == 0 and logits.grad[:2].abs().min() > 0


@pytest.mark.parametrize("training", [True, False])
def test_switch_without_jitter_routes_to_the_top_expert_with_gradient_through_its_gate_only(training):
    logits, _ = problem(1)
    router = get_estimator("switch", jitter=0.0).train(training)
    leaf = logits.clone().requires_grad_()
    routing = router(leaf)
    probs = torch.softmax(logits, -1)
    top = int(probs.argmax())
    assert routing.expert.item() == top and routing.gate.item() == pytest.approx(probs[top].item())
    routing.gate.backward()
    torch.testing.assert_close(leaf.grad, softmax_row_jacobian(probs, top), rtol=0, atol=1e-12)


def test_switch_jitter_multiplies_the_logits_by_uniform_noise_in_training_only():
    # s = (1, 0.97): expert 1 wins when 0.97·u₁ > u₀ for u ~ U(0.9, 1.1), a chance computed here by quadrature.
    torch.manual_seed(0)
    logits = torch.tensor([[1.0, 0.97]]).expand(200_000, 2)
    router = get_estimator("switch", jitter=0.1)
    u1 = torch.linspace(0.9, 1.1, 200_001, dtype=torch.float64)
    chance = ((0.97 * u1 - 0.9) / 0.2).clamp(0, 1).mean().item()
    frequency = router(logits).expert.double().mean().item()
    assert abs(frequency - chance) < 4 * math.sqrt(chance * (1 - chance) / len(logits))
    assert (router.eval()(logits).expert == 0).all()


def test_the_soft_mixture_weights_every_expert_by_its_probability():
    logits, weights = problem(2)
    leaf = logits.clone().requires_grad_()
    routing = get_estimator("soft")(leaf)
    probs = torch.softmax(logits, -1)
    torch.testing.assert_close(routing.mixing_weights().detach(), probs)
    (routing.mixing_weights() @ weights).backward()
    torch.testing.assert_close(leaf.grad, sum(weights[j] * softmax_row_jacobian(probs, j) for j in range(4)))


@pytest.mark.parametrize("name", list_estimators("router"))
def test_a_router_objective_is_the_loss_at_its_mixing_weights(name):
    torch.manual_seed(0)
    logits, weights = problem(3)
    router = get_estimator(name).eval()  # deterministic: the same routing twice
    objective = router.objective(logits.expand(5, 4), lambda z: z @ weights, num_samples=3)
    assert objective.item() == pytest.approx((router(logits).mixing_weights() @ weights).item())


@pytest.mark.parametrize("name", list_estimators("router"))
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_router_routes_half_precision_logits_in_float32(name, dtype):
    routing = get_estimator(name)(torch.randn(7, 8).to(dtype))
    assert isinstance(routing, Routing) and routing.gate.dtype == routing.probs.dtype == torch.float32
    assert routing.expert.shape == (7,) and routing.expert.dtype == torch.int64


@pytest.mark.parametrize("name", list_estimators("router"))
def test_a_router_refuses_logits_without_a_distribution(name):
    with pytest.raises(InvalidLogitsError, match=f"{name}: 1 row"):
        get_estimator(name)(torch.tensor([[0.0, 1.0], [float("nan"), 0.0]]))


@pytest.mark.parametrize("options, message", [
    ({"version": 3}, "sparsemixer: version must be one of 1, 2, got 3"),
    ({"jitter": 1.0}, r"sparsemixer: jitter must be in \[0, 1\), got 1.0"),
])
def test_bad_router_options_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        get_estimator("sparsemixer", **options)

