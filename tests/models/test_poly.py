"""The polynomial-programming toy: its closed forms, every estimator, and learning."""

from __future__ import annotations

import itertools

import lightning as L
import pytest
import torch

from datamodules.steps import StepsDataModule
from zoo.estimators import get_estimator
from zoo.models import PolynomialProgramming, get_model_class, model_card

# Score-function estimators need two samples or more; DisARM an even number.
NUM_SAMPLES = {"exact": 1}


def enumerated_expected_loss(model: PolynomialProgramming) -> torch.Tensor:
    """``Σ_z p(z) f(z)`` over every configuration, by brute force."""
    (probs,) = model.logits.softmax(-1)  # one replica
    variables = probs.shape[0]
    total = probs.new_zeros(())
    for classes in itertools.product(range(2), repeat=variables):
        index = torch.tensor(classes)
        one_hot = torch.nn.functional.one_hot(index, 2).to(probs.dtype)
        total = total + probs[torch.arange(variables), index].prod() * model.loss(one_hot[None, None])[0, 0]
    return total


@pytest.mark.parametrize("pnorm", [1.5, 2.0, 3.0])
def test_the_closed_form_and_its_gradient_match_enumeration(pnorm):
    torch.manual_seed(0)
    model = PolynomialProgramming(variables=4, pnorm=pnorm, init_scale=1.0).double()
    closed = model.expected_loss()
    (closed_grad,) = torch.autograd.grad(closed, model.logits)
    brute = enumerated_expected_loss(model)
    (brute_grad,) = torch.autograd.grad(brute, model.logits)
    torch.testing.assert_close(closed, brute)
    torch.testing.assert_close(closed_grad, brute_grad)
    exact = get_estimator("exact").objective(model.logits, model.loss)
    (exact_grad,) = torch.autograd.grad(exact, model.logits)
    torch.testing.assert_close(exact_grad, brute_grad)


@pytest.mark.parametrize(
    "pnorm, initial, optimum", [(1.5, 0.3549, 0.3019), (2.0, 0.2525, 0.2025), (3.0, 0.1288, 0.0911)]
)
def test_the_papers_initial_and_optimal_losses(pnorm, initial, optimum):
    model = PolynomialProgramming(pnorm=pnorm)
    assert model.expected_loss().item() == pytest.approx(initial, abs=1e-3)
    assert model.optimum == pytest.approx(optimum, abs=1e-4)
    assert model.logits.shape == (1, 128, 2) and model.logits.abs().max() <= 0.01


@pytest.mark.parametrize("estimator", model_card("poly").valid_estimators())
def test_replicas_train_independently(estimator):
    """A replica's estimate depends on its own logits and noise only, at the scale of a lone run."""
    num_samples = NUM_SAMPLES.get(estimator, 2)
    model = PolynomialProgramming(variables=6, replicas=3, estimator=estimator, num_samples=num_samples, init_scale=1.0)

    def gradient() -> torch.Tensor:
        model.logits.grad = None
        torch.manual_seed(7)
        model.objective().backward()
        return model.logits.grad.clone()

    before = gradient()
    with torch.no_grad():
        model.logits[1:, :, 0] += 0.5  # shifting both logits would keep the probabilities
    after = gradient()
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    assert not torch.equal(after[1:], before[1:])
    (exact_grad,) = torch.autograd.grad(model.expected_losses()[0], model.logits)
    if estimator == "exact":
        torch.testing.assert_close(after[0], exact_grad[0])


def fit(model: PolynomialProgramming, steps: int, tmp_path) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=StepsDataModule(steps_per_epoch=10))
    return trainer


@pytest.mark.parametrize("estimator", model_card("poly").valid_estimators())
def test_every_estimator_trains_the_toy(estimator, tmp_path):
    model = PolynomialProgramming(variables=4, estimator=estimator, num_samples=NUM_SAMPLES.get(estimator, 4))
    before = model.logits.detach().clone()
    trainer = fit(model, 3, tmp_path)
    assert trainer.global_step == 3 and not torch.equal(model.logits, before)
    assert torch.isfinite(model.logits).all()


def test_reinmax_approaches_the_optimum(tmp_path):
    torch.manual_seed(0)
    model = PolynomialProgramming(variables=16, estimator="reinmax", lr=0.05)
    start = model.expected_loss().item()
    fit(model, 200, tmp_path)
    assert model.expected_loss().item() < model.optimum + 0.2 * (start - model.optimum)


def test_the_registry_and_bad_settings():
    assert get_model_class("poly") is PolynomialProgramming
    with pytest.raises(ValueError, match="pnorm > 0"):
        PolynomialProgramming(pnorm=0)
    with pytest.raises(ValueError, match="disarm: num_samples counts loss evaluations.*even; got 3"):
        PolynomialProgramming(estimator="disarm", num_samples=3)
    with pytest.raises(ValueError, match="steps_per_epoch must be a positive integer"):
        StepsDataModule(0)
