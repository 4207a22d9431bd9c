"""How good is the gradient estimator? Measured against the true gradient while training.

Every ``every_n_steps`` steps, on a fixed probe batch and the current parameters,
:class:`GradientQuality` compares ``num_samples`` gradient estimates with respect to
the model's discrete logits (each one training step's estimate, with the model's
``num_samples`` loss evaluations) against a reference gradient g*: the model's
closed form when it has one, exact enumeration when the configurations are few,
otherwise RLOO with many samples. With m and s the mean and the per-component
standard deviation of the estimates it logs, under ``grad_quality/<estimator>/``:

* ``cosine``: cos(m, g*);
* ``bias``: ‖m − g*‖ / ‖g*‖ (it includes the Monte Carlo error of m, about
  ``std / √num_samples``, and that of a sampled reference);
* ``std``: ‖s‖ / ‖g*‖;
* ``sample_cosine``: the mean of cos(ĝ, g*) over the estimates.

Training is untouched: gradients are taken with respect to a detached copy of the
logits only, and the draws run on a forked random state, so the parameters and
the training random stream are bit-identical with the callback on or off.

Under DDP every process draws its share of the samples and the float64 sums are
all-reduced, so every rank holds the same values and rank 0 writes them. The draws
are made in chunks whose seeds depend on the run's seed, the step and the chunk's
index, never on the rank, so two processes log what one process drawing the same
total logs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from torch import Tensor

from zoo.estimators import Estimator, get_estimator
from zoo.models import GradientProbe, estimator_at

Reduce = Callable[[Tensor], Tensor]
STATISTICS = ("cosine", "bias", "std", "sample_cosine")


class GradientQuality(L.Callback):
    """Log the cosine, bias and variance of gradient estimates every ``every_n_steps``.

    ``estimators`` adds other estimators scored on the same probe (names, or a
    mapping from name to options; an estimator with a temperature gets the
    training estimator's τ unless its options set one). The model must define
    ``gradient_probe(batch) -> GradientProbe``; the probe batch is the first
    ``probe_batch_size`` examples of the first training batch seen, broadcast from
    rank 0, unless ``probe_batch`` is set beforehand. ``reference_samples`` loss evaluations make a
    sampled reference, used when there are more than ``max_configurations`` configurations per example.
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        num_samples: int = 100,
        estimators: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
        probe_batch_size: int = 32,
        reference_samples: int = 1000,
        max_configurations: int = 1 << 16,
        chunk_size: int = 10,
        seed: int = 0,
    ) -> None:
        for name, value, minimum in (
            ("every_n_steps", every_n_steps, 1),
            ("num_samples", num_samples, 2),
            ("probe_batch_size", probe_batch_size, 1),
            ("reference_samples", reference_samples, 2),
            ("chunk_size", chunk_size, 1),
        ):
            if not isinstance(value, int) or value < minimum:
                raise ValueError(f"GradientQuality: {name} must be an integer >= {minimum}, got {value!r}.")
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        if isinstance(estimators, str):
            raise ValueError(f"GradientQuality: estimators must be a list of names or a mapping, got {estimators!r}.")
        self.extra_options = (
            dict(estimators) if isinstance(estimators, Mapping) else dict.fromkeys(estimators or (), {})
        )
        self.probe_batch_size = probe_batch_size
        self.reference_samples = reference_samples
        self.max_configurations = max_configurations
        self.chunk_size = chunk_size
        self.seed = seed
        self.last: dict[str, float] = {}
        self.probe_batch: Any = None
        self._extra: dict[str, Estimator] = {}

    def setup(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if not hasattr(module, "gradient_probe"):
            raise ValueError(
                f"{type(module).__name__} has no gradient_probe(batch), so GradientQuality "
                "cannot score its estimator; see zoo.models.GradientProbe."
            )
        tau = getattr(module.estimator, "tau", 1.0)
        self._extra = {
            name: estimator_at(name, tau, dict(options))
            for name, options in self.extra_options.items()
            if name != module.estimator.name
        }
        for estimator in self._extra.values():
            estimator.check_num_samples(self._evaluations(module))

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Lightning places the model (device, and dtype under 64-true) after ``setup``.
        for estimator in self._extra.values():
            estimator.to(device=module.device, dtype=module.dtype)

    def on_train_batch_start(self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_index: int) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        if self.probe_batch is None:
            first = batch[: self.probe_batch_size] if isinstance(batch, Tensor) else batch
            # Sent from the CPU: a CUDA tensor would arrive on rank 0's GPU on every rank.
            self.probe_batch = trainer.strategy.broadcast(move_data_to_device(first, "cpu"), src=0)
        self.probe_batch = move_data_to_device(self.probe_batch, module.device)
        reduce = (
            (lambda tensor: trainer.strategy.reduce(tensor, reduce_op="sum"))
            if trainer.world_size > 1
            else (lambda tensor: tensor)
        )
        self.last = self.measure(module, trainer.global_step, trainer.global_rank, trainer.world_size, reduce)
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(self.last, step=trainer.global_step)

    def measure(
        self,
        module: L.LightningModule,
        step: int,
        rank: int = 0,
        world_size: int = 1,
        reduce: Reduce = lambda tensor: tensor,
        reference: Tensor | None = None,
    ) -> dict[str, float]:
        """The statistics of every scored estimator, as logged; the same on every rank.

        ``reference``, the output of :meth:`reference` for these parameters, saves
        recomputing it when several estimators are scored one call at a time.
        """
        devices = [module.device.index or 0] if module.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.enable_grad():
            probe = module.gradient_probe(self.probe_batch)
            if reference is None:
                reference = self.reference(probe, step, rank, world_size, reduce)
            estimators = {module.estimator.name: module.estimator, **self._extra}
            metrics = {}
            for salt, (name, estimator) in enumerate(estimators.items(), start=1):
                sums = torch.zeros(2 * reference.numel() + 2, dtype=torch.float64, device=reference.device)
                for chunk, count in self._chunks(self.num_samples, rank, world_size):
                    torch.manual_seed(self._chunk_seed(step, salt, chunk))
                    draws = _estimates(estimator, probe, count, self._evaluations(module)).flatten(1)
                    sums += torch.cat(
                        (
                            draws.sum(0),
                            draws.square().sum(0),
                            _cosine(draws, reference).sum().view(1),
                            draws.new_tensor([count]),
                        )
                    )
                for statistic, value in _statistics(reduce(sums), reference).items():
                    metrics[f"grad_quality/{name}/{statistic}"] = value
        return metrics

    def reference(
        self,
        probe: GradientProbe,
        step: int = 0,
        rank: int = 0,
        world_size: int = 1,
        reduce: Reduce = lambda tensor: tensor,
    ) -> Tensor:
        """g*, the gradient of the probe's mean expected loss, flattened, in float64."""
        leaf = probe.logits.detach().double().requires_grad_()
        if probe.expected_loss is not None:
            return torch.autograd.grad(probe.expected_loss(leaf), leaf)[0].flatten()
        variables = math.prod(leaf.shape[leaf.dim() - 1 - probe.event_ndim : -1])
        if leaf.shape[-1] ** variables <= self.max_configurations:
            exact = get_estimator("exact", event_ndim=probe.event_ndim, max_configurations=self.max_configurations)
            return torch.autograd.grad(exact.objective(leaf, _in_dtype(probe.loss, probe.logits.dtype)), leaf)[
                0
            ].flatten()
        # Many RLOO estimates of up to 100 evaluations each: unbiased, and the more
        # evaluations share a leave-one-out baseline, the lower their variance.
        rloo = get_estimator("reinforce")
        per_estimate = min(100, self.reference_samples)
        sums = leaf.new_zeros(leaf.numel() + 1)
        estimates = self.reference_samples // per_estimate
        for chunk, _ in self._chunks(estimates, rank, world_size, chunk_size=1):
            torch.manual_seed(self._chunk_seed(step, 0, chunk))
            draw = _estimates(rloo, probe, 1, per_estimate)[0].double().flatten()
            sums += torch.cat((draw, draw.new_ones(1)))
        sums = reduce(sums)
        return sums[:-1] / sums[-1]

    def _evaluations(self, module: L.LightningModule) -> int:
        """Loss evaluations per estimate: what one training step of the model uses."""
        return int(getattr(module.hparams, "num_samples", 1))

    def _chunks(
        self, total: int, rank: int, world_size: int, chunk_size: int | None = None
    ) -> Iterator[tuple[int, int]]:
        """``(index, size)`` of this rank's chunks of ``total`` draws; chunks alternate over ranks."""
        chunk_size = chunk_size or self.chunk_size
        for index, start in enumerate(range(0, total, chunk_size)):
            if index % world_size == rank:
                yield index, min(chunk_size, total - start)

    def _chunk_seed(self, step: int, salt: int, chunk: int) -> int:
        return hash((self.seed, step, salt, chunk)) % (1 << 62)


def _in_dtype(loss: Callable[[Tensor], Tensor], dtype: torch.dtype) -> Callable[[Tensor], Tensor]:
    """``loss`` fed samples in the model's dtype, returning float64."""
    return lambda samples: loss(samples.to(dtype)).double()


def _estimates(estimator: Estimator, probe: GradientProbe, count: int, evaluations: int) -> Tensor:
    """``count`` independent estimates of the probe's gradient: ``(count, *logits.shape)``.

    The logits are replicated along a new leading batch axis, so one call draws all
    of them; the objective averages over that axis, hence the factor ``count``.
    """
    leaf = probe.logits.detach().expand(count, *probe.logits.shape).clone().requires_grad_()
    objective = estimator.objective(leaf, probe.loss, evaluations)
    return torch.autograd.grad(objective, leaf)[0].double() * count


def _cosine(draws: Tensor, reference: Tensor) -> Tensor:
    norms = draws.norm(dim=1) * reference.norm()
    return (draws @ reference) / norms.clamp_min(torch.finfo(draws.dtype).tiny)


def _statistics(sums: Tensor, reference: Tensor) -> dict[str, float]:
    size = reference.numel()
    total, total_squares, cosines, count = sums[:size], sums[size : 2 * size], sums[-2], sums[-1]
    mean = total / count
    variance = ((total_squares - count * mean.square()) / (count - 1)).clamp_min(0)
    scale = reference.norm().clamp_min(torch.finfo(reference.dtype).tiny)
    return {
        "cosine": float(_cosine(mean.unsqueeze(0), reference)[0]),
        "bias": float((mean - reference).norm() / scale),
        "std": float(variance.sum().sqrt() / scale),
        "sample_cosine": float(cosines / count),
    }
