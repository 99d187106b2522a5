"""The datasets the evaluation reads: one data model (:mod:`.base`), a reader per dataset format (:mod:`.cxr`,
:mod:`.cxr_masks`, :mod:`.fundus`) and their table (:mod:`.registry`)."""

from .base import IMAGE_SUFFIXES, LocalizationSample, ReadResult, read_image_size
from .cxr import (
    read_coco,
    read_ms_cxr,
    read_nih_bbox,
    read_phantom,
    read_rsna,
)
from .cxr_masks import (
    CHEXLOCALIZE_TASKS,
    chexpert_image_path,
    read_chexlocalize,
    read_covid_rural,
    read_mask_folders,
)
from .fundus import IDRID_LESIONS, read_idrid_masks, read_yolo

__all__ = [
    "CHEXLOCALIZE_TASKS",
    "IDRID_LESIONS",
    "IMAGE_SUFFIXES",
    "LocalizationSample",
    "ReadResult",
    "chexpert_image_path",
    "read_chexlocalize",
    "read_coco",
    "read_covid_rural",
    "read_idrid_masks",
    "read_image_size",
    "read_mask_folders",
    "read_ms_cxr",
    "read_nih_bbox",
    "read_phantom",
    "read_rsna",
    "read_yolo",
]
