"""The datasets the evaluation knows, in one table: each name with the paths it needs, whether it has splits, and
the call that reads it. ``read_dataset("coco", annotations=..., images=...)`` is what ``training evaluate
--dataset coco`` does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import ReadResult
from .cxr import (
    read_coco,
    read_ms_cxr,
    read_nih_bbox,
    read_phantom,
    read_rsna,
)
from .cxr_masks import (
    read_chexlocalize,
    read_covid_rural,
    read_mask_folders,
)
from .fundus import read_idrid_masks, read_yolo

CHEXPERT_SPLITS = {"valid": ("valid", "val"), "val": ("valid", "val"), "test": ("test",)}


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset format.

    Attributes:
        needs: the path arguments it requires (of ``annotations``, ``images``, ``masks``).
        has_splits: whether ``split`` selects part of it (PhantomCXR-layout corpora, CheXlocalize).
        read: ``read(annotations, images, masks, phrase, split) -> ReadResult``.
    """

    needs: tuple[str, ...]
    has_splits: bool
    read: Callable[..., ReadResult]


def chexlocalize_split(annotations: str, split: str | None) -> str:
    """``valid`` or ``test``: ``split`` (``val`` accepted), else read off the annotation file's name.

    Raises:
        ValueError: an unknown split, or one that contradicts the file name (``gt_segmentations_val.json`` with
            ``--split test``).
    """
    name = Path(annotations).name.lower()
    from_name = "valid" if "_val" in name else "test" if "_test" in name else None
    if split is None:
        if from_name is None:
            raise ValueError(f"cannot tell the split of {Path(annotations).name}: pass --split valid or --split test")
        return from_name
    if split not in CHEXPERT_SPLITS:
        raise ValueError(f"--split for chexlocalize must be valid or test, got {split!r}")
    chosen = CHEXPERT_SPLITS[split][0]
    if from_name is not None and from_name != chosen:
        raise ValueError(f"--split {split} contradicts the annotation file {Path(annotations).name} ({from_name})")
    return chosen


def chexpert_split_root(images: str, split: str) -> Path:
    """``<images>/valid`` (or ``val``) / ``<images>/test`` when present, else ``<images>`` (already the split)."""
    for folder in CHEXPERT_SPLITS[split]:
        if (Path(images) / folder).is_dir():
            return Path(images) / folder
    return Path(images)


def _chexlocalize(annotations, images, masks, phrase, split) -> ReadResult:
    key = "segmentations_json" if "segmentation" in Path(annotations).name else "annotations_json"
    root = chexpert_split_root(images, chexlocalize_split(annotations, split))
    return read_chexlocalize(**{key: annotations}, image_root=root)


DATASETS: dict[str, DatasetSpec] = {
    "phantom": DatasetSpec(("images",), True, lambda a, i, m, p, s: read_phantom(i, split=s or "test")),
    "ms-cxr": DatasetSpec(("annotations", "images"), False, lambda a, i, m, p, s: read_ms_cxr(a, i)),
    "rsna": DatasetSpec(("annotations", "images"), False, lambda a, i, m, p, s: read_rsna(a, i)),
    "chexlocalize": DatasetSpec(("annotations", "images"), True, _chexlocalize),
    "covid-rural": DatasetSpec(("images", "masks"), False, lambda a, i, m, p, s: read_covid_rural(i, m)),
    "mask-folder": DatasetSpec(("images",), False, lambda a, i, m, p, s: read_mask_folders(i, m, p)),
    "coco": DatasetSpec(("annotations", "images"), False, lambda a, i, m, p, s: read_coco(a, i)),
    "yolo": DatasetSpec(("images",), False, lambda a, i, m, p, s: read_yolo(i, label_dir=a)),
    "nih": DatasetSpec(("annotations", "images"), False, lambda a, i, m, p, s: read_nih_bbox(a, i)),
    "idrid": DatasetSpec(("images", "masks"), False, lambda a, i, m, p, s: read_idrid_masks(i, m)),
}


def read_dataset(
    name: str,
    annotations: str | None = None,
    images: str | None = None,
    masks: str | None = None,
    phrase: str | None = None,
    split: str | None = None,
) -> ReadResult:
    """Read dataset ``name`` (a key of :data:`DATASETS`).

    Raises:
        ValueError: an unknown name, a missing path it needs, or a split for a dataset without splits.
    """
    check_arguments(name, annotations, images, masks, split)
    return DATASETS[name].read(annotations, images, masks, phrase, split)


def check_arguments(
    name: str, annotations: str | None = None, images: str | None = None, masks: str | None = None, split=None
) -> None:
    """The checks of :func:`read_dataset` that need no file: the name, the paths it needs, the split."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {sorted(DATASETS)}")
    spec = DATASETS[name]
    given = {"annotations": annotations, "images": images, "masks": masks}
    missing = [f"--{key}" for key in spec.needs if not given[key]]
    if missing:
        raise ValueError(f"--dataset {name} needs {', '.join(missing)}")
    if split is not None and not spec.has_splits:
        with_splits = ", ".join(k for k, v in DATASETS.items() if v.has_splits)
        raise ValueError(f"--dataset {name} has no splits; drop --split {split} (splits exist for {with_splits})")
