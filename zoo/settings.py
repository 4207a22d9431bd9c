"""The settings of a training run: one documented object, and the one order they are resolved in.

From lowest to highest priority:

1. the defaults below (``None``: the model's own);
2. with ``--from-pretrained NAME``, the release's model, data and hyper-parameters;
3. a YAML file given with ``--config`` (keys as the flags, ``-`` written ``_``);
4. the command-line flags (``--model-arg``, ``--estimator-arg``, ``--trainer-arg``
   add to the file's ``model_options``, ``estimator_options`` and ``trainer``);
5. for what is still unset, the model's card (its :class:`~zoo.models.Recipe`) and
   its constructor's defaults, which are the paper's settings.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


@dataclass
class Settings:
    """Everything that defines a run, and where and how long it runs."""

    # What is trained.
    model: str = "vae"
    estimator: str | None = None  # the model's own (reinmax; sparsemixer for moe); none for nas-net
    data: str | None = None  # the model's recipe: mnist for the VAEs
    data_dir: str | None = None  # searched before any download
    binarize: str | None = None  # none, dynamic or static: the images' pixels
    val_size: int | None = None  # held-out training examples; 0 validates on the test split, as the paper
    # The estimator's temperature, and an optional schedule from it to tau_end over tau_duration steps or epochs.
    tau: float | None = None
    tau_schedule: str = "constant"
    tau_end: float | None = None
    tau_duration: int | None = None
    tau_interval: str = "step"
    # Model settings with flags of their own; anything else goes through model_options.
    categories: int | None = None
    latents: int | None = None
    pnorm: float | None = None
    genotype: str | None = None
    num_samples: int | None = None  # loss evaluations per example and step
    optimizer: str | None = None
    lr: float | None = None
    # The training budget; batch_size is per process, so the global batch grows with the processes.
    batch_size: int | None = None
    gradient_clip_val: float | None = None
    max_epochs: int | None = None
    max_steps: int | None = None
    seed: int = 0
    # Where it runs.
    devices: Any = "auto"
    accelerator: str = "auto"
    strategy: str = "auto"
    precision: str = "32-true"
    # Run folders, checkpoints and preemption.
    output_dir: str = "runs"
    resume: str | None = None  # "auto": the newest run of these settings, or a checkpoint path
    run_name: str | None = None  # the run's folder name (default version_N), e.g. a job's own name
    from_pretrained: str | None = None  # a release to start from (zoo.list_pretrained())
    on_nonfinite: str = "stop"  # a NaN/inf loss or gradient: stop before the step, or skip the step
    checkpoint_every: int = 1000  # steps between mid-epoch checkpoints; 0: epoch ends only
    grad_quality_every: int = 0  # steps between gradient-quality measurements; 0: off
    grad_quality: dict[str, Any] = field(default_factory=dict)  # GradientQuality's other options
    # Passed through as they are.
    model_options: dict[str, Any] = field(default_factory=dict)
    estimator_options: dict[str, Any] = field(default_factory=dict)
    trainer: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


NAMES = tuple(field.name for field in dataclasses.fields(Settings))
#: Settings a model takes as constructor arguments (with its default where unset).
MODEL_SETTINGS = ("categories", "latents", "pnorm", "tau", "num_samples", "optimizer", "lr", "genotype")
#: Settings the model's recipe gives where unset.
RECIPE_SETTINGS = ("data", "binarize", "val_size", "batch_size", "gradient_clip_val", "max_epochs", "max_steps")
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
#: What each setting may be, from a flag or the YAML file (``None``: unset, where the default is unset).
#: The flags' own types check the same on the command line; the YAML file has none.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
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
#: The settings with a fixed set of values, as the flags' ``choices``.
CHOICES = {"binarize": ("none", "dynamic", "static"), "tau_schedule": ("constant", "linear", "exponential"),
           "tau_interval": ("step", "epoch"), "optimizer": ("adam", "radam"), "on_nonfinite": ("stop", "skip")}
#: The settings when nothing is given (None: the model's own).
DEFAULTS = Settings()


def check(values: dict[str, Any]) -> None:
    """Refuse a setting of the wrong type or range, naming it, before anything is built."""
    for key, value in values.items():
        if value is None and getattr(DEFAULTS, key, None) is None:
            continue
        if key in CHOICES:
            valid = (lambda value, key=key: isinstance(value, str) and value in CHOICES[key],
                     f"one of {', '.join(CHOICES[key])}")
        elif key in RULES:
            valid = RULES[key]
        else:
            continue
        if not valid[0](value):
            raise ValueError(f"setting {key} (--{key.replace('_', '-')}): must be {valid[1]}, got {value!r}.")
        if key in FLOAT_SETTINGS:
            values[key] = float(value)  # a YAML integer as large as 10**30 would overflow torch's int64


def read_file(path: Path) -> dict[str, Any]:
    """The settings of a YAML file, checked by name, type and range."""
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
    explicit = {**from_file, **{key: value for key, value in flags.items() if not key.endswith("_args")}}
    for target, section in (("model", "model_options"), ("estimator", "estimator_options"),
                            ("trainer", "trainer")):
        added = key_values(flags.get(f"{target}_args", []), f"--{target}-arg")
        if added:
            explicit[section] = {**from_file.get(section, {}), **added}
    check(explicit)
    settings = Settings(**explicit)
    if settings.from_pretrained:
        start_from_release(settings, explicit)
    fill_from_model(settings, explicit)
    return settings


def start_from_release(settings: Settings, explicit: dict[str, Any]) -> None:
    """Make a release's model, data and hyper-parameters the settings that were not given."""
    from zoo.pretrained import get_release

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
    from zoo.models import model_card

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
    from datamodules.families import valid_data

    valid = valid_data(card.data_family)
    if settings.data not in valid:
        raise ValueError(f"unknown data {settings.data!r} for model {settings.model!r}; "
                         f"valid choices: {', '.join(valid)}.")
