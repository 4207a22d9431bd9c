"""The Bernoulli 2×200 VAE: its architecture, its prior, and what K counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoo.estimators import estimator_entry
from zoo.models import BernoulliVAE, model_card

from ..small_models import images


def test_defaults_are_the_papers_reinmax_row():
    model = BernoulliVAE()
    assert (model.hparams.latents, model.hparams.num_samples) == (200, 2)
    assert (model.hparams.optimizer, model.hparams.lr, model.estimator.tau) == ("adam", 3e-4, 1.1)
    recipe = model.card.recipe
    assert (recipe.binarize, recipe.val_size, recipe.max_epochs, recipe.max_steps) == ("dynamic", 10_000, -1, 1_000_000)
    linear_shapes = lambda net: [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)]  # noqa: E731
    assert linear_shapes(model.encoder) == [(784, 200), (200, 200), (200, 200)]
    assert linear_shapes(model.decoder) == [(200, 200), (200, 200), (200, 784)]
    slopes = {m.negative_slope for m in [*model.encoder, *model.decoder] if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.3}


def test_two_class_logits_give_sigmoid_probabilities_and_the_decoder_sees_the_bits():
    model = BernoulliVAE(latents=5, hidden_sizes=(8,))
    x = images(4)
    logits = model.encode(x)
    assert logits.shape == (4, 5, 2) and (logits[..., 0] == 0).all()
    torch.testing.assert_close(logits.softmax(-1)[..., 1], torch.sigmoid(model.encoder(x)))
    bits = torch.randint(0, 2, (4, 5)).float()
    codes = torch.stack((1 - bits, bits), dim=-1)
    torch.testing.assert_close(model.decode(codes), model.decoder(bits))


def bernoulli_kl(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return (q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log()).sum(-1)


def test_kl_to_the_fixed_prior_is_the_bernoulli_formula():
    model = BernoulliVAE(latents=6, hidden_sizes=(8,))
    assert not any("prior" in name for name, _ in model.named_parameters())
    logits = model.encode(images(3))
    q = logits.softmax(-1)[..., 1]
    torch.testing.assert_close(model.kl_to_prior(logits), bernoulli_kl(q, torch.full_like(q, 0.5)))
    torch.testing.assert_close(model.kl_to_prior(torch.zeros(2, 6, 2)), torch.zeros(2))


def test_a_learnable_prior_pairs_each_latent_with_its_own_probability():
    model = BernoulliVAE(latents=6, hidden_sizes=(8,), learnable_prior=True)
    with torch.no_grad():
        model.prior_logits[:, 1] = torch.linspace(-2.0, 2.0, 6)
    logits = model.encode(images(3))
    q = logits.softmax(-1)[..., 1]
    p = torch.sigmoid(torch.linspace(-2.0, 2.0, 6)).expand_as(q)
    torch.testing.assert_close(model.kl_to_prior(logits), bernoulli_kl(q, p))
    model.loss_terms(images(3))["neg_elbo"].backward()
    assert model.prior_logits.grad is not None and model.prior_logits.grad.abs().sum() > 0


def count_decoder_rows(model: BernoulliVAE) -> list[int]:
    """Record how many codes each decoder call evaluates."""
    rows: list[int] = []
    model.decoder.register_forward_hook(lambda module, inputs, output: rows.append(output[..., 0].numel()))
    return rows


@pytest.mark.parametrize("estimator", sorted(set(model_card("bvae").valid_estimators()) - {"exact"}))
@pytest.mark.parametrize("num_samples", [2, 4])
def test_num_samples_is_the_number_of_decoder_evaluations_per_example(estimator, num_samples):
    minimum = estimator_entry(estimator).estimator_class.min_num_samples
    num_samples = max(num_samples, minimum + minimum % 2) if estimator == "disarm" else num_samples
    model = BernoulliVAE(latents=4, hidden_sizes=(8,), estimator=estimator, num_samples=num_samples)
    rows = count_decoder_rows(model)
    batch = images(5)
    model.loss_terms(batch)["neg_elbo"].backward()
    assert sum(rows) == num_samples * len(batch)


def test_estimators_refuse_a_number_of_samples_they_cannot_use_when_the_model_is_built():
    with pytest.raises(ValueError, match="reinforce: num_samples must be an integer >= 2 .*baseline.*got 1"):
        BernoulliVAE(latents=4, hidden_sizes=(8,), estimator="reinforce", num_samples=1)
    with pytest.raises(ValueError, match="rodeo: num_samples must be an integer >= 2 .*baseline.*got 1"):
        BernoulliVAE(latents=4, hidden_sizes=(8,), estimator="rodeo", num_samples=1)
    with pytest.raises(ValueError, match="disarm: num_samples counts loss evaluations.*even; got 3"):
        BernoulliVAE(latents=4, hidden_sizes=(8,), estimator="disarm", num_samples=3)
    BernoulliVAE(latents=4, hidden_sizes=(8,), estimator="exact", num_samples=1)  # enumeration: any K
