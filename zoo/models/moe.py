"""A Switch-style vision transformer: every second feed-forward is a Mixture of Experts with top-1 routing.

Images are cut into ``patch_size`` patches, embedded, and passed through ``depth``
pre-norm transformer blocks; the mean token is classified. In every
``moe_every``-th block the feed-forward is ``num_experts`` two-layer perceptrons and
a router (a linear map to one logit per expert, in float32) that sends each token to
one of them. The estimator decides how:

* a router (``switch``, ``sparsemixer``) runs only the chosen expert of each token.
  Tokens are grouped by expert into fixed-size buffers of ``capacity`` slots each
  (Switch's capacity factor), so a step's shapes never depend on the routing and no
  value is read on the host; a token past its expert's capacity skips the layer
  through the residual and is counted as dropped. ``capacity_factor=None`` gives
  every expert room for all tokens (nothing dropped, at dense cost);
* a pathwise estimator (``st``, ``reinmax``, ...) draws a one-hot sample whose
  gradient needs every expert's output, so in training every expert runs on every
  token and the outputs are mixed by the sample; at evaluation only the most likely
  expert runs, as with a router;
* ``soft`` mixes every expert's output by the router's probabilities, always.

Every MoE layer scales its output by a learned per-channel ω (SparseMixer's; for the
other routers a reparametrisation of the experts' last layer), so that every router
trains the same set of weights and a release fine-tunes with any of them.

The Switch load-balancing loss ``E · Σ_j P_j F_j`` (``P_j`` the mean routing
probability of expert ``j``, ``F_j`` the fraction of tokens it is sent) is added with
weight ``balance_loss_weight``. Each training epoch logs the means of the balance
loss, the routers' entropy and the fraction of dropped tokens (kept on the device
during the epoch: no value is read per step), and writes the expert load of every
MoE layer to TensorBoard as a labelled image.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..estimators import Estimator, Router, Routing
from ._building import build_estimator, make_optimizer
from ._classification import Classifier
from ._compiling import PartCompiler
from ._heat_map import labelled_heat_map
from ._metrics import WeightedMeans
from ._probe import GradientProbe
from ._registry import Recipe, register_model

Batch = tuple[Tensor, Tensor]
#: What training logs of the routing, as means over the epoch and the MoE layers.
ROUTING_STATISTICS = ("balance_loss", "router_entropy", "dropped_tokens")


def route(estimator: Estimator, logits: Tensor) -> Routing:
    """The routing of tokens with router ``logits (N, E)``: a router's own, or a pathwise estimator's dense one."""
    if isinstance(estimator, Router):
        return estimator(logits)
    if estimator.training:
        sample, probs = estimator(logits)
        return Routing(sample.detach().argmax(-1), torch.ones_like(probs[:, 0]), probs, weights=sample)
    probs = logits.softmax(-1)
    return Routing(probs.argmax(-1), torch.ones_like(probs[:, 0]), probs)


class Experts(nn.Module):
    """``num_experts`` two-layer GELU perceptrons with stacked weights: ``(E, n, width) → (E, n, width)``.

    Row ``j`` of the input is what expert ``j`` computes on, so grouped tokens run as
    one batched matrix product per layer.
    """

    def __init__(self, num_experts: int, width: int, hidden: int) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.empty(num_experts, width, hidden).uniform_(-1, 1).mul_(1 / math.sqrt(width)))
        self.b1 = nn.Parameter(torch.zeros(num_experts, 1, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, width).uniform_(-1, 1).mul_(1 / math.sqrt(hidden)))
        self.b2 = nn.Parameter(torch.zeros(num_experts, 1, width))

    def forward(self, grouped: Tensor) -> Tensor:
        return torch.baddbmm(self.b2, F.gelu(torch.baddbmm(self.b1, grouped, self.w1)), self.w2)


@dataclass
class LayerStatistics:
    """What one MoE layer did in one forward pass, as tensors (nothing read on the host)."""

    load: Tensor  # (E,): the fraction of tokens routed to each expert, before capacity drops any
    balance_loss: Tensor  # E · Σ_j P_j F_j
    entropy: Tensor  # the routing distribution's mean entropy, in nats
    dropped: Tensor  # the fraction of tokens past their expert's capacity


class MixtureOfExperts(nn.Module):
    """A top-1 Mixture-of-Experts feed-forward; the estimator that routes is passed at each call."""

    def __init__(self, width: int, hidden: int, num_experts: int, capacity_factor: float | None,
                 eval_capacity_factor: float | None) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.capacity_factor, self.eval_capacity_factor = capacity_factor, eval_capacity_factor
        self.router = nn.Linear(width, num_experts, bias=False)
        self.experts = Experts(num_experts, width, hidden)
        # SparseMixer's ω, a learned per-channel scale of the output, whatever the router: for the others
        # it only reparametrises the experts' last layer, and it makes every router's weights the same set.
        self.output_scale = nn.Parameter(torch.ones(width))
        self.statistics: LayerStatistics | None = None

    def router_logits(self, tokens: Tensor) -> Tensor:
        """One logit per expert for ``tokens (N, width)``, in float32 whatever the autocast."""
        with torch.autocast(tokens.device.type, enabled=False):
            return F.linear(tokens.float(), self.router.weight.float())

    def capacity(self, tokens: int) -> int:
        """Slots per expert: the capacity factor times an even share of the tokens, or all of them."""
        factor = self.capacity_factor if self.training else self.eval_capacity_factor
        if factor is None:
            return tokens
        return min(tokens, math.ceil(factor * tokens / self.num_experts))

    def forward(self, x: Tensor, estimator: Estimator) -> Tensor:
        tokens = x.reshape(-1, x.shape[-1])
        routing = route(estimator, self.router_logits(tokens))
        if routing.weights is not None:
            out, kept = self.dense(tokens, routing.weights), None
        else:
            out, kept = self.sparse(tokens, routing)
        self.statistics = self.measure(routing, kept)
        return out.view_as(x)

    def dense(self, tokens: Tensor, weights: Tensor) -> Tensor:
        """Every expert on every token, mixed by ``weights (N, E)``."""
        return self.mix(weights, self.every_expert(tokens))

    def every_expert(self, tokens: Tensor) -> Tensor:
        """Every expert's output on each of ``tokens (N, width)``: ``(E, N, width)``."""
        return self.experts(tokens.expand(self.num_experts, *tokens.shape))

    def mix(self, weights: Tensor, outputs: Tensor) -> Tensor:
        """The layer's output from its experts' ``outputs (E, N, width)`` mixed by ``weights (..., N, E)``."""
        return torch.einsum("...ne,end->...nd", weights.to(outputs.dtype), outputs) * self.output_scale

    def sparse(self, tokens: Tensor, routing: Routing) -> tuple[Tensor, Tensor]:
        """Each token through its chosen expert only, times its gate and ω; returns the outputs and which tokens fit.

        Token ``n`` takes slot ``position`` of its expert's buffer, its rank among the
        tokens sent there; buffers hold ``capacity`` slots, one spare row past them
        collects the tokens that do not fit, and empty slots stay zero.
        """
        count, width = tokens.shape
        capacity = self.capacity(count)
        one_hot = F.one_hot(routing.expert, self.num_experts)
        position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1
        kept = position < capacity
        spare = self.num_experts * capacity
        slot = torch.where(kept, routing.expert * capacity + position, spare)
        grouped = tokens.new_zeros(spare + 1, width).index_copy(0, slot, tokens)
        outputs = self.experts(grouped[:spare].view(self.num_experts, capacity, width))
        outputs = torch.cat((outputs.reshape(spare, width), outputs.new_zeros(1, width)))
        return outputs[slot] * routing.gate.unsqueeze(-1).to(outputs.dtype) * self.output_scale, kept

    def measure(self, routing: Routing, kept: Tensor | None) -> LayerStatistics:
        probs = routing.probs
        load = F.one_hot(routing.expert, self.num_experts).to(probs.dtype).mean(0)
        balance = self.num_experts * (probs.mean(0) * load).sum()
        entropy = -(probs * probs.clamp_min(torch.finfo(probs.dtype).tiny).log()).sum(-1).mean()
        dropped = probs.new_zeros(()) if kept is None else 1.0 - kept.to(probs.dtype).mean()
        return LayerStatistics(load.detach(), balance, entropy.detach(), dropped.detach())


class FeedForward(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x: Tensor, estimator: Estimator) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """A pre-norm transformer block; ``ffn`` is a :class:`FeedForward` or a :class:`MixtureOfExperts`."""

    def __init__(self, width: int, heads: int, ffn: nn.Module) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ffn = ffn

    def attend(self, x: Tensor) -> Tensor:
        normed = self.norm1(x)
        return x + self.attention(normed, normed, normed, need_weights=False)[0]

    def forward(self, x: Tensor, estimator: Estimator) -> Tensor:
        x = self.attend(x)
        return x + self.ffn(self.norm2(x), estimator)


@register_model("moe", summary="a Switch-style vision transformer, every second feed-forward a top-1 mixture of "
                "8 experts", data_family="classification", metric="accuracy", mode="max",
                estimator_families=("router", "pathwise"),
                recipe=Recipe(data="fashion-mnist", max_epochs=10, batch_size=128),
                from_data=("in_channels", "num_classes", "image_size"),
                small={"model_options": {"width": 16, "hidden": 16, "depth": 2, "heads": 2, "num_experts": 4,
                                         "patch_size": 8}})
class MoEClassifier(Classifier):
    """Classify images with a vision transformer whose routing is the estimator's.

    Defaults: 4×4 patches of the 32×32 images, width 128, 4 blocks of 4 heads,
    expert hidden width 256, 8 experts in blocks 2 and 4, capacity factor 1.25 in
    training and 2 at evaluation, balance-loss weight 0.01, AdamW (lr 1e-3, weight
    decay 0.05) with the learning rate cosine-annealed to zero over the epochs (constant when
    the run is budgeted in steps only).
    ``in_channels`` and ``num_classes`` follow the data; ``train.py`` sets them.
    """

    def __init__(
        self,
        estimator: str = "sparsemixer",
        tau: float = 1.0,
        estimator_options: dict[str, Any] | None = None,
        num_experts: int = 8,
        moe_every: int = 2,
        capacity_factor: float | None = 1.25,
        eval_capacity_factor: float | None = 2.0,
        balance_loss_weight: float = 0.01,
        image_size: int = 32,
        patch_size: int = 4,
        width: int = 128,
        depth: int = 4,
        heads: int = 4,
        hidden: int = 256,
        in_channels: int = 1,
        num_classes: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
    ) -> None:
        super().__init__(num_classes)
        if image_size % patch_size or depth < moe_every or num_experts < 2 or moe_every < 1:
            raise ValueError(f"MoEClassifier needs image_size a multiple of patch_size, num_experts >= 2 and "
                             f"1 <= moe_every <= depth, got image_size={image_size}, patch_size={patch_size}, "
                             f"num_experts={num_experts}, moe_every={moe_every}, depth={depth}.")
        for name, factor in (("capacity_factor", capacity_factor), ("eval_capacity_factor", eval_capacity_factor)):
            if factor is not None and not (isinstance(factor, (int, float)) and factor > 0):
                raise ValueError(f"{name} must be a number > 0, or None (null on the command line) for room for "
                                 f"every token; got {factor!r}.")
        self.save_hyperparameters()
        self.estimator = build_estimator(self.card, estimator, tau, estimator_options)
        self.patches = nn.Conv2d(in_channels, width, patch_size, stride=patch_size)
        self.position = nn.Parameter(0.02 * torch.randn(1, (image_size // patch_size) ** 2, width))
        self.blocks = nn.ModuleList(
            Block(width, heads, MixtureOfExperts(width, hidden, num_experts, capacity_factor, eval_capacity_factor)
                  if (index + 1) % moe_every == 0 else FeedForward(width, hidden))
            for index in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes)
        self.moe_layers = [index for index, block in enumerate(self.blocks) if isinstance(block.ffn, MixtureOfExperts)]
        # The epoch's means of the routing statistics, all-reduced across processes when computed.
        self.routing_means = WeightedMeans([*ROUTING_STATISTICS, *(f"block{index + 1}/expert{j}"
                                                                   for index in self.moe_layers
                                                                   for j in range(num_experts))])

    def embed(self, images: Tensor) -> Tensor:
        return self.patches(images).flatten(2).transpose(1, 2) + self.position

    def classify(self, x: Tensor) -> Tensor:
        return self.head(self.norm(x).mean(1))

    def forward(self, images: Tensor) -> Tensor:
        return self.classify(self.run_blocks(self.blocks, self.embed(images)))

    def compile_parts(self, compile: PartCompiler) -> None:
        """``--compile``: the forward pass, routing and the routing statistics included, as one graph."""
        self.forward = compile(self.forward)

    def run_blocks(self, blocks: Iterable[Block], x: Tensor) -> Tensor:
        """``x`` through ``blocks`` (some of :attr:`blocks`, in order), routed by the model's estimator."""
        for block in blocks:
            x = block(x, self.estimator)
        return x

    def layer_statistics(self) -> list[LayerStatistics]:
        return [self.blocks[index].ffn.statistics for index in self.moe_layers]

    def training_step(self, batch: Batch, batch_index: int) -> Tensor:
        images, labels = batch
        logits = self(images)
        statistics = self.layer_statistics()
        balance = torch.stack([layer.balance_loss for layer in statistics]).mean()
        loss = F.cross_entropy(logits, labels) + self.hparams.balance_loss_weight * balance
        means = [balance.detach(), *(torch.stack([getattr(layer, name) for layer in statistics]).mean()
                                     for name in ("entropy", "dropped"))]
        self.routing_means.update(torch.cat([torch.stack(means), *(layer.load for layer in statistics)]), 1.0)
        self.record("train", logits, labels, loss)
        return loss

    def logits_and_labels(self, batch: Batch) -> tuple[Tensor, Tensor]:
        images, labels = batch
        return self(images), labels

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        means = self.routing_means.compute()  # all-reduced: every rank calls it
        self.routing_means.reset()
        self.log_dict({f"train/{name}_epoch": means.pop(name) for name in ROUTING_STATISTICS})
        experiment = getattr(self.logger, "experiment", None)
        if not (self.trainer.is_global_zero and hasattr(experiment, "add_image")):
            return
        table = torch.stack(list(means.values())).view(len(self.moe_layers), -1).tolist()
        image = labelled_heat_map(table, [f"block {index + 1}" for index in self.moe_layers],
                                  [f"e{j}" for j in range(self.hparams.num_experts)],
                                  title=f"expert load (fraction of tokens), epoch {self.current_epoch}")
        experiment.add_image("moe/expert_load", image, self.current_epoch, dataformats="HWC")

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = make_optimizer("adamw", self.parameters(), self.hparams.lr, weight_decay=self.hparams.weight_decay)
        epochs = self.trainer.max_epochs
        if not epochs or epochs < 0:  # a budget of steps only: the learning rate stays constant
            return optimizer
        # By epoch: a schedule by step would need Trainer.estimated_stepping_batches, which loads
        # the training data early and so breaks an exact resume in mid-epoch.
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": cosine, "interval": "epoch"}}

    def gradient_probe(self, batch: Batch) -> GradientProbe:
        """The first MoE layer's router logits, and the loss of any weights on its experts' outputs.

        The loss of weights ``z (..., B, T, E)`` mixes that layer's expert outputs by
        ``z`` (a one-hot ``z`` routes each token to one expert), then runs the rest of
        the network with the later MoE layers routed as at evaluation (by argmax).
        """
        images, labels = batch
        first = self.moe_layers[0]
        block = self.blocks[first]
        with torch.no_grad(), evaluating(self):
            x = block.attend(self.run_blocks(self.blocks[:first], self.embed(images)))
            tokens = block.norm2(x).flatten(0, 1)  # (B·T, width)
            logits = block.ffn.router_logits(tokens).view(*x.shape[:2], -1)
            outputs = block.ffn.every_expert(tokens)

        def loss(weights: Tensor) -> Tensor:
            lead = weights.shape[:-3]
            mixed = block.ffn.mix(weights.flatten(-3, -2), outputs).view(*lead, *x.shape)
            with evaluating(self):
                h = self.run_blocks(self.blocks[first + 1:], (x + mixed).reshape(-1, *x.shape[1:]))
                class_logits = self.classify(h)
            return F.cross_entropy(class_logits, labels.repeat(math.prod(lead)), reduction="none").view(*lead, -1)

        return GradientProbe(logits, loss, event_ndim=1)


@contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """``module`` in evaluation mode (routing by argmax), its submodules' modes restored afterwards."""
    modes = {child: child.training for child in module.modules()}
    module.eval()
    try:
        yield
    finally:
        for child, training in modes.items():
            child.training = training
