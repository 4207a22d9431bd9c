"""The exact gradient, by enumerating every configuration of each example.

Ground truth for tests and for the gradient-quality diagnostics. Logits are
``(*batch, *variables, C)`` where ``variables`` are the last ``event_ndim`` axes
before the classes; all ``C^L`` joint configurations of an example's ``L``
variables are enumerated (the same configuration for every example at once).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._base import LossFn, ScoreFunctionEstimator, check_losses
from ._categorical import full_precision
from ._registry import register_estimator
from .score_function import per_example_log_prob


@register_estimator("exact", summary="enumerates all C^L configurations of an example; the exact gradient")
class Exact(ScoreFunctionEstimator):
    """``Σ_z p(z) f(z)`` over all configurations ``z``; its gradient is exact."""

    def check_num_samples(self, num_samples: int | None) -> None:
        """Enumeration draws no samples, so any ``num_samples`` is accepted and ignored."""

    def __init__(
        self, *, event_ndim: int = 1, max_configurations: int = 1 << 16, validate_args: bool = True
    ) -> None:
        if not isinstance(event_ndim, int) or event_ndim < 0:
            raise ValueError(f"exact: event_ndim must be an integer >= 0, got {event_ndim!r}.")
        super().__init__(validate_args=validate_args)
        self.event_ndim = event_ndim
        self.max_configurations = max_configurations

    def configurations(self, logits: Tensor) -> Tensor:
        """Every configuration of one example, as class indices ``(C^L, *variables)``."""
        num_classes = logits.shape[-1]
        variables = tuple(logits.shape[logits.dim() - 1 - self.event_ndim : -1])
        num_variables = math.prod(variables)
        count = num_classes**num_variables
        if count > self.max_configurations:
            raise ValueError(
                f"exact: {num_classes}^{num_variables} = {count:.3g} configurations per "
                f"example exceed the limit of {self.max_configurations}. Enumerate fewer "
                "variables (check event_ndim), raise max_configurations if memory allows, "
                "or use a sampling estimator such as reinforce with many samples."
            )
        # Row r of `digits` writes r in base C, one digit per variable.
        powers = num_classes ** torch.arange(num_variables - 1, -1, -1, device=logits.device)
        digits = torch.arange(count, device=logits.device).unsqueeze(-1) // powers % num_classes
        return digits.reshape(count, *variables)

    def objective(self, logits: Tensor, f: LossFn, num_samples: int | None = None) -> Tensor:
        """The exact expected loss, averaged over examples. ``num_samples`` is ignored."""
        if logits.dim() < 1 + self.event_ndim:
            raise ValueError(
                f"exact: logits of shape {tuple(logits.shape)} have fewer than "
                f"event_ndim={self.event_ndim} variable axes."
            )
        log_probs = torch.log_softmax(full_precision(logits), dim=-1)
        self.check(log_probs.detach().exp())
        batch_shape = logits.shape[: logits.dim() - 1 - self.event_ndim]
        configurations = self.configurations(logits)
        count = len(configurations)
        index = configurations.reshape(count, *(1,) * len(batch_shape), *configurations.shape[1:], 1)
        index = index.expand(count, *logits.shape[:-1], 1)
        samples = torch.zeros((count, *logits.shape), dtype=logits.dtype, device=logits.device)
        losses = f(samples.scatter_(-1, index, 1.0))
        batch_ndim = check_losses(self.name, losses, logits, count)
        if batch_ndim != len(batch_shape):
            raise ValueError(
                f"exact: f returned losses for batch shape {tuple(losses.shape[1:])}, but "
                f"with event_ndim={self.event_ndim} the batch shape is {tuple(batch_shape)}."
            )
        probability = per_example_log_prob(log_probs, index, batch_ndim).exp()
        return (probability * losses).sum(dim=0).mean()
