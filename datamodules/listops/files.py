"""ListOps files: one ``label<TAB>expression`` line per example, as published."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .expressions import ExpressionError, model_tokens, parse, value


class ListOpsFileError(ValueError):
    """A malformed line; the message names the file and the line."""


@dataclass(frozen=True)
class Example:
    label: int
    tokens: tuple[str, ...]  # what a model reads: no parentheses


def read_examples(path: str | Path, check_labels: bool = True) -> list[Example]:
    """Every example of ``path``; a malformed line raises :class:`ListOpsFileError`.

    ``check_labels`` also refuses a label that is not the expression's value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ListOps file at {path}")
    examples = []
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                try:
                    examples.append(_parse_line(line, check_labels))
                except (ExpressionError, ValueError) as error:
                    raise ListOpsFileError(f"{path}, line {number}: {error}") from None
    except UnicodeDecodeError as error:
        raise ListOpsFileError(f"{path} is not a UTF-8 text file ({error.reason} at byte {error.start})") from None
    if not examples:
        raise ListOpsFileError(f"{path}: no examples")
    return examples


def _parse_line(line: str, check_labels: bool) -> Example:
    line = line.rstrip("\n")
    if not line.strip():
        raise ValueError("empty line")
    label_text, separator, text = line.partition("\t")
    if not separator:
        raise ValueError("expected 'label<TAB>expression'")
    if label_text.strip() not in {str(digit) for digit in range(10)}:
        raise ValueError(f"label {label_text!r} is not a digit 0-9")
    label = int(label_text)
    tree = parse(text)
    if check_labels and value(tree) != label:
        raise ValueError(f"label {label} but the expression's value is {value(tree)}")
    return Example(label, tuple(model_tokens(text)))


def write_lines(path: str | Path, rows: list[tuple[int, str]]) -> None:
    """Write ``(label, text)`` rows atomically: a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False,
                                     prefix=f".{path.name}.", suffix=".partial") as partial:
        partial.writelines(f"{label}\t{text}\n" for label, text in rows)
    os.replace(partial.name, path)
