"""Ground truth for the demo: boxes from example JSON, annotation files and typed text, and their masks.

Boxes are ``[x, y, w, h]`` in original image pixels (COCO convention). Formats read: COCO JSON, MS-CXR CSV,
YOLO txt (``class cx cy w h`` normalised) with its class names (a names file such as ``retinal.names`` or
``classes.txt``, or a known dataset's names), a simple CSV ``x,y,w,h,label``, and typed lines
``x, y, w, h[, label]``.
"""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

from afloc.imaging.boxes import (
    Box,
    check_json_depth,
    checked_box,
    parse_yolo_line,
    parse_yolo_names,
)
from afloc.text.tokenizer import split_sentences

MAX_ANNOTATION_BYTES = 5_000_000
IMAGE_COLUMNS = ("image", "file_name", "path", "dicom_id")


_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _stem(word: str) -> str:
    """A word's crude stem for matching labels with prompts: British spellings folded ("haemorrhage", "oedema")
    and a plural "s" dropped ("exudates", not "mass")."""
    word = word.replace("haem", "hem").replace("oed", "ed")
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _words(text: str) -> set[str]:
    """Lower-case word stems; CamelCase and snake_case split ("ObsoletePulmonaryTuberculosis", "pleural_effusion")."""
    return {_stem(w) for w in " ".join(split_sentences(_CAMEL.sub(" ", text).replace("_", " "), min_tokens=1)).split()}


def category(label: str) -> str:
    """A box label's category: the part before ``:`` (``"pneumothorax: small left apical"`` -> ``"pneumothorax"``)."""
    return label.split(":")[0].strip()


def boxes_for_prompt(boxes: list[Box], prompt: str, chosen: str | None = None) -> tuple[list[Box], str | None]:
    """The boxes scored for ``prompt`` and how they were chosen: ``"chosen label"`` (the user picked the category
    ``chosen``), ``"label"`` (matched by label), ``"all boxes (unlabelled)"`` or ``None`` (nothing scored).

    A label part (category or phrase) matches when its words are a subset of the prompt's words or vice versa.
    Boxes without any label are all scored (nothing to match); labelled boxes none of which matches give ``[]``:
    a prompt is never scored against another finding's boxes unless the user chooses them.
    """
    if chosen:
        picked = [box for box in boxes if category(box.label) == chosen]
        if picked:
            return picked, "chosen label"
    words = _words(prompt)
    matched = [
        box
        for box in boxes
        if any((part := _words(p)) and (part <= words or words <= part) for p in box.label.split(":"))
    ]
    if matched:
        return matched, "label"
    if any(box.label.strip() for box in boxes) or not boxes:
        return [], None
    return list(boxes), "all boxes (unlabelled)"


KNOWN_CLASS_NAMES = {
    "idrid": ("IDRiD lesion boxes: 0 optic disc, 1 hard exudates, 2 haemorrhage", ["optic disc", "hard exudates",
                                                                                 "haemorrhage"]),
    "tbx11k": ("TBX11K: 0 active TB, 1 obsolete pulmonary TB, 2 pulmonary TB",
               ["ActiveTuberculosis", "ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis"]),
}  # fmt: skip
"""Class names of YOLO files from known datasets (``retinal.names`` of the IDRiD boxes, TBX11K's ``classes.txt``),
offered when no names file is uploaded."""
_CLASS = re.compile(r"^class (\d+)$")


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9 _\-()/'.+]*")
NAMES_FILE = re.compile(r"(\.names$|class|names)", re.IGNORECASE)
"""File names that announce a YOLO names file (``retinal.names``, ``classes.txt``, ``obj.names``)."""


def read_class_names(text: str) -> list[str] | None:
    """The class names of a YOLO names file (``retinal.names``, ``classes.txt``: one name per line, line index =
    class id; underscores become spaces), or None when ``text`` is not one (a line that is not a name)."""
    try:
        lines = parse_yolo_names(text, "names file")
    except ValueError:
        return None
    if len(lines) > 1000 or not all(len(line) <= 100 and _NAME.fullmatch(line) for line in lines):
        return None
    if any(sum(bool(re.fullmatch(r"[-+]?[0-9.]+(e[-+]?\d+)?", f)) for f in line.split()) >= 2 for line in lines):
        return None  # numbers in columns: a box file (YOLO with class names as tokens), not a names file
    return [line.replace("_", " ") for line in lines]


def name_classes(boxes: list[Box], names: list[str], previous: list[str] = ()) -> list[Box]:
    """YOLO boxes labelled ``class N`` (or by ``previous`` names) relabelled with ``names[N]``."""
    out = []
    for box in boxes:
        index = None
        if match := _CLASS.match(box.label):
            index = int(match.group(1))
        elif box.label in previous:
            index = list(previous).index(box.label)
        if index is not None:
            box = box._replace(label=names[index] if index < len(names) else f"class {index}")
        out.append(box)
    return out


def parse_boxes_text(text: str | None) -> list[Box]:
    """Lines ``x, y, w, h[, label]`` (original pixels) -> boxes; ``#`` comments and blank lines are skipped."""
    boxes = []
    for number, line in enumerate((text or "").splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            parts = [p.strip() for p in line.split(",")]
            if len(parts) < 4:
                raise ValueError(f"line {number}: expected 'x, y, w, h[, label]', got {line.strip()[:60]!r}")
            boxes.append(checked_box(parts[:4], ", ".join(parts[4:]), f"line {number}"))
    return boxes


def boxes_to_text(boxes: list[Box]) -> str:
    return "\n".join(f"{b.x:g}, {b.y:g}, {b.w:g}, {b.h:g}" + (f", {b.label}" if b.label else "") for b in boxes)


def example_boxes(data: dict) -> list[Box]:
    return [
        checked_box(box, f"{finding.get('category', '')}: {finding.get('phrase', '')}".strip(": "), "finding")
        for finding in data["findings"]
        for box in finding["boxes"]
    ]


def _scaled(boxes: list[Box], size, shape) -> list[Box]:
    """Boxes annotated on an image of ``size = (width, height)``, rescaled to the loaded ``shape = (H, W)``."""
    try:
        sx, sy = shape[1] / float(size[0]), shape[0] / float(size[1])
    except (TypeError, ValueError, ZeroDivisionError):
        return boxes
    if not (math.isfinite(sx) and math.isfinite(sy) and sx > 0 and sy > 0) or (sx, sy) == (1.0, 1.0):
        return boxes
    return [checked_box((b.x * sx, b.y * sy, b.w * sx, b.h * sy), b.label, "scaled box") for b in boxes]


def _same_image(candidate: str, image_name: str) -> bool:
    return Path(str(candidate)).stem.lower() == Path(image_name).stem.lower()


def _coco_boxes(data: dict, image_name: str, shape) -> list[Box]:
    images = data["images"]
    chosen = [i for i in images if _same_image(i.get("file_name", ""), image_name)] or (
        images if len(images) == 1 else []
    )
    if len(chosen) != 1:
        raise ValueError(f"the COCO file lists {len(images)} images and none (or several) is named like {image_name!r}")
    image = chosen[0]
    names = {c["id"]: c.get("name", str(c["id"])) for c in data.get("categories", [])}
    boxes = [
        checked_box(
            ann["bbox"],
            ": ".join(filter(None, [names.get(ann.get("category_id"), ""), ann.get("label_text", "")])),
            "bbox",
        )
        for ann in data["annotations"]
        if ann["image_id"] == image["id"]
    ]
    return _scaled(boxes, (image.get("width"), image.get("height")), shape)


def _yolo_boxes(lines: list[str], shape, names: list[str] = ()) -> list[Box]:
    boxes = []
    height, width = shape
    for number, line in enumerate(lines, start=1):
        parsed = parse_yolo_line(line, width, height, f"YOLO line {number}")
        if parsed is None:
            continue
        token, box = parsed
        label = f"class {token}" if token.isdigit() else token.replace("_", " ")
        boxes.append(box._replace(label=label))
    return name_classes(boxes, list(names)) if names else boxes


def _csv_boxes(text: str, image_name: str, shape) -> list[Box]:
    rows = list(csv.DictReader(text.splitlines()))
    header = {(k or "").strip().lower(): k for k in (rows[0] if rows else {})}
    if not {"x", "y", "w", "h"} <= set(header):
        return parse_boxes_text(text)  # header-less lines x, y, w, h[, label]

    def get(row, *names):
        return next((str(row[header[n]] or "").strip() for n in names if n in header and row[header[n]]), "")

    images = {get(r, *IMAGE_COLUMNS) for r in rows}
    if len(images) > 1:  # several images (e.g. all of MS-CXR): keep the rows of the loaded one
        rows = [r for r in rows if any(_same_image(get(r, n), image_name) for n in IMAGE_COLUMNS)]
        if not rows:
            raise ValueError(f"the CSV lists {len(images)} images and none is named like {image_name!r}")
    boxes = []
    for number, row in enumerate(rows, start=2):
        label = ": ".join(filter(None, [get(row, "category_name", "category"), get(row, "label_text", "label")]))
        box = checked_box([row[header[k]] for k in "xywh"], label, f"CSV line {number}")
        boxes += _scaled([box], (get(row, "image_width"), get(row, "image_height")), shape)
    return boxes


def read_annotations(data: bytes, image_name: str, shape: tuple[int, int], names: list[str] = ()) -> list[Box]:
    """Ground truth from an annotation file, recognised by content: COCO JSON (or a demo example JSON),
    YOLO txt (``class cx cy w h`` normalised; classes labelled with ``names`` when given), MS-CXR CSV (x, y, w, h,
    label_text/category_name, optional image_width/height) or a CSV ``x, y, w, h[, label]``. Boxes must overlap
    the ``shape = (H, W)`` image."""
    if len(data) > MAX_ANNOTATION_BYTES:
        raise ValueError(f"annotation file is {len(data)} bytes; the limit is {MAX_ANNOTATION_BYTES}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError("annotation file is not UTF-8 text (COCO JSON, CSV or YOLO txt expected)") from None
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    try:
        if text.lstrip().startswith("{"):
            check_json_depth(text)
            parsed = json.loads(text)
            boxes = example_boxes(parsed) if "findings" in parsed else _coco_boxes(parsed, image_name, shape)
        elif lines and "," not in lines[0] and len(lines[0].split()) == 5:
            boxes = _yolo_boxes(lines, shape, names)
        else:
            boxes = _csv_boxes(text, image_name, shape)
    except json.JSONDecodeError as error:
        raise ValueError(f"annotation file is not valid JSON: {error}") from None
    except RecursionError:
        raise ValueError("annotation JSON is nested too deeply") from None
    except ValueError as error:
        if "digits" in str(error):  # Python's limit on integer literals (4300 digits)
            raise ValueError("annotation file holds a number with thousands of digits") from None
        raise
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"annotation JSON is not COCO (images, annotations, bbox): missing or bad {error}") from None
    return check_boxes(boxes, shape)


def check_boxes(boxes: list[Box], shape: tuple[int, int]) -> list[Box]:
    """The boxes clipped to the ``shape = (H, W)`` image; a box wholly outside it is refused.

    Raises:
        ValueError: no box, or a box that does not overlap the image.
    """
    if not boxes:
        raise ValueError("no box found for this image")
    height, width = shape
    clipped = []
    for k, b in enumerate(boxes, start=1):
        if b.x >= width or b.y >= height or b.x + b.w <= 0 or b.y + b.h <= 0:
            raise ValueError(f"box {k} {[b.x, b.y, b.w, b.h]} lies outside the {width}x{height} image")
        x0, y0 = max(b.x, 0.0), max(b.y, 0.0)
        x1, y1 = min(b.x + b.w, float(width)), min(b.y + b.h, float(height))
        clipped.append(
            b if (x0, y0, x1, y1) == (b.x, b.y, b.x + b.w, b.y + b.h) else Box(x0, y0, x1 - x0, y1 - y0, b.label)
        )
    return clipped
