"""Ground-truth boxes: one type, one pixel rule, one YOLO line parser and one box-file reader, used by the
localize command, the demo and the evaluation readers.

Conventions (those of :mod:`afloc.imaging.transforms`): pixel coordinates with the origin at the top-left corner
of the top-left pixel; a box is ``x, y, w, h`` (COCO) in pixels of the ORIGINAL image; a pixel belongs to a box
when its centre ``(i + 0.5)`` lies inside it.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import NamedTuple

import numpy as np


class Box(NamedTuple):
    """A ground-truth box in original pixels; ``label`` names the finding (``"category: phrase"`` in the demo, a
    class name for YOLO), either part optional."""

    x: float
    y: float
    w: float
    h: float
    label: str = ""

    @property
    def centre(self) -> tuple[float, float]:
        return self.x + self.w / 2, self.y + self.h / 2


def pixel_span(start: float, length: float, limit: int) -> tuple[int, int]:
    """Indices ``[first, stop)`` of the pixels whose centres ``i + 0.5`` lie in ``[start, start + length)``.

    A box between two pixel centres (thinner than a pixel) keeps the one pixel holding its own centre, so that no
    positive box vanishes. The span is clipped to ``[0, limit)``.
    """
    first, stop = math.ceil(start - 0.5), math.ceil(start + length - 0.5)
    if stop <= first:
        first = math.floor(start + length / 2)
        stop = first + 1
    return min(max(first, 0), limit), min(max(stop, 0), limit)


def boxes_to_mask(boxes, height: int, width: int) -> np.ndarray:
    """Union of boxes (``Box`` or ``[x, y, w, h]``) as ``bool [height, width]``, clipped to the image."""
    mask = np.zeros((height, width), dtype=bool)
    for x, y, w, h, *_ in boxes:
        (row0, row1), (col0, col1) = pixel_span(y, h, height), pixel_span(x, w, width)
        mask[row0:row1, col0:col1] = True
    return mask


def parse_yolo_line(line: str, width: int, height: int, where: str) -> tuple[str, Box] | None:
    """One YOLO label line ``class cx cy w h`` (centre and size normalised by the image size) as
    ``(class token, Box in pixels of a width x height image)``; ``None`` for a blank line.

    Raises:
        ValueError: naming ``where`` (file and line), when the line is not five fields with four numbers in [0, 1].
    """
    fields = line.split()
    if not fields:
        return None
    try:
        if len(fields) != 5:
            raise ValueError
        cx, cy, w, h = (float(v) for v in fields[1:])
    except ValueError:
        shown = line.strip()[:60]
        raise ValueError(f"{where}: expected 'class cx cy w h' (a class and 4 numbers), got {shown!r}") from None
    if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)):
        raise ValueError(f"{where}: cx, cy, w, h must be normalised to [0, 1], got {fields[1:]}")
    return fields[0], Box((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height)


def read_box_file(path: str | Path) -> dict[str, list[Box]]:
    """Ground-truth boxes per image file name (not path) from a COCO JSON (``images[].file_name`` +
    ``annotations[].bbox``, label from ``label_text`` or the category name) or a CSV with columns
    ``image,x,y,w,h[,label]``; boxes in original pixels.

    Raises:
        ValueError: naming the file (and line), for a missing file, a JSON without images/annotations, a CSV
            without the columns, or a value that is not a number.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"boxes file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8-sig")
    boxes: dict[str, list[Box]] = defaultdict(list)
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
            names = {img["id"]: Path(img["file_name"]).name for img in data["images"]}
            categories = {c["id"]: c.get("name", str(c["id"])) for c in data.get("categories", [])}
            for ann in data["annotations"]:
                label = ann.get("label_text") or categories.get(ann.get("category_id"), "")
                x, y, w, h = (float(v) for v in ann["bbox"])
                boxes[names[ann["image_id"]]].append(Box(x, y, w, h, str(label)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path} is not a COCO-style JSON with images/annotations: {error!r}") from error
        return dict(boxes)
    rows = list(csv.DictReader(text.splitlines()))
    needed = {"image", "x", "y", "w", "h"}
    if not rows or not needed <= set(rows[0]):
        raise ValueError(f"{path}: expected a CSV with columns {sorted(needed)} (+ optional label)")
    for line, row in enumerate(rows, start=2):
        try:
            x, y, w, h = (float(row[k]) for k in ("x", "y", "w", "h"))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}, line {line}: box values must be numbers ({error})") from error
        boxes[Path(row["image"]).name].append(Box(x, y, w, h, row.get("label") or ""))
    return dict(boxes)
