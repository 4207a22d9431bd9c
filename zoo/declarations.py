"""How a setting is declared, once: the values it takes, its default, its help, its flag and the path it names.

:mod:`zoo.settings` declares each setting of a run as a field made by :func:`setting`;
``train.py``'s flags, the checks of a ``--config`` file and ``docs/settings.md`` are
all read from these declarations, so none of them lists the settings by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

#: The largest size a torch dimension holds; larger ones overflow before anything is allocated.
MAX_SIZE = 2**31 - 1
#: The default a model's card or constructor gives, as the help and the docs say it.
MODELS_OWN = "the model's"


@dataclass(frozen=True)
class Kind:
    """What a setting's value may be: the test, the words an error uses for it, and how a flag's text is read."""

    test: Callable[[Any], bool]
    words: str
    parse: Callable[[str], Any] = str  # the flag's argparse type; its own error names the flag
    choices: tuple[str, ...] | None = None
    normalize: Callable[[Any], Any] | None = None  # what a valid value becomes, e.g. a YAML integer a float
    bare: str | None = None  # what the flag means given without a value (``--compile``); None: it needs one


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


def is_folder_name(value: Any) -> bool:
    return isinstance(value, str) and value not in ("", ".", "..") and "/" not in value and os.sep not in value


def folder_name(text: str) -> str:
    if not is_folder_name(text):
        raise argparse.ArgumentTypeError(f"must be a folder name without '/', got {text!r}")
    return text


def integer(low: int, high: int = MAX_SIZE, words: str | None = None, parse: Callable[[str], int] = int) -> Kind:
    """An integer from ``low`` to ``high`` (a YAML ``true`` is not one)."""
    return Kind(lambda value: isinstance(value, int) and not isinstance(value, bool) and low <= value <= high,
                words or f"an integer from {low} to {high}", parse)


def number(low: float = -math.inf) -> Kind:
    """A finite number from ``low``, kept as a float: a YAML integer as large as 10**30 would overflow torch's int64."""
    return Kind(lambda value: isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value) and value >= low,
                "a finite number" if low == -math.inf else f"a finite number >= {low:g}", float, normalize=float)


def choice(*values: str) -> Kind:
    return Kind(lambda value: isinstance(value, str) and value in values, f"one of {', '.join(values)}",
                choices=values)


def _devices(value: Any) -> bool:
    """``auto``, a count (-1: all), or device indices (``0,1`` or a list)."""
    if isinstance(value, list):
        return bool(value) and all(integer(0).test(index) for index in value)
    text = str(value).strip()
    if text in ("auto", "-1"):
        return True
    if "," in text:
        return all(part.strip().isdigit() for part in text.split(","))
    return text.isdigit() and int(text) >= 1


def switch_or_choice(bare: str, *values: str) -> Kind:
    """Off (``false``), on (``true``, or the flag alone: ``bare``), or one of ``values`` by name."""
    return Kind(lambda value: isinstance(value, bool) or value in values,
                f"true, false or one of {', '.join(values)}", choices=values,
                normalize=lambda value: (bare if value else None) if isinstance(value, bool) else value, bare=bare)


COUNT = integer(1, parse=positive_int)
SIZE = integer(0, parse=non_negative_int)
BUDGET = integer(-1, 2**63 - 1, "an integer >= -1 (-1: no limit)")
SEED = integer(0, 2**32 - 1)
STRING = Kind(lambda value: isinstance(value, str) and value != "", "a non-empty string")
FOLDER_NAME = Kind(is_folder_name, "a folder name without '/'", folder_name)
DEVICES = Kind(_devices, "auto, a positive number of devices, -1 for all, or device indices such as 0,1")
#: KEY: VALUE pairs passed through to a constructor; their flag (``--model-arg KEY=VALUE``) adds one at a time.
MAPPING = Kind(lambda value: isinstance(value, dict), "a mapping of KEY: VALUE")


@dataclass(frozen=True)
class PathKind:
    """A setting that names a folder or a file, what to give instead of the other, and words that are no path."""

    is_folder: bool
    wanted: str
    keywords: tuple[str, ...] = ()

    def refusal(self, value: str) -> str | None:
        """Why ``value`` names the wrong kind of path; None when it is right or names nothing yet."""
        if value in self.keywords:
            return None
        path = Path(value).expanduser()
        if self.is_folder and path.is_file():
            return f"{value} is a file; give {self.wanted}"
        if not self.is_folder and path.is_dir():
            return f"{value} is a folder; give {self.wanted}"
        return None


def folder(wanted: str) -> PathKind:
    return PathKind(True, wanted)


def file(wanted: str, *keywords: str) -> PathKind:
    return PathKind(False, wanted, keywords)


@dataclass(frozen=True)
class Declaration:
    """One setting as declared: its kind, help, group, flag, and the path it names."""

    kind: Kind
    help: str
    #: "model": a constructor argument of the model; "recipe": the model's card gives it. Both default to the model's.
    group: Literal["model", "recipe"] | None = None
    flag: bool | str = True  # True: --NAME with "-" for "_"; False: the YAML file only; or the flag's name
    metavar: str | None = None
    path: PathKind | None = None
    default_text: str | None = None  # what the default is, where the declared value is not it
    #: False for where and how long a run goes: ``--resume auto`` continues a run whose other settings match.
    defines_run: bool = True

    def option(self, name: str) -> str | None:
        """The flag, e.g. ``--batch-size``; None for a setting of the YAML file only."""
        if self.flag is True:
            return "--" + name.replace("_", "-")
        return self.flag or None

    @property
    def takes_pairs(self) -> bool:
        """Whether its flag adds ``KEY=VALUE`` pairs to a mapping, one at a time."""
        return self.kind is MAPPING and self.flag is not False

    def dest(self, name: str) -> str:
        """Where argparse puts the flag's value: the setting's name, or ``model_args`` for ``--model-arg``'s pairs."""
        return str(self.option(name)).removeprefix("--").replace("-", "_") + "s" if self.takes_pairs else name

    def label(self, name: str) -> str:
        """How an error names the setting: its YAML key and its flag."""
        option = self.option(name)
        return f"setting {name} ({option})" if option else f"setting {name}"


def setting(default: Any, kind: Kind, help: str, **declared: Any) -> Any:
    """A field of :class:`~zoo.settings.Settings` and its declaration (``declared``: the other fields of
    :class:`Declaration`)."""
    declaration = Declaration(kind, help, **declared)
    if isinstance(default, dict):
        return dataclasses.field(default_factory=dict, metadata={"declaration": declaration})
    return dataclasses.field(default=default, metadata={"declaration": declaration})


def declarations(settings_class: type) -> dict[str, Declaration]:
    """The declaration of each field of ``settings_class``, in order."""
    return {field.name: field.metadata["declaration"] for field in dataclasses.fields(settings_class)}


def default_text(declaration: Declaration, default: Any) -> str | None:
    """The default as help and docs say it: the model's, the declared value, or None where there is none."""
    if declaration.default_text is not None:
        return declaration.default_text
    if declaration.group is not None:
        return MODELS_OWN
    return None if default is None or default == {} else str(default)


def help_text(declaration: Declaration, default: Any) -> str:
    """The flag's help: the declared text and the default."""
    shown = default_text(declaration, default)
    return declaration.help + (f" (default: {shown})" if shown is not None else "")
