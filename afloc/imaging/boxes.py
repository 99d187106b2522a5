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

MAX_BOX_FILE_BYTES = 5_000_000
MAX_JSON_DEPTH = 64  # COCO needs 4 levels; deeper nesting is refused before parsing
MAX_COORDINATE = 1e7  # pixels; anything larger is an error in the file, not an image
MAX_CSV_FIELD = 1_000_000  # characters in one CSV field (Python's csv module refuses more than 131072 by default)


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


def checked_box(values, label: str, where: str) -> Box:
    """A :class:`Box` from four untrusted values ``x, y, w, h``.

    Raises:
        ValueError: naming ``where``, for values that are not four finite numbers of at most
            :data:`MAX_COORDINATE` pixels with positive ``w`` and ``h``.
    """
    try:
        x, y, w, h = (float(v) for v in values)
    except OverflowError:
        raise ValueError(f"{where}: a coordinate is too large (over {MAX_COORDINATE:g} pixels)") from None
    except (TypeError, ValueError):
        raise ValueError(f"{where}: expected four numbers x, y, w, h, got {shown(values)}") from None
    if not all(math.isfinite(v) and abs(v) <= MAX_COORDINATE for v in (x, y, w, h)):
        raise ValueError(f"{where}: a box needs finite coordinates of at most {MAX_COORDINATE:g} pixels")
    if w <= 0 or h <= 0:
        raise ValueError(f"{where}: a box needs positive w, h; got {[x, y, w, h]}")
    return Box(x, y, w, h, str(label or "").strip())


def shown(values, limit: int = 80) -> str:
    """Values of an untrusted file, shortened for a message."""
    text = repr(list(values)) if isinstance(values, (list, tuple)) else type(values).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_json_depth(text: str, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than ``max_depth`` before parsing it, in linear time (no regular expression that
    could backtrack on user data): brackets inside strings, and escaped quotes, are told apart with array
    arithmetic over the UTF-8 bytes (multi-byte characters never contain ASCII bytes).

    Raises:
        ValueError: the nesting is deeper than ``max_depth``.
    """
    codes = np.frombuffer(text.encode("utf-8", "replace"), dtype=np.uint8)
    if not codes.size:
        return
    positions = np.arange(codes.size)
    # backslashes immediately before each position: position - 1 - (index of the last non-backslash before it)
    not_backslash = np.where(codes != ord("\\"), positions, -1)
    last_plain = np.maximum.accumulate(not_backslash)
    run_before = np.empty(codes.size, dtype=np.int64)
    run_before[0] = 0
    run_before[1:] = positions[:-1] - last_plain[:-1]
    quotes = (codes == ord('"')) & (run_before % 2 == 0)  # a quote preceded by an odd run is escaped
    inside = (np.cumsum(quotes) - quotes) % 2 == 1  # after an odd number of string delimiters
    opening = np.isin(codes, (ord("["), ord("{"))) & ~inside
    closing = np.isin(codes, (ord("]"), ord("}"))) & ~inside
    depth = np.cumsum(opening.astype(np.int64) - closing)
    if int(depth.max()) > max_depth:
        raise ValueError(f"JSON is nested more than {max_depth} levels deep")


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


def parse_yolo_names(text: str, where: str) -> list[str]:
    """The class names of a YOLO names file (``retinal.names``, ``classes.txt``): one name per line, the line index
    is the class id, so a blank line inside the list is refused (it would shift every later id); trailing blank
    lines are ignored.

    Raises:
        ValueError: naming ``where``, when the file holds no name or a blank line among the names.
    """
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines or not all(lines):
        raise ValueError(f"{where}: expected one class name per line (line index = class id), without blank lines")
    return lines


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
        ValueError: naming the file (and line), for a missing or oversized file, a JSON without images/annotations
            or nested too deeply, a CSV without the columns or with an oversized field, or a box that is not four
            finite numbers of a sensible size.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"boxes file {path.name!r} does not exist")
    size = path.stat().st_size
    if size > MAX_BOX_FILE_BYTES:
        raise ValueError(f"boxes file {path.name} is {size} bytes; the limit is {MAX_BOX_FILE_BYTES}")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"boxes file {path.name} is not UTF-8 text (COCO JSON or CSV expected)") from None
    boxes: dict[str, list[Box]] = defaultdict(list)
    if text.lstrip().startswith("{"):
        try:
            check_json_depth(text)
            data = json.loads(text)
            names = {img["id"]: Path(str(img["file_name"])).name for img in data["images"]}
            categories = {c["id"]: c.get("name", str(c["id"])) for c in data.get("categories", [])}
            for number, ann in enumerate(data["annotations"], start=1):
                label = ann.get("label_text") or categories.get(ann.get("category_id"), "")
                box = checked_box(ann["bbox"], str(label), f"{path.name}, annotation {number}")
                boxes[names[ann["image_id"]]].append(box)
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"{path.name} is not a COCO-style JSON with images/annotations: {error!r}") from None
        except RecursionError:
            raise ValueError(f"{path.name}: JSON nested too deeply") from None
        return dict(boxes)
    try:
        limit = csv.field_size_limit(MAX_CSV_FIELD)
        try:
            rows = list(csv.DictReader(text.splitlines()))
        finally:
            csv.field_size_limit(limit)
    except csv.Error as error:
        raise ValueError(f"{path.name} is not a readable CSV ({error})") from None
    needed = {"image", "x", "y", "w", "h"}
    if not rows or not needed <= set(rows[0]):
        raise ValueError(f"{path.name}: expected a CSV with columns {sorted(needed)} (+ optional label)")
    for line, row in enumerate(rows, start=2):
        box = checked_box([row[k] for k in ("x", "y", "w", "h")], row.get("label") or "", f"{path.name}, line {line}")
        boxes[Path(str(row["image"])).name].append(box)
    return dict(boxes)
