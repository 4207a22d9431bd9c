"""RODEO (Shi et al. 2022, "Gradient Estimation with Discrete Stein Operators").

RLOO for binary variables, plus control variates built with the Gibbs Stein
operator of the sampling distribution. A Stein operator ``A`` turns any function
``u`` into one with ``E_q[(A u)(b)] = 0``, so ``A u`` can be added to an estimate
without biasing it, whatever ``u`` is; RODEO learns ``u`` online to cancel as much
of the estimate's noise as it can.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._base import LossFn, ScoreFunctionEstimator, check_losses
from ._registry import register_estimator
from .score_function import binary_logit_gap, logit_gap_surrogate, with_surrogate

# The slope of the control network's LeakyReLU for negative inputs.
_NEGATIVE_SLOPE = 0.3


class ControlNet(nn.Module):
    """``h(t, v) → (h⁰, h¹)``: the control functions at a point, seen from another sample.

    ``t`` is the first-order Taylor increment of the loss from the other sample to
    the point and ``v`` the other sample's loss: together a cheap guess of the loss
    at the point. ``h⁰`` feeds the scalar control variate, ``h¹`` the vector one.
    The network is ``Linear(H, 2)(LeakyReLU(Linear(1, H)(t) + Linear(1, H)(v)))``.
    """

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.taylor_in = nn.Linear(1, hidden_size)
        self.value_in = nn.Linear(1, hidden_size)
        self.out = nn.Linear(hidden_size, 2)

    def forward(self, taylor: Tensor, value: Tensor) -> Tensor:
        """``h`` at ``P`` points of each of many pairs: ``(..., P), (...) → (2, ..., P)``.

        The first axis holds ``h⁰`` and ``h¹``. For a fixed ``v``, ``h`` is piecewise
        linear in ``t`` with one kink per hidden unit, where its pre-activation
        ``a t + c`` crosses zero. Sorting each pair's kinks once and locating each
        point among them costs ``O((H + P) log H)`` per pair, where evaluating the
        hidden layer at every point would cost ``O(H P)``: for RODEO's ``D + 1``
        points per pair, a few milliseconds instead of most of a training step.
        Computed in ``taylor``'s dtype.
        """
        dtype = taylor.dtype
        pairs_shape, num_points = taylor.shape[:-1], taylor.shape[-1]
        taylor = taylor.reshape(-1, num_points)  # (pairs, P)
        slope = self.taylor_in.weight[:, 0].to(dtype)  # a: (H,)
        offset = torch.addcmul(  # c, the rest of the pre-activation: (pairs, H)
            (self.taylor_in.bias + self.value_in.bias).to(dtype),
            value.expand(pairs_shape).reshape(-1, 1),
            self.value_in.weight[:, 0].to(dtype),
        )
        out_weight = self.out.weight.to(dtype)  # (2, H)
        # A unit with a ≥ 0 is active above its kink, one with a < 0 below it. The
        # sign bit, not a > 0, decides, so that a = ±0 gets the kink ∓∞·sign(c),
        # which puts the constant unit on the correct side of every point.
        falling = torch.signbit(slope)
        # Below every kink only the falling units are active; passing a unit's kink
        # moves its weight between 1 and _NEGATIVE_SLOPE times its output weight.
        weight_below_all = torch.where(falling, out_weight, _NEGATIVE_SLOPE * out_weight)
        weight_step = (1.0 - _NEGATIVE_SLOPE) * torch.where(falling, -out_weight, out_weight)
        sorted_kinks, order = (-offset / slope).sort(dim=-1)
        by_kink = order.flatten()
        slope_steps = (weight_step * slope).index_select(1, by_kink).view(2, *order.shape)
        offset_steps = weight_step.index_select(1, by_kink).view(2, *order.shape)
        offset_steps = offset_steps * offset.gather(-1, order)
        slope_below_all = (weight_below_all @ slope).unsqueeze(-1).expand(2, len(offset))
        below_all = torch.cat((slope_below_all, weight_below_all @ offset.T)).unsqueeze(-1)
        # Row i of each pair's table: h's slopes, then offsets, in t above the first
        # i kinks: (4, pairs, H + 1).
        steps = torch.cat((slope_steps, offset_steps))
        tables = torch.cat((below_all, steps), dim=-1).cumsum(-1)
        kinks_below = torch.searchsorted(sorted_kinks, taylor.contiguous())  # (pairs, P)
        first_row = torch.arange(len(taylor), device=taylor.device).unsqueeze(-1) * tables.shape[-1]
        rows = (first_row + kinks_below).flatten()
        slope_at, offset_at = tables.flatten(1).index_select(1, rows).view(2, 2, *taylor.shape)
        bias = self.out.bias.to(dtype).unsqueeze(-1).unsqueeze(-1)
        return torch.addcmul(offset_at + bias, taylor, slope_at).view(2, *pairs_shape, num_points)


@register_estimator("rodeo", summary="K samples; RLOO plus discrete-Stein control variates whose small network "
                   "is trained online to minimise the variance")
class RODEO(ScoreFunctionEstimator):
    """RODEO for binary variables, logits ``(..., 2)``, K ≥ 2 samples.

    Per example, with ``η = θ_1 − θ_0``, ``p = σ(η)``, samples ``b_k ∈ {0,1}^D`` and
    losses ``f_k``, the estimate for ``η`` is

        ``(1/K) Σ_k [(f_k − mean_{j≠k} (f_j + α s_j)) (b_k − p) + β c_k]``

    where ``s_k = (A h⁰_k)(b_k)`` and ``c_k = (A [h¹_k(·)(· − p)])(b_k)`` apply the
    Gibbs Stein operator ``(A u)(b) = (1/D) Σ_i q(¬b_i) (u(b⁽ⁱ⁾) − u(b))`` (``b⁽ⁱ⁾``
    has bit ``i`` flipped) to ``h_k(y) = mean_{j≠k} h(∇f(b_j)·(y − b_j), f(b_j))``.
    ``h_k`` uses only the other samples, so each control variate has mean zero
    given them; ``s_j`` enters only the baselines of the other samples, where its
    mean over ``b_j`` is zero too. The estimate is therefore unbiased for any ``α``,
    ``β`` and network ``h``; with ``α = β = 0`` (the initial values) it is RLOO.

    Training: ``objective`` adds ``mean(ĝ²) − mean(ĝ²).detach()``, computed from
    detached samples, losses and slopes, so its value is zero and its gradient
    reaches only ``α``, ``β`` and ``h``. ``E[ĝ²]`` is the variance plus the squared
    true gradient, which the control variates cannot change, so descending it
    minimises the variance. Because the control parameters are ordinary parameters
    of this module, the model's own optimiser trains them alongside everything
    else, they are checkpointed with the model and all-reduced under DDP, and no
    second optimiser or training hook is needed.

    Each call evaluates ``f`` once (at the K samples) and back-propagates once more
    through ``f`` for the slopes ``∇f(b_j)``; an ``f`` with no gradient in its input
    gives zero slopes, which leaves the network only the other samples' losses.
    The network is evaluated at ``D + 1`` points for each of the ``K (K − 1)``
    ordered pairs of samples of each example, so the cost grows as ``K²``.
    """

    binary_only = True
    graph_break = ("rodeo differentiates the loss with respect to its samples inside the forward pass "
                   "(torch.autograd.grad), which torch.compile does not capture")

    def __init__(self, *, hidden_size: int = 100, validate_args: bool = True) -> None:
        if not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"rodeo: hidden_size must be an integer >= 1, got {hidden_size!r}.")
        super().__init__(validate_args=validate_args)
        self.control = ControlNet(hidden_size)
        self.scalar_cv_weight = nn.Parameter(torch.zeros(()))  # α
        self.vector_cv_weight = nn.Parameter(torch.zeros(()))  # β

    def objective(self, logits: Tensor, f: LossFn, num_samples: int = 2) -> Tensor:
        self.check_num_samples(num_samples)
        logit_gap, prob_one = binary_logit_gap(self, logits)
        with torch.no_grad():
            uniform = torch.rand((num_samples, *prob_one.shape), dtype=prob_one.dtype, device=prob_one.device)
            ones = uniform < prob_one
            samples = torch.stack((~ones, ones), dim=-1).to(logits.dtype)
        if not torch.is_grad_enabled():  # evaluation needs only the value
            losses = f(samples)
            check_losses(self.name, losses, logits, num_samples)
            return losses.mean()
        samples.requires_grad_()
        losses = f(samples)
        batch_ndim = check_losses(self.name, losses, logits, num_samples)
        slopes = _slopes_along_the_edge(losses, samples).to(logit_gap.dtype)
        num_examples = losses[0].numel()
        bits_shape = (num_samples, num_examples, math.prod(prob_one.shape[batch_ndim:]))
        # Under autocast the control maths would drop to half precision; keep logit_gap.dtype.
        with torch.autocast(logits.device.type, enabled=False):
            estimate = self.estimate(
                losses.detach().to(logit_gap.dtype).reshape(bits_shape[:2]),
                ones.to(logit_gap.dtype).reshape(bits_shape),
                prob_one.reshape(bits_shape[1:]),
                slopes.reshape(bits_shape),
            )
        variance_loss = estimate.square().mean()
        surrogate = logit_gap_surrogate(estimate.detach().reshape(logit_gap.shape), logit_gap, num_examples)
        return with_surrogate(losses.mean(), surrogate) + (variance_loss - variance_loss.detach())

    def estimate(self, losses: Tensor, ones: Tensor, prob_one: Tensor, slopes: Tensor) -> Tensor:
        """``ĝ_η`` per example ``(N, D)``; differentiable only in the control parameters.

        ``losses`` is ``(K, N)``; ``ones`` (the samples' bits) and ``slopes``
        (``∂f/∂b`` at each sample) are ``(K, N, D)``; ``prob_one`` is ``(N, D)``.
        """
        num_samples, _, num_variables = ones.shape
        # others[k] lists the samples j ≠ k, in order.
        position = torch.arange(num_samples - 1, device=ones.device)
        row = torch.arange(num_samples, device=ones.device).unsqueeze(-1)
        others = position + (position >= row).long()  # (K, K−1)

        # Taylor increments t_kj(y) = ∇f(b_j)·(y − b_j), at y = b_k (K, K−1, N) and
        # at the D neighbours of b_k, which differ from it by one slope each.
        slope_dot_bits = torch.einsum("jnd,knd->kjn", slopes, ones)  # [k, j]: ∇f(b_j)·b_k
        own_dot = slope_dot_bits.diagonal(dim1=0, dim2=1).T  # [j]: ∇f(b_j)·b_j
        taylor_here = (slope_dot_bits - own_dot)[row, others]
        flip_sign = 1.0 - 2.0 * ones  # y_i − b_i when bit i is flipped
        taylor_flipped = taylor_here.unsqueeze(-1) + slopes[others] * flip_sign.unsqueeze(1)
        taylor = torch.cat((taylor_here.unsqueeze(-1), taylor_flipped), dim=-1)  # (K, K−1, N, 1+D)
        # h⁰_k and h¹_k, means over the other samples, at b_k and its neighbours: (K, N, 1+D).
        h_scalar, h_vector = self.control(taylor, losses[others]).mean(dim=2)

        flip_prob = torch.addcmul(prob_one, ones, 1.0 - 2.0 * prob_one)  # q(¬b_i)
        centred = ones - prob_one  # b − p = ∇η log q(b)
        # (A u)(b) = mean_i q(¬b_i) (u(b⁽ⁱ⁾) − u(b)). For u(y) = h¹(y)·(y − p), flipping
        # bit d also changes y_d − p_d, by 1 − 2 b_d: the second term of vector_cv.
        scalar_cv = (flip_prob * (h_scalar[..., 1:] - h_scalar[..., :1])).mean(dim=-1)
        vector_change = flip_prob * (h_vector[..., 1:] - h_vector[..., :1])
        vector_cv = vector_change.mean(dim=-1, keepdim=True) * centred
        vector_cv = vector_cv + flip_prob * h_vector[..., 1:] * flip_sign / num_variables

        dtype = losses.dtype
        values = losses + self.scalar_cv_weight.to(dtype) * scalar_cv
        baseline = (values.sum(dim=0) - values) / (num_samples - 1)
        per_sample = (losses - baseline).unsqueeze(-1) * centred
        return (per_sample + self.vector_cv_weight.to(dtype) * vector_cv).mean(dim=0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, hidden_size={self.control.out.in_features}"


def _slopes_along_the_edge(losses: Tensor, samples: Tensor) -> Tensor:
    """``∂f/∂b`` at each sample, ``(K, *logits.shape[:-1])``, detached.

    Moving ``b`` from 0 to 1 moves the one-hot sample by ``(−1, +1)``. The graph
    of ``f`` is kept for the model's backward. Where ``f`` has no gradient in its
    input the slopes are zero.
    """
    grad = None
    if losses.requires_grad:
        (grad,) = torch.autograd.grad(losses.sum(), samples, retain_graph=True, allow_unused=True)
    if grad is None:
        return samples.new_zeros(samples.shape[:-1])
    return grad[..., 1] - grad[..., 0]
