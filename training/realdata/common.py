"""What the real-data corpora share: the target record, COCO writing, split drawing, resized image copies."""

from __future__ import annotations

import csv
import hashlib
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

MANIFEST_COLUMNS = ["image", "report", "split", "labels", "view", "findings", "source"]


@dataclass
class Target:
    """One localization target of a corpus image: a phrase with its boxes and/or mask (in the stored image's pixels).

    Attributes:
        category: the finding class (``hard_exudates``, ``covid_opacity``...), for per-class means.
        phrase: the prompt (a class phrase, or the phrase as it occurs in the generated report).
        boxes: ``[[x, y, w, h], ...]`` in pixels of the stored image.
        mask: ``bool [H, W]`` at the stored image's size, or ``None``.
    """

    category: str
    phrase: str
    boxes: list[list[float]] = field(default_factory=list)
    mask: np.ndarray | None = None


def stable_fraction(key: str, salt: str) -> float:
    """A number in [0, 1) fixed by ``key`` and ``salt`` (splits that do not move when files are added)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def save_resized(image: np.ndarray, path: Path, longest: int) -> tuple[float, tuple[int, int]]:
    """Write an 8-bit image (grey or RGB) with its longest side at most ``longest``; ``(scale, (height, width))``."""
    height, width = image.shape[:2]
    scale = min(1.0, longest / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    if not cv2.imwrite(str(path), out):
        raise ValueError(f"could not write {path}")
    return scale, image.shape[:2]


def mask_to_rle(mask: np.ndarray) -> dict:
    """A COCO uncompressed-counts RLE (column-major) of a boolean mask, JSON-ready."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    changes = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def write_coco(path: Path, images: list[dict], targets: list[tuple[int, Target]], description: str) -> None:
    """COCO JSON in the MS-CXR layout: ``label_text`` per annotation; masks as ``segmentation`` RLE (no bbox)."""
    categories = sorted({target.category for _, target in targets})
    ids = {name: k + 1 for k, name in enumerate(categories)}
    annotations = []
    for image_id, target in targets:
        for box in target.boxes:
            annotations.append(
                {"image_id": image_id, "category_id": ids[target.category], "bbox": [round(float(v), 2) for v in box],
                 "iscrowd": 0, "label_text": target.phrase}
            )  # fmt: skip
        if target.mask is not None and target.mask.any():
            annotations.append(
                {"image_id": image_id, "category_id": ids[target.category], "bbox": None, "iscrowd": 1,
                 "segmentation": mask_to_rle(target.mask), "label_text": target.phrase}
            )  # fmt: skip
    for number, annotation in enumerate(annotations, start=1):
        annotation["id"] = number
    data = {
        "info": {"description": description},
        "categories": [{"id": ids[name], "name": name} for name in categories],
        "images": images,
        "annotations": annotations,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def write_manifest(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def pick(rng: np.random.Generator, options) -> str:
    return options[int(rng.integers(len(options)))]


def run_command(build: Callable[[], object], out: Path) -> int:
    """Run a corpus build for a command line: print what was written, or a one-line error and exit status 2."""
    try:
        counts = build()
    except (ValueError, OSError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}: {counts}")
    return 0
