"""Readers of chest X-ray localization datasets whose ground truth is a mask or polygon set: CheXlocalize (RLE or
polygons), COVID-Rural and image + mask folders (COVID-QU-Ex's layout). The box readers are in :mod:`.cxr`."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pycocotools.mask as mask_utils

from .base import (
    Collector,
    ReadResult,
    images_by_stem,
    load_json,
    read_image_size,
    read_mask_file,
    require_dir,
    to_rle,
)
from .cxr import declared_size, polygons_to_rle

CHEXLOCALIZE_TASKS = (
    "Airspace Opacity",
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Lung Lesion",
    "Pleural Effusion",
    "Pneumothorax",
    "Support Devices",
)
"""The 10 CheXlocalize tasks, spelled as the keys of its JSON files."""


_CHEXPERT_ID = re.compile(r"^(patient\d+)_(study\d+)_(view\d+_[A-Za-z]+)$")


def chexpert_image_path(image_id: str) -> Path:
    """``patient64541_study1_view1_frontal`` -> ``patient64541/study1/view1_frontal.jpg`` (CheXpert layout)."""
    match = _CHEXPERT_ID.match(image_id)
    if match is None:
        raise ValueError(
            f"CheXlocalize image id {image_id!r} is not of the form patient<N>_study<N>_view<N>_<frontal|lateral>; "
            "pass image_path= to map it yourself"
        )
    patient, study, view = match.groups()
    return Path(patient, study, f"{view}.jpg")


def read_chexlocalize(
    segmentations_json: str | Path | None = None,
    annotations_json: str | Path | None = None,
    *,
    image_root: str | Path,
    split_prefix: str = "",
    tasks: Sequence[str] = CHEXLOCALIZE_TASKS,
    image_path: Callable[[str], str | Path] | None = None,
    keep_missing: bool = False,
) -> ReadResult:
    """CheXlocalize ground truth, from exactly one of its two files.

    * ``segmentations_json`` (``gt_segmentations_{val,test}.json``): ``{image_id: {task: {"size": [h, w],
      "counts": str}}}``, COCO RLE decoded with pycocotools.
    * ``annotations_json`` (``gt_annotations_val.json``): ``{image_id: {"img_size": [h, w], task: [polygon,
      ...]}}`` with each polygon a list of ``[x, y]`` points, filled with ``cv2.fillPoly``.

    Images: ``image_root/<split_prefix>/<chexpert_image_path(image_id)>``, i.e. the CheXpert layout
    ``CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg`` with ``image_root="CheXpert-v1.0"``,
    ``split_prefix="valid"`` (``"test"`` for the test set). ``image_path(image_id)`` overrides the mapping (a
    path relative to ``image_root``, or absolute).

    One sample per (image, task) with a non-empty mask: phrase = the task lower-cased (``"enlarged
    cardiomediastinum"``), category = the task. Each task of ``tasks`` that an image lacks or has an empty mask
    for is a negative, counted as ``"no finding"``; tasks not in ``tasks`` are counted as ``"unknown category"``.
    """
    if (segmentations_json is None) == (annotations_json is None):
        raise ValueError("give exactly one of segmentations_json (RLE) and annotations_json (polygons)")
    source = Path(segmentations_json if segmentations_json is not None else annotations_json)
    what = "CheXlocalize segmentations" if segmentations_json is not None else "CheXlocalize annotations"
    data = load_json(source, what)
    if not isinstance(data, dict) or not all(isinstance(entry, dict) for entry in data.values()):
        raise ValueError(f"{source}: expected a JSON object {{image_id: {{task: ...}}}}")
    root = Path(image_root) / split_prefix
    wanted = set(tasks)
    collector = Collector(keep_missing)
    for image_id, entry in data.items():
        path = root / (image_path(image_id) if image_path is not None else chexpert_image_path(image_id))
        if not collector.image_ok(path):
            continue
        size = None
        if segmentations_json is None:
            size = declared_size(*entry["img_size"]) if len(entry.get("img_size") or ()) == 2 else None
            if size is None:
                raise ValueError(f"{source}: image {image_id!r} has no valid 'img_size' [height, width]")
        positives = 0
        for task, value in entry.items():
            if task == "img_size":
                continue
            if task not in wanted:
                collector.skip("unknown category")
                continue
            try:
                rle = to_rle(value) if size is None else polygons_to_rle(value, size)
            except (TypeError, ValueError, KeyError) as error:
                raise ValueError(f"{source}: image {image_id!r}, task {task!r}: unreadable mask ({error})") from None
            if mask_utils.area(rle) == 0:
                continue
            positives += 1
            phrase = task.lower()
            mask_size = (int(rle["size"][0]), int(rle["size"][1]))
            sample = {"image_path": path, "phrase": phrase, "category": task, "image_size": mask_size}
            collector.add((image_id, task), mask=rle, sample_id=f"{image_id}|{phrase}", **sample)
        collector.skip("no finding", len(wanted) - positives)
    return collector.result(what)


# -------------------------------------------------------------------------------------------- COVID Rural


def read_covid_rural(
    image_dir: str | Path,
    mask_dir: str | Path,
    phrase: str = "pneumonia opacity",
    *,
    mask_threshold: int | None = None,
    keep_missing: bool = False,
) -> ReadResult:
    """COVID Rural (TCIA COVID-19-AR derived) opacity masks.

    Expected layout (as distributed in ``covid_rural_annot/``)::

        image_dir/COVID-19-AR-16406488_01-15-2012-XR.jpg     images (.jpg/.png/.dcm/...)
        mask_dir/COVID-19-AR-16406488_01-15-2012-XR.png      masks, same stem (.png or .jpg)

    A pixel is positive when any channel exceeds ``mask_threshold`` (``None``: 0 for PNG, 127 for lossy JPEG).
    One sample per image with a non-empty mask (phrase = category = ``phrase``). Images without a mask are
    counted as ``"missing ground truth"``, empty masks as ``"no finding"``, masks whose size differs from the
    image as ``"mask size mismatch"``; a mask without an image lists ``image_dir/<stem>.*`` in ``missing``.
    """
    images = images_by_stem(require_dir(image_dir, "COVID Rural image directory"))
    masks = {
        path.stem: path
        for path in sorted(require_dir(mask_dir, "COVID Rural mask directory").iterdir())
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
    }
    collector = Collector(keep_missing)
    collector.skip("missing ground truth", len(set(images) - set(masks)))
    for stem, mask_path in masks.items():
        image = images.get(stem)
        if image is None:
            collector.note_missing(str(Path(image_dir) / f"{stem}.*"))
            if not keep_missing:
                continue
        mask = read_mask_file(mask_path, mask_threshold)
        if image is not None and read_image_size(image) != mask.shape:
            collector.skip("mask size mismatch")
            continue
        if not mask.any():
            collector.skip("no finding")
            continue
        path = image if image is not None else Path(image_dir) / f"{stem}.jpg"
        sample = {"image_path": path, "phrase": phrase, "category": phrase, "image_size": mask.shape}
        collector.add(stem, mask=to_rle(mask), sample_id=f"{stem}|{phrase}", **sample)
    return collector.result("COVID Rural")


# ------------------------------------------------------------------------------- image + mask folders


def read_mask_folders(
    root: str | Path,
    mask_dir: str | Path | None = None,
    phrase: str | None = None,
    *,
    mask_name: str = "infection_masks",
    keep_missing: bool = False,
) -> ReadResult:
    """Images with same-named lesion masks, in one folder pair or in class folders (the COVID-QU-Ex layout)::

        root/covid/images/covid_1.png              root/covid/infection_masks/covid_1.png
        root/normal/images/Normal (1).png          (no mask folder: these films are not samples)

    With ``mask_dir`` given, ``root`` is the image folder and ``mask_dir`` its mask folder (one class). Without
    it, every ``root/<class>/`` holding ``images/`` and ``<mask_name>/`` is read, with category = the class
    folder's name. Phrase: ``phrase``, else the category with ``_`` -> space. Masks and images are matched by
    stem and read as in :func:`read_covid_rural` (empty masks are ``"no finding"``; a size mismatch is skipped).
    """
    root = require_dir(root, "image folder")
    if mask_dir is not None:
        pairs = [(root, Path(mask_dir), root.name)]
    else:
        pairs = [(c / "images", c / mask_name, c.name) for c in sorted(root.iterdir())
                 if (c / "images").is_dir() and (c / mask_name).is_dir()]  # fmt: skip
        if not pairs:
            raise ValueError(f"{root}: no class folder holds images/ and {mask_name}/ (or give the mask folder)")
    samples, missing, skipped = [], [], Counter()
    for images, masks, category in pairs:
        result = read_covid_rural(images, masks, phrase or category.replace("_", " "), keep_missing=keep_missing)
        for sample in result.samples:
            sample.category = category
        samples += result.samples
        missing += result.missing
        skipped.update(result.skipped)
    return ReadResult(samples, missing, dict(sorted(skipped.items())))
