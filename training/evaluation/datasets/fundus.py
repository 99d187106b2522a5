"""Fundus localization readers: YOLO boxes and IDRiD lesion masks.

Import them from :mod:`training.evaluation.datasets.base`; the data model and conventions are described there.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from afloc.imaging.boxes import parse_yolo_line, parse_yolo_names

from .base import (
    Collector,
    ReadResult,
    images_by_stem,
    read_image_size,
    read_mask_file,
    require_dir,
    require_file,
    to_rle,
)

IDRID_LESIONS = {
    "MA": "microaneurysms",
    "HE": "haemorrhages",
    "EX": "hard exudates",
    "SE": "soft exudates",
    "OD": "optic disc",
}
"""IDRiD lesion codes (the mask file suffix) -> phrase."""

_MASK_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp")


def read_yolo(
    image_dir: str | Path, label_dir: str | Path | None = None, names_file: str | Path | None = None
) -> ReadResult:
    """YOLO boxes: one ``<stem>.txt`` per image with lines ``class cx cy w h``, normalised by the image size.

    Layout (as ``fundus/idrid`` in the shared data)::

        image_dir/0001.jpg          images (.jpg/.png/...)
        label_dir/0001.txt          boxes (label_dir defaults to image_dir)
        names_file                  class names, line index = class id (e.g. retinal.names)

    ``names_file=None`` takes the single ``*.names`` file in ``label_dir`` (then ``image_dir``). The pixel size
    comes from the image header (no decoding) after EXIF orientation; ``x = (cx - w / 2) * width`` etc.
    Boxes are grouped by (image, class); phrase = the class name with ``_`` -> space (``"hard exudates"``),
    category = the class name as written. Images without a label file or with an empty one are counted as
    ``"no box"``; a class id outside the names as ``"unknown category"``. A label file whose image is absent
    lists ``image_dir/<stem>.*`` in ``missing`` (its boxes cannot be converted without the image size).
    """
    image_dir = require_dir(image_dir, "YOLO image directory")
    label_dir = require_dir(label_dir if label_dir is not None else image_dir, "YOLO label directory")
    if names_file is None:
        candidates = sorted(label_dir.glob("*.names")) or sorted(image_dir.glob("*.names"))
        if not candidates:  # the Ultralytics layout (TBX11K's copy): classes.txt beside or above the folders
            folders = (label_dir, image_dir, label_dir.parent)
            candidates = list(dict.fromkeys(f / "classes.txt" for f in folders if (f / "classes.txt").is_file()))[:1]
        if len(candidates) != 1:
            raise ValueError(
                f"{label_dir}: expected one *.names (or classes.txt) file with the class names, found {candidates}"
            )
        names_file = candidates[0]
    path = require_file(names_file, "YOLO class names file")
    names = parse_yolo_names(path.read_text(encoding="utf-8"), str(path))
    images = images_by_stem(image_dir)
    labels = {path.stem: path for path in sorted(label_dir.glob("*.txt")) if path.name != "classes.txt"}
    collector = Collector()
    collector.skip("no box", len(set(images) - set(labels)))
    for stem, label_path in labels.items():
        image_path = images.get(stem)
        if image_path is None:
            collector.note_missing(str(image_dir / f"{stem}.*"))
            continue
        height, width = read_image_size(image_path)
        has_box = False
        for line_number, line in enumerate(label_path.read_text(encoding="utf-8").splitlines(), start=1):
            parsed = parse_yolo_line(line, width, height, f"{label_path}, line {line_number}")
            if parsed is None:
                continue
            token, yolo_box = parsed
            class_id = int(token) if token.isdigit() else -1
            if not 0 <= class_id < len(names):
                collector.skip("unknown category")
                continue
            has_box = True
            box = list(yolo_box[:4])
            category = names[class_id]
            phrase = category.replace("_", " ")
            sample = {"image_path": image_path, "phrase": phrase, "category": category, "image_size": (height, width)}
            collector.add((stem, class_id), box, sample_id=f"{stem}|{phrase}", **sample)
        if not has_box:
            collector.skip("no box")
    return collector.result("YOLO boxes")


def read_idrid_masks(
    image_dir: str | Path,
    mask_root: str | Path,
    lesions: Sequence[str] = ("MA", "HE", "EX", "SE", "OD"),
    *,
    keep_missing: bool = False,
) -> ReadResult:
    """IDRiD lesion segmentation masks (task A of the IDRiD challenge).

    Expected layout (that of the IDRiD download)::

        A. Segmentation/1. Original Images/a. Training Set/IDRiD_01.jpg                           <- image_dir
        A. Segmentation/2. All Segmentation Groundtruths/a. Training Set/                           <- mask_root
            1. Microaneurysms/IDRiD_01_MA.tif   2. Haemorrhages/IDRiD_01_HE.tif
            3. Hard Exudates/IDRiD_01_EX.tif    4. Soft Exudates/IDRiD_01_SE.tif   5. Optic Disc/IDRiD_01_OD.tif

    Masks are found as ``mask_root/**/<image stem>_<CODE>.tif`` (any folder names; .png also accepted); a pixel
    is positive when any channel is above 0. One sample per (image, lesion) with a non-empty mask: phrase =
    category = :data:`IDRID_LESIONS` ``[code]`` (``"hard exudates"``). A lesion without a mask file for an
    image (not every image has every lesion) or with an empty mask is counted as ``"no finding"``; a mask whose
    size differs from its image as ``"mask size mismatch"`` (resized images need resized masks).
    """
    unknown = [code for code in lesions if code not in IDRID_LESIONS]
    if unknown:
        raise ValueError(f"unknown IDRiD lesion code(s) {unknown}; expected some of {list(IDRID_LESIONS)}")
    images = images_by_stem(require_dir(image_dir, "IDRiD image directory"))
    pattern = re.compile(rf"^(.+)_({'|'.join(lesions)})$")
    masks: dict[tuple[str, str], Path] = {}
    for path in sorted(require_dir(mask_root, "IDRiD mask root").rglob("*")):
        match = pattern.match(path.stem)
        if match and path.suffix.lower() in _MASK_SUFFIXES and path.is_file():
            masks.setdefault((match.group(1), match.group(2)), path)
    collector = Collector(keep_missing)
    for stem in sorted({stem for stem, _ in masks} - set(images)):
        collector.note_missing(str(Path(image_dir) / f"{stem}.*"))
    stems = sorted(set(images) | ({stem for stem, _ in masks} if keep_missing else set()))
    for stem in stems:
        image_path = images.get(stem)
        size = read_image_size(image_path) if image_path is not None else None
        for code in lesions:
            mask_path = masks.get((stem, code))
            if mask_path is None:
                collector.skip("no finding")
                continue
            mask = read_mask_file(mask_path, threshold=0)
            if size is not None and mask.shape != size:
                collector.skip("mask size mismatch")
                continue
            if not mask.any():
                collector.skip("no finding")
                continue
            phrase = IDRID_LESIONS[code]
            path = image_path if image_path is not None else Path(image_dir) / f"{stem}.jpg"
            sample = {"image_path": path, "phrase": phrase, "category": phrase, "image_size": mask.shape}
            collector.add((stem, code), mask=to_rle(mask), sample_id=f"{stem}|{phrase}", **sample)
    return collector.result("IDRiD masks")
