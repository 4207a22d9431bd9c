"""Train a model of the zoo with the gradient estimator of your choice.

    python train.py --model vae --estimator reinmax --data fashion-mnist
    discrete-zoo-train --model vae --estimator reinmax --data fashion-mnist   # installed

The program reads top to bottom: parse the flags, resolve the settings
(:mod:`zoo.settings` gives the order: defaults, a release, the YAML file, the flags,
the model's recipe), find the run's folder (:mod:`zoo.runs`), build the model, data
and Trainer (:mod:`zoo.build`), and fit. ``--resume auto`` continues the newest run
of the same settings from its last checkpoint, or starts one, so a job script can
always pass it. SIGTERM writes a checkpoint at the current step and exits with 143.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .settings import CHOICES, DEFAULTS, Settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train.py",  # also when run in-process or as the console script
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=registries() + "\n\nExample: python train.py --model vae --estimator st "
                                     "--tau 1.0 --data fashion-mnist",
                                     argument_default=argparse.SUPPRESS)

    def add(flag: str, help: str, **options: Any) -> None:
        key = flag.removeprefix("--").replace("-", "_")
        parser.add_argument(flag, help=help, choices=CHOICES.get(key), **options)

    add("--config", "YAML file of settings (flags override it)", type=Path)
    add("--model", f"model name (default {DEFAULTS.model})")
    add("--estimator", "gradient estimator (default: the model's; reinmax, sparsemixer for moe)")
    add("--data", "data set (default: the model's; mnist for the VAEs)")
    add("--data-dir", "folder with the data set's files (searched before downloading)")
    add("--binarize", "pixel binarization (default: the model's)")
    add("--val-size", "hold out this many training images for validation; 0 validates on the test split "
                      "(default: the model's)", type=non_negative_int)
    add("--tau", "estimator temperature (default: the model's, 1.3 for vae)", type=float)
    add("--tau-schedule", "anneal tau from --tau to --tau-end (default constant)")
    add("--tau-end", "the temperature a schedule ends at", type=float)
    add("--tau-duration", "steps (or epochs) a schedule takes", type=positive_int)
    add("--tau-interval", "schedule per step or per epoch (default step)")
    add("--categories", "classes per latent variable (vae; default 10)", type=positive_int)
    add("--latents", "latent variables (default: the model's, 30 for vae)", type=positive_int)
    add("--pnorm", "the exponent p of the polynomial toy's loss (poly; default 2)", type=float)
    add("--genotype", "the NATS-Bench architecture string nas-net trains, e.g. '|nor_conv_3x3~0|+|nor_conv_3x3~0|"
                      "nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'")
    add("--num-samples", "decoder evaluations per example and step (default: the model's)", type=positive_int)
    add("--optimizer", "optimizer (default: the model's)")
    add("--lr", "learning rate (default: the model's)", type=float)
    add("--batch-size", "batch size (default: the model's recipe, 100 for the VAEs)", type=positive_int)
    add("--gradient-clip-val", "clip gradients to this norm (default: the model's recipe)", type=float)
    add("--max-epochs", "epochs; -1 for no limit (default: the model's recipe)", type=int)
    add("--max-steps", "optimizer steps; -1 for no limit (default: the model's recipe)", type=int)
    add("--seed", "random seed (default 0)", type=int)
    add("--devices", "devices to use, e.g. 1, 2 or auto (default auto)")
    add("--accelerator", "cpu, gpu or auto (default auto)")
    add("--strategy", "auto, ddp, ddp_spawn, ... (default auto)")
    add("--precision", "32-true, bf16-mixed, 16-mixed, ... (default 32-true)")
    add("--output-dir", f"where runs are written (default {DEFAULTS.output_dir})")
    add("--grad-quality-every", "log the estimator's cosine, bias and std against the true gradient every N "
                                "steps (0: off; other options under grad_quality in the YAML file)",
        type=non_negative_int, metavar="N")
    add("--resume", "'auto': continue the newest run of these settings, or start one if there is none; or a "
                    "checkpoint path")
    add("--run-name", "name the run's folder (default version_N), e.g. a job's own name", type=run_name)
    add("--from-pretrained", "fine-tune a released model (zoo.list_pretrained()): its settings and data are the "
                             "defaults, the flags change them, e.g. --estimator st", metavar="NAME")
    add("--checkpoint-every", "also write last.ckpt every N steps, so a killed run loses at most N steps "
                              f"(0: at epoch ends only; default {DEFAULTS.checkpoint_every})",
        type=non_negative_int, metavar="N")
    add("--on-nonfinite", "a NaN or infinite loss or gradient stops training before the step (default) or skips "
                          "the step")
    for target in ("model", "estimator", "trainer"):
        parser.add_argument(f"--{target}-arg", action="append", metavar="KEY=VALUE", dest=f"{target}_args",
                            help=f"pass any other {target} option (repeatable)")
    return parser


def registries() -> str:
    """The models, estimators and data sets, as the registries list them (the ``--help`` epilog)."""
    from datamodules.families import valid_data
    from zoo.estimators import FAMILIES, list_estimators
    from zoo.models import list_models, model_card

    lines = ["models:"]
    for name in list_models():
        card = model_card(name)
        lines.append(f"  {name:<9} {card.summary}; data: {', '.join(valid_data(card.data_family))}")
    lines.append("estimators:")
    for family in FAMILIES:
        lines.append(f"  {family}: {', '.join(list_estimators(family))}")
    return "\n".join(lines)


def run_name(text: str) -> str:
    if not text or text in (".", "..") or "/" in text or os.sep in text:
        raise argparse.ArgumentTypeError(f"must be a folder name without '/', got {text!r}")
    return text


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {value}")
    return value


def parse_settings(argv: list[str]) -> Settings:
    """The settings of the command line ``argv``, resolved: for programs that build a run in-process."""
    from . import settings

    flags = vars(build_parser().parse_args(argv))
    return settings.resolve(flags, flags.pop("config", None))


def main(argv: list[str] | None = None, *, callbacks: Sequence[Any] = (), plugins: Sequence[Any] = ()) -> int:
    """Train as the command line ``argv`` says; ``callbacks`` and ``plugins`` are added to the Trainer's,
    for programs that train in-process (the GPU check, tests)."""
    from callbacks.nonfinite import NonFiniteError
    from callbacks.preemption import EXIT_STATUS, Preempted
    from zoo.estimators import InvalidLogitsError

    from . import build, runs, settings

    parser = build_parser()
    flags = vars(parser.parse_args(argv))
    trainer = None
    try:
        config = settings.resolve(flags, flags.pop("config", None))
        run, checkpoint = runs.run_directory(config)
        import lightning as L

        L.seed_everything(config.seed, workers=True, verbose=False)
        build.check_model_fits(config)
        model = build.build_model(config)
        if checkpoint is not None:
            runs.check_checkpoint(checkpoint, model)
        if config.from_pretrained and checkpoint is None:
            from zoo.pretrained import get_release, load_weights, read_weights, weights_file

            release = get_release(config.from_pretrained)
            load_weights(model, read_weights(weights_file(release)), release.name)
        datamodule = build.build_datamodule(config)
        trainer = build.build_trainer(config, run, model, callbacks, plugins)
        if trainer.is_global_zero:
            if config.resume == "auto" and checkpoint is None:
                print("--resume auto: no run of these settings to continue; starting a new one", flush=True)
            command = ["python", "train.py", *(sys.argv[1:] if argv is None else argv)]
            runs.save_config(config, run, command, trainer.world_size)
            print(f"run directory: {run}\nTensorBoard: tensorboard --logdir {run.parent}\n"
                  f"{build.describe_batch(config.batch_size, trainer.world_size)}", flush=True)
        # Checkpoints hold tensors and plain values only: load them without unpickling code.
        trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        build.leave_process_group()
    except InvalidLogitsError as error:
        if trainer is None:
            raise
        # Inside training, logits without a distribution mean the weights have diverged.
        parser.exit(1, f"{parser.prog}: training stopped at step {trainer.global_step}: {error} The checkpoints "
                       "already written are kept; lower the learning rate or clip gradients, and resume.\n")
    except (ValueError, FileNotFoundError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except NonFiniteError as error:
        parser.exit(1, f"{parser.prog}: training stopped: {error}\n")
    except Preempted as error:
        parser.exit(EXIT_STATUS, f"{parser.prog}: {error}\n")
    except RuntimeError as error:
        if not build.out_of_memory(error):
            raise
        step = f" at step {trainer.global_step}" if trainer is not None else ""
        parser.exit(2, f"{parser.prog}: error: out of memory{step}: {str(error).splitlines()[0]}. Lower "
                       "--batch-size or --num-samples, or the model's sizes. The checkpoints already written are "
                       "kept.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
