"""Small train.py runs of any registered model: tiny data of its family and its card's small settings."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

from datamodules.families import tiny_data
from zoo.models import model_card


def small_run(model: str, folder: Path, examples: int = 60, batch_size: int | None = None,
              small: bool = True) -> list[str]:
    """``--model`` and what a run of it needs: tiny data of its family written into ``folder``, the card's small
    settings (with ``small=False`` only those the model cannot do without), and ``batch_size`` if given."""
    card = model_card(model)
    settings: dict[str, Any] = tiny_data(card.data_family, folder / card.data_family, examples)
    required = {name for name, default in card.arguments.items() if default is inspect.Parameter.empty}
    settings.update({key: value for key, value in card.small.items() if small or key in required})
    if batch_size is not None:
        settings["batch_size"] = batch_size
    return ["--model", model, *as_flags(settings)]


def as_flags(settings: dict[str, Any]) -> list[str]:
    """Settings as in a YAML file, as train.py's flags: ``model_options`` become ``--model-arg KEY=VALUE``."""
    flags = []
    for key, value in settings.items():
        if key == "model_options":
            flags += [part for option, given in value.items()
                      for part in ("--model-arg", f"{option}={json.dumps(given)}")]
        else:
            flags += [f"--{key.replace('_', '-')}", str(value)]
    return flags
