"""The confusion-matrix picture: one renderer for the hub's model report and the trainer's `eval --report-dir`.

Rows are the true class, columns the predicted one. Every cell is shaded by its share of the row, so a class with
few images reads like one with many: the diagonal (right) in blue, everything else (wrong) in red — blue/red rather
than green/red so the two stay apart for red-green colour-blind readers. Counts are written in the cells, class
names on both axes (columns written upwards, long names shortened in the middle).
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

RIGHT = (33, 113, 181)  # blue, at share 1.0 of the row
WRONG = (203, 24, 29)  # red, at share 1.0 of the row
GRID = (220, 220, 220)
GREY = (90, 90, 90)
MAX_CELL = 44
MIN_CELL = 18
TARGET_GRID = 900  # pixels the cells aim to fill before they shrink from MAX_CELL
MAX_CLASSES = 30  # above this only the classes in play (images or predictions) are drawn, the busiest first
MAX_NAME = 24
MARGIN = 8

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def _font(size: int) -> Font:
    """Pillow's bundled scalable font (FreeType) when available, else its bitmap font."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType
        return ImageFont.load_default()


def _short(name: str) -> str:
    """A long name cut in the middle: names of one bundle often share a prefix and differ at the end."""
    if len(name) <= MAX_NAME:
        return name
    tail = (MAX_NAME - 1) // 2
    return name[: MAX_NAME - 1 - tail] + "…" + name[-tail:]


def _check(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> None:
    n = len(classes)
    if n == 0:
        raise ValueError("classes: at least one class is needed for a confusion matrix")
    if len(matrix) != n or any(len(row) != n for row in matrix):
        raise ValueError(f"matrix: expected {n}×{n} counts (one row and one column per class)")
    if any(v < 0 for row in matrix for v in row):
        raise ValueError("matrix: counts must not be negative")


def shown_classes(matrix: Sequence[Sequence[int]], limit: int = MAX_CLASSES) -> list[int]:
    """The class indices drawn: all of them up to `limit`; beyond, those with images or predictions, the busiest
    `limit` of them (so an ImageNet bundle judged on a few folders gives a small picture, not a 1000×1000 grid)."""
    n = len(matrix)
    if n <= limit:
        return list(range(n))
    busy = [(sum(matrix[i]) + sum(row[i] for row in matrix), i) for i in range(n)]
    in_play = sorted((-load, i) for load, i in busy if load > 0)[:limit]
    return sorted(i for _, i in in_play) or list(range(limit))  # nothing counted: the first ones, not nothing


def _shade(base: tuple[int, int, int], share: float) -> tuple[int, int, int]:
    """White at share 0, `base` at share 1."""
    r, g, b = (round(255 - share * (255 - c)) for c in base)
    return r, g, b


def _ink(colour: tuple[int, int, int]) -> str:
    """White text on dark cells, black on light ones (by perceived luminance, not by share)."""
    r, g, b = colour
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 150 else "black"


def confusion_image(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> Image.Image:
    """The confusion matrix as a Pillow image; raises ValueError for a matrix that is not classes×classes."""
    _check(matrix, classes)
    shown = shown_classes(matrix)
    names = [_short(classes[i]) for i in shown]
    n = len(shown)
    cell = max(MIN_CELL, min(MAX_CELL, TARGET_GRID // max(n, 1)))
    font, small = _font(14), _font(12 if cell >= 30 else 10)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    name_w = max([int(probe.textlength(c, font=font)) for c in names] + [40]) + 2 * MARGIN
    top = MARGIN + 18 + name_w  # title line, then the column names written upwards
    total = sum(sum(row) for row in matrix)
    right = sum(matrix[i][i] for i in range(len(matrix)))
    left_out = len(classes) - n
    footer = f"rows: true class · {total} images" + (f" · accuracy {right / total:.3f}" if total else "")
    if left_out:
        footer += f" · {left_out} classes not drawn"
    width = max(name_w + n * cell + MARGIN, int(probe.textlength(footer, font=small)) + 2 * MARGIN)
    height = top + n * cell + 30
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((name_w, MARGIN), "columns: predicted class", fill=GREY, font=small)
    for j, name in enumerate(names):  # column names, written upwards, centred on their column
        tile = Image.new("RGB", (int(probe.textlength(name, font=font)) + 4, 20), "white")
        ImageDraw.Draw(tile).text((2, 10), name, fill="black", font=font, anchor="lm")
        tile = tile.rotate(90, expand=True)
        img.paste(tile, (name_w + j * cell + (cell - tile.width) // 2, top - 4 - tile.height))
    for r, i in enumerate(shown):
        y = top + r * cell
        row_total = sum(matrix[i])
        draw.text((name_w - MARGIN, y + cell / 2), names[r], fill="black", font=font, anchor="rm")
        for c, j in enumerate(shown):
            count = matrix[i][j]
            colour = _shade(RIGHT if i == j else WRONG, count / row_total if row_total else 0.0)
            x = name_w + c * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour, outline=GRID)
            text = str(count)
            if count and probe.textlength(text, font=small) <= cell - 4:  # numbers only where they fit
                draw.text((x + cell / 2, y + cell / 2), text, fill=_ink(colour), font=small, anchor="mm")
    draw.text((MARGIN, height - 22), footer, fill=GREY, font=small)
    return img


def confusion_png(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> bytes:
    """The confusion matrix as PNG bytes (see `confusion_image`)."""
    out = io.BytesIO()
    confusion_image(matrix, classes).save(out, format="PNG", optimize=True)
    return out.getvalue()
