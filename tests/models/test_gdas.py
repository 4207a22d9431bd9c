"""GDAS on the NATS-Bench topology space: sampling, gradients, the alternation and its schedule."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset

from zoo.estimators import list_estimators
from zoo.models import GDASSearch
from zoo.models.nats import EDGES, OPERATIONS, Genotype
from zoo.models.nats.network import SearchCell, TopologyNetwork

PATHWISE = list_estimators("pathwise")


def tiny_search(**options) -> GDASSearch:
    torch.manual_seed(0)
    return GDASSearch(**{"channels": 4, "cells_per_stage": 1, **options})


def batch(size: int = 4, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(size, 3, 16, 16, generator=generator), torch.randint(classes, (size,), generator=generator)


class PairedRandomBatches(IterableDataset):
    """``count`` (training half, held-out half) batch pairs of random images, as the search consumes them."""

    def __init__(self, count: int) -> None:
        self.count = count

    def __iter__(self):
        for index in range(self.count):
            yield batch(seed=2 * index), batch(seed=2 * index + 1)


def search_trainer(**options) -> L.Trainer:
    settings = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    settings.update(options)
    return L.Trainer(**settings)


def fit_search(model: GDASSearch, trainer: L.Trainer, steps: int = 2) -> None:
    trainer.fit(model, train_dataloaders=DataLoader(PairedRandomBatches(steps), batch_size=None),
                val_dataloaders=DataLoader([batch(seed=99)], batch_size=None))


# The networks.

def count_operation_calls(network: torch.nn.Module) -> dict[tuple[int, int, int], int]:
    """Calls of every operation module of every search cell, keyed (cell, edge, operation)."""
    calls: dict[tuple[int, int, int], int] = {}
    cells = [layer for layer in network.layers if isinstance(layer, SearchCell)]
    for cell_index, cell in enumerate(cells):
        for edge, operations in enumerate(cell.edges):
            for operation_index, operation in enumerate(operations):
                key = (cell_index, edge, operation_index)
                calls[key] = 0

                def count(module, inputs, output, key=key):
                    calls[key] += 1

                operation.register_forward_hook(count)
    return calls


@pytest.mark.parametrize("estimator", ["stgs", "reinmax"])
def test_a_forward_pass_samples_an_exactly_one_hot_weight_and_runs_one_operation_an_edge(estimator):
    model = tiny_search(estimator=estimator, cells_per_stage=2).train()
    calls = count_operation_calls(model.network)
    weights, chosen = model.sample()
    assert torch.equal(weights, F.one_hot(torch.tensor(chosen), len(OPERATIONS)).float())
    model.network(batch()[0], weights, chosen)
    for (cell, edge, operation), count in calls.items():
        assert count == (operation == chosen[edge]), (cell, edge, operation)


def test_the_supernet_output_is_that_of_the_sampled_architecture_alone():
    """The unsampled terms add zeros: the supernet computes the sampled network exactly."""
    model = tiny_search().train()
    weights, chosen = model.sample()
    images, _ = batch()
    fixed = TopologyNetwork(lambda width: SearchCell(width), 4, 1, affine=False)
    fixed.load_state_dict(model.network.state_dict())
    plain = F.one_hot(torch.tensor(chosen), len(OPERATIONS)).float()
    torch.testing.assert_close(model.network(images, weights, chosen), fixed(images, plain, chosen), rtol=0, atol=0)


@pytest.mark.parametrize("estimator", ["stgs", "reinmax"])
def test_every_entry_of_alpha_gets_a_nonzero_gradient(estimator):
    """Sampled or not, every operation of an edge gets a gradient, through the added zero-valued terms.

    An edge whose target node feeds only ``none`` operations is cut off from the loss
    in that draw, so the gradient is summed over a few draws.
    """
    model = tiny_search(estimator=estimator, tau=1.0).train()
    images, labels = batch(size=8)
    for _ in range(10):
        F.cross_entropy(model(images), labels).backward()
    assert model.alpha.grad is not None
    assert bool((model.alpha.grad != 0).all()), model.alpha.grad


@pytest.mark.parametrize("estimator", ["stgs", "reinmax", "st"])
def test_sampled_operation_frequencies_match_softmax_alpha(estimator):
    model = tiny_search(estimator=estimator).train()
    with torch.no_grad():
        model.alpha.copy_(torch.linspace(-1.5, 1.5, len(EDGES) * len(OPERATIONS)).reshape(len(EDGES), -1))
    draws = 4000
    torch.manual_seed(1)
    counts = torch.zeros(len(EDGES), len(OPERATIONS))
    for _ in range(draws):
        counts[torch.arange(len(EDGES)), torch.tensor(model.sample()[1])] += 1
    probabilities = model.alpha.detach().softmax(-1)
    standard_error = (probabilities * (1 - probabilities) / draws).sqrt()
    # 30 cells, each within 4.5 standard errors: a false alarm about once in 10,000 runs.
    assert bool(((counts / draws - probabilities).abs() <= 4.5 * standard_error).all())


def test_the_supernet_normalises_with_batch_statistics_only():
    """No running averages over other sampled architectures reach the evaluation of the argmax one."""
    norms = [module for module in tiny_search().modules() if isinstance(module, torch.nn.BatchNorm2d)]
    assert norms and not any(module.affine or module.track_running_stats for module in norms)


def test_evaluation_uses_the_argmax_architecture():
    model = tiny_search().eval()
    assert model.sample()[1] == Genotype.from_alpha(model.alpha).indices()


# The alternation and its schedule.

class StepSpy(L.Callback):
    """Snapshots of α and the weights after each optimizer's step."""

    def __init__(self) -> None:
        self.snapshots: list[tuple[str, torch.Tensor, dict[str, torch.Tensor]]] = []

    def on_train_start(self, trainer: L.Trainer, module: GDASSearch) -> None:
        self.initial = self.snapshot(module)
        for name, optimizer in zip(("weights", "architecture"), trainer.optimizers):
            optimizer.register_step_post_hook(
                lambda *_, name=name: self.snapshots.append((name, *self.snapshot(module))))

    @staticmethod
    def snapshot(module: GDASSearch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return module.alpha.detach().clone(), {k: v.detach().clone() for k, v in module.network.named_parameters()}


def test_the_weight_step_never_changes_alpha_and_the_alpha_step_never_changes_the_weights():
    model, spy = tiny_search(), StepSpy()
    fit_search(model, search_trainer(max_steps=4, callbacks=[spy]), steps=2)
    assert [name for name, _, _ in spy.snapshots] == ["weights", "architecture"] * 2
    alpha, weights = spy.initial
    for name, new_alpha, new_weights in spy.snapshots:
        changed = {key for key in weights if not torch.equal(weights[key], new_weights[key])}
        if name == "weights":
            assert torch.equal(new_alpha, alpha) and changed
        else:
            assert not torch.equal(new_alpha, alpha) and not changed
        alpha, weights = new_alpha, new_weights


def test_tau_falls_linearly_over_the_epochs_to_the_estimators_floor():
    seen = []

    class Record(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_index):
            seen.append(module.estimator.tau)

    model = tiny_search(estimator="reinmax")
    fit_search(model, search_trainer(max_epochs=3, callbacks=[Record()]), steps=1)
    assert seen == [10.0, 5.5, 1.0]  # ReinMax's τ must be >= 1
    assert tiny_search(estimator="stgs").tau_end == 0.1  # GDAS's own end


def test_a_temperature_the_estimator_refuses_fails_when_the_model_is_built():
    with pytest.raises(ValueError, match="reinmax: temperature tau=0.5 is out of range"):
        tiny_search(estimator="reinmax", tau_end=0.5)


def test_a_score_function_estimator_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="pathwise estimator; 'reinforce' is not one. Valid estimators: "):
        tiny_search(estimator="reinforce")


@pytest.mark.parametrize("estimator", PATHWISE)
def test_a_search_step_runs_with_every_pathwise_estimator(estimator):
    model = tiny_search(estimator=estimator, tau=1.0, tau_end=1.0)
    before = model.alpha.detach().clone()
    fit_search(model, search_trainer(fast_dev_run=True))
    assert not torch.equal(model.alpha.detach(), before)
    assert torch.isfinite(model.alpha).all()


def test_under_a_loss_scaler_the_weights_gradients_are_clipped_once_unscaled():
    """16-mixed: clipping the still-scaled gradients would shrink every weight update by the loss scale."""
    from lightning.pytorch.plugins import MixedPrecision

    model = tiny_search()
    seen = {}
    backward, clip = model.manual_backward, model.clip_gradients

    def recording_backward(loss, *args, **kwargs):
        backward(loss, *args, **kwargs)
        if "after_backward" not in seen:  # the first backward of the step is the weights'
            seen["after_backward"] = torch.nn.utils.get_total_norm(
                [p.grad for p in model.network.parameters() if p.grad is not None]
            )

    def recording_clip(optimizer, *args, **kwargs):
        seen["at_clip"] = torch.nn.utils.get_total_norm(
            [p.grad for p in model.network.parameters() if p.grad is not None]
        )
        seen["scale"] = trainer.precision_plugin.scaler.get_scale()
        clip(optimizer, *args, **kwargs)

    model.manual_backward, model.clip_gradients = recording_backward, recording_clip
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    trainer = search_trainer(max_steps=2, plugins=[MixedPrecision("16-mixed", "cpu", scaler)], limit_val_batches=0)
    fit_search(model, trainer, steps=1)
    assert seen["scale"] == 2.0**10 and torch.isfinite(seen["after_backward"])
    torch.testing.assert_close(seen["at_clip"] * seen["scale"], seen["after_backward"], rtol=1e-4, atol=0)


def test_the_search_writes_its_training_values_every_log_every_n_steps_batches():
    """A batch is two optimizer steps; Lightning writes logs by batches, and so must the model log."""
    from tests.small_models import RecordingLogger

    logger = RecordingLogger()
    trainer = search_trainer(max_steps=8, logger=logger, log_every_n_steps=2, limit_val_batches=0)
    fit_search(tiny_search(), trainer, steps=4)
    written = [step for step, metrics in logger.calls if "train/loss" in metrics]
    assert written == [1, 3] and all("train/arch_loss" in m for _, m in logger.calls if "train/loss" in m)
