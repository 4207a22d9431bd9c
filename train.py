"""Train a model of the zoo with the gradient estimator of your choice.

    python train.py --model vae --estimator reinmax --data fashion-mnist

Settings come from, in increasing priority: the defaults below, where unset ones
fall back to the chosen model's own (its constructor defaults and its ``recipe``:
the paper's 10×30 ReinMax row for ``vae``, its 2×200 ReinMax row for ``bvae``), a
YAML file given with ``--config``, and the command-line flags; with
``--from-pretrained NAME`` a release's settings and weights are the starting point.
Anything else a model, estimator or Lightning ``Trainer`` accepts passes through ``--model-arg``, ``--estimator-arg`` and ``--trainer-arg``
(``KEY=VALUE``, the value read as YAML), or the ``model_options``,
``estimator_options`` and ``trainer`` mappings of the YAML file.

A run writes to ``OUTPUT_DIR/MODEL-DATA-ESTIMATOR/version_N/`` (``MODEL-DATA`` for a
model without an estimator), or ``.../RUN_NAME/`` with ``--run-name``: the resolved
configuration and the command (``config.yaml``), TensorBoard events, and
``checkpoints/`` (the last and the best). ``--resume auto`` continues the newest run
of the same settings (all but where it runs and for how long) from its last
checkpoint, or starts one if there is none, so a job script can always pass it;
``--resume PATH`` continues from a checkpoint file. SIGTERM writes a checkpoint at
the current step and exits with status 143.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

DEFAULTS: dict[str, Any] = {
    "model": "vae",
    "estimator": "reinmax",
    "data": None,
    "data_dir": None,
    # None: the model's own default (its constructor's, e.g. the paper's 10×30
    # ReinMax row for the categorical VAE) or its training recipe (``Model.recipe``).
    "binarize": None,
    "val_size": None,
    "tau": None,
    "tau_schedule": "constant",  # from --tau to --tau-end over --tau-duration steps or epochs
    "tau_end": None,
    "tau_duration": None,
    "tau_interval": "step",
    "categories": None,
    "latents": None,
    "pnorm": None,
    "genotype": None,
    "num_samples": None,
    "optimizer": None,
    "lr": None,
    "batch_size": None,
    "gradient_clip_val": None,
    "max_epochs": None,
    "max_steps": None,
    "seed": 0,
    "devices": "auto",
    "accelerator": "auto",
    "strategy": "auto",
    "precision": "32-true",
    "output_dir": "runs",
    "resume": None,
    "run_name": None,  # the run's folder name (default version_N): a job's own folder
    "from_pretrained": None,  # a release of checkpoints/manifest.json to start from
    "on_nonfinite": "stop",  # a NaN/inf loss or gradient: stop before the step, or skip the step
    "checkpoint_every": 1000,  # steps between mid-epoch checkpoints (last.ckpt); 0: epoch ends only
    "grad_quality_every": 0,  # steps between gradient-quality measurements; 0: off
    "grad_quality": {},  # GradientQuality's other options, e.g. num_samples, estimators
    "model_options": {},
    "estimator_options": {},
    "trainer": {},
}
#: Settings a model takes as constructor arguments, and those of its training recipe.
MODEL_SETTINGS = ("categories", "latents", "pnorm", "tau", "num_samples", "optimizer", "lr", "genotype")
RECIPE_SETTINGS = {"data": "mnist", "binarize": "none", "val_size": 0, "batch_size": 100,
                   "gradient_clip_val": None, "max_epochs": -1, "max_steps": -1}
RUN_VERSION_VARIABLE = "DISCRETE_ZOO_RUN_VERSION"


def build_parser() -> argparse.ArgumentParser:
    from datamodules.images import ImageDataModule
    from datamodules.nas import NASDataModule
    from zoo.estimators import list_estimators
    from zoo.models import list_models

    parser = argparse.ArgumentParser(
        prog="train.py",  # also when run in-process or with python -m
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"models: {', '.join(list_models())}\n"
            f"estimators: {', '.join(list_estimators())}\n"
            f"data sets: {', '.join(ImageDataModule.DATASETS)} for the VAEs; {', '.join(NASDataModule.DATASETS)} "
            "for gdas and nas-net; none for poly, listops for listops\n\n"
            "Example: python train.py --model vae --estimator st --tau 1.0 --data fashion-mnist"
        ),
        argument_default=argparse.SUPPRESS,
    )
    add = parser.add_argument
    add("--config", type=Path, help="YAML file of settings (flags override it)")
    add("--model", help=f"model name (default {DEFAULTS['model']})")
    add("--estimator", help=f"gradient estimator (default {DEFAULTS['estimator']})")
    add("--data", help="data set (default: the model's; mnist for the VAEs)")
    add("--data-dir", help="folder with the data set's files (searched before downloading)")
    add("--binarize", choices=["none", "dynamic"], help="pixel binarization (default: the model's)")
    add("--val-size", type=non_negative_int,
        help="hold out this many training images for validation; 0 validates on the test "
             "split (default: the model's)")
    add("--tau", type=float, help="estimator temperature (default: the model's, 1.3 for vae)")
    add("--tau-schedule", choices=["constant", "linear", "exponential"],
        help="anneal tau from --tau to --tau-end (default constant)")
    add("--tau-end", type=float, help="the temperature a schedule ends at")
    add("--tau-duration", type=positive_int, help="steps (or epochs) a schedule takes")
    add("--tau-interval", choices=["step", "epoch"], help="schedule per step or per epoch (default step)")
    add("--categories", type=positive_int, help="classes per latent variable (vae; default 10)")
    add("--latents", type=positive_int, help="latent variables (default: the model's, 30 for vae)")
    add("--pnorm", type=float, help="the exponent p of the polynomial toy's loss (poly; default 2)")
    add("--genotype", help="the NATS-Bench architecture string nas-net trains, e.g. "
                           "'|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|'")
    add("--num-samples", type=positive_int,
        help="decoder evaluations per example and step (default: the model's)")
    add("--optimizer", choices=["adam", "radam"], help="optimizer (default: the model's)")
    add("--lr", type=float, help="learning rate (default: the model's)")
    add("--batch-size", type=positive_int, help="batch size (default: the model's recipe, 100 for the VAEs)")
    add("--gradient-clip-val", type=float, help="clip gradients to this norm (default: the model's recipe)")
    add("--max-epochs", type=int, help="epochs; -1 for no limit (default: the model's recipe)")
    add("--max-steps", type=int, help="optimizer steps; -1 for no limit (default: the model's recipe)")
    add("--seed", type=int, help="random seed (default 0)")
    add("--devices", help="devices to use, e.g. 1, 2 or auto (default auto)")
    add("--accelerator", help="cpu, gpu or auto (default auto)")
    add("--strategy", help="auto, ddp, ddp_spawn, ... (default auto)")
    add("--precision", help="32-true, bf16-mixed, 16-mixed, ... (default 32-true)")
    add("--output-dir", help=f"where runs are written (default {DEFAULTS['output_dir']})")
    add("--grad-quality-every", type=non_negative_int, metavar="N",
        help="log the estimator's cosine, bias and std against the true gradient every N steps "
             "(0: off; other options under grad_quality in the YAML file)")
    add("--resume", help="'auto': continue the newest run of these settings, or start one if there is none; "
                         "or a checkpoint path")
    add("--run-name", type=run_name, help="name the run's folder (default version_N), e.g. a job's own name")
    add("--from-pretrained", metavar="NAME",
        help="fine-tune a released model (zoo.list_pretrained()): its settings and data are the defaults, "
             "the flags change them, e.g. --estimator st")
    add("--checkpoint-every", type=non_negative_int, metavar="N",
        help="also write last.ckpt every N steps, so a killed run loses at most N steps "
             f"(0: at epoch ends only; default {DEFAULTS['checkpoint_every']})")
    add("--on-nonfinite", choices=["stop", "skip"],
        help="a NaN or infinite loss or gradient stops training before the step (default) or skips the step")
    for target in ("model", "estimator", "trainer"):
        add(f"--{target}-arg", action="append", metavar="KEY=VALUE", dest=f"{target}_args",
            help=f"pass any other {target} option (repeatable)")
    return parser


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


def key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """``["a=1", "b=[2, 3]"]`` → ``{"a": 1, "b": [2, 3]}`` (values read as YAML)."""
    parsed = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            parsed[key.replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ValueError(f"{flag} {pair!r}: the value is not valid YAML ({str(error).splitlines()[0]})") from error
    return parsed


#: The largest size a torch dimension holds; larger ones overflow before anything is allocated.
MAX_SIZE = 2**31 - 1


def _integer(low: int, high: int = MAX_SIZE) -> Callable[[Any], bool]:
    return lambda value: isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(low: float = -math.inf) -> Callable[[Any], bool]:
    return (lambda value: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and value >= low)


def _devices(value: Any) -> bool:
    """``auto``, a count (-1: all), or device indices (``0,1`` or a list)."""
    if isinstance(value, list):
        return bool(value) and all(_integer(0)(index) for index in value)
    text = str(value).strip()
    if text in ("auto", "-1"):
        return True
    if "," in text:
        return all(part.strip().isdigit() for part in text.split(","))
    return text.isdigit() and int(text) >= 1


FLOAT_SETTINGS = ("tau", "tau_end", "pnorm", "lr", "gradient_clip_val")
_IS_STRING = (lambda value: isinstance(value, str) and value != "", "a non-empty string")
_IS_MAPPING = (lambda value: isinstance(value, dict), "a mapping of KEY: VALUE")
#: What each setting may be, whether it comes from a flag or the YAML file (``None``: unset, where the
#: default is unset). The flags' own types check the same on the command line; the YAML file has none.
SETTING_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    **dict.fromkeys(("batch_size", "categories", "latents", "num_samples", "tau_duration"),
                    (_integer(1), f"an integer from 1 to {MAX_SIZE}")),
    **dict.fromkeys(("val_size", "checkpoint_every", "grad_quality_every"),
                    (_integer(0), f"an integer from 0 to {MAX_SIZE}")),
    **dict.fromkeys(("max_epochs", "max_steps"), (_integer(-1, 2**63 - 1), "an integer >= -1 (-1: no limit)")),
    "seed": (_integer(0, 2**32 - 1), "an integer from 0 to 4294967295"),
    "lr": (_number(0), "a finite number >= 0"),  # 0 trains nothing, as a check of the rest may want
    **dict.fromkeys(("tau", "tau_end", "pnorm"), (_number(), "a finite number")),
    "gradient_clip_val": (_number(0), "a finite number >= 0"),
    "devices": (_devices, "auto, a positive number of devices, -1 for all, or device indices such as 0,1"),
    **dict.fromkeys(("model", "estimator", "data", "data_dir", "output_dir", "resume", "run_name",
                     "from_pretrained", "genotype", "precision", "accelerator", "strategy"), _IS_STRING),
    **dict.fromkeys(("model_options", "estimator_options", "trainer", "grad_quality"), _IS_MAPPING),
}


def check_settings(config: dict[str, Any]) -> None:
    """Refuse a setting of the wrong type or range, naming it, before anything is built."""
    rules = dict(SETTING_RULES)
    for action in build_parser()._actions:
        if action.choices:  # the flags' choices, which a YAML file's values do not pass through
            rules[action.dest] = (lambda value, valid=action.choices: isinstance(value, str) and value in valid,
                                  f"one of {', '.join(action.choices)}")
    for key, value in config.items():
        if key not in rules or (value is None and DEFAULTS.get(key) is None):
            continue
        valid, description = rules[key]
        if not valid(value):
            raise ValueError(f"setting {key} (--{key.replace('_', '-')}): must be {description}, got {value!r}.")
        if key in FLOAT_SETTINGS:
            config[key] = float(value)  # a YAML integer as large as 10**30 would overflow torch's int64


def resolve_config(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the YAML file, then the flags; what is still unset, from the model."""
    config = {key: (dict(value) if isinstance(value, dict) else value) for key, value in DEFAULTS.items()}
    given = vars(args)
    if "config" in given:
        config_path = given.pop("config")
        try:
            from_file = yaml.safe_load(config_path.read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise ValueError(f"cannot read the config file {config_path}: {error}") from error
        if not isinstance(from_file, dict):
            raise ValueError(f"the config file {config_path} is not a YAML mapping of settings (KEY: VALUE "
                             f"lines); valid settings: {', '.join(DEFAULTS)}.")
        unknown = sorted(set(map(str, from_file)) - set(DEFAULTS))
        if unknown:
            raise ValueError(
                f"unknown setting(s) {', '.join(unknown)} in {config_path}; "
                f"valid settings: {', '.join(DEFAULTS)}."
            )
        config.update(from_file)
        check_settings(config)  # before the flags' options are merged into its mappings
    for target, section in (("model", "model_options"), ("estimator", "estimator_options"),
                            ("trainer", "trainer")):
        config[section].update(key_values(given.pop(f"{target}_args", []), f"--{target}-arg"))
    config.update(given)
    check_settings(config)
    if config["from_pretrained"]:
        start_from_release(config, given)
    check_names(config)
    drop_estimator_if_none_taken(config, explicit="estimator" in given)
    fill_model_defaults(config)
    check_data(config)
    return config


def start_from_release(config: dict[str, Any], given: dict[str, Any]) -> None:
    """Make a release's model, data and settings the defaults that ``given`` (the flags) override."""
    from zoo.pretrained import get_release

    if config["resume"] not in (None, "auto"):
        raise ValueError("--from-pretrained starts a new run from released weights; --resume PATH continues a "
                         "run. Pass one of them (--resume auto may go with it).")
    try:
        release = get_release(config["from_pretrained"])
    except ValueError as error:
        raise ValueError(f"--from-pretrained: {error}") from error
    if "model" in given and given["model"] != release.model:
        raise ValueError(f"release {release.name!r} is a {release.model!r} model, not {given['model']!r}; "
                         "drop --model.")
    config["model"] = release.model
    for key, value in release.data.items():
        if key in ("binarize", "val_size", "batch_size") and key not in given:
            config[key] = value
    if "data" not in given:
        config["data"] = release.data["name"]
    hyper_parameters = release.hyper_parameters
    if "estimator" not in given and hyper_parameters.get("estimator") is not None:
        config["estimator"] = hyper_parameters["estimator"]
        config["estimator_options"] = {**(hyper_parameters.get("estimator_options") or {}),
                                       **config["estimator_options"]}
    for key, value in hyper_parameters.items():
        if key in MODEL_SETTINGS:
            if key not in given and not (key == "tau" and "estimator" in given):
                config[key] = value
        elif key not in ("estimator", "estimator_options"):
            config["model_options"].setdefault(key, value)


def takes_estimator(model_name: str) -> bool:
    import inspect

    from zoo.models import get_model_class

    return "estimator" in inspect.signature(get_model_class(model_name)).parameters


def drop_estimator_if_none_taken(config: dict[str, Any], explicit: bool) -> None:
    """A model without discrete latent variables (``nas-net``) has no estimator to choose."""
    if takes_estimator(config["model"]):
        return
    if explicit or config["estimator_options"]:
        raise ValueError(f"model {config['model']!r} has no discrete latent variable and takes no estimator; "
                         "drop --estimator and its options.")
    config["estimator"] = None


def fill_model_defaults(config: dict[str, Any]) -> None:
    """Replace each unset model setting by the model's default; refuse settings it lacks."""
    import inspect

    from zoo.models import get_model_class

    model_class = get_model_class(config["model"])
    accepted = {name: parameter.default
                for name, parameter in inspect.signature(model_class).parameters.items()}
    for key in MODEL_SETTINGS:
        if key in accepted:
            if config[key] is None:
                if accepted[key] is inspect.Parameter.empty:
                    raise ValueError(f"model {config['model']!r} needs --{key.replace('_', '-')}.")
                config[key] = accepted[key]
        elif config.pop(key) is not None:
            valid = ", ".join(f"--{name.replace('_', '-')}" for name in MODEL_SETTINGS if name in accepted)
            raise ValueError(
                f"model {config['model']!r} has no setting {key!r}; its settings: {valid} "
                "(others through --model-arg)."
            )
    for key, fallback in RECIPE_SETTINGS.items():
        if config[key] is None:
            config[key] = model_class.recipe.get(key, fallback)
    if "tau_end" in accepted and config["tau_schedule"] != "constant":
        raise ValueError(f"model {config['model']!r} anneals tau itself, linearly over the epochs from --tau to "
                         "--tau-end; drop --tau-schedule.")


def check_names(config: dict[str, Any]) -> None:
    from zoo.estimators import list_estimators
    from zoo.models import list_models

    for kind, valid in (("model", list_models()), ("estimator", list_estimators())):
        if config[kind] not in valid:
            raise ValueError(f"unknown {kind} {config[kind]!r}; valid choices: {', '.join(valid)}.")


def check_data(config: dict[str, Any]) -> None:
    from datamodules.families import data_family, valid_data
    from zoo.models import get_model_class

    valid = valid_data(data_family(get_model_class(config["model"])))
    if config["data"] not in valid:
        raise ValueError(f"unknown data {config['data']!r} for model {config['model']!r}; "
                         f"valid choices: {', '.join(valid)}.")


def build_model(config: dict[str, Any]):
    import inspect

    from datamodules.families import NAS_SEARCH, NAS_TRAIN, data_family
    from zoo.models import get_model_class

    model_class = get_model_class(config["model"])
    arguments = {key: config[key] for key in MODEL_SETTINGS if key in config}
    if config["estimator"] is not None:
        arguments.update(estimator=config["estimator"], estimator_options=config["estimator_options"] or None)
    if config["tau_end"] is not None and "tau_end" in inspect.signature(model_class).parameters:
        arguments["tau_end"] = config["tau_end"]
    if data_family(model_class) in (NAS_SEARCH, NAS_TRAIN):
        from datamodules.nas import NASDataModule

        # The network's input channels and classes follow the data.
        info = NASDataModule.describe(config["data"])
        arguments.update(in_channels=info.channels, num_classes=info.num_classes)
    arguments.update(config["model_options"])
    try:
        return model_class(**arguments)
    except TypeError as error:
        raise ValueError(f"bad model option for {config['model']!r}: {error}") from error


def build_datamodule(config: dict[str, Any]):
    from datamodules.families import build_datamodule as build
    from datamodules.families import data_family
    from zoo.models import get_model_class

    return build(data_family(get_model_class(config["model"])), config["data"], data_dir=config["data_dir"],
                 batch_size=config["batch_size"], binarize=config["binarize"], val_size=config["val_size"])


#: Settings that say where a run is written and runs, and for how long; the others define it.
#: ``--resume auto`` continues a run whose other settings are the command's.
NOT_DEFINING_A_RUN = ("resume", "run_name", "output_dir", "data_dir", "devices", "accelerator", "strategy",
                      "max_epochs", "max_steps", "checkpoint_every", "grad_quality_every", "grad_quality")
NOT_DEFINING_A_RUN_TRAINER = ("enable_progress_bar", "enable_model_summary", "log_every_n_steps")


def run_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that define a run, as ``config.yaml`` stores them."""
    defining = {key: value for key, value in config.items() if key in DEFAULTS and key not in NOT_DEFINING_A_RUN}
    defining["trainer"] = {key: value for key, value in config.get("trainer", {}).items()
                           if key not in NOT_DEFINING_A_RUN_TRAINER}
    return yaml.safe_load(yaml.safe_dump(defining))


def recorded_settings(run: Path) -> dict[str, Any] | None:
    """The defining settings in ``run``'s ``config.yaml``; None if it has none that reads."""
    try:
        return run_settings(yaml.safe_load((run / "config.yaml").read_text()) or {})
    except (OSError, yaml.YAMLError, AttributeError):
        return None


def differences(recorded: dict[str, Any] | None, settings: dict[str, Any]) -> str:
    if recorded is None:
        return "it has no readable config.yaml"
    changed = [f"{key} {recorded.get(key)!r} -> {settings.get(key)!r}"
               for key in sorted(set(recorded) | set(settings)) if recorded.get(key) != settings.get(key)]
    return "its settings differ: " + "; ".join(changed)


def run_directory(config: dict[str, Any]) -> tuple[Path, Path | None]:
    """The run's folder and the checkpoint to resume from, if any.

    A new ``version_N`` is chosen by the first process and handed to the processes
    that Lightning launches through the environment; processes started by
    ``torchrun`` or ``srun`` name it after their launch instead (see
    :func:`launch_name`), so that all ranks agree on it.
    """
    name = "-".join(part for part in (config["model"], config["data"], config["estimator"]) if part is not None)
    runs = Path(config["output_dir"]) / name
    try:
        runs.mkdir(parents=True, exist_ok=True)
        probe = runs / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as error:
        raise ValueError(
            f"cannot write to the output directory {runs}: {error.strerror or error}. "
            "Choose another with --output-dir."
        ) from error
    resume, settings = config["resume"], run_settings(config)
    if resume not in (None, "auto"):
        checkpoint = Path(resume)
        if not checkpoint.is_file():
            raise ValueError(f"--resume: no checkpoint file at {checkpoint}.")
        if checkpoint.parent.name == "checkpoints":
            return checkpoint.parent.parent, checkpoint
        return new_run(runs, settings), checkpoint
    if config["run_name"] is not None:
        return named_run(runs / config["run_name"], settings, resume == "auto")
    if resume == "auto":
        newest_first = sorted(runs.glob("*/checkpoints/last.ckpt"), key=lambda path: path.stat().st_mtime, reverse=True)
        for last in newest_first:
            if recorded_settings(last.parent.parent) == settings:
                return last.parent.parent, last
    return new_run(runs, settings), None


def named_run(run: Path, settings: dict[str, Any], resume: bool) -> tuple[Path, Path | None]:
    """``--run-name``: the folder is this command's; it continues only with ``--resume auto``.

    A folder without a checkpoint has nothing to lose or continue: the run starts in
    it. (That is also what the other processes of a launch see while the first one
    writes its config.yaml there.)
    """
    last = run / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return run, None
    if not resume:
        raise ValueError(f"the run {run} exists already. Continue it with --resume auto, or choose another "
                         "--run-name.")
    recorded = recorded_settings(run)
    if recorded != settings:
        raise ValueError(f"cannot continue the run {run}: {differences(recorded, settings)}. Choose another "
                         "--run-name for these settings.")
    return run, last


def new_run(runs: Path, settings: dict[str, Any]) -> Path:
    """A folder for a new run of ``settings`` under ``runs``, the same for every process of the launch."""
    if RUN_VERSION_VARIABLE not in os.environ:
        launch = launch_name(settings)
        if launch is not None:
            if (runs / launch / "checkpoints" / "last.ckpt").exists():
                raise ValueError(f"this launch's run {runs / launch} has a checkpoint already: continue it with "
                                 "--resume auto and its settings, or pass --run-name for a new run.")
            return runs / launch
        versions = [int(path.name.removeprefix("version_")) for path in runs.glob("version_*")
                    if path.name.removeprefix("version_").isdigit()]
        os.environ[RUN_VERSION_VARIABLE] = str(max(versions, default=-1) + 1)
    return runs / f"version_{os.environ[RUN_VERSION_VARIABLE]}"


def launch_name(settings: dict[str, Any]) -> str | None:
    """The folder name that the processes of a ``torchrun`` or ``srun`` launch share; None otherwise.

    Those processes start together and cannot hand each other a ``version_N`` before
    training connects them, so each derives the name from what its launcher set
    alike in all of them, torchrun's rendezvous id or SLURM's job (and array task)
    id, and from the run's ``settings`` (a short hash), so that one job may train
    several runs. A SLURM batch job that is requeued keeps its id, so it finds its
    run again; an interactive one (job name ``bash`` or ``interactive``) is not taken
    for one.
    """
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    from callbacks.preemption import slurm_job_id

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "TORCHELASTIC_RUN_ID" in os.environ:
        run_id = os.environ["TORCHELASTIC_RUN_ID"]
        if run_id == "none":
            raise ValueError("torchrun without a rendezvous id gives its processes no shared run name: pass "
                             "--run-name, or launch with torchrun --standalone (or --rdzv-id).")
        launch = f"torchrun-{run_id}"
    elif SLURMEnvironment.detect() and "SLURM_JOB_ID" in os.environ:
        launch = f"slurm-{slurm_job_id()}"
    else:
        return None
    digest = hashlib.sha256(yaml.safe_dump(settings, sort_keys=True).encode()).hexdigest()[:8]
    return f"{launch}-{digest}"


def check_checkpoint(path: Path) -> None:
    """Refuse a checkpoint that does not load as tensors and plain values, before training."""
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - whatever fails to load (a text file: IndexError) is no checkpoint
        others = sorted(p.name for p in path.parent.glob("*.ckpt") if p != path)
        hint = f"; other checkpoints beside it: {', '.join(others)}" if others else ""
        raise ValueError(
            f"cannot resume from {path}: it is corrupt, truncated or not a checkpoint of this "
            f"project ({(str(error).splitlines() or [type(error).__name__])[0]}). Pass another with --resume PATH{hint}, "
            "or start a new run without --resume."
        ) from error


def build_trainer(config: dict[str, Any], run: Path, model, callbacks: Sequence[Any] = (),
                  plugins: Sequence[Any] = ()):
    """The Trainer of a run: its checkpoints, guards, logger and bar, then ``callbacks`` and ``plugins``.

    A precision plugin among ``plugins`` replaces ``--precision`` (e.g. float16 with a
    loss scaler on the CPU, which Lightning's ``16-mixed`` turns into bfloat16 there).
    """
    import lightning as L
    from lightning.pytorch.loggers import TensorBoardLogger
    from lightning.pytorch.plugins import Precision

    from callbacks.checkpoint import AtomicCheckpointIO, RunCheckpoints
    from callbacks.gradient_quality import GradientQuality
    from callbacks.images import ReconstructionImages
    from callbacks.nonfinite import NonFiniteGuard
    from callbacks.preemption import StopOnSignal
    from callbacks.progress import LossProgressBar
    from callbacks.seeding import PerRankSeed
    from callbacks.temperature import TemperatureSchedule

    monitor, mode = model.checkpoint_monitor
    guard = NonFiniteGuard(config["on_nonfinite"])
    checkpoints = RunCheckpoints(run / "checkpoints", monitor, mode, config["checkpoint_every"] or None)
    extra_callbacks, callbacks = list(callbacks), [
        checkpoints,
        StopOnSignal(checkpoints, guard),
        PerRankSeed(config["seed"]),
        guard,
    ]
    if config["grad_quality_every"]:
        try:
            callbacks.append(GradientQuality(every_n_steps=config["grad_quality_every"],
                                             seed=config["seed"], **config["grad_quality"]))
        except TypeError as error:
            raise ValueError(f"bad grad_quality option: {error}") from error
    if config["tau_schedule"] != "constant":
        callbacks.append(TemperatureSchedule(config["tau"], config["tau_end"], config["tau_schedule"],
                                             config["tau_duration"], config["tau_interval"]))
    if config["trainer"].get("enable_progress_bar", True):
        callbacks.append(LossProgressBar(guard))
    if hasattr(model, "reconstruct") and hasattr(model, "generate"):
        callbacks.append(ReconstructionImages())
    callbacks += extra_callbacks
    logger = TensorBoardLogger(save_dir=run.parent, name="", version=run.name, default_hp_metric=False)
    settings = dict(
        max_epochs=config["max_epochs"],
        max_steps=config["max_steps"],
        gradient_clip_val=config["gradient_clip_val"],
        devices=config["devices"],
        accelerator=config["accelerator"],
        strategy=config["strategy"],
        precision=None if any(isinstance(plugin, Precision) for plugin in plugins) else config["precision"],
        logger=logger,
        callbacks=callbacks,
        default_root_dir=run,  # where Lightning's own files (e.g. SLURM's hpc_ckpt_N.ckpt) go
        plugins=[AtomicCheckpointIO(), *plugins],
    )
    settings.update(config["trainer"])
    try:
        trainer = L.Trainer(**settings)
    except (TypeError, ValueError) as error:
        raise ValueError(f"bad trainer setting: {error}") from error
    find_unused_parameters_if_needed(trainer, model)
    return trainer


def check_model_fits(config: dict[str, Any]) -> None:
    """Refuse a model whose parameters would not fit in this machine's memory, before allocating any.

    The model is built on PyTorch's meta device, which records shapes only. Its
    parameters, their gradients and two optimizer moments take 16 bytes each.
    """
    import torch

    with torch.device("meta"):
        parameters = sum(parameter.numel() for parameter in build_model(config).parameters())
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: nothing to compare with
        return
    if 16 * parameters > memory:
        sizes = ", ".join(f"--{key.replace('_', '-')} {config[key]}" for key in ("latents", "categories")
                          if config.get(key) is not None) or "its --model-arg sizes"
        raise ValueError(f"model {config['model']!r} would have {parameters:,} parameters: with their gradients "
                         f"and optimizer state {16 * parameters / 2**30:,.0f} GiB, more than this machine's "
                         f"{memory / 2**30:,.0f} GiB of memory. Choose smaller sizes ({sizes}).")


def find_unused_parameters_if_needed(trainer, model) -> None:
    """Let DDP find the parameters a step leaves unused, if the model has such steps.

    GDAS runs only the sampled operation of each edge, so DDP must look for the
    parameters that took no part in the loss. Lightning picks DDP for ``--devices N``
    and ``auto`` with several GPUs, for every ``ddp*`` strategy name, and for
    processes started by ``torchrun`` or ``srun``; whichever way it got there, the
    strategy it built is the one to adjust, before anything is wrapped.
    """
    from lightning.pytorch.strategies import DDPStrategy

    if getattr(model, "has_unused_parameters", False) and isinstance(trainer.strategy, DDPStrategy):
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


def save_config(config: dict[str, Any], run: Path, argv: list[str] | None, processes: int = 1) -> None:
    """The resolved settings, the command as typed, the processes and global batch, and the library
    versions, beside the run's events."""
    import lightning
    import torch

    import shlex

    arguments = sys.argv[1:] if argv is None else argv
    record = {**config, "command": shlex.join(["python", "train.py", *arguments]),
              "processes": processes, "global_batch_size": config["batch_size"] * processes,
              "versions": {"python": sys.version.split()[0], "torch": str(torch.__version__),
                           "lightning": lightning.__version__}}
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(yaml.safe_dump(record, sort_keys=False))


def main(argv: list[str] | None = None, *, callbacks: Sequence[Any] = (), plugins: Sequence[Any] = ()) -> int:
    """Train as the command line ``argv`` says; ``callbacks`` and ``plugins`` are added to the Trainer's,
    for programs that train in-process (the GPU check, tests)."""
    from callbacks.nonfinite import NonFiniteError
    from callbacks.preemption import EXIT_STATUS, Preempted
    from zoo.estimators import InvalidLogitsError

    parser = build_parser()
    args = parser.parse_args(argv)
    trainer = None
    try:
        config = resolve_config(args)
        run, checkpoint = run_directory(config)
        if checkpoint is not None:
            check_checkpoint(checkpoint)
        import lightning as L

        L.seed_everything(config["seed"], workers=True, verbose=False)
        check_model_fits(config)
        model = build_model(config)
        if config["from_pretrained"] and checkpoint is None:
            from zoo.pretrained import get_release, load_weights, read_weights, weights_file

            release = get_release(config["from_pretrained"])
            load_weights(model, read_weights(weights_file(release)), release.name)
        datamodule = build_datamodule(config)
        trainer = build_trainer(config, run, model, callbacks, plugins)
        if trainer.is_global_zero:
            if config["resume"] == "auto" and checkpoint is None:
                print("--resume auto: no run of these settings to continue; starting a new one", flush=True)
            save_config(config, run, argv, trainer.world_size)
            print(f"run directory: {run}\nTensorBoard: tensorboard --logdir {run.parent}\n"
                  f"{describe_batch(config['batch_size'], trainer.world_size)}", flush=True)
        # Checkpoints hold tensors and plain values only: load them without unpickling code.
        trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        leave_process_group()
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
        if not out_of_memory(error):
            raise
        step = f" at step {trainer.global_step}" if trainer is not None else ""
        parser.exit(2, f"{parser.prog}: error: out of memory{step}: {str(error).splitlines()[0]}. Lower "
                       "--batch-size or --num-samples, or the model's sizes. The checkpoints already written are "
                       "kept.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
