"""Both VAEs with every registered estimator, and the categorical VAE's specifics."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch

from zoo.models import BernoulliVAE, CategoricalVAE, get_model_class, list_models, model_card
from zoo.models._metrics import WeightedMeans

from ..small_models import INPUT_SIZE, VAES, RecordingLogger, images, loader, quiet_trainer, small_vae


def test_the_registry_knows_both_vaes():
    assert {"vae", "bvae"} <= set(list_models())
    assert get_model_class("vae") is CategoricalVAE and get_model_class("bvae") is BernoulliVAE
    with pytest.raises(ValueError, match="unknown model 'vea'; valid models: .*vae"):
        get_model_class("vea")


@pytest.mark.parametrize("model_name", VAES)
@pytest.mark.parametrize("estimator", model_card("vae").valid_estimators())  # bvae accepts the same
def test_every_estimator_trains_every_parameter(estimator, model_name):
    model = small_vae(estimator, model_name)
    terms = model.loss_terms(images())
    assert set(terms) == {"neg_elbo", "reconstruction", "kl"}
    assert all(value.dim() == 0 and torch.isfinite(value) for value in terms.values())
    terms["neg_elbo"].backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        # RODEO's control network starts switched off (α = β = 0): a zero gradient
        # until the first step moves α and β.
        if not name.startswith("estimator.control."):
            assert parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("model_name", VAES)
@pytest.mark.parametrize("estimator", model_card("vae").valid_estimators())  # bvae accepts the same
def test_fast_dev_run_with_every_estimator(estimator, model_name, tmp_path):
    model = small_vae(estimator, model_name)
    trainer = quiet_trainer(tmp_path, fast_dev_run=True)
    trainer.fit(model, train_dataloaders=loader(10, 5), val_dataloaders=loader(10, 5))
    assert trainer.state.finished and trainer.global_step == 1


def test_kl_is_zero_at_the_uniform_posterior_and_matches_the_formula():
    model = small_vae("reinmax")
    uniform = torch.zeros(2, 3, 4)
    torch.testing.assert_close(model.kl_to_prior(uniform), torch.zeros(2), atol=1e-6, rtol=0)
    logits = torch.randn(2, 3, 4)
    q = logits.softmax(-1)
    expected = (q * (q.log() - math.log(1 / 4))).sum((-1, -2))
    torch.testing.assert_close(model.kl_to_prior(logits), expected)


def test_neg_elbo_is_reconstruction_plus_kl():
    torch.manual_seed(0)
    model = small_vae("st")
    terms = model.loss_terms(images())
    torch.testing.assert_close(terms["neg_elbo"], terms["reconstruction"] + terms["kl"])


@pytest.mark.parametrize("model_name", VAES)
def test_reconstructions_and_prior_samples_are_pixel_probabilities(model_name):
    model = small_vae("reinmax", model_name)
    for pixels in (model.reconstruct(images(3)), model.generate(5)):
        assert pixels.shape[-1] == INPUT_SIZE and ((pixels >= 0) & (pixels <= 1)).all()


def test_hyperparameters_are_plain_values_and_reload_with_weights_only(tmp_path):
    model = small_vae("grmck", estimator_options={"num_gumbel_samples": 7}, tau=0.7)
    trainer = quiet_trainer(tmp_path, max_steps=1, enable_checkpointing=False)
    trainer.fit(model, train_dataloaders=loader(4, 4))
    path = tmp_path / "vae.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # nothing but plain values inside
    assert checkpoint["hyper_parameters"]["hidden_sizes"] == [16, 8]
    restored = CategoricalVAE.load_from_checkpoint(path, weights_only=True)
    assert restored.estimator.name == "grmck" and restored.estimator.num_gumbel_samples == 7
    assert restored.estimator.tau == 0.7
    for name, value in model.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[name], value)


def test_tau_reaches_only_estimators_that_have_one():
    assert small_vae("reinmax", tau=1.5).estimator.tau == 1.5
    small_vae("reinforce", tau=1.5)  # no temperature: tau is not passed on


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="reinmax: temperature tau=0.5 is out of range"):
        small_vae("reinmax", tau=0.5)
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'; valid optimizers: adam, adamw, radam, sgd"):
        small_vae("st", optimizer="lbfgs").configure_optimizers()
    with pytest.raises(ValueError, match="categories >= 2"):
        small_vae("st", categories=1)


def test_step_values_reach_the_logger_every_log_every_n_steps(tmp_path):
    logger = RecordingLogger()
    trainer = L.Trainer(accelerator="cpu", logger=logger, log_every_n_steps=2, max_steps=6,
                        enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=False, default_root_dir=tmp_path)
    trainer.fit(small_vae("st"), train_dataloaders=loader(12, 2))
    step_calls = [(step, metrics) for step, metrics in logger.calls if "train/neg_elbo" in metrics]
    assert [step for step, _ in step_calls] == [1, 3, 5]
    assert all({"train/reconstruction", "train/kl"} <= set(metrics) for _, metrics in step_calls)
    epoch_calls = [metrics for _, metrics in logger.calls if "train/neg_elbo_epoch" in metrics]
    assert len(epoch_calls) == 1 and {"train/kl_epoch", "train/reconstruction_epoch"} <= set(epoch_calls[0])


def test_epoch_means_are_weighted_by_batch_size():
    means = WeightedMeans(["a", "b"])
    means.update(torch.tensor([1.0, 10.0]), 3)
    means.update(torch.tensor([5.0, 20.0]), 1)
    result = means.compute()
    torch.testing.assert_close(result["a"], torch.tensor(2.0))
    torch.testing.assert_close(result["b"], torch.tensor(12.5))
    means.reset()
    means.update(torch.tensor([4.0, 4.0]), 2)
    torch.testing.assert_close(means.compute()["a"], torch.tensor(4.0))
