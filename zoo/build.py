"""Building a run from its settings: the model, its data module, and the Trainer with the zoo's callbacks."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.plugins import Precision

from callbacks.checkpoint import AtomicCheckpointIO, RunCheckpoints
from callbacks.compiling import CompiledTraining
from callbacks.gradient_quality import GradientQuality
from callbacks.images import GenerativeImageModel, ReconstructionImages
from callbacks.nonfinite import NonFiniteGuard
from callbacks.preemption import StopOnSignal
from callbacks.progress import LossProgressBar
from callbacks.run_summary import RunSummary
from callbacks.seeding import PerRankSeed
from callbacks.temperature import TemperatureSchedule
from datamodules.families import build_datamodule as build_family_datamodule
from datamodules.families import data_facts

from .models import model_card
from .option_types import check_option_types
from .settings import MODEL_SETTINGS, Settings


def build_model(settings: Settings) -> L.LightningModule:
    """The model the settings name, with its constructor settings, estimator and options."""
    card = model_card(settings.model)
    arguments = {key: getattr(settings, key) for key in MODEL_SETTINGS if getattr(settings, key) is not None}
    if settings.estimator is not None:
        arguments.update(estimator=settings.estimator, estimator_options=settings.estimator_options or None)
    if settings.tau_end is not None and "tau_end" in card.arguments:
        arguments["tau_end"] = settings.tau_end
    facts = data_facts(card.data_family, settings.data)
    arguments.update({name: facts[name] for name in card.from_data})  # e.g. the input channels follow the data
    check_option_types(card.model_class.__init__, settings.model_options,
                       lambda key: f"model option {key!r} of {settings.model!r}")
    arguments.update(settings.model_options)
    try:
        return card.model_class(**arguments)
    except TypeError as error:
        raise ValueError(f"bad model option for {settings.model!r}: {error}") from error


def build_datamodule(settings: Settings) -> L.LightningDataModule:
    return build_family_datamodule(model_card(settings.model).data_family, settings.data,
                                   data_dir=settings.data_dir, batch_size=settings.batch_size,
                                   binarize=settings.binarize, val_size=settings.val_size)


def build_trainer(settings: Settings, run: Path, model: L.LightningModule, callbacks: Sequence[Any] = (),
                  plugins: Sequence[Any] = ()) -> L.Trainer:
    """The Trainer of a run: its checkpoints, guards, logger and bar, then ``callbacks`` and ``plugins``.

    A precision plugin among ``plugins`` replaces ``--precision`` (e.g. float16 with a
    loss scaler on the CPU, which Lightning's ``16-mixed`` turns into bfloat16 there).
    The guard, the stop signal and the bar share the step's one read of the device
    (``callbacks.step_read``), which they add to the Trainer themselves.
    """
    card = model_card(settings.model)
    checkpoints = RunCheckpoints(run / "checkpoints", card.monitor, card.mode, settings.checkpoint_every or None)
    extra_callbacks, callbacks = list(callbacks), [
        checkpoints,
        StopOnSignal(checkpoints),
        RunSummary(run, checkpoints),
        PerRankSeed(settings.seed),
        NonFiniteGuard(settings.on_nonfinite),
    ]
    if settings.grad_quality_every:
        try:
            callbacks.append(GradientQuality(every_n_steps=settings.grad_quality_every,
                                             seed=settings.seed, **settings.grad_quality))
        except TypeError as error:
            raise ValueError(f"bad grad_quality option: {error}") from error
    if settings.compile:
        callbacks.append(CompiledTraining(settings.compile))
    if settings.tau_schedule != "constant":
        callbacks.append(TemperatureSchedule(settings.tau, settings.tau_end, settings.tau_schedule,
                                             settings.tau_duration, settings.tau_interval))
    if settings.trainer.get("enable_progress_bar", True):
        callbacks.append(LossProgressBar())
    if isinstance(model, GenerativeImageModel):
        callbacks.append(ReconstructionImages())
    callbacks += extra_callbacks
    logger = TensorBoardLogger(save_dir=run.parent, name="", version=run.name, default_hp_metric=False)
    arguments = dict(
        max_epochs=settings.max_epochs,
        max_steps=settings.max_steps,
        gradient_clip_val=settings.gradient_clip_val,
        devices=settings.devices,
        accelerator=settings.accelerator,
        strategy=settings.strategy,
        precision=None if any(isinstance(plugin, Precision) for plugin in plugins) else settings.precision,
        logger=logger,
        callbacks=callbacks,
        default_root_dir=run,  # where Lightning's own files (e.g. SLURM's hpc_ckpt_N.ckpt) go
        plugins=[AtomicCheckpointIO(), *plugins],
    )
    arguments.update(settings.trainer)
    try:
        trainer = L.Trainer(**arguments)
    except (TypeError, ValueError) as error:
        raise ValueError(f"bad trainer setting: {error}") from error
    find_unused_parameters_if_needed(trainer, model)
    return trainer


def check_model_fits(settings: Settings) -> None:
    """Refuse a model whose parameters would not fit in this machine's memory, before allocating any.

    The model is built on PyTorch's meta device, which records shapes only. Its
    parameters, their gradients and two optimizer moments take 16 bytes each.
    """
    import torch

    with torch.device("meta"):
        parameters = sum(parameter.numel() for parameter in build_model(settings).parameters())
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: nothing to compare with
        return
    if 16 * parameters > memory:
        sizes = ", ".join(f"--{key.replace('_', '-')} {getattr(settings, key)}" for key in ("latents", "categories")
                          if getattr(settings, key) is not None) or "its --model-arg sizes"
        raise ValueError(f"model {settings.model!r} would have {parameters:,} parameters: with their gradients "
                         f"and optimizer state {16 * parameters / 2**30:,.0f} GiB, more than this machine's "
                         f"{memory / 2**30:,.0f} GiB of memory. Choose smaller sizes ({sizes}).")


def find_unused_parameters_if_needed(trainer: L.Trainer, model: L.LightningModule) -> None:
    """Let DDP find the parameters a step leaves unused, if the model has such steps.

    GDAS runs only the sampled operation of each edge, so DDP must look for the
    parameters that took no part in the loss. Lightning picks DDP for ``--devices N``
    and ``auto`` with several GPUs, for every ``ddp*`` strategy name, and for
    processes started by ``torchrun`` or ``srun``; whichever way it got there, the
    strategy it built is the one to adjust, before anything is wrapped.
    """
    from lightning.pytorch.strategies import DDPStrategy

    if model.card.unused_parameters and isinstance(trainer.strategy, DDPStrategy):
        # Lightning keeps DDP's keyword arguments here until it wraps the model (its own
        # "*_find_unused_parameters_true" names set this very entry); there is no public setter.
        trainer.strategy._ddp_kwargs["find_unused_parameters"] = True


def describe_batch(per_process: int, processes: int) -> str:
    """One line on the batch: ``--batch-size`` is per process, so the global batch grows with them."""
    if processes == 1:
        return f"batch: {per_process}"
    return (f"global batch: {per_process * processes} ({per_process} per process x {processes} processes); "
            "the learning rate and the step budget are as given, not scaled")


def out_of_memory(error: RuntimeError) -> bool:
    """Whether ``error`` is an allocation that failed: a GPU's out-of-memory error, or the CPU allocator's."""
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


def leave_process_group() -> None:
    """Let the processes of a finished run exit together.

    A process of a ``torchrun`` or ``srun`` launch that exits while another still
    holds a connection to its rendezvous store can make that one abort.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


