"""PhantomFundus renderer: a sampled :class:`~training.phantoms.fundus.schema.FundusCase` -> an RGB photograph.

``render_fundus_case(case, size, rng)`` draws a random eye (:mod:`training.phantoms.fundus.anatomy`): an
orange-red textured fundus with illumination falloff, the darker macula, the optic disc and its cup, the vessel
tree; then every lesion (filling its exact ``mask`` and its ``boxes``) and the camera: colour balance, exposure,
gamma, defocus blur, sensor noise and the circular field of view.

Conventions: ``image [size, size, 3]`` float32 RGB in ``[0, 1]``; ``lesion.mask`` bool ``[size, size]``;
``lesion.boxes`` = ``[[x, y, w, h], ...]`` in pixels (x = column of the left edge, y = row of the top edge, w/h =
width/height in pixels), one per group of lesions (lesions closer than about a quarter disc diameter share a
box, as annotators box clusters of exudates or microaneurysms). ``case.disc_box`` is the optic disc's box.
"""

from __future__ import annotations

import cv2
import numpy as np

from .anatomy import FundusAnatomy, grid, sample_anatomy, smooth_noise
from .schema import LESION_KINDS, REGION_WEIGHTS, REGIONS, FundusCase, Lesion

MIN_SIZE = 128
SHIFT = 4  # cv2 fixed-point bits: sub-pixel positions and radii
_ONE = 1 << SHIFT

# Lesion colours (linear RGB before the camera) and opacity ranges.
_COLOURS = {
    "hard_exudates": ((0.98, 0.86, 0.34), (0.8, 1.0)),
    "haemorrhage": ((0.38, 0.04, 0.03), (0.75, 0.95)),
    "microaneurysms": ((0.42, 0.03, 0.03), (0.8, 1.0)),
    "cotton_wool_spots": ((0.96, 0.9, 0.8), (0.6, 0.85)),
    "drusen": ((0.95, 0.78, 0.38), (0.55, 0.8)),
}


def _fixed(point) -> tuple[int, int]:
    return int(round(point[0] * _ONE)), int(round(point[1] * _ONE))


def _ellipse(canvas: np.ndarray, centre, axes, angle: float, value: int = 255) -> None:
    axes = (max(int(round(axes[0] * _ONE)), _ONE // 2), max(int(round(axes[1] * _ONE)), _ONE // 2))
    cv2.ellipse(canvas, _fixed(centre), axes, float(angle), 0, 360, value, -1, cv2.LINE_AA, SHIFT)


def _cluster(centre: np.ndarray, count: int, spread: float, rng: np.random.Generator, ring: bool = False):
    """``count`` points around ``centre``: Gaussian scatter, or on a ring (circinate exudates)."""
    if ring:
        angles = rng.uniform(0, 2 * np.pi, count)
        radii = spread * rng.uniform(0.75, 1.0, count)
        return centre + np.stack([np.cos(angles), np.sin(angles)], axis=-1) * radii[:, None]
    return centre + rng.normal(0.0, 0.5 * spread, (count, 2))


def _place(lesion: Lesion, case: FundusCase, a: FundusAnatomy, rng: np.random.Generator) -> np.ndarray:
    """The lesion's centre. A region cut off on this photograph (e.g. nasal to a disc at the frame's edge) is
    replaced by another region of the kind's distribution, not used by the case's other lesions; the report is
    written after rendering, so it names the region the lesion is in."""
    point = a.sample_point(lesion.region, rng)
    while point is None:
        used = {other.region for other in case.findings}
        pairs = zip(REGIONS, REGION_WEIGHTS[lesion.kind], strict=True)
        weights = np.array([0.0 if region in used else weight for region, weight in pairs])
        if weights.sum() == 0:  # every region of the kind is used or cut off: the macula is always on the photo
            weights = np.array([1.0 if r == "macula" else 0.0 for r in REGIONS])
        lesion.region = str(rng.choice(REGIONS, p=weights / weights.sum()))
        point = a.sample_point(lesion.region, rng)
    return point


def _draw_lesion(
    lesion: Lesion, case: FundusCase, a: FundusAnatomy, rng: np.random.Generator
) -> tuple[np.ndarray, bool, np.ndarray]:
    """The lesion's opacity ``[size, size]`` uint8, whether its edges are soft (blurred afterwards), its centre."""
    dd, canvas = a.dd, np.zeros((a.size, a.size), np.uint8)
    centre = _place(lesion, case, a, rng)
    kind, n = lesion.kind, lesion.count
    if kind == "hard_exudates":
        spread = dd * rng.uniform(0.3, 0.6)
        for point in _cluster(centre, n, spread, rng, ring=lesion.pattern == "circinate"):
            r = dd * rng.uniform(0.025, 0.07)
            _ellipse(canvas, point, (r, r * rng.uniform(0.5, 1.0)), rng.uniform(0, 180))
        return canvas, False, centre
    if kind == "haemorrhage":
        points = [centre] if n == 1 else _cluster(centre, n, dd * rng.uniform(0.35, 0.6), rng)
        for point in points:
            if lesion.pattern == "dot":
                r = dd * rng.uniform(0.045, 0.08)
                _ellipse(canvas, point, (r, r), 0.0)
            elif lesion.pattern == "blot":
                r = dd * rng.uniform(0.1, 0.22)
                for _ in range(3):  # irregular: a few overlapping ellipses
                    offset = rng.normal(0.0, 0.25 * r, 2)
                    _ellipse(
                        canvas,
                        point + offset,
                        (r * rng.uniform(0.6, 1.0), r * rng.uniform(0.5, 0.9)),
                        rng.uniform(0, 180),
                    )
            else:  # flame: along the nerve fibres, i.e. radial from the disc
                radial = np.degrees(np.arctan2(point[1] - a.disc[1], point[0] - a.disc[0]))
                length, width = dd * rng.uniform(0.18, 0.35), dd * rng.uniform(0.04, 0.08)
                _ellipse(canvas, point, (length, width), radial + rng.uniform(-12, 12))
        return canvas, False, centre
    if kind == "microaneurysms":
        for point in _cluster(centre, n, dd * rng.uniform(0.35, 0.7), rng):
            r = max(0.7, dd * rng.uniform(0.022, 0.038))
            _ellipse(canvas, point, (r, r), 0.0)
        return canvas, False, centre
    if kind == "cotton_wool_spots":
        points = [centre] if n == 1 else _cluster(centre, n, dd * 0.6, rng)
        for point in points:
            r = dd * rng.uniform(0.14, 0.26)
            for _ in range(4):  # fluffy outline
                offset = rng.normal(0.0, 0.3 * r, 2)
                _ellipse(
                    canvas, point + offset, (r * rng.uniform(0.5, 0.9), r * rng.uniform(0.4, 0.7)), rng.uniform(0, 180)
                )
        return canvas, True, centre
    if kind == "drusen":
        spread = dd * rng.uniform(0.35, 0.7)
        small, large = (0.035, 0.06) if lesion.pattern == "hard" else (0.06, 0.11)
        for point in _cluster(centre, n, spread, rng):
            r = dd * rng.uniform(small, large)
            _ellipse(canvas, point, (r, r * rng.uniform(0.8, 1.0)), rng.uniform(0, 180))
        return canvas, lesion.pattern == "soft", centre
    raise ValueError(f"unknown lesion kind {kind!r}; expected one of {LESION_KINDS}")


def _boxes(mask: np.ndarray, group_px: float) -> list[list[float]]:
    """One ``[x, y, w, h]`` box per group of mask parts closer than ``group_px``, tight around the mask."""
    radius = max(1, int(round(group_px / 2)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    groups = cv2.dilate(mask.astype(np.uint8), kernel)
    count, labels = cv2.connectedComponents(groups, connectivity=8)
    boxes = []
    for label in range(1, count):
        rows, cols = np.nonzero((labels == label) & mask)
        if rows.size:
            x0, y0 = int(cols.min()), int(rows.min())
            boxes.append([float(x0), float(y0), float(cols.max() - x0 + 1), float(rows.max() - y0 + 1)])
    return boxes


def _background(a: FundusAnatomy, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Textured fundus with macular pigment and illumination: ``(image [3, S, S], illumination [S, S])``.

    Channel-first while drawing: every operation then runs on contiguous planes (about 5x faster than HWC).
    """
    x, y = grid(a.size)
    dx, dy = (x - np.float32(a.centre[0])) / np.float32(a.radius), (y - np.float32(a.centre[1])) / np.float32(a.radius)
    r2 = dx * dx + dy * dy
    steep = np.float32(rng.uniform(0.0, 0.6))  # falloff from quadratic (0) to partly quartic (1)
    tilt = rng.uniform(-0.12, 0.12, 2).astype(np.float32)
    falloff = np.float32(rng.uniform(0.35, 0.6))
    illumination = (1.0 - falloff * r2 * ((1.0 - steep) + steep * r2)) * (1.0 + tilt[0] * dx + tilt[1] * dy)
    texture = 1.0 + 0.05 * smooth_noise(a.size, a.size / (0.35 * a.dd), rng)
    texture += 0.035 * smooth_noise(a.size, a.size / (0.12 * a.dd), rng)
    fx, fy = x - np.float32(a.fovea[0]), y - np.float32(a.fovea[1])
    macula = cv2.exp((fx * fx + fy * fy) * np.float32(-1.0 / (2 * (0.6 * a.dd) ** 2)))
    pigment = rng.uniform(0.75, 1.1)  # lighter or darker fundus
    base = np.array([rng.uniform(0.82, 0.95), rng.uniform(0.34, 0.5), rng.uniform(0.05, 0.15)], np.float32) * pigment
    shade = illumination * texture * (1.0 - np.float32(rng.uniform(0.2, 0.4)) * macula)
    image = shade[None] * base[:, None, None]
    image[1:] *= 1.0 - 0.2 * macula  # the macula is browner, not only darker
    return image, illumination


def _disc(image: np.ndarray, a: FundusAnatomy, rng: np.random.Generator) -> list[float]:
    """Paint the optic disc (pale, pink-yellow) and its brighter cup; return the disc's ``[x, y, w, h]`` box."""
    rx, ry = a.disc_radii
    x0, x1 = int(max(a.disc[0] - 1.3 * rx, 0)), int(min(a.disc[0] + 1.3 * rx + 1, a.size))
    y0, y1 = int(max(a.disc[1] - 1.3 * ry, 0)), int(min(a.disc[1] + 1.3 * ry + 1, a.size))
    x, y = grid(a.size)
    x, y = x[y0:y1, x0:x1] - np.float32(a.disc[0]), y[y0:y1, x0:x1] - np.float32(a.disc[1])
    d = np.sqrt((x / np.float32(rx)) ** 2 + (y / np.float32(ry)) ** 2)
    rim = np.clip((1.08 - d) / 0.25, 0.0, 1.0)[..., None]
    cup_x = x + np.float32(a.nasal * 0.08 * rx)  # the cup sits slightly temporally
    cup = np.sqrt((cup_x / np.float32(rx)) ** 2 + (y / np.float32(ry)) ** 2) / np.float32(a.cup_ratio)
    cup_weight = np.clip((1.0 - cup) / 0.6, 0.0, 1.0)[..., None]
    brightness = rng.uniform(0.85, 1.05)
    disc_colour = np.array([1.0, rng.uniform(0.72, 0.84), rng.uniform(0.35, 0.5)], np.float32) * brightness
    cup_colour = np.array([1.0, 0.95, 0.75], np.float32) * brightness
    rim, cup_weight = rim[..., 0], cup_weight[..., 0]
    for channel in range(3):
        patch = image[channel, y0:y1, x0:x1]
        paint = disc_colour[channel] * (1.0 - cup_weight) + cup_colour[channel] * cup_weight
        patch[:] = patch * (1.0 - rim) + rim * paint
    left, top = max(a.disc[0] - rx, 0.0), max(a.disc[1] - ry, 0.0)
    right, bottom = min(a.disc[0] + rx, a.size), min(a.disc[1] + ry, a.size)
    return [round(float(left), 2), round(float(top), 2), round(float(right - left), 2), round(float(bottom - top), 2)]


def _vessels(image: np.ndarray, a: FundusAnatomy, illumination: np.ndarray) -> None:
    """Draw veins (dark red, wider) and arteries (lighter, narrower) over the fundus and the disc."""
    for vein in (True, False):
        canvas = np.zeros((a.size, a.size), np.uint8)
        for vessel in (v for v in a.vessels if v.vein == vein):
            thickness = max(1, int(round(vessel.width)))
            value = int(255 * min(1.0, vessel.width))  # sub-pixel vessels are fainter
            points = np.round(vessel.points * _ONE).astype(np.int32)
            cv2.polylines(canvas, [points], False, value, thickness, cv2.LINE_AA, SHIFT)
        weight = canvas.astype(np.float32) * np.float32((0.7 if vein else 0.5) / 255.0)
        colour = np.array((0.42, 0.06, 0.05) if vein else (0.62, 0.13, 0.07), np.float32)
        lit = weight * illumination
        image *= 1.0 - weight
        image += lit[None] * colour[:, None, None]


def _camera(image: np.ndarray, a: FundusAnatomy, rng: np.random.Generator) -> np.ndarray:
    """Colour balance, exposure, gamma, defocus, sensor noise, then the circular field of view: ``[S, S, 3]``."""
    sigma = rng.uniform(0.3, 0.9) * a.size / 256
    gains = rng.uniform(0.9, 1.1, 3) * rng.uniform(0.85, 1.15)
    gamma = rng.uniform(0.85, 1.15)
    noise = (rng.random((a.size, a.size), dtype=np.float32) - np.float32(0.5)) * np.float32(
        np.sqrt(12.0) * rng.uniform(0.006, 0.02)
    )  # uniform, with the standard deviation drawn here (cheaper than Gaussian draws)
    x, y = grid(a.size)
    distance = cv2.sqrt((x - np.float32(a.centre[0])) ** 2 + (y - np.float32(a.centre[1])) ** 2)
    field = np.clip((np.float32(a.radius) - distance) / np.float32(1.5 * a.size / 256), 0.0, 1.0)
    planes = []
    for channel, noise_weight in zip(range(3), (1.0, 0.8, 0.6), strict=True):
        plane = cv2.GaussianBlur(image[channel], (0, 0), sigma)
        plane = cv2.pow(np.clip(plane * np.float32(gains[channel]), 0.0, 1.0), gamma)
        plane += noise * np.float32(noise_weight)  # luminance-like noise
        plane *= field
        planes.append(np.clip(plane, 0.0, 1.0, out=plane))
    return cv2.merge(planes)


def _validate(case: FundusCase, size: int) -> None:
    if size < MIN_SIZE:
        raise ValueError(f"size must be >= {MIN_SIZE}, got {size}")
    if case.eye not in ("right", "left"):
        raise ValueError(f"eye must be 'right' or 'left', got {case.eye!r}")
    for lesion in case.findings:
        if lesion.kind not in LESION_KINDS:
            raise ValueError(f"unknown lesion kind {lesion.kind!r}; expected one of {LESION_KINDS}")


def render_fundus_case_with_anatomy(
    case: FundusCase, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, FundusAnatomy]:
    """:func:`render_fundus_case`, also returning the eye it drew."""
    _validate(case, size)
    anatomy = sample_anatomy(size, case.eye, case.cup_ratio, rng)
    image, illumination = _background(anatomy, rng)
    case.disc_box = _disc(image, anatomy, rng)
    _vessels(image, anatomy, illumination)
    x, y = grid(size)
    in_view = (x - np.float32(anatomy.centre[0])) ** 2 + (y - np.float32(anatomy.centre[1])) ** 2 < np.float32(
        (anatomy.radius - 1.5) ** 2
    )
    for lesion in case.findings:
        opacity, soft, centre = _draw_lesion(lesion, case, anatomy, rng)
        if soft:
            opacity = cv2.GaussianBlur(opacity, (0, 0), max(0.6, 0.04 * anatomy.dd))
        opacity[~in_view] = 0  # nothing is photographed outside the field of view
        if not opacity.any():  # never seen: the centre is well inside the field of view
            opacity[int(centre[1]), int(centre[0])] = 255
        mask = opacity >= 110
        if not mask.any():  # a sub-pixel lesion still marks one pixel
            mask[np.unravel_index(int(np.argmax(opacity)), mask.shape)] = True
        colour, (low, high) = _COLOURS[lesion.kind]
        alpha = opacity.astype(np.float32) * np.float32(rng.uniform(low, high) / 255.0)
        rows, cols = np.nonzero(opacity)
        box = slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1)
        weight, light = alpha[box], illumination[box]
        for channel in range(3):
            patch = image[(channel, *box)]
            patch[:] = patch * (1.0 - weight) + weight * (light * np.float32(colour[channel]))
        lesion.mask = mask
        lesion.boxes = _boxes(mask, 0.25 * anatomy.dd)
    return _camera(image, anatomy, rng), anatomy


def render_fundus_case(case: FundusCase, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render ``case`` as a ``[size, size, 3]`` float32 RGB photograph in ``[0, 1]``; fill masks and boxes.

    Args:
        case: a sampled case (modified in place: every lesion's ``mask`` and ``boxes``, and ``disc_box``).
        size: image side in pixels (>= 128).
        rng: the only source of randomness.

    Raises:
        ValueError: for a size below 128, an unknown eye or lesion kind.
    """
    return render_fundus_case_with_anatomy(case, size, rng)[0]
