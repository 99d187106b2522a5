"""Geometry shared by training, evaluation and the demo: the reference pad-resize and its inverse.

Coordinates are pixels with the origin at the top-left corner of the top-left pixel; boxes are
``[x, y, w, h]`` (COCO). "Model space" is the ``size x size`` padded square the network sees.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import cv2
import numpy as np
import torch

from ..settings import from_dict


@dataclass(frozen=True)
class PadResizeMapping:
    """Where an original ``height x width`` image landed inside the ``size x size`` model input.

    Attributes:
        original_height, original_width: size of the original image.
        size: side of the pad-resized square (the model input unless it is cropped).
        resized_height, resized_width: size of the image content after resizing (before padding).
        top, left: zero padding above / left of the content.
        crop_size: side of the centre crop of the square that the model sees (GLoRIA: 224 of 256); None = no crop.
        crop_top, crop_left: where that crop starts in the square.

    "Model space" is the model input: the ``input_size`` square. Boxes, points and masks map into it; a model-space
    heatmap maps back onto the original pixels with the cropped-away border undefined (NaN), not invented.
    """

    original_height: int
    original_width: int
    size: int
    resized_height: int
    resized_width: int
    top: int
    left: int
    crop_size: int | None = None
    crop_top: int = 0
    crop_left: int = 0

    @property
    def input_size(self) -> int:
        """Side of the model input: the crop, or the pad-resized square."""
        return self.crop_size or self.size

    def cropped(self, crop_size: int | None) -> PadResizeMapping:
        """This mapping with a centre crop of ``crop_size`` (torchvision's ``CenterCrop`` rule: the crop starts at
        ``int(round((size - crop_size) / 2))``); None returns it unchanged."""
        if crop_size is None:
            return self
        if not 2 <= crop_size <= self.size:
            raise ValueError(f"crop_size must lie in [2, {self.size}], got {crop_size}")
        start = int(round((self.size - crop_size) / 2.0))
        return dataclasses.replace(self, crop_size=crop_size, crop_top=start, crop_left=start)

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.original_width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.original_height

    @property
    def _offset(self) -> np.ndarray:
        """Where the original image's corner lands in model space: the padding, less the crop."""
        return np.array([self.left - self.crop_left, self.top - self.crop_top], dtype=np.float64)

    def boxes_to_model(self, boxes: np.ndarray) -> np.ndarray:
        """Map ``[K, 4]`` ``[x, y, w, h]`` boxes from original pixels to model pixels."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        return boxes * scale + np.array([*self._offset, 0.0, 0.0])

    def boxes_to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`boxes_to_model`."""
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scale = np.array([self.scale_x, self.scale_y, self.scale_x, self.scale_y])
        return (boxes - np.array([*self._offset, 0.0, 0.0])) / scale

    def points_to_model(self, points: np.ndarray) -> np.ndarray:
        """Map ``[K, 2]`` ``(x, y)`` points from original pixels to model pixels."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return points * np.array([self.scale_x, self.scale_y]) + self._offset

    def points_to_original(self, points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        return (points - self._offset) / np.array([self.scale_x, self.scale_y])

    def crop(self, square: np.ndarray) -> np.ndarray:
        """The model input's part of an array on the pad-resized square (``[size, size, ...]``)."""
        if self.crop_size is None:
            return square
        return square[self.crop_top : self.crop_top + self.crop_size, self.crop_left : self.crop_left + self.crop_size]

    def mask_to_model(self, mask: np.ndarray) -> np.ndarray:
        """Map a boolean ``[H, W]`` mask to model space (pixel-centre nearest neighbour; padding is False)."""
        mask = np.asarray(mask)
        self._check_original(mask.shape[:2])
        resized = cv2.resize(
            mask.astype(np.uint8), (self.resized_width, self.resized_height), interpolation=cv2.INTER_NEAREST_EXACT
        )
        out = np.zeros((self.size, self.size), dtype=bool)
        out[self.top : self.top + self.resized_height, self.left : self.left + self.resized_width] = resized > 0
        return self.crop(out)

    def heatmap_to_original(self, heatmap: np.ndarray) -> np.ndarray:
        """Map a model-space heatmap ``[S, S]`` or ``[K, S, S]`` (``S = input_size``) back to ``[H, W]`` /
        ``[K, H, W]``.

        A cropped-away border is undefined (NaN); the padding is removed and the content resized bilinearly to
        the exact original size. NaN pixels (undefined, e.g. a margin or the crop's border) stay NaN
        (nearest-neighbour mapping of the NaN mask).
        """
        heatmap = np.asarray(heatmap, dtype=np.float32)
        if heatmap.ndim == 3:
            return np.stack([self.heatmap_to_original(h) for h in heatmap])
        if heatmap.shape != (self.input_size, self.input_size):
            raise ValueError(f"heatmap must be {self.input_size}x{self.input_size}, got {heatmap.shape}")
        if self.crop_size is not None:
            square = np.full((self.size, self.size), np.nan, dtype=np.float32)
            square[self.crop_top : self.crop_top + self.crop_size, self.crop_left : self.crop_left + self.crop_size] = (
                heatmap
            )
            heatmap = square
        content = heatmap[self.top : self.top + self.resized_height, self.left : self.left + self.resized_width]
        undefined = np.isnan(content)
        target = (self.original_width, self.original_height)
        out = cv2.resize(np.where(undefined, 0.0, content).astype(np.float32), target, interpolation=cv2.INTER_LINEAR)
        if undefined.any():
            nan_mask = cv2.resize(undefined.astype(np.uint8), target, interpolation=cv2.INTER_NEAREST) > 0
            out[nan_mask] = np.nan
        return out

    def _check_original(self, shape: tuple[int, ...]) -> None:
        if tuple(shape) != (self.original_height, self.original_width):
            raise ValueError(
                f"array of size {shape} does not match the original image {(self.original_height, self.original_width)}"
            )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


SIZE_RULES = ("exact", "reference")
MODALITIES = ("cxr", "fundus")
CONTRASTS = ("none", "local")
LOCAL_CONTRAST_SIGMA = 1 / 30  # of the square's side: the background blur of local contrast
LOCAL_CONTRAST_GAIN = 4.0
RETINA_LEVEL = 0.12  # of the 99th percentile of the grey level: brighter pixels are retina


def local_contrast(image: np.ndarray) -> np.ndarray:
    """A colour fundus photograph ``[S, S, 3]`` in [0, 1] with its slowly varying colour and illumination removed:
    each channel minus its Gaussian blur (sigma 1/30 of the side) times 4, around mid grey, on the retina; black
    outside it. Lesions a few pixels wide (exudates, haemorrhages, microaneurysms) and vessels stand out, and
    a photograph's overall tint or exposure (which differ between cameras and sessions) no longer tells one
    photograph from another. The blur is normalised by the retina's own blurred mask, so that the black surround
    does not darken the retina's rim. (B. Graham's preprocessing for the Kaggle diabetic retinopathy challenge,
    2015, with a field-of-view mask.)
    """
    from scipy.ndimage import gaussian_filter

    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"local contrast needs an RGB [S, S, 3] image, got shape {image.shape}")
    grey = image.mean(axis=2)
    top = float(np.percentile(grey, 99))
    side = max(image.shape[:2])
    # the retina: brighter than a fixed share of the photograph's own bright level (so a dark exposure keeps it),
    # its edge softened over half a percent of the side
    retina = (grey > RETINA_LEVEL * top).astype(np.float32) if top > 0 else np.ones_like(grey)
    mask = np.clip(gaussian_filter(retina, 0.005 * side), 0.0, 1.0)
    sigma = LOCAL_CONTRAST_SIGMA * side
    weight = np.maximum(gaussian_filter(mask, sigma), 1e-3)
    out = np.empty_like(image)
    for channel in range(3):
        background = gaussian_filter(image[..., channel] * mask, sigma) / weight
        out[..., channel] = 0.5 + LOCAL_CONTRAST_GAIN * (image[..., channel] - background)
    return np.clip(out * mask[..., None], 0.0, 1.0)


def pad_resize_mapping(height: int, width: int, size: int, size_rule: str = "exact") -> PadResizeMapping:
    """The reference geometry: longest side -> ``size`` (truncated), centred zero padding.

    For ``h >= w`` the new size is ``(size, int(w * size / h))``; the missing columns are padded
    ``floor(pad / 2)`` on the left and ``ceil(pad / 2)`` on the right (rows top/bottom when ``w > h``).

    ``size_rule="reference"`` computes the short side as the authors' code does, ``int(w * (size / h))``: the
    ratio is rounded to a double first, so for a few sizes the product falls just below an integer and the
    short side loses a pixel (a 299 x 299 film becomes 224 x 223 plus one zero column). ``"exact"`` (default)
    multiplies first and keeps square images square.
    """
    if height < 2 or width < 2:
        raise ValueError(f"image of size {height}x{width} is too small (at least 2x2 pixels)")
    if size_rule not in SIZE_RULES:
        raise ValueError(f"size_rule must be one of {SIZE_RULES}, got {size_rule!r}")
    long_side, short_side = max(height, width), min(height, width)
    if size_rule == "reference":
        resized_short = int(short_side * (size / long_side))
    else:
        resized_short = int(short_side * size / long_side)
    resized_short = max(1, resized_short)
    new_h, new_w = (size, resized_short) if height >= width else (resized_short, size)
    return PadResizeMapping(height, width, size, new_h, new_w, (size - new_h) // 2, (size - new_w) // 2)


def pad_resize(image: np.ndarray, size: int, size_rule: str = "exact") -> tuple[np.ndarray, PadResizeMapping]:
    """Resize with ``cv2.INTER_AREA`` keeping the aspect ratio and zero-pad to ``size x size``.

    Args:
        image: ``[H, W]`` or ``[H, W, C]`` array (any dtype cv2 resizes; float32 in [0, 1] here).
        size: output side.
        size_rule: how the short side is computed, see :func:`pad_resize_mapping`.

    Returns:
        ``(padded, mapping)``: the ``[size, size(, C)]`` array of the input dtype and the mapping to undo it.
    """
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"image must be [H, W] or [H, W, C], got shape {image.shape}")
    mapping = pad_resize_mapping(image.shape[0], image.shape[1], size, size_rule)
    resized = cv2.resize(image, (mapping.resized_width, mapping.resized_height), interpolation=cv2.INTER_AREA)
    if resized.ndim == 2 and image.ndim == 3:  # cv2 drops a single channel axis
        resized = resized[..., None]
    out = np.zeros((size, size, *image.shape[2:]), dtype=image.dtype)
    out[mapping.top : mapping.top + mapping.resized_height, mapping.left : mapping.left + mapping.resized_width] = (
        resized
    )
    return out, mapping


@dataclass(frozen=True)
class Preprocessing:
    """Image preprocessing saved with every checkpoint (``preprocessing.json``).

    Attributes:
        image_size: side of the pad-resized square.
        mean, std: per-channel normalisation applied to [0, 1] pixels (0.5 / 0.5 in the reference -> [-1, 1]).
        resize: the resize method (only ``"pad_resize_inter_area"``).
        resize_8bit: round the image to whole 8-bit grey levels and resize the ``uint8`` image (cv2 rounds the
            resized pixels to whole levels again), as the authors' inference does with the file it reads as 8-bit.
            ``False`` (default) resizes the float image: no quantisation, which keeps 16-bit films' depth.
        size_rule: ``"exact"`` (default) or ``"reference"``, how the short side is computed, see
            :func:`pad_resize_mapping`.
        crop_size: when set, the pad-resized ``image_size`` square is centre-cropped to this side before the
            network (GLoRIA: 256 then 224); the model input is then ``crop_size`` (:attr:`input_size`), and a
            heatmap maps back with the cropped-away border undefined.
        modality: what the model was trained on, ``"cxr"`` (default; greyscale films, replicated to three
            channels) or ``"fundus"`` (colour photographs kept RGB, usually with per-channel ``mean``/``std`` of
            the training photographs). The demo picks models and prompt presets by it.
        contrast: ``"none"`` (default) or ``"local"`` (fundus only): each photograph's slowly varying colour and
            illumination removed after resizing, :func:`local_contrast`; ``mean``/``std`` are then those of the
            transformed training photographs.

    Converted authors' models set ``resize_8bit=True, size_rule="reference"`` so that they see exactly the
    pixels the authors' code feeds them; our own models keep the defaults.
    """

    image_size: int = 224
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    resize: str = "pad_resize_inter_area"
    resize_8bit: bool = False
    size_rule: str = "exact"
    modality: str = "cxr"
    crop_size: int | None = None
    contrast: str = "none"

    @property
    def input_size(self) -> int:
        """Side of the model input: ``crop_size`` when the pad-resized square is centre-cropped, else
        ``image_size``."""
        return self.crop_size or self.image_size

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {self.modality!r}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got mean {self.mean}, std {self.std}")
        if self.contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS}, got {self.contrast!r}")
        if self.contrast != "none" and self.modality != "fundus":
            raise ValueError(f"contrast {self.contrast!r} is for colour fundus photographs (modality 'fundus')")
        if self.size_rule not in SIZE_RULES:
            raise ValueError(f"size_rule must be one of {SIZE_RULES}, got {self.size_rule!r}")
        if not isinstance(self.resize_8bit, bool):
            raise ValueError(f"resize_8bit must be true or false, got {self.resize_8bit!r}")
        if self.crop_size is not None and (
            not isinstance(self.crop_size, int)
            or isinstance(self.crop_size, bool)
            or not 2 <= self.crop_size <= self.image_size
        ):
            raise ValueError(
                f"crop_size must be an integer in [2, image_size={self.image_size}], got {self.crop_size!r}"
            )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        values = dict(data or {})
        for key in ("mean", "std"):
            if isinstance(values.get(key), list):
                values[key] = tuple(float(v) for v in values[key])
        if values.get("resize", "pad_resize_inter_area") != "pad_resize_inter_area":
            raise ValueError(f"unsupported resize {values['resize']!r}; only 'pad_resize_inter_area' is defined")
        return from_dict(cls, values, "preprocessing")

    def model_space_image(self, image: np.ndarray) -> tuple[np.ndarray, PadResizeMapping]:
        """``[H, W]`` greyscale or ``[H, W, 3]`` RGB float image in [0, 1] -> the ``[S, S, 3]`` float32 image in
        [0, 1] that the network sees, before normalisation: pad-resized, cropped, greyscale replicated to three
        channels, local contrast applied when set; and its mapping."""
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 3 and image.shape[2] == 1:
            image = image[..., 0]
        if image.ndim == 3 and image.shape[2] != 3:
            raise ValueError(f"expected a greyscale or RGB image, got shape {image.shape}")
        if self.resize_8bit:
            grey_levels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
            padded, mapping = pad_resize(grey_levels, self.image_size, self.size_rule)
            padded = padded.astype(np.float32) / np.float32(255.0)
        else:
            padded, mapping = pad_resize(image, self.image_size, self.size_rule)
        mapping = mapping.cropped(self.crop_size)
        padded = mapping.crop(padded)  # GLoRIA's test transform: pad-resize, then a centre crop
        if padded.ndim == 2:
            padded = np.repeat(padded[..., None], 3, axis=2)
        if self.contrast == "local":
            padded = local_contrast(padded)
        return padded, mapping

    def __call__(self, image: np.ndarray) -> tuple[torch.Tensor, PadResizeMapping]:
        """``[H, W]`` greyscale or ``[H, W, 3]`` RGB float image in [0, 1] -> normalised ``[3, S, S]`` tensor
        (:meth:`model_space_image`, then ``mean``/``std``).

        Greyscale is replicated to three channels; RGB (fundus) stays RGB.
        """
        padded, mapping = self.model_space_image(image)
        tensor = torch.from_numpy(np.ascontiguousarray(padded.transpose(2, 0, 1)))
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return (tensor - mean) / std, mapping
