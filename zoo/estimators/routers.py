"""Routers: the estimators of a Mixture-of-Experts layer's top-1 expert choice.

A router sees a layer's router logits ``s (..., E)`` and returns a :class:`Routing`:
which expert each token goes to and the multiplier of that expert's output, whose
gradient is the router's estimate. Unlike the pathwise family, whose one-hot sample
needs every expert's output for its gradient (dense compute), the sparse routers
compute only the chosen expert:

* ``switch`` (Fedus et al. 2021): ``D = argmax softmax(s ⊙ u)`` with multiplicative
  jitter ``u ~ U(1 − ε, 1 + ε)`` in training, output ``π_D · f_D(x)``; the gradient
  reaches ``s`` only through ``π_D``;
* ``sparsemixer`` (Liu, Gao & Chen 2023): ``D ~ Cat(π̃)`` under the logits with the
  experts jitter could never select masked out; the gate ``π̃_D`` is scaled by a
  per-token coin that mixes the mid-point and the Euler step of the change
  ``f_D(x) − f(0)``, a second-order estimate (v1) or a third-order one (v2);
* ``soft``: the dense mixture ``Σ_j π_j f_j(x)``, an upper reference, not a sparse MoE.

The maths of each is in ``docs/estimators.md``. Routers run in float32 whatever the
model's precision, and their draws stay on the logits' device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ._base import Estimator, LossFn, check_losses
from ._categorical import full_precision, sample_categorical
from ._registry import register_estimator


@dataclass
class Routing:
    """How a layer's tokens reach its experts; every tensor has the logits' leading shape."""

    expert: Tensor  # (...,) int64: each token's expert (for the soft mixture, its most likely one)
    gate: Tensor  # (...,): what the chosen expert's output is multiplied by; carries the router's gradient
    probs: Tensor  # (..., E): the routing distribution, for the balance loss and the logged entropy
    weights: Tensor | None = None  # (..., E) dense mixing weights: every expert runs; None: only `expert` runs

    def mixing_weights(self) -> Tensor:
        """The weights of every expert's output, ``(..., E)``: zero but at the chosen expert when sparse."""
        if self.weights is not None:
            return self.weights
        one_hot = torch.zeros_like(self.probs).scatter_(-1, self.expert.unsqueeze(-1), 1.0)
        return one_hot * self.gate.unsqueeze(-1)


class Router(Estimator):
    """Top-1 routing of tokens to experts: ``routing = router(logits)``."""

    family = "router"

    def __init__(self, *, jitter: float = 0.1, validate_args: bool = True) -> None:
        super().__init__(validate_args=validate_args)
        if not (0.0 <= jitter < 1.0):
            raise ValueError(f"{self.name}: jitter must be in [0, 1), got {jitter!r}.")
        self.jitter = float(jitter)

    def forward(self, logits: Tensor) -> Routing:
        raise NotImplementedError

    def distribution(self, logits: Tensor) -> Tensor:
        """``softmax(logits)``, checked, with its gradient (the gates are differentiated through it)."""
        probs = torch.softmax(logits, dim=-1)
        self.check(probs)
        return probs

    def objective(self, logits: Tensor, f: LossFn, num_samples: int = 1) -> Tensor:
        """The mean of ``f`` at ``num_samples`` routings' mixing weights: the gradient training would take.

        ``f`` is fed the weights of every expert's output (the gate at the chosen expert,
        zero elsewhere), so its value is the routed layer's loss, not the loss at the
        one-hot choice.
        """
        self.check_num_samples(num_samples)
        routing = self(logits.expand(num_samples, *logits.shape))
        losses = f(routing.mixing_weights().to(logits.dtype))
        check_losses(self.name, losses, logits, num_samples)
        return losses.mean()

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, jitter={self.jitter}"


@register_estimator("switch", summary="D = argmax softmax(s ⊙ u), u ~ U(1 ± ε); output π_D·f_D, gradient through "
                    "π_D only")
class SwitchGate(Router):
    """The Switch Transformer's gate: the usual MoE training, whose router never learns from other experts."""

    def forward(self, logits: Tensor) -> Routing:
        logits = full_precision(logits)
        if self.training and self.jitter:
            noise = torch.rand_like(logits).mul_(2 * self.jitter).add_(1 - self.jitter)
            logits = logits * noise
        probs = self.distribution(logits)
        expert = probs.detach().argmax(-1)
        return Routing(expert, probs.gather(-1, expert.unsqueeze(-1)).squeeze(-1), probs)


@register_estimator("sparsemixer", summary="D ~ Cat(π̃) on the logits jitter can reach; gate π̃_D times a "
                    "mid-point coin (v1), or Heun's third-order rule (version=2)")
class SparseMixer(Router):
    """SparseMixer: a second-order gradient for the router while only the chosen expert runs.

    ``version=1`` is the paper's: the forward gate is ``π̃_D·c`` with ``c = 1`` when
    ``D`` is the most likely expert or a fair coin says so, else ``½`` (the mid-point
    of ``f_D``), and the gradient reaching ``π̃_D`` is doubled. ``version=2`` is the
    authors' later rule: ``c = 1`` with probability ¾ (or for the most likely expert),
    else ⅓, and the gradient of ``π̃_D`` without ``c``. Evaluation routes to the most
    likely expert with the gate ``π̃_D`` and no coin.
    """

    #: Per version: the probability of the full step for a token not at the most likely
    #: expert, the coin's other value, and the factor on the gradient reaching the gate.
    RULES: ClassVar[dict[int, tuple[float, float, float]]] = {1: (0.5, 0.5, 2.0), 2: (0.25, 1 / 3, 1.0)}

    def __init__(self, *, version: int = 1, jitter: float = 0.1, validate_args: bool = True) -> None:
        if version not in self.RULES:
            raise ValueError(f"sparsemixer: version must be one of {', '.join(map(str, self.RULES))}, "
                             f"got {version!r}.")
        super().__init__(jitter=jitter, validate_args=validate_args)
        self.version = version

    def forward(self, logits: Tensor) -> Routing:
        logits = full_precision(logits)
        probs = self.distribution(masked_by_jitter(logits, self.jitter))
        top = probs.detach().argmax(-1)
        if not self.training:
            return Routing(top, probs.gather(-1, top.unsqueeze(-1)).squeeze(-1), probs)
        _, index = sample_categorical(probs.detach())
        expert = index.squeeze(-1)
        full_step_chance = self.RULES[self.version][0]
        full_step = (expert == top) | (torch.rand(expert.shape, device=expert.device) < full_step_chance)
        return self.routed(probs, expert, full_step)

    def routed(self, probs: Tensor, expert: Tensor, full_step: Tensor) -> Routing:
        """The training routing for a given draw: ``expert``, and whether its coin gives the full step."""
        _, other, gradient_factor = self.RULES[self.version]
        gate = probs.gather(-1, expert.unsqueeze(-1)).squeeze(-1)
        coin = torch.full_like(gate, other).masked_fill_(full_step, 1.0)
        # Value gate·coin; gradient gradient_factor·∂gate: the coin is only in the forward value.
        scaled = gate * gradient_factor + gate.detach() * (coin - gradient_factor)
        return Routing(expert, scaled, probs)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, version={self.version}"


def masked_by_jitter(logits: Tensor, jitter: float) -> Tensor:
    """``logits`` with the experts that multiplicative jitter of ``jitter`` could never make the top masked.

    Expert ``j`` is masked when ``(m − s_j) / max(|s_j|, m) > 2ε`` for the top logit ``m``;
    the top expert never is. Masked logits are the dtype's lowest value, so their
    probability is exactly zero and their gradient too.
    """
    with torch.no_grad():
        top = logits.amax(-1, keepdim=True)
        scale = logits.abs().clamp(min=top)
        masked = (top - logits) / scale > 2 * jitter
    return logits.masked_fill(masked, torch.finfo(logits.dtype).min)


@register_estimator("soft", summary="the dense mixture Σ_j π_j·f_j: every expert runs; a reference, not sparse")
class SoftMixture(Router):
    """Every expert's output weighted by ``π = softmax(s)``: differentiable exactly, at E times the compute."""

    def __init__(self, *, validate_args: bool = True) -> None:
        super().__init__(jitter=0.0, validate_args=validate_args)

    def forward(self, logits: Tensor) -> Routing:
        probs = self.distribution(full_precision(logits))
        expert = probs.detach().argmax(-1)
        return Routing(expert, probs.gather(-1, expert.unsqueeze(-1)).squeeze(-1), probs, weights=probs)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"
