"""Training-time image augmentation for real films and photographs (applied before pad-resize, train split only).

Real images differ from each other in ways the report text never mentions: exposure, contrast, colour balance,
the camera's field of view, a slight tilt or offset. An augmentation here changes only such things, so the report
stays true of the augmented image:

* no horizontal flip here (it would swap the patient's sides, or turn a right eye into a left one, under words
  that still name the old ones; :mod:`training.mirror` flips with the words swapped);
* rotations of a few degrees and small shifts and zooms (a finding stays in its zone);
* exposure (gamma), contrast and brightness; for colour photographs, per-channel gains and a field-of-view
  circle of random radius (fundus cameras crop the retina to a circle of their own size).

Every draw comes from the ``numpy`` generator the caller passes, so a (seed, epoch, sample) triple gives the same
augmented image in any worker process and after resuming.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

AUGMENTATIONS = ("none", "cxr", "cxr_wide", "fundus")


@dataclass(frozen=True)
class Augmentation:
    """One augmentation policy; ``Augmentation.named(name)`` gives the project's presets.

    Attributes:
        rotate_deg: largest rotation either way, in degrees.
        shift: largest shift either way, as a fraction of the image side.
        zoom: largest relative zoom either way (0.1: 0.9x to 1.1x).
        gamma: largest ``log`` gamma either way (0.3: gamma in [e^-0.3, e^0.3]).
        contrast: largest relative contrast change either way.
        brightness: largest brightness offset either way, in [0, 1] units.
        channel_gain: largest per-channel gain change either way (colour images only).
        field_of_view: probability of masking a colour photograph to a circle of random radius.
    """

    rotate_deg: float = 0.0
    shift: float = 0.0
    zoom: float = 0.0
    gamma: float = 0.0
    contrast: float = 0.0
    brightness: float = 0.0
    channel_gain: float = 0.0
    field_of_view: float = 0.0

    @staticmethod
    def named(name: str) -> Augmentation | None:
        """The preset ``name`` (``none`` gives ``None``: images are left as read)."""
        if name == "none":
            return None
        if name == "cxr":
            return Augmentation(rotate_deg=7.0, shift=0.05, zoom=0.1, gamma=0.3, contrast=0.2, brightness=0.05)
        if name == "cxr_wide":
            # larger shifts and zooms, so that the film's edges (collimation, labels, the neck) land at varying
            # places of the input; about the reference's crop-and-affine range
            return Augmentation(rotate_deg=10.0, shift=0.1, zoom=0.2, gamma=0.3, contrast=0.2, brightness=0.05)
        if name == "fundus":
            return Augmentation(
                rotate_deg=10.0, shift=0.04, zoom=0.08, gamma=0.25, contrast=0.15, brightness=0.04,
                channel_gain=0.12, field_of_view=0.5,
            )  # fmt: skip
        raise ValueError(f"unknown augmentation {name!r}; expected one of {AUGMENTATIONS}")

    def __call__(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``[H, W]`` or ``[H, W, 3]`` float image in [0, 1] -> an augmented float32 copy of the same shape."""
        image = np.asarray(image, dtype=np.float32)
        height, width = image.shape[:2]
        angle = rng.uniform(-self.rotate_deg, self.rotate_deg)
        scale = 1.0 + rng.uniform(-self.zoom, self.zoom)
        dx, dy = (rng.uniform(-self.shift, self.shift) * side for side in (width, height))
        if angle or scale != 1.0 or dx or dy:
            matrix = cv2.getRotationMatrix2D((width / 2.0, height / 2.0), angle, scale)
            matrix[:, 2] += (dx, dy)
            image = cv2.warpAffine(
                image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
            )
        gamma = float(np.exp(rng.uniform(-self.gamma, self.gamma)))
        contrast = 1.0 + rng.uniform(-self.contrast, self.contrast)
        brightness = rng.uniform(-self.brightness, self.brightness)
        out = np.clip(image, 0.0, 1.0) ** gamma
        mean = float(out.mean())
        out = (out - mean) * contrast + mean + brightness
        if out.ndim == 3 and self.channel_gain:
            out = out * (1.0 + rng.uniform(-self.channel_gain, self.channel_gain, size=3)).astype(np.float32)
        if out.ndim == 3 and self.field_of_view and rng.random() < self.field_of_view:
            rows, cols = np.ogrid[:height, :width]
            radius = rng.uniform(0.36, 0.5) * width  # IDRiD's retina circle: about 0.4 of the width
            inside = (rows - height / 2.0) ** 2 + (cols - width / 2.0) ** 2 <= radius**2
            out = out * inside[..., None]
        return np.clip(out, 0.0, 1.0).astype(np.float32)
