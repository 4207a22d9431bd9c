"""The Mixture-of-Experts transformer: sparse dispatch, dense pathwise routing, the probe and the logs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.estimators import Routing, get_estimator, list_estimators
from zoo.models import MoEClassifier
from zoo.models.moe import MixtureOfExperts, evaluating

WIDTH, EXPERTS = 8, 4
SPARSE_ROUTERS = ["switch", "sparsemixer"]


def small_moe(estimator: str = "sparsemixer", **options) -> MoEClassifier:
    torch.manual_seed(0)
    sizes = dict(width=16, hidden=16, depth=2, heads=2, num_experts=EXPERTS, patch_size=8, in_channels=3)
    return MoEClassifier(estimator=estimator, **{**sizes, **options})


def layer(capacity_factor: float | None = 1.25) -> MixtureOfExperts:
    torch.manual_seed(0)
    moe = MixtureOfExperts(WIDTH, 12, EXPERTS, capacity_factor, capacity_factor)
    with torch.no_grad():
        moe.output_scale.uniform_(0.5, 1.5)  # not the ones it starts at, so that the checks see it
    return moe


def expert_output(moe: MixtureOfExperts, expert: int, tokens: torch.Tensor) -> torch.Tensor:
    """Expert ``expert`` alone on ``tokens (n, width)``, written out."""
    experts = moe.experts
    hidden = F.gelu(tokens @ experts.w1[expert] + experts.b1[expert])
    return (hidden @ experts.w2[expert] + experts.b2[expert]) * moe.output_scale


class Recorder:
    """Records what the layer's experts were given."""

    def __init__(self, moe: MixtureOfExperts) -> None:
        self.inputs: list[torch.Tensor] = []
        moe.experts.register_forward_hook(lambda module, args, output: self.inputs.append(args[0].detach()))


@pytest.mark.parametrize("router", SPARSE_ROUTERS)
def test_a_sparse_router_gives_each_expert_only_its_own_tokens_in_fixed_size_buffers(router):
    moe, tokens = layer(capacity_factor=2.0).eval(), torch.randn(40, WIDTH)
    recorder = Recorder(moe)
    estimator = get_estimator(router).eval()
    moe(tokens, estimator)
    routing = estimator(moe.router_logits(tokens))
    (grouped,) = recorder.inputs
    capacity = math.ceil(2.0 * 40 / EXPERTS)
    assert grouped.shape == (EXPERTS, capacity, WIDTH)  # 80 rows, where dense routing computes 4 x 40
    for j in range(EXPERTS):
        members = tokens[routing.expert == j][:capacity]  # in token order
        assert torch.equal(grouped[j, : len(members)], members)
        assert (grouped[j, len(members) :] == 0).all()


@pytest.mark.parametrize("router", SPARSE_ROUTERS)
def test_in_training_every_token_is_computed_once_by_one_expert(router):
    moe, tokens = layer(capacity_factor=None), torch.randn(40, WIDTH)
    recorder = Recorder(moe)
    moe(tokens, get_estimator(router))
    rows = recorder.inputs[0].reshape(-1, WIDTH)
    rows = rows[rows.abs().sum(-1) > 0]
    assert len(rows) == 40 and torch.equal(rows.unique(dim=0), tokens.unique(dim=0))


@pytest.mark.parametrize("router", SPARSE_ROUTERS)
def test_each_kept_token_gets_its_expert_times_the_gate_and_tokens_past_capacity_get_nothing(router, monkeypatch):
    moe, tokens = layer(capacity_factor=0.5), torch.randn(24, WIDTH)
    estimator = get_estimator(router).eval()
    routing = estimator(moe.router_logits(tokens))
    out = moe(tokens, estimator)
    capacity = math.ceil(0.5 * 24 / EXPERTS)
    dropped = 0
    for j in range(EXPERTS):
        members = torch.nonzero(routing.expert == j).flatten()
        kept, past = members[:capacity], members[capacity:]
        expected = expert_output(moe, j, tokens[kept]) * routing.gate[kept].unsqueeze(-1)
        torch.testing.assert_close(out[kept], expected)
        assert (out[past] == 0).all()
        dropped += len(past)
    assert dropped > 0 and moe.statistics.dropped.item() == pytest.approx(dropped / 24)


def test_without_a_capacity_nothing_is_dropped():
    moe, tokens = layer(capacity_factor=None), torch.randn(24, WIDTH)
    moe(tokens, get_estimator("switch"))
    assert moe.statistics.dropped.item() == 0


@pytest.mark.parametrize("estimator", ["st", "reinmax", "soft"])
def test_a_dense_estimator_runs_every_expert_on_every_token_and_mixes_their_outputs(estimator):
    moe, tokens = layer(), torch.randn(10, WIDTH)
    recorder = Recorder(moe)
    torch.manual_seed(1)
    out = moe(tokens, get_estimator(estimator))
    (grouped,) = recorder.inputs
    assert grouped.shape == (EXPERTS, 10, WIDTH) and all(torch.equal(grouped[j], tokens) for j in range(EXPERTS))
    torch.manual_seed(1)
    weights = dense_weights(get_estimator(estimator), moe.router_logits(tokens))
    expected = sum(weights[:, j : j + 1] * expert_output(moe, j, tokens) for j in range(EXPERTS))
    torch.testing.assert_close(out, expected)


def dense_weights(estimator, logits: torch.Tensor) -> torch.Tensor:
    result = estimator(logits)
    return result.weights if isinstance(result, Routing) else result[0]


@pytest.mark.parametrize("estimator", ["st", "reinmax"])
def test_a_pathwise_estimator_routes_to_the_most_likely_expert_alone_at_evaluation(estimator):
    moe, tokens = layer(capacity_factor=None), torch.randn(10, WIDTH)
    recorder = Recorder(moe)
    moe.eval()
    out = moe(tokens, get_estimator(estimator).eval())
    assert recorder.inputs[0].shape == (EXPERTS, 10, WIDTH)  # capacity for all tokens, but each in one buffer
    top = moe.router_logits(tokens).argmax(-1)
    for j in range(EXPERTS):
        torch.testing.assert_close(out[top == j], expert_output(moe, j, tokens[top == j]))


@pytest.mark.parametrize("estimator", ["st", "sparsemixer", "switch"])
def test_the_router_gets_a_gradient_and_every_parameter_one_even_from_experts_without_tokens(estimator):
    moe = layer()
    with torch.no_grad():
        moe.router.weight[1:].mul_(0.0).sub_(50.0 * moe.router.weight[:1].sign())  # expert 0 takes nearly all
    tokens = torch.randn(16, WIDTH)
    moe(tokens, get_estimator(estimator)).square().sum().backward()
    assert moe.router.weight.grad.abs().sum() > 0
    assert all(parameter.grad is not None for parameter in moe.parameters())  # DDP needs no unused-parameter search


@pytest.mark.parametrize("estimator", ["switch", "st", "soft"])
def test_every_router_trains_the_same_weights_so_a_sparsemixer_model_fine_tunes_with_any(estimator):
    trained = small_moe("sparsemixer")
    other = small_moe(estimator)
    other.load_state_dict(trained.state_dict(), strict=True)
    images = torch.randn(4, 3, 32, 32)
    other.eval(), trained.eval()
    # At evaluation both route by argmax; the gate is the (unmasked) π_a for switch, π̃_a for sparsemixer, 1 for st.
    assert torch.isfinite(other(images)).all() and other(images).shape == trained(images).shape


def test_the_balance_loss_is_one_for_uniform_routing_and_grows_with_imbalance():
    moe = layer()
    uniform = torch.full((8, EXPERTS), 1 / EXPERTS)
    assert moe.measure(Routing(torch.arange(8) % EXPERTS, torch.ones(8), uniform), None).balance_loss.item() == 1
    skewed = torch.tensor([[0.7, 0.1, 0.1, 0.1]]).expand(8, EXPERTS)
    statistics = moe.measure(Routing(torch.zeros(8, dtype=torch.long), torch.ones(8), skewed), None)
    assert statistics.balance_loss.item() == pytest.approx(EXPERTS * 0.7)
    assert statistics.entropy.item() == pytest.approx(-(0.7 * math.log(0.7) + 0.3 * math.log(0.1)))


@pytest.mark.parametrize("estimator", ["st", "sparsemixer"])
def test_the_probe_loss_at_the_argmax_routing_is_the_models_evaluation_loss(estimator):
    model = small_moe(estimator, eval_capacity_factor=None)
    images, labels = torch.randn(6, 3, 32, 32), torch.randint(10, (6,))
    probe = model.gradient_probe((images, labels))
    assert probe.logits.shape == (6, 16, EXPERTS) and probe.event_ndim == 1
    with evaluating(model), torch.no_grad():
        routing = model.estimator(probe.logits) if estimator == "sparsemixer" else None
        weights = (routing.mixing_weights() if routing is not None
                   else F.one_hot(probe.logits.argmax(-1), EXPERTS).double())
        expected = F.cross_entropy(model(images), labels, reduction="none")
    torch.testing.assert_close(probe.loss(weights.unsqueeze(0).float())[0], expected)
    assert model.training  # the probe left the model as it found it


def test_moe_takes_routers_and_pathwise_estimators_and_refuses_the_score_function_ones():
    valid = MoEClassifier.card.valid_estimators()
    assert set(list_estimators("router")) | set(list_estimators("pathwise")) == set(valid)
    with pytest.raises(ValueError, match=r"takes a router or pathwise estimator; 'reinforce' is not one\. Valid"):
        small_moe("reinforce")


@pytest.mark.parametrize("options, message", [
    ({"patch_size": 5}, "image_size a multiple of patch_size"),
    ({"moe_every": 3}, "1 <= moe_every <= depth"),
    ({"capacity_factor": 0.0}, r"capacity_factor must be a number > 0, or None \(null on the command line\)"),
    ({"eval_capacity_factor": "None"}, "eval_capacity_factor must be a number > 0.*got 'None'"),
])
def test_bad_sizes_are_refused_by_name(options, message):
    with pytest.raises(ValueError, match=message):
        small_moe(**options)


def test_train_py_logs_the_routing_statistics_the_expert_load_and_the_routers_gradient_quality(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from tests.runs import small_run
    from zoo import train

    config = tmp_path / "quality.yaml"
    config.write_text("grad_quality: {num_samples: 4, probe_batch_size: 2, reference_samples: 20, "
                      "estimators: [switch, st]}\n")
    assert train.main([*small_run("moe", tmp_path / "data"), "--data", "synthetic", "--accelerator", "cpu",
                       "--devices", "1",
                       "--max-epochs", "2", "--batch-size", "16", "--grad-quality-every", "2", "--config", str(config),
                       "--output-dir", str(tmp_path), "--trainer-arg", "limit_train_batches=4",
                       "--trainer-arg", "limit_val_batches=1", "--trainer-arg", "log_every_n_steps=1",
                       "--trainer-arg", "enable_progress_bar=false"]) == 0
    (run,) = tmp_path.glob("moe-synthetic-sparsemixer/version_0")
    events = EventAccumulator(str(run), size_guidance={"images": 0, "scalars": 0}).Reload()
    assert events.Tags()["images"] == ["moe/expert_load"] and len(events.Images("moe/expert_load")) == 2
    scalars = set(events.Tags()["scalars"])
    assert {"train/balance_loss_epoch", "train/router_entropy_epoch", "train/dropped_tokens_epoch",
            "val/accuracy"} <= scalars
    for router in ("sparsemixer", "switch", "st"):
        assert len(events.Scalars(f"grad_quality/{router}/cosine")) == 4  # steps 0, 2, 4 and 6
    balance = events.Scalars("train/balance_loss_epoch")[-1].value
    assert 1.0 <= balance <= EXPERTS  # E·Σ P_j F_j lies between uniform routing (1) and one expert for all (E)
