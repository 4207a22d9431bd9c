"""The settings of a training run: each declared once, and the one order they are resolved in.

From lowest to highest priority:

1. the defaults below (none: the model's own);
2. with ``--from-pretrained NAME``, the release's model, data and hyper-parameters;
3. a YAML file given with ``--config`` (keys as the flags, ``-`` written ``_``);
4. the command-line flags (``--model-arg``, ``--estimator-arg``, ``--trainer-arg``
   add to the file's ``model_options``, ``estimator_options`` and ``trainer``);
5. for what is still unset, the model's card (its ``Recipe``) and its
   constructor's defaults, which are the paper's settings.

Every value is checked against its declaration whatever its source, before anything
is built; the ``trainer`` mapping's against ``lightning.Trainer``'s own arguments.

``python -m zoo.settings`` prints ``docs/settings.md``, the reference of every setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from callbacks.compiling import COMPILERS
from datamodules.families import valid_data

from .declarations import (
    BUDGET,
    COUNT,
    DEVICES,
    FOLDER_NAME,
    MAPPING,
    MODELS_OWN,
    SEED,
    SIZE,
    STRING,
    Declaration,
    choice,
    declarations,
    default_text,
    file,
    folder,
    help_text,
    number,
    setting,
    switch_or_choice,
)
from .models import OPTIMIZERS, model_card
from .option_types import check_option_types
from .pretrained import get_release


@dataclass
class Settings:
    """Everything that defines a run, and where and how long it runs."""

    # What is trained.
    model: str = setting("vae", STRING, "the model to train")
    estimator: str | None = setting(None, STRING, "the gradient estimator; none for a model without one",
                                    default_text=MODELS_OWN)
    data: str | None = setting(None, STRING, "the data set", group="recipe")
    data_dir: str | None = setting(None, STRING, "the folder that holds the data set's files, searched before "
                                   "downloading", path=folder("the folder that holds the data set's files"),
                                   defines_run=False)
    binarize: str | None = setting(None, choice("none", "dynamic", "static"), "the images' pixel binarization",
                                   group="recipe")
    val_size: int | None = setting(None, SIZE, "hold out this many training images for validation; 0 validates "
                                   "on the test split", group="recipe")
    # The model's settings with flags of their own; anything else goes through model_options.
    categories: int | None = setting(None, COUNT, "classes per latent variable", group="model")
    latents: int | None = setting(None, COUNT, "latent variables", group="model")
    pnorm: float | None = setting(None, number(), "the exponent p of the polynomial toy's loss", group="model")
    tau: float | None = setting(None, number(), "the estimator's temperature", group="model")
    # A schedule of the temperature from tau to tau_end over tau_duration steps or epochs.
    tau_schedule: str = setting("constant", choice("constant", "linear", "exponential"),
                                "anneal tau from --tau to --tau-end")
    tau_end: float | None = setting(None, number(), "the temperature a schedule ends at")
    tau_duration: int | None = setting(None, COUNT, "the steps (or epochs) a schedule takes")
    tau_interval: str = setting("step", choice("step", "epoch"), "schedule per step or per epoch")
    num_samples: int | None = setting(None, COUNT, "loss evaluations per example and step", group="model")
    optimizer: str | None = setting(None, choice(*OPTIMIZERS), "the optimizer", group="model")
    lr: float | None = setting(None, number(0), "the learning rate", group="model")
    genotype: str | None = setting(None, STRING, "the NATS-Bench architecture string nas-net trains, e.g. "
                                   "'|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|"
                                   "nor_conv_3x3~1|nor_conv_3x3~2|'", group="model")
    # The training budget.
    batch_size: int | None = setting(None, COUNT, "examples per step and process: the global batch grows with "
                                     "the processes", group="recipe")
    gradient_clip_val: float | None = setting(None, number(0), "clip gradients to this norm", group="recipe")
    max_epochs: int | None = setting(None, BUDGET, "epochs; -1 for no limit", group="recipe", defines_run=False)
    max_steps: int | None = setting(None, BUDGET, "optimizer steps; -1 for no limit", group="recipe",
                                    defines_run=False)
    seed: int = setting(0, SEED, "the random seed")
    # Where it runs.
    devices: Any = setting("auto", DEVICES, "the devices to use, e.g. 1, 2, -1 for all, or indices 0,1",
                           defines_run=False)
    accelerator: str = setting("auto", STRING, "cpu, gpu or auto", defines_run=False)
    strategy: str = setting("auto", STRING, "auto, ddp, ddp_spawn or another of Lightning's strategies",
                            defines_run=False)
    precision: str = setting("32-true", STRING, "32-true, bf16-mixed, 16-mixed or another of Lightning's precisions")
    compile: str | None = setting(None, switch_or_choice("inductor", *COMPILERS),
                                  "compile the model's loss and the optimizer's update with torch.compile; "
                                  "--compile alone: inductor; aot_eager or eager find which layer a compiler "
                                  "problem is in", metavar="BACKEND", defines_run=False)
    # Run folders, checkpoints and preemption.
    output_dir: str = setting("runs", STRING, "the folder runs are written under",
                              path=folder("the folder runs are written under"), defines_run=False)
    resume: str | None = setting(None, STRING, "'auto': continue the newest run of these settings, or start one "
                                 "if there is none; or a checkpoint file to continue",
                                 path=file("auto or a checkpoint file", "auto"), defines_run=False)
    run_name: str | None = setting(None, FOLDER_NAME, "name the run's folder, e.g. a job's own name",
                                   default_text="version_N", defines_run=False)
    from_pretrained: str | None = setting(None, STRING, "fine-tune a released model (zoo.list_pretrained()): its "
                                          "settings and data are the defaults, the flags change them, e.g. "
                                          "--estimator st", metavar="NAME")
    on_nonfinite: str = setting("stop", choice("stop", "skip"), "a NaN or infinite loss or gradient stops "
                                "training before the step, or skips the step")
    checkpoint_every: int = setting(1000, SIZE, "also write last.ckpt every N steps, so a killed run loses at "
                                    "most N steps; 0: at epoch ends only", metavar="N", defines_run=False)
    grad_quality_every: int = setting(0, SIZE, "log the estimator's cosine, bias and std against the true "
                                      "gradient every N steps, as the grad_quality options say; 0: off",
                                      metavar="N", defines_run=False)
    grad_quality: dict[str, Any] = setting({}, MAPPING, "GradientQuality's other options, e.g. num_samples",
                                           flag=False, defines_run=False)
    # Passed through as they are.
    model_options: dict[str, Any] = setting({}, MAPPING, "any other model option", flag="--model-arg")
    estimator_options: dict[str, Any] = setting({}, MAPPING, "any other estimator option", flag="--estimator-arg")
    trainer: dict[str, Any] = setting({}, MAPPING, "any other lightning.Trainer argument", flag="--trainer-arg")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: Each setting's declaration, in order.
DECLARED = declarations(Settings)
NAMES = tuple(DECLARED)
#: Settings a model takes as constructor arguments (with its default where unset).
MODEL_SETTINGS = tuple(name for name, declaration in DECLARED.items() if declaration.group == "model")
#: Settings the model's recipe gives where unset.
RECIPE_SETTINGS = tuple(name for name, declaration in DECLARED.items() if declaration.group == "recipe")
#: Where and how long a run goes: ``--resume auto`` continues a run whose other settings are the command's.
NOT_DEFINING_A_RUN = tuple(name for name, declaration in DECLARED.items() if not declaration.defines_run)
#: The settings when nothing is given (None: the model's own).
DEFAULTS = Settings()
#: The file the settings may come from: a flag, not a setting of its own.
CONFIG = Declaration(dataclasses.replace(STRING, parse=Path), "a YAML file of settings (flags override it)",
                     metavar="FILE", path=file("a YAML file of settings"))
#: Every flag's declaration by its setting's name: the file, then the settings that have one.
FLAGS = {"config": CONFIG, **{name: declaration for name, declaration in DECLARED.items() if declaration.option(name)}}


def flag_help(name: str) -> str:
    """A flag's help: its declared text and its default."""
    return help_text(FLAGS[name], getattr(DEFAULTS, name, None))


def check(values: dict[str, Any]) -> None:
    """Refuse a setting of the wrong type, range or kind of path, naming it, before anything is built."""
    for key, value in values.items():
        declaration = DECLARED.get(key)
        if declaration is None or (value is None and getattr(DEFAULTS, key) is None):
            continue
        if not declaration.kind.test(value):
            raise ValueError(f"{declaration.label(key)}: must be {declaration.kind.words}, got {value!r}.")
        wrong_path = declaration.path and declaration.path.refusal(value)
        if wrong_path:
            raise ValueError(f"{declaration.label(key)}: {wrong_path}.")
        if declaration.kind.normalize is not None:
            values[key] = declaration.kind.normalize(value)
    check_trainer(values.get("trainer") or {})


def check_trainer(arguments: dict[str, Any]) -> None:
    """Refuse an argument ``lightning.Trainer`` does not take, or a value of another type than it annotates,
    before anything is built: Lightning would take some and fail inside the fit loop."""
    accepted = [name for name in inspect.signature(L.Trainer.__init__).parameters if name != "self"]
    for key in arguments:
        if key not in accepted:
            close = difflib.get_close_matches(key, accepted, n=1)
            fix = f"did you mean {close[0]!r}?" if close else f"its arguments: {', '.join(accepted)}."
            raise ValueError(f"bad trainer setting {key!r}: lightning.Trainer has no such argument; {fix}")
    check_option_types(L.Trainer.__init__, arguments, lambda key: f"trainer setting {key!r}")


def read_file(path: Path) -> dict[str, Any]:
    """The settings of a YAML file, checked by name, type and range."""
    wrong_path = CONFIG.path.refusal(str(path))
    if wrong_path:
        raise ValueError(f"--config {wrong_path}.")
    try:
        values = read_yaml(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read the config file {path}: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"the config file {path} is not a YAML mapping of settings (KEY: VALUE lines); "
                         f"valid settings: {', '.join(NAMES)}.")
    unknown = sorted(set(map(str, values)) - set(NAMES))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)} in {path}; valid settings: {', '.join(NAMES)}.")
    check(values)
    return values


class UserYAML(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``3e-3`` and ``1e5`` as numbers (YAML 1.2) rather than strings (YAML 1.1)."""


EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$")
UserYAML.add_implicit_resolver("tag:yaml.org,2002:float", EXPONENT_FLOAT, list("-+.0123456789"))


def read_yaml(text: str) -> Any:
    """A value or document the user wrote: a flag's value or a config file."""
    return yaml.load(text, Loader=UserYAML)  # noqa: S506 - a SafeLoader


def key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """``["a=1", "b=[2, 3]"]`` → ``{"a": 1, "b": [2, 3]}`` (values read as YAML)."""
    parsed = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key:
            raise ValueError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            parsed[key.replace("-", "_")] = read_yaml(value)
        except yaml.YAMLError as error:
            raise ValueError(f"{flag} {pair!r}: the value is not valid YAML ({str(error).splitlines()[0]})") from error
    return parsed


def resolve(flags: dict[str, Any], config_file: Path | None = None) -> Settings:
    """The run's settings from the flags given (``argparse``'s, unset ones absent) and the YAML file."""
    from_file = read_file(config_file) if config_file is not None else {}
    pairs = {declaration.dest(name): name for name, declaration in FLAGS.items() if declaration.takes_pairs}
    explicit = {**from_file, **{key: value for key, value in flags.items() if key not in pairs}}
    for dest, name in pairs.items():
        added = key_values(flags.get(dest, []), DECLARED[name].option(name))
        if added:
            explicit[name] = {**from_file.get(name, {}), **added}
    return resolve_values(explicit)


def resolve_values(explicit: dict[str, Any]) -> Settings:
    """The run's settings from the ones given, as a ``--config`` file holds them (checked here)."""
    check(explicit)
    settings = Settings(**explicit)
    if settings.from_pretrained:
        start_from_release(settings, explicit)
    fill_from_model(settings, explicit)
    return settings


def start_from_release(settings: Settings, explicit: dict[str, Any]) -> None:
    """Make a release's model, data and hyper-parameters the settings that were not given."""
    if settings.resume not in (None, "auto"):
        raise ValueError("--from-pretrained starts a new run from released weights; --resume PATH continues a "
                         "run. Pass one of them (--resume auto may go with it).")
    try:
        release = get_release(settings.from_pretrained)
    except ValueError as error:
        raise ValueError(f"--from-pretrained: {error}") from error
    if "model" in explicit and explicit["model"] != release.model:
        raise ValueError(f"release {release.name!r} is a {release.model!r} model, not {explicit['model']!r}; "
                         "drop --model.")
    settings.model = release.model
    for key in ("binarize", "val_size", "batch_size"):
        if key in release.data and key not in explicit:
            setattr(settings, key, release.data[key])
    if "data" not in explicit:
        settings.data = release.data["name"]
    hyper_parameters = release.hyper_parameters
    if "estimator" not in explicit and hyper_parameters.get("estimator") is not None:
        settings.estimator = hyper_parameters["estimator"]
        settings.estimator_options = {**(hyper_parameters.get("estimator_options") or {}),
                                      **settings.estimator_options}
    for key, value in hyper_parameters.items():
        if key in MODEL_SETTINGS:
            if key not in explicit and not (key == "tau" and "estimator" in explicit):
                setattr(settings, key, value)
        elif key not in ("estimator", "estimator_options"):
            settings.model_options.setdefault(key, value)


def fill_from_model(settings: Settings, explicit: dict[str, Any]) -> None:
    """The model's card and constructor give what is unset; settings the model lacks are refused."""
    card = model_card(settings.model)
    accepted = card.arguments
    if not card.takes_estimator:
        if settings.estimator is not None or settings.estimator_options:
            card.check_estimator(str(settings.estimator))
        settings.estimator = None
    else:
        if settings.estimator is None:
            settings.estimator = accepted["estimator"]
        card.check_estimator(settings.estimator)
    for key in MODEL_SETTINGS:
        if key in accepted:
            if getattr(settings, key) is None:
                if accepted[key] is inspect.Parameter.empty:
                    raise ValueError(f"model {settings.model!r} needs --{key.replace('_', '-')}.")
                setattr(settings, key, accepted[key])
        elif getattr(settings, key) is not None:
            valid = ", ".join(f"--{name.replace('_', '-')}" for name in MODEL_SETTINGS if name in accepted)
            raise ValueError(f"model {settings.model!r} has no setting {key!r}; its settings: {valid} "
                             "(others through --model-arg).")
    for key in RECIPE_SETTINGS:
        if getattr(settings, key) is None:
            setattr(settings, key, getattr(card.recipe, key))
    if "tau_end" in accepted and settings.tau_schedule != "constant":
        raise ValueError(f"model {settings.model!r} anneals tau itself, linearly over the epochs from --tau to "
                         "--tau-end; drop --tau-schedule.")
    valid = valid_data(card.data_family)
    if settings.data not in valid:
        raise ValueError(f"unknown data {settings.data!r} for model {settings.model!r}; "
                         f"valid choices: {', '.join(valid)}.")


def reference() -> str:
    """``docs/settings.md``: every setting as declared, with its flag, its values and its default."""
    order = "\n\n".join(__doc__.split("\n\n")[1:4]).replace("``", "`")  # this module's: the order, the checks
    lines = ["# Settings", "",
             "<!-- Generated by `python -m zoo.settings > docs/settings.md` from the declarations in "
             "zoo/settings.py: edit those, not this file. -->", "",
             "Each setting is a flag of `train.py` and a key of the `--config` YAML file. " + order, ""]
    lines += [f"- {entry(name, declaration)}" for name, declaration in {"config": CONFIG, **DECLARED}.items()]
    return "\n".join(lines) + "\n"


def entry(name: str, declaration: Declaration) -> str:
    """One setting in ``docs/settings.md``: how it is given, its help, its values and its default."""
    option = declaration.option(name)
    ways = [f"`{option} KEY=VALUE`, repeatable" if declaration.takes_pairs else f"`{option}`"] if option else []
    ways += [f"YAML `{name}:`"] if name in DECLARED else []
    facts = [declaration.kind.words]
    if declaration.path is not None:
        facts.append(f"names a {'folder' if declaration.path.is_folder else 'file'}")
    shown = default_text(declaration, getattr(DEFAULTS, name, None))
    facts += [f"default: {shown}"] if shown is not None else []
    facts += [] if declaration.defines_run else ["may differ when `--resume auto` continues a run"]
    text = "; ".join(facts)
    return f"**`{name}`** ({', '.join(ways)}): {declaration.help}. {text[0].upper()}{text[1:]}."


if __name__ == "__main__":
    print(reference(), end="")
