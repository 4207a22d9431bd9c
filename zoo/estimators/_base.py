"""Base classes every estimator derives from, and the autograd glue they share.

Three families (see ``docs/estimators.md``):

* pathwise (straight-through) estimators are called as ``sample, probs = est(logits)``
  and need one evaluation of the loss; their surrogate gradient is written by hand
  in :meth:`PathwiseEstimator.logits_grad`, so the forward value stays exactly
  one-hot and nothing but the few tensors each rule needs is kept for backward;
* score-function estimators evaluate the loss at several samples and so are only
  reachable through :meth:`Estimator.objective`;
* routers (``routers.py``) choose one expert a token in a Mixture-of-Experts layer
  and give the gradient through the chosen expert's gate.

Estimators are ``nn.Module`` s so that a model can hold one as a submodule and
estimators with learnable parts (control variates) move with the model.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from ._categorical import check_probabilities, full_precision, invalid_rows, softmax, softmax_vjp

LossFn = Callable[[Tensor], Tensor]
"""Maps one-hot samples ``(S, *batch, *variables, C)`` to losses ``(S, *batch)``."""

#: The estimator families: what a model may accept (``zoo.models.ModelCard.estimator_families``).
FAMILIES = ("pathwise", "score-function", "router")


class Estimator(nn.Module):
    """A gradient estimator for categorical variables with logits ``(..., C)``."""

    #: The registry name, set by :func:`register_estimator`; a class that serves several entries makes it a
    #: property of its options.
    name: str = ""
    #: Its family, one of ``FAMILIES``: how a model calls it.
    family: ClassVar[str] = ""
    #: Whether it handles only binary variables, logits ``(..., 2)``.
    binary_only: ClassVar[bool] = False
    #: Why ``torch.compile`` cannot capture it in one graph (None: it can, with ``fullgraph=True``).
    graph_break: ClassVar[str | None] = None

    def __init__(self, *, validate_args: bool = True) -> None:
        super().__init__()
        self.validate_args = validate_args
        self._deferred_flag: Tensor | None = None

    def objective(self, logits: Tensor, f: LossFn, num_samples: int = 1) -> Tensor:
        """A scalar whose value is the mean loss and whose gradient is the estimate.

        ``f`` receives one-hot samples of shape ``(S, *logits.shape)`` and returns
        per-sample losses ``(S, *batch)``, where ``batch`` is a prefix of
        ``logits.shape[:-1]``; the remaining axes are the variables of one example.
        Gradients also reach any parameters ``f`` uses.
        """
        raise NotImplementedError

    #: The fewest loss evaluations per example ``objective`` can use, and why.
    min_num_samples: int = 1
    min_num_samples_reason: str = ""

    def check_num_samples(self, num_samples: int) -> None:
        """Refuse a number of loss evaluations this estimator cannot use.

        ``objective`` calls it; a model calls it when built, so that a bad setting
        fails before training starts.
        """
        if not isinstance(num_samples, int) or num_samples < self.min_num_samples:
            raise ValueError(
                f"{self.name}: num_samples must be an integer >= {self.min_num_samples}"
                f"{self.min_num_samples_reason}, got {num_samples!r}."
            )

    def check_categories(self, num_classes: int) -> None:
        """Refuse variables of ``num_classes`` classes that this estimator cannot handle.

        A model calls it when built, so that the mismatch fails before training starts.
        """
        if self.binary_only and num_classes != 2:
            raise ValueError(
                f"{self.name} needs binary variables (2 classes), got {num_classes}. "
                "Use reinforce for more classes, or a model with binary latents."
            )

    def check(self, probs: Tensor) -> None:
        """Reject rows with no valid distribution, unless ``validate_args`` is off.

        While checks are deferred (:meth:`defer_checks`), a bad row sets the flag instead.
        """
        if not self.validate_args:
            return
        if self._deferred_flag is not None:
            self._deferred_flag.logical_or_(invalid_rows(probs).any())
        elif not torch.compiler.is_compiling():
            check_probabilities(probs, self.name)

    def defer_checks(self, flag: Tensor | None) -> None:
        """Record logits without a distribution in ``flag`` (a boolean scalar) instead of raising.

        Raising means reading a value on the host at every call, which stalls a GPU
        (ListOps calls its estimator once per merge). A training loop instead hands
        every estimator of the model one flag on the model's device and reads it once
        a step (``callbacks.nonfinite.NonFiniteGuard``), so that all processes of a
        run stop together. ``None`` restores the eager check.
        """
        self._deferred_flag = flag

    def probabilities(self, logits: Tensor) -> Tensor:
        """``softmax(logits)``, checked."""
        probs = softmax(logits)
        self.check(probs)
        return probs

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class PathwiseEstimator(Estimator):
    """Straight-through family: ``sample, probs = est(logits)``.

    ``sample`` is exactly one-hot in value and carries the estimator's surrogate
    gradient; ``probs = softmax(logits)`` carries the ordinary one. Both keep the
    shape and dtype of ``logits``; the maths runs in float32 (or float64).
    """

    family = "pathwise"
    #: The smallest temperature allowed; ``tau_inclusive`` says whether it is.
    min_tau: float = 0.0
    tau_inclusive: bool = False

    def __init__(self, *, tau: float = 1.0, validate_args: bool = True) -> None:
        super().__init__(validate_args=validate_args)
        self.tau = tau

    @property
    def tau(self) -> float:
        """The temperature: a plain attribute, so a schedule may assign to it."""
        return self._tau

    @tau.setter
    def tau(self, value: float) -> None:
        value = float(value)
        allowed = value >= self.min_tau if self.tau_inclusive else value > self.min_tau
        if not (allowed and value < float("inf")):
            bound = ">=" if self.tau_inclusive else ">"
            raise ValueError(
                f"{self.name}: temperature tau={value} is out of range; it must be "
                f"finite and {bound} {self.min_tau}{self._tau_reason()}."
            )
        self._tau = value

    def _tau_reason(self) -> str:
        return ""

    def forward(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        return _PathwiseFunction.apply(logits, self)

    def objective(self, logits: Tensor, f: LossFn, num_samples: int = 1) -> Tensor:
        """The mean of ``num_samples`` independent single-sample losses."""
        self.check_num_samples(num_samples)
        samples, _ = self(logits.expand(num_samples, *logits.shape))
        losses = f(samples)
        check_losses(self.name, losses, logits, num_samples)
        return losses.mean()

    def draw(self, logits: Tensor) -> tuple[Tensor, Tensor, tuple[Tensor | None, ...]]:
        """Return ``(sample, probs, saved)``; ``saved`` is kept for :meth:`logits_grad`."""
        raise NotImplementedError

    def logits_grad(
        self,
        saved: tuple[Tensor | None, ...],
        tau: float,
        grad_sample: Tensor | None,
        grad_probs: Tensor | None,
    ) -> Tensor:
        """The gradient w.r.t. the logits, given the gradients at sample and probs."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, tau={self.tau}"


class _PathwiseFunction(torch.autograd.Function):
    """Runs an estimator's ``draw`` forward and its ``logits_grad`` backward."""

    @staticmethod
    def forward(ctx, logits: Tensor, estimator: PathwiseEstimator):  # type: ignore[override]
        work = full_precision(logits)
        sample, probs, saved = estimator.draw(work)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(*saved)
        ctx.estimator, ctx.tau = estimator, estimator.tau
        ctx.input_dtype, ctx.work_dtype = logits.dtype, work.dtype
        return sample.to(logits.dtype), probs.to(logits.dtype)

    @staticmethod
    def backward(ctx, grad_sample: Tensor | None, grad_probs: Tensor | None):  # type: ignore[override]
        if grad_sample is None and grad_probs is None:
            return None, None
        work_dtype = ctx.work_dtype
        grad = ctx.estimator.logits_grad(
            ctx.saved_tensors,
            ctx.tau,
            None if grad_sample is None else grad_sample.to(work_dtype),
            None if grad_probs is None else grad_probs.to(work_dtype),
        )
        return grad.to(ctx.input_dtype), None


def straight_through_grad(
    probs: Tensor,
    surrogate: Tensor | None,
    tau: float,
    grad_sample: Tensor | None,
    grad_probs: Tensor | None,
) -> Tensor:
    """``(1/τ)·J(s)·g + J(π)·g_π``, the gradient of every softmax-surrogate estimator.

    ``surrogate`` is ``s``; ``None`` means ``s = π`` (and then τ = 1), which lets
    both terms share one Jacobian product.
    """
    if grad_sample is None:
        return softmax_vjp(probs, grad_probs)
    if surrogate is None:
        total = grad_sample if grad_probs is None else grad_sample + grad_probs
        return softmax_vjp(probs, total)
    grad = softmax_vjp(surrogate, grad_sample)
    if tau != 1.0:
        grad.mul_(1.0 / tau)
    if grad_probs is not None:
        grad += softmax_vjp(probs, grad_probs)
    return grad


class ScoreFunctionEstimator(Estimator):
    """REINFORCE family: needs the loss as a function; see :meth:`objective`."""

    family = "score-function"
    min_num_samples = 2
    min_num_samples_reason = " (each sample's baseline is the mean loss of the others)"

    def forward(self, logits: Tensor) -> tuple[Tensor, Tensor]:
        raise TypeError(
            f"{self.name} is a score-function estimator: it evaluates the loss at "
            "several samples, so it cannot be called on logits alone. Use "
            "est.objective(logits, f, num_samples) instead."
        )


def check_losses(name: str, losses: Tensor, logits: Tensor, num_samples: int) -> int:
    """Check ``f``'s output shape ``(num_samples, *batch)``; return ``len(batch)``."""
    batch_ndim = losses.dim() - 1
    expected_batch = tuple(logits.shape[:batch_ndim])
    if (
        batch_ndim < 0
        or batch_ndim > logits.dim() - 1
        or losses.shape[0] != num_samples
        or tuple(losses.shape[1:]) != expected_batch
    ):
        raise ValueError(
            f"{name}: f must return per-sample losses of shape (num_samples, *batch) "
            f"with batch a prefix of logits.shape[:-1] = {tuple(logits.shape[:-1])}; "
            f"got {tuple(losses.shape)} for num_samples={num_samples}."
        )
    return batch_ndim
