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
import sys
from collections.abc import Sequence
from typing import Any

import lightning as L

from callbacks.nonfinite import NonFiniteError
from callbacks.preemption import EXIT_STATUS, Preempted
from datamodules.families import valid_data

from . import build, runs, settings
from .estimators import FAMILIES, InvalidLogitsError, list_estimators
from .models import list_models, model_card
from .pretrained import get_release, load_weights, read_weights, weights_file
from .settings import Settings


def build_parser() -> argparse.ArgumentParser:
    """The flags, one for each declared setting that has one (:mod:`zoo.settings`)."""
    parser = argparse.ArgumentParser(prog="train.py",  # also when run in-process or as the console script
                                     description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=registries() + "\n\nExample: python train.py --model vae --estimator st "
                                     "--tau 1.0 --data fashion-mnist",
                                     argument_default=argparse.SUPPRESS)
    for name, declaration in settings.FLAGS.items():
        option, text = declaration.option(name), settings.flag_help(name)
        if declaration.takes_pairs:
            parser.add_argument(option, action="append", metavar="KEY=VALUE", dest=declaration.dest(name),
                                help=f"{text} (repeatable)")
        else:
            bare = {"nargs": "?", "const": declaration.kind.bare} if declaration.kind.bare is not None else {}
            parser.add_argument(option, help=text, type=declaration.kind.parse, choices=declaration.kind.choices,
                                metavar=declaration.metavar, **bare)
    return parser


def registries() -> str:
    """The models, estimators and data sets, as the registries list them (the ``--help`` epilog)."""
    lines = ["models:"]
    for name in list_models():
        card = model_card(name)
        lines.append(f"  {name:<9} {card.summary}; data: {', '.join(valid_data(card.data_family))}")
    lines.append("estimators:")
    for family in FAMILIES:
        lines.append(f"  {family}: {', '.join(list_estimators(family))}")
    return "\n".join(lines)


def parse_settings(argv: list[str]) -> Settings:
    """The settings of the command line ``argv``, resolved: for programs that build a run in-process."""
    flags = vars(build_parser().parse_args(argv))
    return settings.resolve(flags, flags.pop("config", None))


def main(argv: list[str] | None = None, *, callbacks: Sequence[Any] = (), plugins: Sequence[Any] = ()) -> int:
    """Train as the command line ``argv`` says; ``callbacks`` and ``plugins`` are added to the Trainer's,
    for programs that train in-process (the GPU check, tests)."""
    parser = build_parser()
    flags = vars(parser.parse_args(argv))
    with runs.version_handed_on():  # to the processes this run starts, and only while it runs
        trainer = None
        try:
            config = settings.resolve(flags, flags.pop("config", None))
            run, checkpoint = runs.run_directory(config)
            L.seed_everything(config.seed, workers=True, verbose=False)
            build.check_model_fits(config)
            model = build.build_model(config)
            if checkpoint is not None:
                runs.check_checkpoint(checkpoint, model)
            if config.from_pretrained and checkpoint is None:
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
