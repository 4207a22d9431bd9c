"""A table of values in [0, 1] drawn as a labelled heat map, for TensorBoard and for PNG files.

GDAS shows softmax(α) (operations × edges) this way and the Mixture of Experts its
expert load (layers × experts): every cell carries its value, every row and column
its name, so the image reads without a legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

_WHITE, _BLUE = np.array([255, 255, 255]), np.array([13, 38, 115])
_CELL, _PAD, _FONT_SIZE = 44, 6, 12


def labelled_heat_map(values: Sequence[Sequence[float]], rows: Sequence[str], columns: Sequence[str],
                      title: str = "") -> np.ndarray:
    """An ``(H, W, 3)`` uint8 image: a cell per value, white at 0 to dark blue at 1, with its value written in it."""
    table = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    if table.shape != (len(rows), len(columns)):
        raise ValueError(f"labelled_heat_map: values of shape {table.shape} need {table.shape[0]} row and "
                         f"{table.shape[1]} column labels, got {len(rows)} and {len(columns)}.")
    font = ImageFont.load_default(size=_FONT_SIZE)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = lambda text: int(measure.textlength(text, font=font))  # noqa: E731
    left = max(map(text_width, rows), default=0) + 2 * _PAD
    title_height = _FONT_SIZE + 2 * _PAD if title else 0
    # Column labels run vertically when they would not fit across a cell.
    vertical = max(map(text_width, columns), default=0) > _CELL - _PAD
    top = title_height + (max(map(text_width, columns)) if vertical else _FONT_SIZE) + 2 * _PAD
    width, height = max(left + _CELL * len(columns), text_width(title) + 2 * _PAD) + _PAD, top + _CELL * len(rows)
    image = Image.new("RGB", (width, height + _PAD), "white")
    draw = ImageDraw.Draw(image)
    if title:
        draw.text((_PAD, _PAD), title, fill="black", font=font)
    for column, label in enumerate(columns):
        x = left + column * _CELL
        if vertical:
            strip = Image.new("RGB", (text_width(label), _FONT_SIZE + 2), "white")
            ImageDraw.Draw(strip).text((0, 0), label, fill="black", font=font)
            strip = strip.rotate(90, expand=True)
            image.paste(strip, (x + (_CELL - strip.width) // 2, top - _PAD - strip.height))
        else:
            draw.text((x + (_CELL - text_width(label)) // 2, top - _PAD - _FONT_SIZE), label, fill="black", font=font)
    for row, label in enumerate(rows):
        y = top + row * _CELL
        draw.text((_PAD, y + (_CELL - _FONT_SIZE) // 2), label, fill="black", font=font)
        for column, value in enumerate(table[row]):
            x = left + column * _CELL
            colour = tuple(int(c) for c in np.round(_WHITE + value * (_BLUE - _WHITE)))
            draw.rectangle((x, y, x + _CELL - 1, y + _CELL - 1), fill=colour, outline=(200, 200, 200))
            text = f"{value:.2f}"
            draw.text((x + (_CELL - text_width(text)) // 2, y + (_CELL - _FONT_SIZE) // 2), text,
                      fill="white" if value > 0.5 else "black", font=font)
    return np.asarray(image)


def save_png(image: np.ndarray, path: str | Path) -> None:
    """Write an ``(H, W, 3)`` uint8 image as a PNG file."""
    Image.fromarray(image).save(path, format="PNG")
