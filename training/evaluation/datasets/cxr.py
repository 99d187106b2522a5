"""Chest X-ray localization readers: MS-CXR, PhantomCXR, COCO (TBX11K), RSNA, NIH, CheXlocalize, COVID Rural.

Import them from :mod:`training.evaluation.datasets.base`; the data model and conventions are described there.
"""

from __future__ import annotations

import csv
import gzip
import io
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pycocotools.mask as mask_utils

from .base import (
    Collector,
    ReadResult,
    load_json,
    parse_numbers,
    read_csv_rows,
    require_file,
    to_rle,
)

MS_CXR_CSV_COLUMNS = ("dicom_id", "category_name", "label_text", "x", "y", "w", "h", "path")
RSNA_COLUMNS = ("patientId", "x", "y", "width", "height", "Target")
NIH_COLUMNS = ("Image Index", "Finding Label", "x", "y", "w", "h")


def declared_size(height: Any, width: Any) -> tuple[int, int] | None:
    """``(height, width)`` when both are positive numbers, else ``None``."""
    try:
        size = (int(float(height)), int(float(width)))
    except (TypeError, ValueError):
        return None
    return size if min(size) > 0 else None


# --------------------------------------------------------------------------------------------- COCO family


def _read_coco_json(annotations: Path, image_root: Path, what: str, keep_missing: bool, phrases: bool) -> ReadResult:
    """COCO boxes grouped by (image, ``label_text``) when ``phrases`` else by (image, category name)."""
    data = load_json(annotations, what)
    lists = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(key), list) for key in lists):
        raise ValueError(f"{annotations}: expected a COCO-style JSON object with the lists {list(lists)}")
    try:
        categories = {c["id"]: str(c["name"]) for c in data["categories"]}
        images = {image["id"]: image for image in data["images"]}
    except (KeyError, TypeError) as error:
        raise ValueError(f"{annotations}: every category needs 'id' and 'name', every image 'id' ({error})") from None
    collector = Collector(keep_missing)
    annotated = set()
    for number, annotation in enumerate(data["annotations"]):
        if (
            not isinstance(annotation, dict)
            or "image_id" not in annotation
            or (annotation.get("bbox") is None and annotation.get("segmentation") is None)
        ):
            raise ValueError(
                f"{annotations}: annotation #{number} needs 'image_id' and a 'bbox' or 'segmentation', "
                f"got {annotation!r}"
            )
        image = images.get(annotation["image_id"])
        if image is None:
            collector.skip("unknown image")
            continue
        annotated.add(annotation["image_id"])
        category = categories.get(annotation.get("category_id"))
        if category is None:
            collector.skip("unknown category")
            continue
        phrase = str(annotation.get("label_text") or "").strip() if phrases else category
        if not phrase:
            collector.skip("no phrase")
            continue
        file_name = image.get("file_name") or image.get("path")
        if not file_name:
            raise ValueError(f"{annotations}: image {annotation['image_id']!r} has no 'file_name'")
        image_path = image_root / file_name
        if not collector.image_ok(image_path):
            continue
        image_id = Path(file_name).stem if phrases else Path(file_name).with_suffix("").as_posix()
        size = declared_size(image.get("height"), image.get("width"))
        collector.add(
            (annotation["image_id"], phrase),
            annotation.get("bbox"),
            mask=_segmentation_mask(annotation.get("segmentation"), size, annotations, number),
            image_path=image_path,
            phrase=phrase,
            category=category,
            image_size=size,
            sample_id=f"{image_id}|{phrase}",
        )
    collector.skip("no box", len(set(images) - annotated))
    return collector.result(what)


def _segmentation_mask(value: Any, size: tuple[int, int] | None, path: Path, number: int) -> np.ndarray | None:
    """A COCO ``segmentation`` (RLE dict, or polygons with the image's size) as a bool mask; ``None`` if absent."""
    if value is None or (isinstance(value, list) and not value):
        return None
    if isinstance(value, dict):
        rle = to_rle(value)
    elif isinstance(value, list) and size is not None:
        rle = polygons_to_rle(value, size)
    else:
        raise ValueError(f"{path}: annotation #{number}: 'segmentation' must be an RLE object, or polygons with the "
                         "image's 'height' and 'width'")  # fmt: skip
    if size is not None and tuple(int(v) for v in rle["size"]) != size:
        raise ValueError(f"{path}: annotation #{number}: segmentation of size {rle['size']} on a {size} image")
    return mask_utils.decode(rle).astype(bool)


def read_ms_cxr(annotations: str | Path, image_root: str | Path, *, keep_missing: bool = False) -> ReadResult:
    """MS-CXR phrase grounding boxes (``MS_CXR_Local_Alignment_v1.x.json`` or its ``.csv`` twin).

    JSON: COCO-style ``images`` (``id``, ``file_name`` relative to ``image_root``, ``width``, ``height``),
    ``annotations`` (``image_id``, ``bbox`` ``[x, y, w, h]`` in original pixels, ``category_id``,
    ``label_text``) and ``categories`` (``id``, ``name``). CSV: one box per row with the columns ``dicom_id,
    category_name, label_text, x, y, w, h, image_width, image_height, path`` (``path`` relative to
    ``image_root``, usually the MIMIC-CXR-JPG root). The format is chosen by the suffix (``.json`` / ``.csv``).

    Boxes are grouped by (image, ``label_text``); phrase = ``label_text``, category = the category name,
    ``sample_id = "<dicom_id>|<label_text>"`` (the JSON's file stem is the dicom_id), so both twins give the same
    samples. Images without any box are counted as ``"no box"``.
    """
    annotations, image_root = Path(annotations), Path(image_root)
    suffix = annotations.suffix.lower()
    if suffix == ".json":
        return _read_coco_json(annotations, image_root, "MS-CXR annotations", keep_missing, phrases=True)
    if suffix != ".csv":
        raise ValueError(f"{annotations}: expected an MS-CXR annotation file ending in .json or .csv")
    path = require_file(annotations, "MS-CXR annotations")
    frame = read_csv_rows(path, path, "MS-CXR annotations", MS_CXR_CSV_COLUMNS)
    boxes = parse_numbers(frame, ["x", "y", "w", "h"])
    has_size = "image_width" in frame.columns and "image_height" in frame.columns
    collector = Collector(keep_missing)
    for row, box in zip(frame.itertuples(index=False), boxes, strict=True):
        phrase, dicom_id = str(row.label_text).strip(), str(row.dicom_id).strip()
        if not phrase:
            collector.skip("no phrase")
            continue
        image_path = image_root / str(row.path).strip()
        if not collector.image_ok(image_path):
            continue
        collector.add(
            (dicom_id, phrase),
            box,
            image_path=image_path,
            phrase=phrase,
            category=str(row.category_name).strip(),
            image_size=declared_size(row.image_height, row.image_width) if has_size else None,
            sample_id=f"{dicom_id}|{phrase}",
        )
    return collector.result("MS-CXR annotations")


def read_phantom(corpus_dir: str | Path, split: str = "test", *, keep_missing: bool = False) -> ReadResult:
    """A PhantomCXR corpus (``training.phantoms``) through the MS-CXR reader.

    Reads ``corpus_dir/annotations/<split>.json``; its ``file_name`` values (``images/<split>/<case>.png``) are
    relative to ``corpus_dir``. Normal studies have no box and are counted as ``"no box"``.
    """
    corpus_dir = Path(corpus_dir)
    annotations = require_file(corpus_dir / "annotations" / f"{split}.json", f"the corpus's {split} annotations")
    return read_ms_cxr(annotations, corpus_dir, keep_missing=keep_missing)


def read_coco(annotations: str | Path, image_root: str | Path, *, keep_missing: bool = False) -> ReadResult:
    """Generic COCO boxes (e.g. TBX11K ``annotations/json/TBX11K_train.json`` with ``image_root = imgs/``).

    Boxes are grouped by (image, category); phrase = category = the category name (``"ActiveTuberculosis"``),
    ``sample_id = "<file_name without suffix>|<category>"``. Only ``bbox`` is read (no ``segmentation``).
    Images without any annotation are counted as ``"no box"``.
    """
    return _read_coco_json(Path(annotations), Path(image_root), "COCO annotations", keep_missing, phrases=False)


# ---------------------------------------------------------------------------------------------- RSNA, NIH


def read_rsna(
    labels_csv: str | Path,
    dicom_root: str | Path,
    *,
    phrase: str = "pneumonia",
    image_size: tuple[int, int] | None = None,
    keep_missing: bool = False,
) -> ReadResult:
    """RSNA Pneumonia Detection boxes from ``stage_2_train_labels.csv`` (or a ``.zip`` holding that one CSV).

    Columns ``patientId, x, y, width, height, Target``; rows with ``Target == 1`` are boxes in pixels of the
    1024 x 1024 DICOM ``dicom_root/<patientId>.dcm``, grouped per patient (phrase = category = ``phrase``).
    Patients with only ``Target == 0`` rows are counted as ``"no finding"``. The file does not state the image
    size, so ``image_size`` is ``None`` unless given (``(1024, 1024)`` for the challenge DICOMs).
    """
    path = require_file(labels_csv, "RSNA labels")
    if path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                members = [name for name in archive.namelist() if name.lower().endswith(".csv")]
                if len(members) != 1:
                    raise ValueError(f"{path}: expected a zip holding exactly one .csv file, found {members}")
                source: Any = io.BytesIO(archive.read(members[0]))
        except zipfile.BadZipFile as error:
            raise ValueError(f"{path}: not a readable zip file ({error})") from None
    else:
        source = path
    frame = read_csv_rows(source, path, "RSNA labels", RSNA_COLUMNS)
    values = parse_numbers(frame, ["x", "y", "width", "height", "Target"])
    targets = values[:, 4]
    if not np.isin(targets, (0, 1)).all():
        bad = frame["Target"].iloc[int(np.flatnonzero(~np.isin(targets, (0, 1)))[0])]
        raise ValueError(f"{path}: Target must be 0 or 1, found {bad!r}")
    collector = Collector(keep_missing)
    root = Path(dicom_root)
    patients = frame["patientId"].str.strip()
    for patient, box, target in zip(patients, values[:, :4], targets, strict=True):
        if target != 1:
            continue
        image_path = root / f"{patient}.dcm"
        if collector.image_ok(image_path):
            kwargs = {"phrase": phrase, "category": phrase, "image_size": image_size}
            collector.add(patient, box, image_path=image_path, sample_id=f"{patient}|{phrase}", **kwargs)
    collector.skip("no finding", len(set(patients) - set(patients[targets == 1])))
    return collector.result("RSNA labels")


def read_nih_bbox(
    bbox_csv: str | Path,
    image_root: str | Path,
    *,
    image_size: tuple[int, int] | None = None,
    keep_missing: bool = False,
) -> ReadResult:
    """NIH ChestX-ray14 expert boxes, ``BBox_List_2017.csv`` (or ``.csv.gz``).

    Its header is ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` (nine cells once split at the commas), so the
    columns are named here: each row has 6 fields, image file name, finding label, ``x, y, w, h`` in pixels of
    the 1024 x 1024 original (``image_size`` is ``None`` unless given). Images are ``image_root/<Image Index>``.
    Boxes are grouped by (image, label); phrase = the label lower-cased (``"Infiltrate"`` -> ``"infiltrate"``),
    category = the label as written.
    """
    path = require_file(bbox_csv, "NIH box list")
    opener = gzip.open if path.suffix.lower() == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as handle:
            rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path}: could not read the NIH box list ({error})") from None
    if not rows or [cell.strip().lower() for cell in rows[0][:2]] != ["image index", "finding label"]:
        raise ValueError(
            f"{path}: expected the NIH header 'Image Index,Finding Label,Bbox [x,y,w,h],,,' and rows "
            f"{', '.join(NIH_COLUMNS)}; got {rows[0][:6] if rows else 'an empty file'}"
        )
    collector = Collector(keep_missing)
    root = Path(image_root)
    for line, row in enumerate(rows[1:], start=2):
        if len(row) < 6:
            raise ValueError(f"{path}, line {line}: expected 6 fields ({', '.join(NIH_COLUMNS)}), got {row}")
        name, label = row[0].strip(), row[1].strip()
        image_path = root / name
        if collector.image_ok(image_path):
            phrase = label.lower()
            collector.add(
                (name, label),
                row[2:6],
                image_path=image_path,
                phrase=phrase,
                category=label,
                image_size=image_size,
                sample_id=f"{Path(name).stem}|{phrase}",
            )
    return collector.result("NIH box list")


# --------------------------------------------------------------------------------------------- CheXlocalize


def polygons_to_rle(polygons: Any, size: tuple[int, int]) -> dict:
    """Rasterise ``[[[x, y], ...], ...]`` polygons (pixel indices, as CheXlocalize's own PIL code draws them)."""
    mask = np.zeros(size, dtype=np.uint8)
    for polygon in polygons:
        points = np.rint(np.asarray(polygon, dtype=np.float64).reshape(-1, 2)).astype(np.int32)
        if len(points):
            # one call per polygon: a single fillPoly over several polygons would cut holes where they overlap
            cv2.fillPoly(mask, [points], 1)
    return to_rle(mask)
