"""The Gumbel Tree-LSTM (Choi et al. 2018) for ListOps: a parser learnt from the answer alone.

A leaf LSTM reads the tokens; then, while more than one node is left, every
adjacent pair of nodes gets a candidate parent from a binary Tree-LSTM cell, the
candidates are scored against a learnt query, and the estimator picks one pair to
merge (argmax at evaluation). The root's state predicts the value. The merge
decision is the discrete latent variable whose gradient the estimator supplies.

Two implementation choices keep it cheap without changing what it computes:

* the leaf LSTM is one ``nn.LSTM`` call; its per-token cell states, which
  ``nn.LSTM`` does not return, are rebuilt from its outputs by the cell recurrence;
* after a merge only the two candidates that touch the new node are new: the
  others are reused, so a sequence of T tokens costs O(T) compositions rather
  than O(T²). ``recompute_candidates=True`` recomputes all of them from the new
  nodes at every step, as the authors' code does. The forward pass is the same
  either way; the straight-through gradient with respect to a merge decision flows
  into the reused candidates instead of through their recomputation.

Run ``python -m zoo.parse "[MAX 2 9 [MIN 4 7 ] 0 ]" --checkpoint RUN/checkpoints/last.ckpt``
to see the value and the tree a trained parser gives.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from datamodules.listops import expressions
from datamodules.listops.expressions import TOKEN_IDS, VOCABULARY, model_tokens

from ._building import build_estimator, make_optimizer
from ._classification import Classifier
from ._compiling import PartCompiler
from ._registry import Recipe, register_model


def mask_scores(scores: Tensor, valid: Tensor) -> Tensor:
    """``scores`` with the pairs that are not ``valid`` set to the lowest value of their dtype.

    A masked pair gets probability zero, yet a finite score, because a finished
    sequence's row is masked throughout and a row of −inf has no softmax. The lowest
    value of the scores' own dtype keeps it representable under float16 autocast.
    """
    return scores.masked_fill(~valid, torch.finfo(scores.dtype).min)


class BinaryTreeLSTMCell(nn.Module):
    """A parent state from two children; a state is ``[h, c]`` on the last axis (size 2H).

    One linear map gives the gates i, f_left, f_right, u, o; the forget gates get a
    bias of +1, so that children are remembered at the start of training.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.gates = nn.Linear(2 * hidden_size, 5 * hidden_size)

    def forward(self, left: Tensor, right: Tensor) -> Tensor:
        size = self.hidden_size
        gates = self.gates(torch.cat((left[..., :size], right[..., :size]), -1))
        i, f_left, f_right, u, o = gates.chunk(5, -1)
        c = (left[..., size:] * torch.sigmoid(f_left + 1) + right[..., size:] * torch.sigmoid(f_right + 1)
             + torch.sigmoid(i) * torch.tanh(u))
        return torch.cat((torch.sigmoid(o) * torch.tanh(c), c), -1)


@register_model("listops", summary="the Gumbel Tree-LSTM parser of ListOps expressions",
                data_family="listops", metric="accuracy", mode="max", estimator_families=("pathwise",),
                recipe=Recipe(data="listops", max_epochs=20, batch_size=16, gradient_clip_val=5.0),
                small={"model_options": {"hidden_size": 8}},
                host_reads_per_batch=2)  # the batch's longest expression, which sets how many merges it takes
class ListOpsParser(Classifier):
    """Classify a ListOps expression's value (10 classes) through a latent binary tree.

    Defaults are the paper's: 300-d embeddings and states, dropout 0.5, ReinMax with
    τ 1.1, RAdam lr 7e-4 with the learning rate halved when the validation
    accuracy has not improved for 4 epochs (batch 16, 20 epochs and gradient
    clipping at 5 are in :attr:`recipe`). Any pathwise estimator can decide the
    merges. The model reads any length; the paper's < 100-token filter is the data's.
    """

    def __init__(
        self,
        hidden_size: int = 300,
        dropout: float = 0.5,
        estimator: str = "reinmax",
        tau: float = 1.1,
        estimator_options: dict[str, Any] | None = None,
        optimizer: str = "radam",
        lr: float = 7e-4,
        recompute_candidates: bool = False,
        num_classes: int = 10,
    ) -> None:
        super().__init__(num_classes)
        self.save_hyperparameters()
        self.estimator = build_estimator(self.card, estimator, tau, estimator_options)
        self.embedding = nn.Embedding(len(VOCABULARY), hidden_size, padding_idx=TOKEN_IDS[VOCABULARY[0]])
        self.leaf_lstm = nn.LSTM(hidden_size, hidden_size, batch_first=True)
        self.cell = BinaryTreeLSTMCell(hidden_size)
        self.query = nn.Parameter(torch.randn(hidden_size) * 0.01)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(hidden_size, hidden_size), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden_size, num_classes),
        )
        self.dropout = nn.Dropout(dropout)

    def leaves(self, tokens: Tensor) -> Tensor:
        """Leaf states ``(B, T, 2H)`` from one ``nn.LSTM`` call.

        The cell states follow from the outputs: the gates at token t depend on the
        token and on h_{t-1}, so they are computed for all tokens at once and only
        the cheap recurrence ``c_t = f_t c_{t−1} + i_t g_t`` is a loop.
        """
        inputs = self.dropout(self.embedding(tokens))
        hidden, _ = self.leaf_lstm(inputs)
        previous = F.pad(hidden, (0, 0, 1, 0))[:, :-1]
        lstm = self.leaf_lstm
        gates = F.linear(inputs, lstm.weight_ih_l0, lstm.bias_ih_l0) + F.linear(
            previous, lstm.weight_hh_l0, lstm.bias_hh_l0
        )
        i, f, g, _ = gates.chunk(4, -1)
        update = torch.sigmoid(i) * torch.tanh(g)
        forget = torch.sigmoid(f)
        cells = [update[:, 0]]
        for step in range(1, tokens.shape[1]):
            cells.append(forget[:, step] * cells[-1] + update[:, step])
        return torch.cat((hidden, torch.stack(cells, 1)), -1)

    def encode(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """The root state ``(B, 2H)`` and the pair merged at each step ``(B, T − 1)`` (−1 once done)."""
        nodes = self.leaves(tokens)
        candidates = self.cell(nodes[:, :-1], nodes[:, 1:])
        batch = torch.arange(len(tokens), device=tokens.device)
        choices = []
        for step in range(tokens.shape[1] - 1):
            nodes, candidates, chosen = self.merge(nodes, candidates, lengths - 1 - step, batch)
            choices.append(chosen)
        choices_tensor = torch.stack(choices, 1) if choices else tokens.new_zeros(len(tokens), 0)
        return nodes[:, 0], choices_tensor

    def compile_parts(self, compile: PartCompiler) -> None:
        """``--compile``: one merge, for any batch and number of pairs (dynamic shapes).

        The loop over merges stays in Python: it runs as many times as the batch's
        longest expression has tokens, so a graph of the whole parse would be compiled
        again for every length.
        """
        self.merge = compile(self.merge, dynamic=True)

    def merge(self, nodes: Tensor, candidates: Tensor, remaining: Tensor,
              batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One merge in each sequence with ``remaining`` pairs still to merge: the new nodes, the next step's
        candidates and the pair merged (−1 in a finished sequence). ``batch`` is ``arange(B)``."""
        pairs = candidates.shape[1]
        valid = torch.arange(pairs, device=nodes.device) < remaining.unsqueeze(1)
        scores = candidates[..., : self.hparams.hidden_size] @ self.query / math.sqrt(self.hparams.hidden_size)
        # A finished sequence merges nothing: its all-zero row keeps every node in place.
        select = self.select(mask_scores(scores, valid)) * (remaining > 0).unsqueeze(1)
        before = 1 - select.cumsum(-1)
        after = 1 - before - select
        merged = (
            before.unsqueeze(-1) * nodes[:, :-1]
            + select.unsqueeze(-1) * candidates
            + after.unsqueeze(-1) * nodes[:, 1:]
        )
        chosen = select.argmax(-1)
        if pairs > 1:
            if self.hparams.recompute_candidates:
                candidates = self.cell(merged[:, :-1], merged[:, 1:])
            else:
                candidates = self._update_candidates(candidates, merged, select, before, after, chosen, batch)
        return merged, candidates, chosen.masked_fill(remaining <= 0, -1)

    def _update_candidates(
        self,
        candidates: Tensor,
        merged: Tensor,
        select: Tensor,
        before: Tensor,
        after: Tensor,
        chosen: Tensor,
        batch: Tensor,
    ) -> Tensor:
        """The next step's candidates: the old ones shifted past the merge, and two new ones.

        New pair j is old pair j before the merge at k (j < k − 1), old pair j + 1
        after it (j > k), and the new node with its left (j = k − 1) or right (j = k)
        neighbour; the masks select exactly one of the four for every j.
        """
        last = merged.shape[1] - 1
        parent = merged[batch, chosen]
        neighbours = torch.stack(
            (merged[batch, (chosen - 1).clamp(min=0)], merged[batch, (chosen + 1).clamp(max=last)]), 1
        )
        new = self.cell(torch.stack((neighbours[:, 0], parent), 1), torch.stack((parent, neighbours[:, 1]), 1))
        return (
            before[:, 1:, None] * candidates[:, :-1]
            + after[:, :-1, None] * candidates[:, 1:]
            + select[:, 1:, None] * new[:, :1]
            + select[:, :-1, None] * new[:, 1:]
        )

    def select(self, scores: Tensor) -> Tensor:
        """A one-hot choice of pair: the estimator's sample in training, the argmax otherwise."""
        if self.training:
            return self.estimator(scores)[0]
        # Not F.one_hot, whose number of classes would be a constant of a compiled merge.
        return torch.zeros_like(scores).scatter_(-1, scores.argmax(-1, keepdim=True), 1.0)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)``."""
        root, _ = self.encode(tokens, lengths)
        return self.classifier(root[:, : self.hparams.hidden_size])

    def logits_and_labels(self, batch: tuple[Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        tokens, lengths, labels = batch
        return self(tokens, lengths), labels

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = make_optimizer(self.hparams.optimizer, self.parameters(), self.hparams.lr)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=4)
        # Not strict: a run without validation keeps its learning rate instead of failing.
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": plateau, "monitor": "val/accuracy", "strict": False},
        }

    def on_validation_epoch_end(self) -> None:
        """Step the plateau schedule on this validation's accuracy, before the checkpoint is written.

        Lightning steps a ReduceLROnPlateau only after the epoch's end hooks, so after
        ``last.ckpt`` is saved, and not at all at the end of an epoch a run was resumed
        into: a run resumed from a checkpoint, or restarted an epoch at a time, would
        lose those steps and never halve its learning rate. Stepped here, each step is
        in the checkpoint. The accuracy is synchronized over processes, so every rank
        takes the same decision (one host read a validation). A validation outside
        ``fit`` (``trainer.validate``) has no schedule to step.
        """
        plateau = self.lr_schedulers()
        if plateau is not None and not self.trainer.sanity_checking:
            plateau.step(self.accuracy["val_accuracy"].compute())

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Nothing: the only schedule, the plateau, is stepped after each validation (above)."""

    @torch.no_grad()
    def parse(self, expression: str) -> tuple[int, str]:
        """The predicted value of ``expression`` and the tree the parser induced, bracketed."""
        expressions.parse(expression)  # refuses a malformed expression, saying why
        tokens = model_tokens(expression)
        ids = torch.tensor([[TOKEN_IDS[token] for token in tokens]], device=self.device)
        was_training = self.training
        self.eval()
        root, choices = self.encode(ids, torch.tensor([len(tokens)], device=self.device))
        prediction = int(self.classifier(root[:, : self.hparams.hidden_size]).argmax(-1))
        self.train(was_training)
        nodes = list(tokens)
        for chosen in choices[0].tolist():
            nodes[chosen : chosen + 2] = [f"( {nodes[chosen]} {nodes[chosen + 1]} )"]
        return prediction, nodes[0]
