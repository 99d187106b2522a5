"""PhantomCXR renderer: a sampled :class:`~training.phantoms.schema.Case` -> a chest-radiograph-like image.

``render_case(case, size, rng)`` draws a random patient (:mod:`training.phantoms.anatomy`), adds every finding
(filling its exact ``mask`` and ``boxes``) and the support devices, then simulates the imaging chain: film
response (exposure, gamma), scatter haze, detector blur and quantum noise.

Conventions: ``image [size, size]`` float32 in ``[0, 1]`` (air dark, bone bright); ``finding.mask`` bool
``[size, size]``; ``finding.boxes`` = ``[[x, y, w, h], ...]`` in pixels (x = column of the left edge, y = row of
the top edge, w/h = width/height in pixels), one per connected part (8-connectivity) of the mask. The patient's
RIGHT is on the image's LEFT, as on a PA/AP film. Scale: about 6-8 px/cm at ``size=256`` (the film spans 32-38
cm), so ``size_cm`` of nodules and masses is physical.

Findings are drawn into effect maps by :mod:`training.phantoms.findings`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from training.phantoms.anatomy import SIDE_SIGN, Anatomy, chaikin, sample_anatomy, smooth
from training.phantoms.drawing import AnatomyLayers, draw_anatomy
from training.phantoms.schema import FINDING_KINDS, Case

from .findings import RENDERERS, Effects

MIN_SIZE = 128
_ORDER = ("cardiomegaly", "pleural_effusion", "consolidation", "atelectasis", "edema", "nodule", "mass", "pneumothorax")


def _path(points: list, n: int = 3) -> np.ndarray:
    """Smooth open path through control points (Chaikin corner cutting, endpoints kept)."""
    points = np.asarray(points, dtype=np.float64)
    for _ in range(n):
        inner = np.stack([0.75 * points[:-1] + 0.25 * points[1:], 0.25 * points[:-1] + 0.75 * points[1:]], 1)
        points = np.concatenate([points[:1], inner.reshape(-1, 2)[1:-1], points[-1:]])
    return points


def _draw_devices(case: Case, a: Anatomy, density: np.ndarray, rng: np.random.Generator) -> None:
    """Tubes, lines and a pacemaker: radio-opaque distractors that belong to no finding mask."""
    metal = a.blank()
    heart_left, heart_right = a.heart[:, 0].max(), a.heart[:, 0].min()
    floor = a.heart[:, 1].max() - 1.5
    svc = [-0.8 * a.mediastinum_x, a.carina_y + rng.uniform(0.0, 2.5)]
    for device in case.devices:
        sign = SIDE_SIGN.get(device.side, 1.0)
        if device.kind == "endotracheal_tube":
            tube = _path([[rng.normal(0, 0.5), -40.0], [-0.3, a.knob[1]], [0.0, a.carina_y - rng.uniform(2.0, 6.0)]])
            a.lines(metal, [tube], 0.8, 0.04)
            a.lines(metal, [tube + [0.25, 0]], 0.15, 0.4)
        elif device.kind == "central_venous_catheter":
            if rng.random() < 0.6:  # subclavian approach below the clavicle
                start = [[sign * rng.uniform(9.0, 12.0), a.clavicle_y + rng.uniform(0.5, 1.5)]]
                route = [[sign * 4.0, a.clavicle_y + 1.2], [-1.5, a.clavicle_y + 2.0]]
            else:  # internal jugular approach down the neck
                start, route = [[sign * 2.8, -40.0]], [[sign * 2.5, a.clavicle_y], [-1.6, a.clavicle_y + 2.0]]
            a.lines(metal, [_path(start + route + [svc])], 0.2, 0.35)
        elif device.kind == "nasogastric_tube":
            stomach = [rng.uniform(3.0, 7.0), a.dome_y["left"] + rng.uniform(2.5, 5.0)]
            tube = _path([[0.3, -40.0], [0.8, a.carina_y], [1.5, a.dome_y["left"] + 1.0], stomach])
            a.lines(metal, [tube], 0.25, 0.3)
        elif device.kind == "pacemaker":
            centre = np.array([sign * rng.uniform(5.5, 9.0), a.clavicle_y + rng.uniform(1.5, 3.5)])
            angle = rng.uniform(-0.4, 0.4)
            rotate = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
            box = np.array([[-2.4, -2.0], [2.4, -2.0], [2.4, 2.0], [-2.4, 2.0]]) * rng.uniform(0.85, 1.1)
            leads = [_path([centre, [sign * 3.0, a.clavicle_y + 1.0], svc, [heart_right + 1.5, floor - 3.0]])]
            if rng.random() < 0.7:
                leads.append(_path([centre, [sign * 3.0, a.clavicle_y + 1.2], svc, [heart_left - 2.5, floor]]))
            a.lines(metal, leads, 0.18, 0.3)
            a.fill(metal, [centre + chaikin(box, 2) @ rotate], 0.9)  # rounded can; battery and circuit inside
            a.fill(metal, [centre + chaikin(box * [0.7, 0.55] + [0, 0.3], 2) @ rotate], 0.65)
    density += smooth(metal, 0.04 * a.px_per_cm)


def _parts(mask: np.ndarray, a: Anatomy, bilateral: bool) -> tuple[np.ndarray, list[list[float]]]:
    """Cleaned mask and one ``[x, y, w, h]`` box per connected part.

    Specks under 2% of the largest part are dropped; a bilateral finding keeps its largest part on each side.
    """
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    if rows.size == 0:
        return mask, []
    window = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))  # components of the bounding crop
    crop = mask[window].astype(np.uint8)
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(crop, connectivity=8)
    offset = np.array([cols[0], rows[0]])
    areas = stats[1:, cv2.CC_STAT_AREA]
    if bilateral:
        right = a.to_patient(centroids[1:] + offset)[:, 0] < 0
        keep = [1 + int(np.flatnonzero(sel)[np.argmax(areas[sel])]) for sel in (right, ~right) if sel.any()]
    else:
        keep = list(1 + np.flatnonzero(areas >= max(4, 0.02 * areas.max())))
    if len(keep) < count - 1:
        lookup = np.zeros(count, bool)
        lookup[keep] = True
        mask = mask.copy()
        mask[window] = lookup[labels]
    left, top = stats[:, 0] + offset[0], stats[:, 1] + offset[1]
    boxes = [[float(left[k]), float(top[k]), float(stats[k, 2]), float(stats[k, 3])] for k in sorted(keep)]
    return mask, boxes


def _compose(layers: AnatomyLayers, fx: Effects, a: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Anatomy + findings -> density: opacities replace air and hide markings, a pneumothorax removes them."""
    density, visible = layers.density, layers.air
    opacity, lucency, solid = fx.get("opacity"), fx.get("lucency"), fx.get("solid")
    if opacity is not None:
        density += layers.air_density * layers.air * opacity
        visible = visible * (1.0 - opacity)
    if lucency is not None:
        lucency = smooth(lucency, 0.08 * a.px_per_cm)
        density -= rng.uniform(0.08, 0.13) * lucency
        visible = visible * (1.0 - lucency)
    density += layers.markings * visible
    if solid is not None:
        density += solid
    return density


@dataclass(frozen=True)
class Exposure:
    """Imaging-chain settings of one film (drawn before the findings, so they do not depend on them)."""

    gain: float  # display = (gain * density + offset) ** gamma
    offset: float
    gamma: float
    haze: float  # fraction of scatter (a wide blur of the image) mixed in
    blur_px: float  # detector blur sigma at size 256
    noise: float  # quantum noise sigma at mid grey

    @classmethod
    def sample(cls, rng: np.random.Generator) -> Exposure:
        return cls(
            gain=rng.uniform(1.0, 1.15),
            offset=rng.uniform(-0.06, 0.0),
            gamma=rng.uniform(1.05, 1.6),
            haze=rng.uniform(0.0, 0.2),
            blur_px=rng.uniform(0.35, 0.9),
            noise=rng.uniform(0.004, 0.014),
        )


def _expose(density: np.ndarray, a: Anatomy, exposure: Exposure, rng: np.random.Generator) -> np.ndarray:
    """Film response, scatter haze, quantum noise, detector blur.

    The noise is added before the detector blur, as the scintillator blurs it too: the blur makes the uniform
    per-pixel noise (cheaper to draw than Gaussian) close to Gaussian and slightly correlated. Brighter pixels
    received fewer photons, so their noise is larger.
    """
    # Display roughly linear in attenuation (a log-exposure detector), then a gamma for the window setting.
    image = np.clip(np.float32(exposure.gain) * density + np.float32(exposure.offset), 0.0, 1.0)
    image = cv2.pow(image, exposure.gamma)
    if exposure.haze > 0.02:
        haze = np.float32(exposure.haze)
        image = (1 - haze) * image + haze * smooth(image, 2.0 * a.px_per_cm)
    sigma = exposure.blur_px * a.size / 256
    noise = rng.random(image.shape, dtype=np.float32) - np.float32(0.5)
    image += noise * (np.float32(3.5 * exposure.noise * max(1.0, 2.0 * sigma)) * (0.5 + image))
    image = cv2.GaussianBlur(image, (0, 0), sigma)
    return np.clip(image, 0.0, 1.0, out=image)


def _validate(case: Case, size: int) -> None:
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise ValueError(f"size must be an integer >= {MIN_SIZE}, got {size!r}")
    if case.view not in ("PA", "AP"):
        raise ValueError(f"case.view must be 'PA' or 'AP', got {case.view!r}")
    for finding in case.findings:
        if finding.kind not in RENDERERS:
            raise ValueError(f"unknown finding kind {finding.kind!r}; expected one of {FINDING_KINDS}")


def render_case_with_anatomy(case: Case, size: int, rng: np.random.Generator) -> tuple[np.ndarray, Anatomy]:
    """:func:`render_case`, also returning the patient's :class:`~training.phantoms.anatomy.Anatomy`
    (lung and heart masks, hila, midline, the pixel <-> patient-frame mapping)."""
    _validate(case, size)
    anatomy = sample_anatomy(case, size, rng)
    layers = draw_anatomy(anatomy, rng)
    exposure = Exposure.sample(rng)
    fx = Effects(size)
    for finding in sorted(case.findings, key=lambda f: _ORDER.index(f.kind)):
        mask = RENDERERS[finding.kind](finding, anatomy, fx, rng)
        finding.mask, finding.boxes = _parts(mask, anatomy, bilateral=finding.side == "bilateral")
        if finding.kind == "pleural_effusion":
            fx.effusion = finding.mask
    density = _compose(layers, fx, anatomy, rng)
    _draw_devices(case, anatomy, density, rng)
    return _expose(density, anatomy, exposure, rng), anatomy


def render_case(case: Case, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render ``case`` as a ``[size, size]`` float32 radiograph in ``[0, 1]`` and fill each finding's mask/boxes.

    Args:
        case: a sampled case (:func:`training.phantoms.schema.sample_case`); its findings are updated in place:
            ``finding.mask`` (bool ``[size, size]``, never empty) and ``finding.boxes`` (``[x, y, w, h]`` pixel
            boxes, one per connected part: two for bilateral effusion / edema, one per side).
        size: image side in pixels (>= 128).
        rng: the only source of randomness: the same generator state gives identical images and masks.

    Returns:
        The image, float32 ``[size, size]`` in ``[0, 1]``; the patient's right is on the image's left.

    Raises:
        ValueError: on a size below 128, an unknown view or an unknown finding kind.
    """
    return render_case_with_anatomy(case, size, rng)[0]
