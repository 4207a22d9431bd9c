"""The model registry: each model file registers its LightningModule with its contract as data.

    @register_model("vae", summary="...", data_family="images", metric="neg_elbo_epoch", mode="min",
                    recipe=Recipe(data="mnist", max_epochs=160))
    class CategoricalVAE(DiscreteVAE): ...

``train.py`` (its defaults, ``--help`` and run folders), ``zoo.release``,
``zoo.evaluate``, the data families, the README's model table and the tests read
the :class:`ModelCard`; nothing else keeps a list of model names.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import lightning as L

from datamodules.families import FACTS, FAMILIES, valid_data

from ..estimators import FAMILIES as ESTIMATOR_FAMILIES
from ..estimators import list_estimators

ModelClass = TypeVar("ModelClass", bound=type[L.LightningModule])


@dataclass(frozen=True)
class Recipe:
    """How a model is trained by default: what ``train.py`` uses for the settings a user leaves unset."""

    data: str  # the --data default, one of the data family's names
    batch_size: int = 100  # per process
    max_epochs: int = -1  # -1: no limit (then max_steps is the budget)
    max_steps: int = -1
    binarize: Literal["none", "dynamic", "static"] = "none"  # the images' pixel binarization
    val_size: int = 0  # training examples held out for validation; 0 validates on the test split
    gradient_clip_val: float | None = None


@dataclass(frozen=True)
class ModelCard:
    """What a model provides, as data: its name, data, monitored metric, estimators and recipe."""

    name: str  # train.py --model
    model_class: type[L.LightningModule]
    summary: str  # one line for --help and the README
    data_family: str  # which data module serves it (datamodules.families)
    metric: str  # the quantity checkpoints are chosen by and releases report, without its stage prefix
    mode: Literal["min", "max"]  # whether lower or higher is better
    recipe: Recipe
    # The estimator families the model can use; () for a model without a discrete choice.
    # Routers choose experts, so only a Mixture-of-Experts model names their family.
    estimator_families: tuple[str, ...] = ("pathwise", "score-function")
    # The stage whose metric picks the best checkpoint; a model without validation data picks by training.
    monitor_stage: Literal["train", "val"] = "val"
    # Steps that leave some parameters unused (GDAS runs only the sampled operations): DDP must look for them.
    unused_parameters: bool = False
    # Constructor arguments that follow the data: facts the data family provides
    # (datamodules.families.FACTS: in_channels, num_classes, image_size), filled in by train.py.
    from_data: tuple[str, ...] = ()
    # Settings (as in a YAML file) that make the model small enough for a run of a few steps on a CPU
    # in about a second: the tests and the GPU check's --tiny run every model with them, on tiny data.
    small: Mapping[str, Any] = field(default_factory=dict)
    # Reads of tensor values on the host a training batch may make (each a GPU stall): the non-finite
    # guard's one flag a step, plus any the model's own step needs (ListOps' lengths, GDAS's two samples).
    host_reads_per_batch: int = 1
    # The model option that trains several seeds at once as independent replicas of one run (the polynomial
    # toy's), each logging its own values as ``TAG/replica_R``; a study can then run its seeds as one cell.
    replicas_option: str | None = None

    @property
    def monitor(self) -> str:
        """The logged metric the best checkpoint is chosen by, e.g. ``val/accuracy``."""
        return f"{self.monitor_stage}/{self.metric}"

    @property
    def test_metric(self) -> str:
        """The metric a release of this model records, e.g. ``test/accuracy``."""
        return f"test/{self.metric}"

    @property
    def arguments(self) -> dict[str, Any]:
        """The constructor's arguments and their defaults (``inspect.Parameter.empty`` where it needs a value):
        the settings a run may give the model, and what it trains with where a run gives none."""
        return {name: parameter.default for name, parameter in inspect.signature(self.model_class).parameters.items()}

    @property
    def takes_estimator(self) -> bool:
        return bool(self.estimator_families)

    def valid_estimators(self) -> list[str]:
        return sorted(name for family in self.estimator_families for name in list_estimators(family))

    def check_estimator(self, name: str) -> None:
        """Refuse, naming the valid ones, an estimator of a family the model cannot use."""
        valid = self.valid_estimators()
        if name not in list_estimators():
            raise ValueError(f"unknown estimator {name!r}; valid estimators: {', '.join(list_estimators())}.")
        if name not in valid:
            if not self.takes_estimator:
                raise ValueError(f"model {self.name!r} has no discrete latent variable and takes no estimator; "
                                 "drop --estimator and its options.")
            kind = " or ".join(self.estimator_families)
            raise ValueError(f"model {self.name!r} takes a {kind} estimator; {name!r} is not one. "
                             f"Valid estimators: {', '.join(valid)}.")


_REGISTRY: dict[str, ModelCard] = {}


def register_model(name: str, **contract: Any) -> Callable[[ModelClass], ModelClass]:
    """Register a LightningModule under ``name`` with its :class:`ModelCard` fields; sets ``Model.card``."""

    def decorate(model_class: ModelClass) -> ModelClass:
        if name in _REGISTRY:
            raise ValueError(f"a model named {name!r} is already registered")
        card = ModelCard(name=name, model_class=model_class, **contract)
        if card.data_family not in FAMILIES:
            raise ValueError(f"model {name!r}: unknown data family {card.data_family!r}; "
                             f"valid families: {', '.join(FAMILIES)}.")
        provided = FACTS.get(card.data_family, ())
        missing = sorted(set(card.from_data) - set(provided))
        if missing:
            raise ValueError(f"model {name!r}: the {card.data_family!r} data family does not provide "
                             f"{', '.join(missing)}; it provides {', '.join(provided) or 'none'}.")
        unknown = sorted(set(card.estimator_families) - set(ESTIMATOR_FAMILIES))
        if unknown:
            raise ValueError(f"model {name!r}: unknown estimator families {', '.join(unknown)}; "
                             f"valid families: {', '.join(ESTIMATOR_FAMILIES)}.")
        if card.replicas_option is not None and card.replicas_option not in card.arguments:
            raise ValueError(f"model {name!r}: replicas_option {card.replicas_option!r} is not an argument of "
                             f"{model_class.__name__}; its arguments: {', '.join(card.arguments)}.")
        model_class.card = card
        _REGISTRY[name] = card
        return model_class

    return decorate


def list_models() -> list[str]:
    """Registered model names, sorted."""
    return sorted(_REGISTRY)


def model_card(name: str) -> ModelCard:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; valid models: {', '.join(list_models())}.")
    return _REGISTRY[name]


def get_model_class(name: str) -> type[L.LightningModule]:
    return model_card(name).model_class


def describe_defaults(card: ModelCard) -> str:
    """A model's defaults in words: its constructor's optimizer, learning rate and τ, and its recipe."""
    defaults = card.arguments
    recipe = card.recipe
    parts = [f"{defaults[key]}" if key == "optimizer" else f"{label} {defaults[key]:g}"
             for key, label in (("optimizer", ""), ("lr", "lr"), ("tau", "τ")) if key in defaults]
    if card.data_family != "none":
        parts.append(f"batch {recipe.batch_size}")
    if recipe.binarize != "none":
        parts.append(f"{recipe.binarize} binarization")
    if recipe.gradient_clip_val is not None:
        parts.append(f"clip {recipe.gradient_clip_val:g}")
    if recipe.val_size:
        parts.append(f"{recipe.val_size:,} training examples held out")
    parts.append(f"{recipe.max_epochs:,} epochs" if recipe.max_epochs > 0 else f"{recipe.max_steps:,} steps")
    return ", ".join(parts)


def markdown_table() -> str:
    """The registry as the README's model table."""
    rows = ["| `--model` | what | `--data` | estimators | defaults |", "|---|---|---|---|---|"]
    for name in list_models():
        card = model_card(name)
        others = [data for data in valid_data(card.data_family) if data != card.recipe.data]
        data = f"`{card.recipe.data}`" + (f"; also {', '.join(others)}" if others else "")
        estimators = " or ".join(card.estimator_families) or "none"
        summary = card.summary.replace("|", "\\|")  # a bar inside a cell would end it
        rows.append(f"| `{name}` | {summary} | {data} | {estimators} | {describe_defaults(card)} |")
    return "\n".join(rows)
