"""A study file: one model, estimators with their own settings, a grid, seeds, and what to report.

A study is a YAML file (``benchmarks/studies/*.yaml`` are examples)::

    title: Categorical VAE on Fashion-MNIST
    model: vae
    settings: {data: fashion-mnist, max_epochs: 10, optimizer: radam, lr: 5.0e-4}  # every cell's
    estimators:                       # each with its own settings; "grid" varies them for it alone
      reinmax: {tau: 1.3}
      st: {tau: 1.0, label: "ST"}
    grid: {num_samples: [2, 3]}       # every combination, for every estimator
    seeds: [0, 1]                     # or "replicas: 10" where the model trains seeds as replicas
    metrics: {train/neg_elbo_epoch: training −ELBO, val/neg_elbo_epoch: test −ELBO}

Each combination of an estimator, a point of its grid and a seed is a *cell*: an
ordinary ``train.py`` run of those settings in a folder named after the cell. A
grid key names a setting (``tau``) or an entry of a mapping setting
(``model_options.num_experts``). The other keys (``target``, ``curves``,
``published``, ``table``, ``notes``) shape the report: :class:`Study` lists them.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import lightning as L
import yaml

from ..models import ModelCard, model_card
from ..settings import NAMES, read_yaml, resolve_values

#: The settings a study sets itself for each cell.
STUDY_OWNED = ("model", "estimator", "seed", "output_dir", "run_name", "resume", "config")
#: Where a cell runs: on one device, always. Several GPUs run several cells (``--jobs``); a cell launching
#: processes of its own would run the study's command again in each.
ONE_DEVICE = ("devices", "strategy")
#: Mapping settings whose entries a grid key may name as ``SETTING.KEY``.
MAPPING_SETTINGS = ("model_options", "estimator_options", "trainer", "grad_quality")
TOP_LEVEL = ("title", "description", "model", "settings", "estimators", "grid", "seeds", "replicas", "metrics",
             "test", "target", "curves", "curve_every", "published", "table", "notes", "output_dir")


class StudyError(ValueError):
    """A study file that cannot be run as written; the message names the key and the fix."""


@dataclass(frozen=True)
class Cell:
    """One run of a study: an estimator at one point of the grid, for one seed (or all seeds as replicas)."""

    estimator: str
    point: tuple[tuple[str, Any], ...]  # the grid's (key, value) pairs, the estimator's own grid included
    seed: int | None  # None when the run trains every seed as a replica
    settings: dict[str, Any] = field(compare=False, hash=False)  # the run's settings, as a --config file
    data: str = field(default="", compare=False)  # the data set they resolve to (train.py names the folder by it)
    by_epochs: bool = field(default=False, compare=False)  # whether its budget is epochs (else steps)

    @property
    def run_name(self) -> str:
        """The run's folder name: the grid point and the seed, e.g. ``num_samples2-seed0``."""
        parts = [f"{key.rpartition('.')[2]}{format_value(value)}" for key, value in self.point]
        parts.append("replicas" if self.seed is None else f"seed{self.seed}")
        return "-".join(parts)

    @property
    def name(self) -> str:
        """How commands and reports name the cell, e.g. ``reinmax/num_samples2-seed0``."""
        return f"{self.estimator}/{self.run_name}"

    @property
    def row(self) -> tuple[str, tuple[tuple[str, Any], ...]]:
        """The report's row: the cells that differ only by seed share it."""
        return self.estimator, self.point


@dataclass(frozen=True)
class Target:
    """Report the first step at which the mean curve of ``metric`` reaches ``value``."""

    metric: str
    value: float
    mode: str  # "max": reached when at least value; "min": at most


@dataclass(frozen=True)
class Published:
    """Numbers from a paper, printed beside the measured ones: each entry's keys say which rows (or columns)."""

    label: str
    entries: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class Study:
    """A study file, checked: see the module's docstring for the format."""

    path: Path
    name: str
    title: str
    description: str
    model: str
    settings: dict[str, Any]
    estimators: dict[str, dict[str, Any]]  # name -> its settings (without "grid" and "label")
    labels: dict[str, str]  # estimator -> its label in tables
    grids: dict[str, dict[str, list[Any]]]  # estimator -> every grid key and its values
    seeds: tuple[int, ...]
    replicas: int | None
    metrics: dict[str, str]  # logged tag -> its label
    test: bool  # measure the test split on the best and last checkpoints
    target: Target | None
    curves: tuple[str, ...]
    curve_every: int | None
    published: Published | None
    pivot: str | None  # a grid key (or "estimator") whose values become the table's columns
    notes: str
    output_dir: Path
    cells: tuple[Cell, ...]

    def cell(self, name: str) -> Cell:
        for cell in self.cells:
            if cell.name == name:
                return cell
        raise StudyError(f"study {self.name!r} has no cell {name!r}; its cells: "
                         f"{', '.join(cell.name for cell in self.cells)}.")

    def run_folder(self, cell: Cell) -> Path:
        """Where ``train.py`` writes the cell's run (its ``--output-dir``, then MODEL-DATA-ESTIMATOR/RUN_NAME)."""
        return self.output_dir / f"{self.model}-{cell.data}-{cell.estimator}" / cell.run_name

    def axis_keys(self) -> list[str]:
        """Every grid key of any estimator, in the order first given."""
        return list(dict.fromkeys(key for grid in self.grids.values() for key in grid))


def format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return f"{value:.1f}"
    return str(value)


def load_study(path: str | Path, output_dir: str | Path | None = None) -> Study:
    """Read and check the study file at ``path``; its runs go under ``output_dir`` if given, else the file's
    ``output_dir`` (default ``runs/studies/NAME``), relative to the current folder."""
    path = Path(path)
    try:
        raw = read_yaml(path.read_text())
    except OSError as error:
        raise StudyError(f"cannot read the study file {path}: {error.strerror or error}.") from error
    except yaml.YAMLError as error:
        raise StudyError(f"the study file {path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(raw, dict):
        raise StudyError(f"the study file {path} must be a YAML mapping with at least 'model' and 'estimators'.")
    unknown = sorted(set(map(str, raw)) - set(TOP_LEVEL))
    if unknown:
        raise StudyError(f"{path}: unknown key(s) {', '.join(unknown)}; a study has {', '.join(TOP_LEVEL)}.")
    where = f"{path}:"
    name = path.stem
    if "model" not in raw:
        raise StudyError(f"{where} 'model' is missing: name the model every cell trains, e.g. model: vae.")
    try:
        card = model_card(str(raw["model"]))
    except ValueError as error:
        raise StudyError(f"{where} {error}") from error
    settings = _mapping(raw.get("settings", {}), f"{where} settings")
    _check_setting_keys(settings, f"{where} settings")
    estimators, labels, grids = _estimators(raw.get("estimators"), _grid(raw.get("grid", {}), f"{where} grid"),
                                            card, where)
    seeds, replicas = _seeds(raw, card, where)
    metrics = raw.get("metrics") or {card.monitor: card.monitor}
    if isinstance(metrics, list):
        metrics = {tag: tag for tag in metrics}
    metrics = {str(tag): str(label) for tag, label in _mapping(metrics, f"{where} metrics").items()}
    curve_every = raw.get("curve_every")
    if curve_every is not None and not (isinstance(curve_every, int) and curve_every > 0):
        raise StudyError(f"{where} curve_every must be a positive number of steps, got {curve_every!r}.")
    curves = raw.get("curves", list(metrics))
    if not isinstance(curves, list) or not all(isinstance(tag, str) for tag in curves):
        raise StudyError(f"{where} curves must be a list of logged tags, e.g. curves: [val/accuracy].")
    study_output = Path(output_dir if output_dir is not None else raw.get("output_dir", Path("runs", "studies", name)))
    study = Study(
        path=path.resolve(), name=name, title=str(raw.get("title", name)), description=str(raw.get("description", "")),
        model=card.name, settings=settings, estimators=estimators, labels=labels, grids=grids, seeds=seeds,
        replicas=replicas, metrics=metrics, test=bool(raw.get("test", _has_test_step(card.model_class))),
        target=_target(raw.get("target"), card, where), curves=tuple(curves), curve_every=curve_every,
        published=_published(raw.get("published"), where),
        pivot=_pivot(raw.get("table"), grids, where), notes=str(raw.get("notes", "")).strip(),
        output_dir=study_output.resolve(), cells=(),
    )
    return replace(study, cells=tuple(_cells(study, card)))


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise StudyError(f"{where} must be a mapping of KEY: VALUE, got {value!r}.")
    return {str(key): item for key, item in value.items()}


def _check_setting_keys(settings: dict[str, Any], where: str) -> None:
    owned = sorted(set(settings) & set(STUDY_OWNED))
    if owned:
        raise StudyError(f"{where}: {', '.join(owned)} {'is' if len(owned) == 1 else 'are'} the study's own: give "
                         "the model as 'model', estimators under 'estimators' and seeds as 'seeds'; the study names "
                         "the runs' folders.")
    several = sorted(set(settings) & set(ONE_DEVICE))
    if several:
        raise StudyError(f"{where}: {', '.join(several)}: each cell runs on one device; run cells side by side "
                         "instead, one a GPU (python -m zoo.study run --jobs N, or a SLURM array).")
    unknown = sorted(set(settings) - set(NAMES))
    if unknown:
        raise StudyError(f"{where}: unknown setting(s) {', '.join(unknown)}; valid settings: {', '.join(NAMES)}.")


def _grid(grid: Any, where: str) -> dict[str, list[Any]]:
    grid = _mapping(grid, where)
    for key, values in grid.items():
        base = key.partition(".")[0]
        if base in STUDY_OWNED or base in ONE_DEVICE:
            raise StudyError(f"{where}: {key!r} cannot vary in a grid; seeds are the study's 'seeds', estimators "
                             "its 'estimators'.")
        if base not in NAMES or ("." in key and base not in MAPPING_SETTINGS):
            raise StudyError(f"{where}: {key!r} is not a setting; a grid key is a setting (e.g. tau) or an entry "
                             f"of {', '.join(MAPPING_SETTINGS)} (e.g. model_options.num_experts).")
        if not isinstance(values, list) or not values:
            raise StudyError(f"{where}: {key!r} needs a non-empty list of values, e.g. {key}: [1, 2].")
    return grid


def _estimators(raw: Any, shared_grid: dict[str, list[Any]], card: ModelCard,
                where: str) -> tuple[dict[str, dict[str, Any]], dict[str, str], dict[str, dict[str, list[Any]]]]:
    if isinstance(raw, list):
        raw = {str(name): {} for name in raw}
    raw = _mapping(raw, f"{where} estimators")
    if not raw:
        raise StudyError(f"{where} 'estimators' is missing: name at least one, e.g. estimators: {{reinmax: {{}}}}.")
    estimators, labels, grids = {}, {}, {}
    for name, entry in raw.items():
        try:
            card.check_estimator(name)
        except ValueError as error:
            raise StudyError(f"{where} estimators: {error}") from error
        entry = dict(_mapping(entry, f"{where} estimators: {name}"))
        labels[name] = str(entry.pop("label", name))
        own_grid = _grid(entry.pop("grid", {}), f"{where} estimators: {name}: grid")
        _check_setting_keys(entry, f"{where} estimators: {name}")
        estimators[name] = entry
        grids[name] = {**shared_grid, **own_grid}
    return estimators, labels, grids


def _seeds(raw: dict[str, Any], card: ModelCard, where: str) -> tuple[tuple[int, ...], int | None]:
    if "replicas" in raw:
        replicas = raw["replicas"]
        if card.replicas_option is None:
            raise StudyError(f"{where} replicas: model {card.name!r} trains one seed a run; give 'seeds' instead.")
        if not isinstance(replicas, int) or replicas < 1 or "seeds" in raw:
            raise StudyError(f"{where} replicas must be a positive number of seeds, given instead of 'seeds'.")
        return tuple(range(replicas)), replicas
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(seed, int) and seed >= 0 for seed in seeds):
        raise StudyError(f"{where} seeds must be a list of seeds (integers >= 0), e.g. seeds: [0, 1].")
    return tuple(seeds), None


def _target(raw: Any, card: ModelCard, where: str) -> Target | None:
    if raw is None:
        return None
    raw = _mapping(raw, f"{where} target")
    if "metric" not in raw or not isinstance(raw.get("value"), (int, float)):
        raise StudyError(f"{where} target needs a metric and a value, e.g. target: {{metric: val/accuracy, "
                         "value: 0.74}.")
    mode = raw.get("mode", card.mode if raw["metric"] == card.monitor else None)
    if mode not in ("min", "max"):
        raise StudyError(f"{where} target: say whether {raw['metric']} is better low or high: mode: min or max.")
    return Target(str(raw["metric"]), float(raw["value"]), mode)


def _published(raw: Any, where: str) -> Published | None:
    if raw is None:
        return None
    raw = _mapping(raw, f"{where} published")
    entries = raw.get("values")
    if not isinstance(entries, list) or not all(isinstance(entry, dict) and "value" in entry for entry in entries):
        raise StudyError(f"{where} published needs 'values': a list of mappings, each with a 'value' and the keys "
                         "of the rows it belongs to, e.g. {estimator: reinmax, num_samples: 2, value: 234.86}.")
    return Published(str(raw.get("label", "published")), tuple(entries))


def _pivot(raw: Any, grids: dict[str, dict[str, list[Any]]], where: str) -> str | None:
    raw = _mapping(raw, f"{where} table")
    pivot = raw.get("columns")
    keys = {key for grid in grids.values() for key in grid}
    if pivot is not None and pivot != "estimator" and pivot not in keys:
        raise StudyError(f"{where} table: columns must be 'estimator' or a grid key ({', '.join(sorted(keys))}), "
                         f"got {pivot!r}.")
    return pivot


def _has_test_step(model_class: type) -> bool:
    return model_class.test_step is not L.LightningModule.test_step


def _cells(study: Study, card: ModelCard) -> list[Cell]:
    cells = []
    for estimator, own in study.estimators.items():
        grid = study.grids[estimator]
        for values in itertools.product(*grid.values()):
            point = tuple(zip(grid, values))
            for seed in (None,) if study.replicas else study.seeds:
                settings = _merge(study.settings, own)
                for key, value in point:
                    _set(settings, key, value)
                settings.update(model=study.model, estimator=estimator, devices=1)
                if seed is None:
                    settings.setdefault("model_options", {})[card.replicas_option] = study.replicas
                else:
                    settings["seed"] = seed
                cell = Cell(estimator, point, seed, settings)
                try:  # as train.py will: types, ranges, the Trainer's arguments, a release's data
                    resolved = resolve_values(copy.deepcopy(settings))
                except ValueError as error:
                    raise StudyError(f"{study.path}: cell {cell.name}: {error}") from error
                by_epochs = resolved.max_epochs not in (None, -1) and resolved.max_steps in (None, -1)
                cells.append(replace(cell, data=resolved.data, by_epochs=by_epochs))
    names = [cell.name for cell in cells]
    if len(set(names)) != len(names):
        raise StudyError(f"{study.path}: two cells share a name; give grid values that differ in writing.")
    return cells


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in base.items()}
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _set(settings: dict[str, Any], key: str, value: Any) -> None:
    base, dot, entry = key.partition(".")
    if dot:
        settings[base] = {**settings.get(base, {}), entry: value}
    else:
        settings[base] = value
