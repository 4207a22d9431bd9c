"""The Gumbel Tree-LSTM parser: valid trees, masks, its two candidate modes, learning, its CLI."""

from __future__ import annotations

import random
from pathlib import Path

import lightning as L
import pytest
import torch

from datamodules.listops import ListOpsDataModule
from datamodules.listops.batches import BucketedBatches, encode
from datamodules.listops.expressions import OPERATORS, model_tokens, to_text, value
from datamodules.listops.files import Example, write_lines
from datamodules.listops.generator import random_expression
from zoo import parse, train
from zoo.estimators import list_estimators
from zoo.models import ListOpsParser

PATHWISE = list_estimators("pathwise")


def random_examples(count: int, seed: int = 0, max_tokens: int = 40) -> list[Example]:
    rng = random.Random(seed)
    examples = []
    while len(examples) < count:
        tree = random_expression(rng)
        tokens = tuple(model_tokens(to_text(tree)))
        if len(tokens) <= max_tokens:
            examples.append(Example(value(tree), tokens))
    return examples


def small_parser(**options) -> ListOpsParser:
    torch.manual_seed(0)
    return ListOpsParser(hidden_size=16, **options)


def test_the_leaf_cell_states_equal_a_step_by_step_lstm():
    model = small_parser().eval()
    tokens, _, _ = encode(random_examples(4))
    leaves = model.leaves(tokens)
    cell = torch.nn.LSTMCell(16, 16)
    lstm = model.leaf_lstm
    cell.load_state_dict({"weight_ih": lstm.weight_ih_l0, "weight_hh": lstm.weight_hh_l0,
                          "bias_ih": lstm.bias_ih_l0, "bias_hh": lstm.bias_hh_l0})
    state = None
    embedded = model.embedding(tokens)
    for step in range(tokens.shape[1]):
        state = cell(embedded[:, step], state)
        torch.testing.assert_close(leaves[:, step], torch.cat(state, -1))


@pytest.mark.parametrize("estimator", PATHWISE)
def test_every_merge_is_a_valid_pair_so_the_parse_is_a_binary_tree(estimator):
    """Padding is never merged: at step t a sequence of L tokens picks a pair below L − 1 − t."""
    model = small_parser(estimator=estimator, tau=0.5 if estimator != "reinmax" else 1.0).train()
    tokens, lengths, _ = encode(random_examples(32, seed=1))
    with torch.no_grad():  # make padding attractive: its candidates would win every argmax
        model.embedding.weight[0] = 50.0
    for _ in range(5):
        _, choices = model.encode(tokens, lengths)
        steps = torch.arange(choices.shape[1])
        remaining = lengths.unsqueeze(1) - 1 - steps
        active = remaining > 0
        assert ((choices >= 0) & (choices < remaining))[active].all()
        assert (choices[~active] == -1).all()


def test_the_induced_tree_brackets_every_token_once_in_order():
    model = small_parser().eval()
    text = "[MAX 2 9 [MIN 4 7 ] 0 ]"
    prediction, tree = model.parse(text)
    assert 0 <= prediction <= 9
    assert tree.replace("(", " ").replace(")", " ").split() == text.split()
    assert tree.count("(") == len(text.split()) - 1  # a binary tree over 8 leaves has 7 merges


def test_reused_candidates_compute_what_recomputed_ones_do():
    fast = small_parser().eval()
    faithful = small_parser(recompute_candidates=True).eval()
    faithful.load_state_dict(fast.state_dict())
    tokens, lengths, _ = encode(random_examples(24, seed=2))
    (fast_root, fast_choices), (root, choices) = fast.encode(tokens, lengths), faithful.encode(tokens, lengths)
    assert torch.equal(fast_choices, choices)
    torch.testing.assert_close(fast_root, root)


@pytest.mark.parametrize("estimator", PATHWISE)
@pytest.mark.parametrize("recompute_candidates", [False, True])
def test_the_merge_decisions_get_gradient(estimator, recompute_candidates):
    model = small_parser(estimator=estimator, recompute_candidates=recompute_candidates, dropout=0.0).train()
    tokens, lengths, labels = encode(random_examples(8, seed=3))
    torch.nn.functional.cross_entropy(model(tokens, lengths), labels).backward()
    assert model.query.grad is not None and model.query.grad.abs().sum() > 0
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_a_score_function_estimator_is_refused():
    with pytest.raises(ValueError, match="pathwise estimator; 'reinforce' is not one. Valid estimators: .*reinmax"):
        ListOpsParser(estimator="reinforce")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("listops")
    for split, count in (("train", 48), ("valid", 16), ("test", 16)):
        write_lines(folder / f"{split}.tsv", [(example.label, " ".join(example.tokens))
                                              for example in random_examples(count, seed=len(split))])
    return folder


@pytest.mark.parametrize("estimator", PATHWISE)
def test_fast_dev_run_with_every_pathwise_estimator(estimator, small_data, tmp_path):
    model = small_parser(estimator=estimator)
    trainer = L.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        gradient_clip_val=5.0)
    trainer.fit(model, datamodule=ListOpsDataModule(data_dir=str(small_data), batch_size=8))
    assert 0 <= float(trainer.callback_metrics["train/accuracy_epoch"]) <= 1
    assert torch.isfinite(trainer.callback_metrics["val/loss"])
    trainer.test(model, datamodule=ListOpsDataModule(data_dir=str(small_data), batch_size=8), verbose=False)
    assert 0 <= float(trainer.callback_metrics["test/accuracy"]) <= 1


class LearningRateAtCheckpointTime(L.Callback):
    """The learning rate when each validation ends, which is when its checkpoint is written."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def test_the_plateau_halves_the_learning_rate_before_the_checkpoint_of_its_fifth_validation_without_gain(
        small_data, tmp_path):
    """Patience 4, factor 0.5, one step a validation: the step is in the checkpoint that validation writes."""
    model = small_parser(lr=1e-6)  # too small to change a prediction: the accuracy never improves
    learning_rates = LearningRateAtCheckpointTime()
    trainer = L.Trainer(max_epochs=7, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, enable_checkpointing=False, default_root_dir=tmp_path,
                        callbacks=[learning_rates])
    trainer.fit(model, datamodule=ListOpsDataModule(data_dir=str(small_data), batch_size=16))
    assert learning_rates.seen == [1e-6] * 5 + [5e-7] * 2
    assert trainer.lr_scheduler_configs[0].scheduler.last_epoch == 7  # stepped once a validation, not twice
    alone = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    alone.validate(model, datamodule=ListOpsDataModule(data_dir=str(small_data), batch_size=16), verbose=False)
    assert 0 <= float(alone.callback_metrics["val/accuracy"]) <= 1  # a validation alone has nothing to step


def depth_one(count: int, rng: random.Random) -> list[Example]:
    trees = [(rng.choice(OPERATORS), [rng.randrange(10) for _ in range(rng.randint(2, 5))]) for _ in range(count)]
    return [Example(value(tree), tuple(model_tokens(to_text(tree)))) for tree in trees]


def test_a_small_parser_learns_depth_one_expressions():
    """Chance is about 0.15 (the most frequent value); MIN, MAX and most MEDs are learnt in minutes."""
    rng = random.Random(0)
    train, valid = encode(depth_one(2000, rng)), encode(depth_one(400, rng))
    L.seed_everything(0, verbose=False)
    model = ListOpsParser(hidden_size=64, dropout=0.1, lr=3e-3)
    trainer = L.Trainer(max_epochs=6, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=5.0)
    trainer.fit(model, BucketedBatches(*train, 32, shuffle=True, seed=0), BucketedBatches(*valid, 200))
    assert float(trainer.callback_metrics["val/accuracy"]) > 0.45


def test_train_py_trains_the_parser_and_zoo_parse_reads_its_checkpoint(small_data, tmp_path, capsys, monkeypatch):
    assert train.main(["--model", "listops", "--data-dir", str(small_data), "--output-dir", str(tmp_path),
                       "--max-epochs", "1", "--accelerator", "cpu", "--devices", "1",
                       "--model-arg", "hidden_size=16"]) == 0
    run = tmp_path / "listops-listops-reinmax" / "version_0"
    checkpoint = run / "checkpoints" / "last.ckpt"
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["global_step"] == 3  # 48 examples in batches of the recipe's 16
    assert saved["hyper_parameters"]["tau"] == 1.1
    capsys.readouterr()
    assert parse.main(["[MAX 2 9 [MIN 4 7 ] 0 ]", "--checkpoint", str(checkpoint)]) == 0
    shown = capsys.readouterr().out
    assert "true value: 9" in shown and "tree:" in shown
    for expression, path, message in [
        ("[MAX 2 9", checkpoint, "malformed expression: 1 operator(s) not closed by ']'"),
        ("[MAX 2 9 ]", small_data / "train.tsv", "is not a ListOps parser checkpoint"),
    ]:
        with pytest.raises(SystemExit) as refused:
            parse.main([expression, "--checkpoint", str(path)])
        assert refused.value.code == 2 and message in capsys.readouterr().err
