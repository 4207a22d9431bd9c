"""A study's report: what its runs logged, as tables (markdown), curves (PNG) and every cell's values (JSON).

Every number is read from the runs: the TensorBoard events for the logged scalars,
``summary.json`` for the best checkpoint and the time a step, ``cell.json`` for the
test split's metrics on the best and last checkpoints. Nothing is recomputed from
anything else. Steps are TensorBoard's: an epoch's values sit at the index of its
last step (599 for an epoch of 600 steps).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import statistics
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.util.tensor_util import make_ndarray

from callbacks.checkpoint import write_text_atomically

from ..models import model_card
from .cell import DONE, cell_state, read_record
from .spec import Cell, Study, StudyError, format_value

Series = list[tuple[int, float]]  # (step, value), by step
REPORT_MARKDOWN, REPORT_JSON, REPORT_PLOT = "report.md", "report.json", "curves.png"
#: The gradient-quality scalar a last panel of the plot shows where the runs logged it (``--grad-quality-every``):
#: each run's own estimator's cosine to the true gradient.
QUALITY_TAG = "grad_quality/ESTIMATOR/cosine"


def quality_tag(row: tuple) -> str:
    return QUALITY_TAG.replace("ESTIMATOR", row[0])


def read_scalars(run: Path) -> dict[str, Series]:
    """Every scalar in the run folder's TensorBoard events, by tag. A step logged twice (a run resumed from a
    checkpoint before it) keeps the value written last."""
    values: dict[str, dict[int, float]] = {}
    files = sorted(run.glob("events.out.tfevents.*"), key=lambda path: (int(path.name.split(".")[3]), path.name))
    for path in files:
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                kind = value.WhichOneof("value")
                if kind == "simple_value":
                    number = value.simple_value
                elif kind == "tensor" and value.metadata.plugin_data.plugin_name == "scalars":
                    number = make_ndarray(value.tensor).item()
                else:
                    continue
                values.setdefault(value.tag, {})[event.step] = float(number)
    return {tag: sorted(points.items()) for tag, points in values.items()}


@dataclass
class CellResult:
    """A cell, its record and its logged series, one per seed it covers."""

    cell: Cell
    status: str
    record: dict[str, Any] | None
    scalars: dict[str, Series]
    seeds: tuple[int, ...]

    @property
    def done(self) -> bool:
        """Whether the cell reached its end (its budget, or divergence): only then are its values reported."""
        return self.status in DONE

    def series(self, tag: str) -> list[Series]:
        """``tag``'s series for each seed of the cell (replicas log theirs as ``TAG/replica_R``)."""
        if self.cell.seed is not None:
            return [self.scalars.get(tag, [])]
        return [self.scalars.get(f"{tag}/replica_{replica}", []) for replica in range(len(self.seeds))]

    @property
    def best_step(self) -> int | None:
        best = ((self.record or {}).get("summary") or {}).get("best")
        return None if best is None else best["step"]

    def test(self, which: str, metric: str) -> float | None:
        measured = ((self.record or {}).get("test") or {}).get(which)
        return None if measured is None else measured.get(metric)


def collect(study: Study) -> list[CellResult]:
    results = []
    for cell in study.cells:
        folder = study.run_folder(cell)
        results.append(CellResult(cell, cell_state(study, cell).status, read_record(folder),
                                  read_scalars(folder) if folder.is_dir() else {},
                                  study.seeds if cell.seed is None else (cell.seed,)))
    return results


def at_end(series: Series) -> float | None:
    return series[-1][1] if series else None


def at_step(series: Series, step: int | None) -> float | None:
    """The value logged last at or before ``step`` (the best checkpoint's): what the run had reached there."""
    if step is None:
        return None
    before = [value for logged, value in series if logged <= step]
    return before[-1] if before else None


def spread(values: list[float | None], digits: int) -> str:
    """``mean ± std`` over seeds (the sample std), the value alone for one seed, – for none."""
    known = [value for value in values if value is not None and math.isfinite(value)]
    if not known:
        return "–"
    if len(known) == 1:
        return f"{known[0]:.{digits}f}"
    text = f"{statistics.mean(known):.{digits}f} ± {statistics.stdev(known):.{digits}f}"
    return text if len(known) == len(values) else f"{text} ({len(known)} of {len(values)})"


def mean_curve(curves: list[Series]) -> tuple[list[int], list[float], list[float]]:
    """The steps every seed logged, and the mean and std over seeds there."""
    common = sorted(set.intersection(*(set(step for step, _ in curve) for curve in curves))) if curves else []
    by_step = [dict(curve) for curve in curves]
    means, stds = [], []
    for step in common:
        values = [points[step] for points in by_step]
        means.append(statistics.mean(values))
        stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
    return common, means, stds


def steps_to(curves: list[Series], value: float, mode: str) -> int | None:
    """The first step whose mean over seeds reaches ``value``."""
    for step, mean, _ in zip(*mean_curve(curves)):
        if (mean >= value) if mode == "max" else (mean <= value):
            return step
    return None


def thin(steps: list[int], every: int | None) -> list[int]:
    """The last step logged in each stretch of ``every`` steps (all of them if ``every`` is None)."""
    if not every:
        return steps
    kept: dict[int, int] = {}
    for step in steps:
        kept[(step + 1 + every - 1) // every] = step
    return sorted(kept.values())


class Rows:
    """The report's rows: the cells of an estimator at one grid point, over the seeds."""

    def __init__(self, study: Study, results: list[CellResult]) -> None:
        self.study = study
        self.groups: dict[tuple, list[CellResult]] = {}
        for result in results:
            self.groups.setdefault(result.cell.row, []).append(result)

    def label(self, row: tuple) -> str:
        return self.study.labels[row[0]]

    def values(self, row: tuple, tag: str, where: str) -> list[float | None]:
        """Per seed of the row: ``tag`` at the end of the run or at its best checkpoint."""
        values = []
        for result in self.done(row):
            for series in result.series(tag):
                values.append(at_end(series) if where == "end" else at_step(series, result.best_step))
        return values

    def done(self, row: tuple) -> list[CellResult]:
        """The row's cells that reached their end: a running cell's values are not its results yet."""
        return [result for result in self.groups[row] if result.done]

    def curves(self, row: tuple, tag: str) -> list[Series]:
        return [series for result in self.done(row) for series in result.series(tag) if series]

    def seeds(self, row: tuple) -> int:
        return sum(len(result.seeds) for result in self.done(row))

    def statuses(self, row: tuple) -> str:
        """"" when every cell is done; else what the others are, e.g. "1 running"."""
        counts: dict[str, int] = {}
        for result in self.groups[row]:
            if result.status != "finished":
                counts[result.status] = counts.get(result.status, 0) + 1
        return ", ".join(f"{count} {status}" for status, count in counts.items())


def digits_for(values: Iterable[float | None]) -> int:
    """Decimals that show differences: 2 for −ELBOs in the hundreds, 4 for accuracies and small losses."""
    known = [abs(value) for value in values if value is not None and math.isfinite(value)]
    return 2 if known and max(known) >= 10 else 4


def published_for(study: Study, keys: dict[str, Any]) -> float | None:
    """The published value whose keys all match ``keys`` (and name nothing else)."""
    if study.published is None:
        return None
    for entry in study.published.entries:
        wanted = {key: value for key, value in entry.items() if key != "value"}
        if all(key in keys and keys[key] == value for key, value in wanted.items()):
            return entry["value"]
    return None


def row_keys(row: tuple) -> dict[str, Any]:
    estimator, point = row
    return {"estimator": estimator, **{key: value for key, value in point}}


def main_table(study: Study, rows: Rows) -> list[str]:
    """Rows × (grid values, seeds, each metric at the end and at the best checkpoint, the test split on the best
    and last checkpoints, steps to the target, time a step, published)."""
    card = model_card(study.model)
    axes = study.axis_keys()
    any_best = any(result.best_step is not None for group in rows.groups.values() for result in group)
    columns: list[tuple[str, Any]] = []
    for tag, label in study.metrics.items():
        columns.append((f"{label} (end)" if any_best else label, ("end", tag)))
        if any_best:
            columns.append((f"{label} (best ckpt)", ("best", tag)))
    if study.test:
        columns += [(f"{card.test_metric} (best ckpt)", ("test", "best")), (f"{card.test_metric} (last ckpt)",
                                                                          ("test", "last"))]
    header = ["estimator", *[key.rpartition(".")[2] for key in axes], "seeds", *[name for name, _ in columns]]
    if study.target is not None:
        header.append(f"steps to {study.target.metric} {'≥' if study.target.mode == 'max' else '≤'} "
                      f"{study.target.value:g}")
    header.append("ms / step")
    if study.published is not None:
        header.append(study.published.label)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "--:|" * (len(header) - 1)]
    shared = False
    for row in rows.groups:
        cells = [rows.label(row) + (f" ({rows.statuses(row)})" if rows.statuses(row) else "")]
        point = dict(row[1])
        cells += [format_value(point[key]) if key in point else "" for key in axes]
        cells.append(str(rows.seeds(row)))
        for _, (where, what) in columns:
            if where == "test":
                values = [result.test(what, card.test_metric) for result in rows.done(row)]
            else:
                values = rows.values(row, what, where)
            cells.append(spread(values, digits_for(values)))
        if study.target is not None:
            reached = steps_to(rows.curves(row, study.target.metric), study.target.value, study.target.mode)
            cells.append("–" if not rows.done(row) else f"{reached:,}" if reached is not None else "not reached")
        times = [((result.record or {}).get("summary") or {}).get("seconds_per_step") for result in rows.done(row)]
        times = [time for time in times if time]
        row_shared = any((result.record or {}).get("shared_machine") for result in rows.done(row))
        shared |= row_shared
        cells.append(f"{1000 * statistics.mean(times):.1f}{' †' if row_shared else ''}" if times else "–")
        if study.published is not None:
            value = published_for(study, row_keys(row))
            cells.append("–" if value is None else f"{value:g}")
        lines.append("| " + " | ".join(cells) + " |")
    if shared:
        lines += ["", "† measured while other work shared the machine (other cells, or more runnable processes than "
                      "the cell's threads): the time says little of the estimator's cost."]
    return lines


def pivot_table(study: Study, rows: Rows) -> list[str]:
    """The first metric at the end of the runs, rows × the values of ``study.pivot`` (``table: {columns: KEY}``)."""
    tag = next(iter(study.metrics))
    pivot = study.pivot

    def split(row: tuple) -> tuple[tuple, Any]:
        keys = row_keys(row)
        column = keys.pop(pivot)
        return tuple(keys.items()), column

    table: dict[tuple, dict[Any, str]] = {}
    columns: list[Any] = []
    all_values = [value for row in rows.groups for value in rows.values(row, tag, "end")]
    for row in rows.groups:
        key, column = split(row)
        columns += [column] if column not in columns else []
        table.setdefault(key, {})[column] = (spread(rows.values(row, tag, "end"), digits_for(all_values))
                                             if rows.done(row) else rows.statuses(row))
    row_axes = [name for name, _ in next(iter(table))]
    labels = {row[0]: study.labels[row[0]] for row in rows.groups}
    names = [study.labels.get(column, column) if pivot == "estimator" else f"{pivot.rpartition('.')[2]} = "
             f"{format_value(column)}" for column in columns]
    published = study.published
    published_column = published is not None and all(pivot not in entry for entry in published.entries)
    header = [name.rpartition(".")[2] for name in row_axes] + names + ([published.label] if published_column else [])
    lines = [f"{study.metrics[tag]}, mean ± std over seeds:", "", "| " + " | ".join(header) + " |",
             "|" + "---|" * len(row_axes) + "--:|" * (len(header) - len(row_axes))]
    if published is not None and not published_column:
        values = [published_for(study, {pivot: column}) for column in columns]
        lines.append("| " + " | ".join([published.label] + [""] * (len(row_axes) - 1)
                                       + ["–" if value is None else f"{value:g}" for value in values]) + " |")
    for key, by_column in table.items():
        first = [labels[value] if name == "estimator" else format_value(value) for name, value in key]
        cells = first + [by_column.get(column, "–") for column in columns]
        if published_column:
            value = published_for(study, dict(key))
            cells.append("–" if value is None else f"{value:g}")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def curve_tables(study: Study, rows: Rows) -> list[str]:
    """Each curve's mean over seeds at every logged point (or one every ``curve_every`` steps): the estimators as
    rows and the points as columns when there are at most 10 points, else the other way round."""
    lines: list[str] = []
    for tag in study.curves:
        curves = {row: mean_curve(rows.curves(row, tag)) for row in rows.groups}
        steps = thin(sorted({step for steps, _, _ in curves.values() for step in steps}), study.curve_every)
        if not steps:
            continue
        means = {row: dict(zip(steps_, values)) for row, (steps_, values, _) in curves.items()}
        digits = digits_for(value for values in means.values() for value in values.values())
        label = study.metrics.get(tag, tag)
        names = [describe_row(study, rows, row) for row in rows.groups]
        lines += ["", f"{label} (`{tag}`) along the way, mean over seeds:", ""]

        def cell(row: tuple, step: int, means: dict = means, digits: int = digits) -> str:
            value = means[row].get(step)
            return "–" if value is None else f"{value:.{digits}f}"

        epochs = epoch_ends(study, rows, steps)
        unit = "epoch" if epochs else "step"
        points = [f"{epochs[step]:,}" if epochs else f"{step:,}" for step in steps]
        if len(steps) <= 10:
            lines += ["| | " + " | ".join(f"{unit} {point}" for point in points) + " |", "|---|" + "--:|" * len(steps)]
            lines += ["| " + name + " | " + " | ".join(cell(row, step) for step in steps) + " |"
                      for name, row in zip(names, rows.groups)]
        else:
            lines += [f"| {unit} | " + " | ".join(names) + " |", "|--:|" + "--:|" * len(names)]
            lines += [f"| {point} | " + " | ".join(cell(row, step) for row in rows.groups) + " |"
                      for point, step in zip(points, steps)]
    return lines


def epoch_ends(study: Study, rows: Rows, steps: list[int]) -> dict[int, int]:
    """For a study whose budget is in epochs, each of ``steps`` as the epoch it ends (1 for the first), read from
    the ``epoch`` Lightning logs beside every point; {} where the budget is in steps or the steps are not epochs'."""
    if not study.cells[0].by_epochs:
        return {}
    done = [result for group in rows.groups.values() for result in group if result.done]
    logged = dict(done[0].scalars.get("epoch", [])) if done else {}
    epochs = [logged.get(step) for step in steps]
    if None in epochs or any(later <= earlier for earlier, later in zip(epochs, epochs[1:])):
        return {}
    return {step: int(epoch) + 1 for step, epoch in zip(steps, epochs)}


def describe_row(study: Study, rows: Rows, row: tuple) -> str:
    estimator, point = row
    return ", ".join([rows.label(row), *(f"{key.rpartition('.')[2]} {format_value(value)}" for key, value in point)])


def draw(study: Study, rows: Rows) -> Any:
    """A matplotlib figure: a panel for each curve at each grid point, each estimator's mean over seeds in its
    own colour with a band of ± one std; and at each grid point a panel of the training estimator's cosine to
    the true gradient where the runs logged it. None if there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = list(dict.fromkeys(point for _, point in rows.groups))
    panels = [(study.metrics.get(tag, tag), tag, point, lambda row, tag=tag: tag)
              for tag in study.curves for point in points
              if any(rows.curves(row, tag) for row in rows.groups if row[1] == point)]
    panels += [("the training estimator's gradient: cosine to the true one", QUALITY_TAG, point, quality_tag)
               for point in points if any(rows.curves(row, quality_tag(row)) for row in rows.groups if row[1] == point)]
    if not panels:
        return None
    columns = min(3, len(panels))
    lines = -(-len(panels) // columns)
    names = list(dict.fromkeys(rows.label(row) for row in rows.groups))
    legend_columns = min(len(names), 3 * columns)
    legend_height = 0.3 * -(-len(names) // legend_columns) + 0.2  # inches below the panels
    width, height = max(5.5 * columns, 8.0), 3.8 * lines + 0.5 + legend_height
    figure, axes = plt.subplots(lines, columns, figsize=(width, height), squeeze=False)
    colours = {estimator: f"C{index % 10}" for index, estimator in enumerate(study.estimators)}
    handles: dict[str, Any] = {}
    for axis, (title, label, point, tag_of) in zip(axes.flat, panels):
        for row in rows.groups:
            steps, means, stds = mean_curve(rows.curves(row, tag_of(row))) if row[1] == point else ([], [], [])
            if not steps:
                continue
            colour = colours[row[0]]
            (handles[rows.label(row)],) = axis.plot(steps, means, color=colour, label=rows.label(row), linewidth=1.4)
            axis.fill_between(steps, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)],
                              color=colour, alpha=0.2, linewidth=0)
        where = ", ".join(f"{key.rpartition('.')[2]} {format_value(value)}" for key, value in point)
        axis.set_title(title + (f" ({where})" if where else ""), fontsize=10)
        axis.set_xlabel("step")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3)
    for axis in axes.flat[len(panels):]:
        axis.set_visible(False)
    figure.legend(handles.values(), handles.keys(), loc="lower center", ncol=legend_columns, fontsize=9)
    figure.suptitle(textwrap.fill(f"{study.title}: mean over seeds, band ± 1 std", width=int(11 * width)),
                    fontsize=11)
    figure.tight_layout(rect=(0, legend_height / height, 1, 1))
    return figure


def plot(study: Study, rows: Rows, path: Path) -> Path | None:
    """:func:`draw`, saved as a PNG at ``path``; None if there is nothing to draw or no matplotlib to draw it."""
    if importlib.util.find_spec("matplotlib") is None:
        print("(no curves.png: the plot needs matplotlib, e.g. pip install -e '.[studies]')")
        return None
    figure = draw(study, rows)
    if figure is None:
        return None
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def as_json(study: Study, results: list[CellResult]) -> dict[str, Any]:
    """Every cell's values: its settings, how it ended, each metric per seed at the end and at the best
    checkpoint, the test split's metrics, and its curves."""
    cells = []
    tags = list(dict.fromkeys([*study.metrics, *study.curves]))
    for result in results:
        cells.append({
            "cell": result.cell.name, "estimator": result.cell.estimator, "point": dict(result.cell.point),
            "seeds": list(result.seeds), "status": result.status, "settings": result.cell.settings,
            "summary": (result.record or {}).get("summary"), "test": (result.record or {}).get("test"),
            "shared_machine": (result.record or {}).get("shared_machine"),
            "metrics": {tag: {"end": [at_end(series) for series in result.series(tag)],
                              "best": [at_step(series, result.best_step) for series in result.series(tag)]}
                        for tag in study.metrics},
            "curves": {tag: [[list(point) for point in series] for series in result.series(tag)] for tag in tags},
        })
    return {"study": study.name, "title": study.title, "model": study.model, "cells": cells}


def markdown(study: Study, results: list[CellResult], plot_link: str | None) -> str:
    rows = Rows(study, results)
    records = [result.record for result in results if result.record]
    machine = sorted({f"{record['device']}, {record['threads']} thread{'s' if record['threads'] != 1 else ''}, "
                      f"torch {record['torch']}" for record in records}) or ["no cell has run yet"]
    shown = _shown_path(study.path)
    lines = [f"## {study.title} (`{shown}`)", ""]
    if study.description:
        lines += [study.description, ""]
    done = sum(result.done for result in results)
    lines += [f"- command: `python -m zoo.study run {shown}`, then `python -m zoo.study report {shown}`",
              f"- machine: {'; '.join(machine)}",
              f"- cells: {done} of {len(results)} done; seeds "
              f"{', '.join(map(str, study.seeds))}" + (" (replicas of one run)" if study.replicas else "")
              + "; mean ± std over seeds", ""]
    lines += pivot_table(study, rows) if study.pivot else main_table(study, rows)
    lines += curve_tables(study, rows)
    if plot_link:
        lines += ["", f"![{study.title}: curves]({plot_link})"]
    if study.notes:
        lines += ["", study.notes]
    return "\n".join(lines) + "\n"


def _shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def write_report(study: Study, results_file: Path | None = None) -> str:
    """Print the report and write it, its JSON and its plot beside the runs; with ``results_file``, replace the
    study's section there (between ``<!-- study NAME -->`` and ``<!-- end study NAME -->``) and put the plot in
    ``results/studies/`` beside it."""
    results = collect(study)
    if not any(result.record or result.scalars for result in results):
        raise StudyError(f"no cell of {study.name!r} has run yet under {study.output_dir}; run "
                         f"`python -m zoo.study run {_shown_path(study.path)}` first.")
    study.output_dir.mkdir(parents=True, exist_ok=True)
    plot_path = plot(study, Rows(study, results), (results_file.parent / "results" / "studies" / f"{study.name}.png")
                     if results_file else study.output_dir / REPORT_PLOT)
    link = None
    if plot_path is not None:
        link = os.path.relpath(plot_path, results_file.parent) if results_file else plot_path.name
    text = markdown(study, results, link)
    (study.output_dir / REPORT_MARKDOWN).write_text(text)
    (study.output_dir / REPORT_JSON).write_text(json.dumps(as_json(study, results), indent=1) + "\n")
    if results_file is not None:
        replace_section(results_file, study.name, text)
    print(text, end="")
    print(f"\n(written: {study.output_dir / REPORT_MARKDOWN}, {study.output_dir / REPORT_JSON}"
          + (f", {plot_path}" if plot_path else "") + (f"; section of {results_file}" if results_file else "") + ")")
    return text


def replace_section(path: Path, name: str, text: str) -> None:
    """Put ``text`` between the study's markers in ``path``, or at its end with the markers if it has none."""
    start, end = f"<!-- study {name} -->", f"<!-- end study {name} -->"
    block = f"{start}\n{text}{end}\n"
    try:
        content = path.read_text()
    except FileNotFoundError:
        content = ""
    if start in content and end in content:
        before, _, rest = content.partition(start)
        _, _, after = rest.partition(end)
        content = before + block + after.removeprefix("\n")
    else:
        content = content.rstrip("\n") + ("\n\n" if content else "") + block
    write_text_atomically(path, content)

