"""GradientQuality: its reference, its statistics, DDP, and that training is untouched."""

from __future__ import annotations

import itertools
import os
import socket

import lightning as L
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from callbacks.gradient_quality import GradientQuality
from datamodules.steps import EmptyBatches
from tests.small_models import RecordingLogger, images, loader, small_vae
from zoo.estimators import get_estimator
from zoo.models import GradientProbe, PolynomialProgramming


class QuadraticToy(L.LightningModule):
    """Logits (examples, variables, classes) and a quadratic loss Dᵀ A D + bᵀ D per example."""

    def __init__(self, estimator: str, examples: int = 2, variables: int = 3, classes: int = 4) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(1)
        self.logits = nn.Parameter(torch.randn(examples, variables, classes, generator=generator))
        size = variables * classes
        self.register_buffer("quadratic", torch.randn(size, size, generator=generator))
        self.register_buffer("linear", torch.randn(size, generator=generator))
        self.estimator = get_estimator(estimator, tau=1.0)
        self.save_hyperparameters({"num_samples": 1})

    def loss(self, samples: Tensor) -> Tensor:
        flat = samples.flatten(-2)
        return torch.einsum("...i,ij,...j->...", flat, self.quadratic, flat) + flat @ self.linear

    def gradient_probe(self, batch) -> GradientProbe:
        return GradientProbe(self.logits.detach(), self.loss)


def enumerated_gradient(module: QuadraticToy) -> Tensor:
    """∇ mean_examples Σ_z p(z) f(z), by brute force over every configuration."""
    logits = module.logits.detach().double().requires_grad_()
    probs = logits.softmax(-1)
    examples, variables, classes = logits.shape
    total = logits.new_zeros(())
    for configuration in itertools.product(range(classes), repeat=variables):
        index = torch.tensor(configuration)
        one_hot = torch.nn.functional.one_hot(index, classes).double()
        weight = probs[:, torch.arange(variables), index].prod(-1)  # (examples,)
        loss = module.loss(one_hot.float().expand(examples, variables, classes)).double()
        total = total + (weight * loss).sum() / examples
    return torch.autograd.grad(total, logits)[0]


def test_the_exact_reference_equals_an_independent_enumeration():
    module = QuadraticToy("reinmax")
    callback = GradientQuality()
    reference = callback.reference(module.gradient_probe(None))
    torch.testing.assert_close(reference.view(module.logits.shape), enumerated_gradient(module), rtol=1e-5, atol=1e-6)


def test_the_polynomial_toy_uses_its_closed_form():
    module = PolynomialProgramming(variables=128)  # 2^128 configurations: only a closed form will do
    leaf = module.logits.detach().double().requires_grad_()
    expected = torch.autograd.grad(module.expected_loss(leaf), leaf)[0]
    reference = GradientQuality().reference(module.gradient_probe())
    torch.testing.assert_close(reference.view(leaf.shape), expected)


def test_a_sampled_reference_approaches_the_exact_one():
    module = QuadraticToy("st")
    exact = GradientQuality().reference(module.gradient_probe(None))
    sampled = GradientQuality(max_configurations=10, reference_samples=20_000).reference(module.gradient_probe(None))
    assert torch.nn.functional.cosine_similarity(sampled, exact, dim=0) > 0.99


def test_reinmax_is_unbiased_on_a_quadratic_loss_at_tau_one_and_st_is_not():
    torch.manual_seed(0)
    metrics = {}
    for name in ("reinmax", "st"):
        module = QuadraticToy(name)
        callback = GradientQuality(num_samples=4000, chunk_size=1000)
        metrics[name] = callback.measure(module, step=0)
    reinmax, st = metrics["reinmax"], metrics["st"]
    assert set(reinmax) == {f"grad_quality/reinmax/{s}" for s in ("cosine", "bias", "std", "sample_cosine")}
    # The Monte Carlo error of the mean is std/√4000 ≈ 0.016·std.
    assert reinmax["grad_quality/reinmax/bias"] < 0.05 * reinmax["grad_quality/reinmax/std"] + 0.01
    assert reinmax["grad_quality/reinmax/cosine"] > 0.999
    assert st["grad_quality/st/bias"] > 0.1 and st["grad_quality/st/cosine"] < 0.99


def test_extra_estimators_are_scored_on_the_same_probe():
    module = QuadraticToy("reinmax")
    callback = GradientQuality(num_samples=8, estimators=["st", "stgs"])
    callback.setup(None, module, "fit")
    metrics = callback.measure(module, step=0)
    assert {key.split("/")[1] for key in metrics} == {"reinmax", "st", "stgs"}


def test_a_given_reference_scores_as_the_computed_one():
    torch.manual_seed(0)
    module = small_vae("st")
    callback = GradientQuality(num_samples=8)
    callback.probe_batch = images(4)
    reference = callback.reference(module.gradient_probe(callback.probe_batch))
    assert callback.measure(module, step=3, reference=reference) == callback.measure(module, step=3)
    skewed = callback.measure(module, step=3, reference=2 * reference)
    assert skewed["grad_quality/st/bias"] != callback.measure(module, step=3)["grad_quality/st/bias"]


def _measure_on_rank(rank: int, world_size: int, port: int, results: dict) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    torch.manual_seed(0)
    module = small_vae("reinmax", latents=30, categories=4)  # 4^30 configurations: sampled reference
    torch.manual_seed(100 + rank)  # training noise differs per rank; the callback's must not matter
    callback = GradientQuality(num_samples=12, chunk_size=3, reference_samples=200)
    callback.probe_batch = images(4)

    def reduce(tensor: Tensor) -> Tensor:
        dist.all_reduce(tensor)
        return tensor

    results[world_size, rank] = callback.measure(module, step=5, rank=rank, world_size=world_size, reduce=reduce)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_log_what_one_process_drawing_the_same_total_logs():
    results = mp.Manager().dict()
    mp.spawn(_measure_on_rank, args=(2, free_port(), results), nprocs=2, join=True)
    mp.spawn(_measure_on_rank, args=(1, free_port(), results), nprocs=1, join=True)
    assert results[2, 0] == results[2, 1]  # every rank holds the same values
    single = results[1, 0]
    assert results[2, 0].keys() == single.keys()
    for key, value in single.items():
        assert results[2, 0][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


def test_training_is_bit_identical_with_the_callback_on_or_off(tmp_path):
    def train(callbacks: list, logger=False) -> dict:
        torch.manual_seed(0)
        model = small_vae("stgs")
        trainer = L.Trainer(accelerator="cpu", max_steps=6, logger=logger, enable_progress_bar=False,
                            enable_model_summary=False, enable_checkpointing=False,
                            default_root_dir=tmp_path, callbacks=callbacks)
        trainer.fit(model, train_dataloaders=loader(12, 3))
        return model.state_dict()

    logger = RecordingLogger()
    with_callback = train([GradientQuality(every_n_steps=2, num_samples=4, probe_batch_size=2,
                                           estimators=["st"])], logger)
    without = train([])
    for name, value in without.items():
        assert torch.equal(with_callback[name], value), name
    logged = [(step, sorted(metrics)) for step, metrics in logger.calls if any("grad_quality" in k for k in metrics)]
    assert [step for step, _ in logged] == [0, 2, 4]
    assert logged[0][1] == sorted(f"grad_quality/{e}/{s}" for e in ("stgs", "st")
                                  for s in ("cosine", "bias", "std", "sample_cosine"))


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="GradientQuality: num_samples must be an integer >= 2, got 1"):
        GradientQuality(num_samples=1)
    with pytest.raises(ValueError, match="has no gradient_probe"):
        GradientQuality().setup(None, L.LightningModule(), "fit")


def test_scored_estimators_follow_the_model_once_lightning_has_placed_it(tmp_path):
    """Lightning places the model after ``setup`` (here: float64 under 64-true; on a GPU: its device);
    a scored estimator with parameters of its own (rodeo's control variate) must follow it there."""
    model = PolynomialProgramming(variables=4, num_samples=4)
    quality = GradientQuality(every_n_steps=1, num_samples=2, estimators=["rodeo"])
    trainer = L.Trainer(accelerator="cpu", max_steps=2, precision="64-true", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                        default_root_dir=tmp_path, callbacks=[quality])
    trainer.fit(model, train_dataloaders=EmptyBatches(2))
    rodeo = quality._extra["rodeo"]
    assert {parameter.dtype for parameter in rodeo.parameters()} == {torch.float64}
    assert set(quality.last) >= {"grad_quality/rodeo/cosine", "grad_quality/reinmax/cosine"}

