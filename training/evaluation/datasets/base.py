"""Localization ground truth from the datasets users bring, as one data model.

Every reader returns a :class:`ReadResult`: one :class:`LocalizationSample` per (image, phrase) pair, the image
files the annotations name but that do not exist (``missing``) and counts of everything else that was left out
(``skipped``, e.g. ``{"no box": 3}``). All paths are arguments; nothing is looked up in fixed places.

Conventions (those of :mod:`afloc.imaging.transforms`): pixel coordinates with the origin at the top-left corner of the
top-left pixel; boxes are ``[x, y, w, h]`` (COCO) in pixels of the ORIGINAL image; masks are ``bool [H, W]`` in
original pixels. The evaluation protocol (docs/method.md section 5) sums all boxes of an (image, phrase) pair into one
mask, so readers group boxes into one sample per pair; :meth:`LocalizationSample.gt_mask` builds that mask, and
``afloc.imaging.transforms.PadResizeMapping.mask_to_model`` maps it to model space like the image.

Missing image files are not fatal: they are listed in ``ReadResult.missing`` and their samples are dropped, unless
a reader is called with ``keep_missing=True`` (to inspect annotations before the images are downloaded). A missing
or malformed annotation file, or a table without a needed column, raises ``ValueError`` naming the file.

Readers, defined in :mod:`.cxr` (boxes), :mod:`.cxr_masks` (masks, polygons) and :mod:`.fundus`, and importable
from :mod:`training.evaluation.datasets`: ``read_ms_cxr`` (MS-CXR JSON or CSV), ``read_phantom`` (PhantomCXR),
``read_coco`` (COCO boxes, e.g. TBX11K), ``read_rsna`` (RSNA Pneumonia), ``read_nih_bbox`` (NIH ChestX-ray14
boxes), ``read_chexlocalize`` (CheXlocalize RLE or polygons), ``read_covid_rural`` (COVID Rural masks),
``read_mask_folders`` (image + mask folders), ``read_yolo`` (YOLO boxes, fundus) and ``read_idrid_masks`` (IDRiD).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pycocotools.mask as mask_utils
import pydicom
from PIL import Image

from afloc.imaging.boxes import pixel_span

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".dcm", ".tif", ".tiff", ".bmp")
"""File suffixes (lower case) that the directory-based readers take for images."""


# ------------------------------------------------------------------------------------------------ data model


def to_rle(value: Any) -> dict:
    """A mask (``[H, W]`` array, or a COCO RLE dict) -> compressed COCO RLE ``{"size": [H, W], "counts": bytes}``."""
    if isinstance(value, dict):
        if "size" not in value or "counts" not in value:
            raise ValueError(f"an RLE mask needs 'size' and 'counts', got keys {sorted(value)}")
        height, width = (int(v) for v in value["size"])
        counts = value["counts"]
        if isinstance(counts, list):  # uncompressed RLE
            return mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
        return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    array = np.asarray(value)
    if array.ndim != 2:
        raise ValueError(f"mask must be a 2-D [H, W] array, got shape {array.shape}")
    return mask_utils.encode(np.asfortranarray(array.astype(bool).astype(np.uint8)))


class _CompactMask:
    """Data descriptor holding a mask as a COCO run-length encoding, decoded to ``bool [H, W]`` on every read.

    Why: a CheXlocalize test set has ~1,500 positive masks of ~2,300 x 2,800 pixels, 10 GB as bool arrays but a
    few MB as RLE. Reading ``sample.mask`` decodes (milliseconds), so keep the array if you need it twice.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self._slot = f"_{name}_rle"

    def __get__(self, obj: Any, objtype: type | None = None) -> np.ndarray | None:
        if obj is None:  # dataclasses read the default from the class: no mask
            return None
        rle = obj.__dict__.get(self._slot)
        if rle is None:
            return None
        with warnings.catch_warnings():  # restored on exit: pycocotools' own NumPy 2 copy-keyword deprecation
            warnings.simplefilter("ignore", DeprecationWarning)
            return mask_utils.decode(rle).astype(bool)

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self._slot] = None if value is None else to_rle(value)


@dataclass(eq=False)
class LocalizationSample:
    """The ground truth of one (image, phrase) pair.

    Attributes:
        image_path: the image file, to be read with :func:`afloc.imaging.io.load_image`.
        phrase: the text prompt for this ground truth (the dataset's phrase, or the category name).
        category: the finding category, for macro averaging over categories.
        boxes: ``[K, 4]`` float64 ``[x, y, w, h]`` boxes in original image pixels (``K`` may be 0).
        mask: ``bool [H, W]`` mask in original pixels when the dataset gives masks/segmentations, else ``None``.
            Stored run-length encoded and decoded on each access (see :class:`_CompactMask`); a COCO RLE dict is
            accepted when constructing.
        image_size: ``(height, width)`` of the original image when the annotations state it, else ``None``.
        sample_id: unique id, ``"<image id>|<phrase>"`` by default.
    """

    image_path: Path
    phrase: str
    category: str
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    mask: np.ndarray | None = _CompactMask()  # type: ignore[assignment]
    image_size: tuple[int, int] | None = None
    sample_id: str = ""

    def __post_init__(self) -> None:
        self.image_path = Path(self.image_path)
        boxes = np.asarray(self.boxes, dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be [K, 4] [x, y, w, h], got shape {boxes.shape}")
        self.boxes = boxes
        if self.image_size is not None:
            self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        shape = self.mask_shape
        if shape is not None and self.image_size is not None and shape != self.image_size:
            raise ValueError(f"mask of size {shape} does not match image_size {self.image_size}")
        if not self.sample_id:
            self.sample_id = f"{self.image_path.stem}|{self.phrase}"

    @property
    def mask_shape(self) -> tuple[int, int] | None:
        """``(H, W)`` of the mask without decoding it, or ``None`` without a mask."""
        rle = self.__dict__.get("_mask_rle")  # where _CompactMask keeps the ``mask`` field
        return None if rle is None else (int(rle["size"][0]), int(rle["size"][1]))

    def gt_mask(self, height: int, width: int) -> np.ndarray:
        """The ground truth of the protocol: the union of all boxes, OR-ed with the mask, ``bool [height, width]``.

        Rounding rule: a box covers the pixels whose CENTRES lie in it, half-open: row ``r`` is covered when
        ``y <= r + 0.5 < y + h``, i.e. rows ``ceil(y - 0.5) .. ceil(y + h - 0.5) - 1`` (columns alike). An
        integer box ``[10, 20, 5, 4]`` thus covers exactly columns 10-14 and rows 20-23, and a box covers the
        same area (within a pixel) at any resolution. A box too thin to hold a pixel centre covers the one pixel
        holding its own centre. Boxes are clipped to the image.

        Raises:
            ValueError: ``(height, width)`` differs from the known ``image_size`` (the boxes would be misplaced:
                rescale them for a resized image) or from the mask's shape.
        """
        height, width = int(height), int(width)
        if height < 1 or width < 1:
            raise ValueError(f"height and width must be positive, got {height}x{width}")
        if self.image_size is not None and (height, width) != self.image_size:
            raise ValueError(
                f"{self.sample_id}: the ground truth is for a {self.image_size[0]}x{self.image_size[1]} image, "
                f"got {height}x{width}; boxes are in original pixels (rescale them for a resized image)"
            )
        out = np.zeros((height, width), dtype=bool)
        for x, y, w, h in self.boxes:
            row0, row1 = pixel_span(y, h, height)
            col0, col1 = pixel_span(x, w, width)
            out[row0:row1, col0:col1] = True
        if self.mask_shape is not None:
            if self.mask_shape != (height, width):
                raise ValueError(f"{self.sample_id}: mask of size {self.mask_shape} differs from {height}x{width}")
            out |= self.mask
        return out

    def __repr__(self) -> str:
        return (
            f"LocalizationSample(sample_id={self.sample_id!r}, phrase={self.phrase!r}, category={self.category!r}, "
            f"boxes={len(self.boxes)}, mask={self.mask_shape}, image_size={self.image_size}, "
            f"image_path={str(self.image_path)!r})"
        )


@dataclass
class ReadResult:
    """What a reader found.

    Attributes:
        samples: one sample per (image, phrase) pair, in the order of the annotations.
        missing: image files named by the annotations that do not exist (each once).
        skipped: reason -> count for everything else left out (``"no box"``, ``"unknown category"``, ...).
    """

    samples: list[LocalizationSample]
    missing: list[str] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)

    @property
    def num_boxes(self) -> int:
        return sum(len(sample.boxes) for sample in self.samples)

    def summary(self) -> str:
        masks = sum(sample.mask_shape is not None for sample in self.samples)
        skipped = ", ".join(f"{reason}: {count}" for reason, count in sorted(self.skipped.items())) or "none"
        return (
            f"{len(self.samples)} samples ({self.num_boxes} boxes, {masks} masks), "
            f"{len(self.missing)} missing image files, skipped: {skipped}"
        )


# ----------------------------------------------------------------------------------- helpers for the readers


def require_file(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} not found: {path} (expected an existing file)")
    return path


def require_dir(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{what} not found: {path} (expected an existing directory)")
    return path


def load_json(path: str | Path, what: str) -> Any:
    path = require_file(path, what)
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: malformed JSON in the {what} (line {error.lineno}, column {error.colno}: {error.msg})"
        ) from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: the {what} is not UTF-8 text ({error})") from None


def read_csv_rows(source: Any, path: Path, what: str, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a CSV (a path or an open binary file from ``path``) as strings; blanks stay ``""``."""
    try:
        frame = pd.read_csv(source, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: could not parse the {what} as CSV ({error})") from None
    frame.columns = [str(column).strip() for column in frame.columns]
    absent = [column for column in required if column not in frame.columns]
    if absent:
        raise ValueError(
            f"{path}: missing column(s) {absent} in the {what}; expected {list(required)}, found {list(frame.columns)}"
        )
    return frame


def parse_numbers(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """``[N, len(columns)]`` float64; blanks and non-numbers become NaN (counted later as invalid boxes)."""
    return np.stack([pd.to_numeric(frame[c].str.strip(), errors="coerce").to_numpy(float) for c in columns], 1)


def read_image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image from its header only (no pixel decoding).

    Pillow formats give the size after EXIF orientation, as :func:`afloc.imaging.io.load_image` returns the image;
    DICOM gives Rows x Columns.
    """
    path = Path(path)
    if path.suffix.lower() == ".dcm":
        dataset = pydicom.dcmread(path, stop_before_pixels=True)
        return int(dataset.Rows), int(dataset.Columns)
    with Image.open(path) as image:
        width, height = image.size
        if image.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF orientations that swap the axes
            width, height = height, width
    return height, width


def read_mask_file(path: Path, threshold: int | None = None) -> np.ndarray:
    """A mask image -> ``bool [H, W]``: any channel above ``threshold`` (alpha ignored).

    ``threshold=None`` means 0 for lossless files and 127 for JPEG, whose compression ringing would otherwise
    turn the background next to every edge positive.
    """
    if threshold is None:
        threshold = 127 if path.suffix.lower() in (".jpg", ".jpeg") else 0
    with Image.open(path) as image:
        if image.mode in ("RGBA", "LA", "PA"):
            image = image.convert("RGB" if image.mode == "RGBA" else "L")
        values = np.asarray(image)
    if values.ndim == 3:
        values = values.max(axis=2)
    return values > threshold


def images_by_stem(directory: Path) -> dict[str, Path]:
    """Image files directly in ``directory`` by file stem (the first in sorted order when stems repeat)."""
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.setdefault(path.stem, path)
    return found


class Collector:
    """Groups boxes (and masks) into samples in first-seen order and records missing files and skip reasons."""

    def __init__(self, keep_missing: bool = False) -> None:
        self.keep_missing = keep_missing
        self._groups: dict[Any, dict[str, Any]] = {}
        self._exists: dict[Path, bool] = {}
        self.missing: dict[str, None] = {}
        self.skipped: Counter[str] = Counter()

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] += count

    def image_ok(self, path: Path) -> bool:
        """Whether annotations of ``path`` are kept: it exists or ``keep_missing``; a missing file is noted once."""
        exists = self._exists.get(path)
        if exists is None:
            exists = self._exists[path] = path.is_file()
            if not exists:
                self.missing[str(path)] = None
        return exists or self.keep_missing

    def note_missing(self, description: str) -> None:
        self.missing[description] = None

    def add(self, key: Any, box: Any = None, mask: Any = None, **fields: Any) -> None:
        """Add a box ``[x, y, w, h]`` and/or a mask to sample ``key``; ``fields`` create the sample on first use.

        A box with a non-finite value or a size <= 0 is counted as ``"invalid box"`` and dropped.
        """
        group = self._groups.setdefault(key, {"fields": fields, "boxes": [], "mask": None})
        if box is not None:
            try:
                values = [float(v) for v in box]
            except (TypeError, ValueError):
                values = []
            if len(values) != 4 or not all(math.isfinite(v) for v in values) or values[2] <= 0 or values[3] <= 0:
                self.skip("invalid box")
            else:
                group["boxes"].append(values)
        if mask is not None:
            previous = group["mask"]
            both_arrays = isinstance(previous, np.ndarray) and isinstance(mask, np.ndarray)
            group["mask"] = previous | mask if both_arrays else mask  # several segmentations of one sample: union

    def result(self, reader: str) -> ReadResult:
        samples = []
        for group in self._groups.values():
            if not group["boxes"] and group["mask"] is None:
                self.skip("no box")
                continue
            samples.append(LocalizationSample(**group["fields"], boxes=np.array(group["boxes"]), mask=group["mask"]))
        result = ReadResult(samples, list(self.missing), dict(sorted(self.skipped.items())))
        logger.info("%s: %s", reader, result.summary())
        return result


def group_phrases_lowercase(samples: list[LocalizationSample]) -> list[LocalizationSample]:
    """The authors' grouping: phrases lower-cased before an image's boxes are grouped by phrase, so samples of one
    image whose phrases differ only in case become one (boxes concatenated, masks united; the phrase lower-cased;
    category and size from the first), in first-seen order."""
    merged: dict[tuple[str, str], LocalizationSample] = {}
    for sample in samples:
        key = (str(sample.image_path), sample.phrase.lower())
        first = merged.get(key)
        if first is None:
            stem = sample.sample_id.rsplit("|", 1)[0] if "|" in sample.sample_id else sample.sample_id
            merged[key] = LocalizationSample(sample.image_path, key[1], sample.category, sample.boxes, sample.mask,
                                             sample.image_size, f"{stem}|{key[1]}")  # fmt: skip
            continue
        mask = first.mask
        if sample.mask is not None:
            mask = sample.mask if mask is None else mask | sample.mask
        first.boxes = np.concatenate([first.boxes, sample.boxes])
        first.mask = mask
    return list(merged.values())


# --------------------------------------------------------------------------- readers, defined in submodules

__all__ = [
    "IMAGE_SUFFIXES",
    "LocalizationSample",
    "ReadResult",
    "read_image_size",
]
