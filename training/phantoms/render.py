"""PhantomCXR renderer: a sampled :class:`~training.phantoms.schema.Case` -> a chest-radiograph-like image.

``render_case(case, size, rng)`` draws a random patient (:mod:`training.phantoms.anatomy`), adds every finding
(filling its exact ``mask`` and ``boxes``) and the support devices, then simulates the imaging chain: film
response (exposure, gamma), scatter haze, detector blur and quantum noise.

Conventions: ``image [size, size]`` float32 in ``[0, 1]`` (air dark, bone bright); ``finding.mask`` bool
``[size, size]``; ``finding.boxes`` = ``[[x, y, w, h], ...]`` in pixels (x = column of the left edge, y = row of
the top edge, w/h = width/height in pixels), one per connected part (8-connectivity) of the mask. The patient's
RIGHT is on the image's LEFT, as on a PA/AP film. Scale: about 6-8 px/cm at ``size=256`` (the film spans 32-38
cm), so ``size_cm`` of nodules and masses is physical.

Findings change three effect maps rather than the image: ``opacity`` (the fraction of the lung's air replaced
by fluid or collapsed tissue: a fully opacified lobe reaches soft-tissue density and hides the lung markings),
``solid`` (density added by a nodule or mass, visible over bone too) and ``lucency`` (a pneumothorax: air
without lung markings).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from training.phantoms.anatomy import (
    SIDE_SIGN,
    Anatomy,
    AnatomyLayers,
    bands,
    chaikin,
    draw_anatomy,
    sample_anatomy,
    smooth,
)
from training.phantoms.schema import FINDING_KINDS, Case, Finding

MIN_SIZE = 128
_ORDER = ("cardiomegaly", "pleural_effusion", "consolidation", "atelectasis", "edema", "nodule", "mass", "pneumothorax")


class _Effects:
    """Full-resolution effect maps, allocated on first use."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.effusion: np.ndarray | None = None  # the effusion's mask, once drawn (a pneumothorax sits above it)
        self._maps: dict[str, np.ndarray] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._maps:
            self._maps[name] = np.zeros((self.size, self.size), np.float32)
        return self._maps[name]

    def __setitem__(self, name: str, value: np.ndarray) -> None:  # ``fx[name] += ...`` stays in place
        self._maps[name] = value

    def get(self, name: str) -> np.ndarray | None:
        return self._maps.get(name)


def _noise(a: Anatomy, rng: np.random.Generator, cells: float = 2.0) -> np.ndarray:
    """Smooth random field (zero mean, unit-ish variance) with features about ``cells`` cm across."""
    n = max(3, int(a.size / (cells * a.px_per_cm)))
    return cv2.resize(rng.standard_normal((n, n)).astype(np.float32), (a.size, a.size), interpolation=cv2.INTER_CUBIC)


def _pick(a: Anatomy, candidates: np.ndarray, fallback: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Patient-frame position (cm) of a random pixel of ``candidates`` (of ``fallback`` if it is empty)."""
    index = np.flatnonzero(candidates)
    if index.size == 0:
        index = np.flatnonzero(fallback)
    if index.size == 0:  # the zone is hidden (never seen in practice): use the lung's middle
        index = np.flatnonzero(a.lung_full["right"] | a.lung_full["left"])
    k = index[rng.integers(index.size)]
    return np.array([a.x_cm.flat[k], a.y_cm.flat[k]])


def _window(a: Anatomy, centre: np.ndarray, radius: float) -> tuple[slice, slice]:
    """Pixel window around a patient-frame disc (clipped to the image)."""
    col, row = a.to_pixels(centre)
    r = radius * a.px_per_cm + 2
    r0, r1 = int(max(row - r, 0)), int(min(row + r + 1, a.size))
    c0, c1 = int(max(col - r, 0)), int(min(col + r + 1, a.size))
    return slice(r0, max(r1, r0)), slice(c0, max(c1, c0))


def _in_zone(a: Anatomy, f: Finding, margin: float) -> np.ndarray:
    zone = a.zone_band(f.side, f.zone)
    return zone & (a.edge_distance(f.side) > margin)


def _nodule(f: Finding, a: Anatomy, fx: _Effects, rng: np.random.Generator) -> np.ndarray:
    """Round soft-tissue density (projected sphere), slightly lobulated when large (masses)."""
    radius = 0.5 * f.size_cm
    centre = _pick(a, _in_zone(a, f, 0.6 * radius + 0.2), a.zone_band(f.side, f.zone), rng)
    rows, cols = _window(a, centre, 1.35 * radius)
    x, y = a.x_cm[rows, cols] - np.float32(centre[0]), a.y_cm[rows, cols] - np.float32(centre[1])
    r = np.sqrt(x * x + y * y)
    if f.kind == "mass":  # lobulated outline r(theta)
        theta = np.arctan2(y, x)
        lobes = sum(rng.uniform(0.04, 0.11) * np.cos(k * theta + rng.uniform(0, 2 * np.pi)) for k in (2, 3, 5))
        r = r / (1.0 + lobes)
        amplitude = rng.uniform(0.11, 0.18)
    else:
        amplitude = rng.uniform(0.75, 1.15) * (0.05 + 0.035 * f.size_cm)
    rho = r / np.float32(radius)
    fx["solid"][rows, cols] += amplitude * np.sqrt(np.clip(1.0 - rho * rho, 0.0, 1.0)) ** 0.7
    mask = np.zeros((a.size, a.size), bool)
    mask[rows, cols] = rho < 1.0
    return mask


def _consolidation(f: Finding, a: Anatomy, fx: _Effects, rng: np.random.Generator) -> np.ndarray:
    """Lobar (a zone filled up to a sharp fissure-like edge) or patchy (several blotches) air-space opacity."""
    level = {"small": 0.55, "moderate": 0.7, "large": 0.85}[f.severity] * rng.uniform(0.85, 1.1)
    texture = 0.8 + 0.2 * _noise(a, rng, 1.5)
    lung, x, y = a.lung[f.side], a.x_cm, a.y_cm
    top, bottom = a.apex_y[f.side], a.base_y[f.side]
    third = (bottom - top) / 3.0
    k = ("upper", "middle", "lower").index(f.zone)
    if f.pattern == "patchy":
        field = np.full((a.size, a.size), np.float32(9.0))
        radius = {"small": 1.2, "moderate": 1.8, "large": 2.4}[f.severity]
        candidates, zone = _in_zone(a, f, 0.5), a.zone_band(f.side, f.zone)
        for _ in range(int(rng.integers(3, 7))):
            cx, cy = _pick(a, candidates, zone, rng)
            rx, ry = radius * rng.uniform(0.6, 1.3, 2)
            rows, cols = _window(a, np.array([cx, cy]), 1.2 * max(rx, ry))
            d = ((x[rows, cols] - cx) / rx) ** 2 + ((y[rows, cols] - cy) / ry) ** 2
            np.minimum(field[rows, cols], d, out=field[rows, cols])
        field += 0.35 * _noise(a, rng, 1.0)
        region = field < 1.0
        mask = lung & region
        opacity = np.clip(1.6 * (1.0 - field), 0.0, 1.0) * 0.85
    else:
        tilt = np.float32(np.tan(np.deg2rad(rng.uniform(-10, 10))))
        offset = x * tilt
        edge_top = top + k * third + rng.uniform(-1.0, 1.0) if k else top - 5.0  # sharp (fissure) edges
        edge_bottom = top + (k + 1) * third + rng.uniform(-1.0, 1.5) if k < 2 else bottom + 5.0
        sharp = (y + offset > edge_top) & (y + offset < edge_bottom)
        extent = {"small": 0.55, "moderate": 0.8, "large": 1.2}[f.severity]
        centre = _pick(a, _in_zone(a, f, 1.0), a.zone_band(f.side, f.zone), rng)
        rx, ry = extent * 0.5 * a.lateral_x[f.side] * rng.uniform(0.9, 1.2), extent * third * rng.uniform(0.7, 1.0)
        envelope = np.clip(2.5 * (1.0 - ((x - centre[0]) / rx) ** 2 - ((y - centre[1]) / ry) ** 2), 0.0, 1.0)
        if f.zone == "middle":  # the lower edge of a middle-zone consolidation fades (no fissure there)
            envelope *= np.clip((edge_bottom - y - offset) / 1.5, 0.0, 1.0)
        region = sharp & (envelope > 0.25)
        mask = lung & region
        opacity = envelope
        if f.severity != "small" and rng.random() < 0.5:  # air bronchograms: lucent tubes inside the opacity
            opacity = opacity * (1.0 - 0.35 * _bronchi(a, f.side, centre, rx, rng))
    _add_opacity(fx, region, np.float32(level) * opacity * texture)  # the air map confines it to the lung
    return mask


def _bronchi(a: Anatomy, side: str, centre: np.ndarray, reach: float, rng: np.random.Generator) -> np.ndarray:
    hx, hy = a.hilum[side]
    lines = []
    for _ in range(int(rng.integers(2, 5))):
        end = centre + rng.normal(0.0, 0.5 * reach, 2)
        lines.append(np.linspace([hx, hy], end, 6) + rng.normal(0.0, 0.2, (6, 2)))
    return smooth(a.lines(a.blank(), lines, 0.3, 1.0), 0.05 * a.px_per_cm)


def _add_opacity(fx: _Effects, mask: np.ndarray, opacity: np.ndarray) -> None:
    """Opacities of several findings combine like independent absorbers: 1 - (1 - a)(1 - b)."""
    target = fx["opacity"]
    value = np.where(mask, np.clip(opacity, 0.0, 1.0), 0.0)
    target += value * (1.0 - target)


def _atelectasis(f: Finding, a: Anatomy, fx: _Effects, rng: np.random.Generator) -> np.ndarray:
    """Plate-like (one thick band) or linear (1-3 thin lines) dense bands, near horizontal."""
    grade = ("mild", "moderate", "severe").index(f.severity)
    centre = _pick(a, _in_zone(a, f, 1.2), a.zone_band(f.side, f.zone), rng)
    if f.pattern == "plate":
        count, width, length = 1, (0.45, 0.7, 1.0)[grade] * rng.uniform(0.85, 1.25), rng.uniform(3.5, 6.5) + grade
    else:
        count, width, length = int(rng.integers(1, 4)), rng.uniform(0.22, 0.38), rng.uniform(2.5, 5.0) + 0.5 * grade
    tilt = np.deg2rad(rng.uniform(-12, 20))  # near horizontal, the lateral end more often lower
    direction = np.array([SIDE_SIGN[f.side] * np.cos(tilt), np.sin(tilt)])  # pointing laterally
    normal = np.array([-direction[1], direction[0]])
    t = np.linspace(-0.5, 0.5, 7)[:, None] * length
    bend = rng.normal(0.0, 0.3) * (1 - (2 * t / length) ** 2)
    lines = [centre + t * direction + (bend + i * rng.uniform(1.0, 1.6)) * normal for i in range(count)]
    band = a.fill(a.blank(np.uint8), bands(np.array(lines), width, 0.7 * width), 1).astype(bool)
    mask = band & a.lung[f.side]
    level = (0.5, 0.6, 0.7)[grade] * rng.uniform(0.85, 1.15)
    _add_opacity(fx, band, level * smooth(band.astype(np.float32), 0.08 * a.px_per_cm) ** 0.5)
    return mask


def _effusion_side(f: Finding, side: str, a: Anatomy, fx: _Effects, rng: np.random.Generator) -> np.ndarray:
    """Basal fluid with a meniscus rising along the lateral wall; it blunts the angle and hides the dome."""
    height = {"small": (1.5, 3.5), "moderate": (4.5, 8.0), "large": (9.0, 14.0)}[f.severity]
    lung_height = a.base_y[side] - a.apex_y[side]
    level = a.base_y[side] - min(rng.uniform(*height), 0.65 * lung_height)  # fluid top at the lateral wall
    curve = rng.uniform(0.2, 0.4) * (a.base_y[side] - level) + 0.8
    medial = a.mediastinum_x
    u = np.clip((a.x_cm * np.float32(SIDE_SIGN[side]) - medial) / np.float32(a.lateral_x[side] - medial), 0.0, 1.0)
    depth = a.y_cm - (level + curve * (1.0 - u) ** 2)  # below the meniscus when > 0
    region = a.lung_full[side] & (depth > 0.1)
    fluid = np.clip(depth / 1.2, 0.0, 1.0) ** 0.6
    fx["solid"] += np.where(region, fluid * rng.uniform(0.02, 0.05), 0.0).astype(np.float32)
    _add_opacity(fx, smooth(region.astype(np.float32), 0.15 * a.px_per_cm) > 0.01, fluid)
    mask = a.lung[side] & region
    return mask


def _effusion(f: Finding, a: Anatomy, fx: _Effects, rng: np.random.Generator) -> np.ndarray:
    sides = SIDE_SIGN if f.side == "bilateral" else (f.side,)
    return np.logical_or.reduce([_effusion_side(f, side, a, fx, rng) for side in sides])


def _pneumothorax(f: Finding, a: Anatomy, fx: _Effects, rng: np.random.Generator) -> np.ndarray:
    """Lucent rim along the apex or lateral wall, without lung markings, bounded by a thin visceral pleural line."""
    sign, hx = SIDE_SIGN[f.side], a.hilum[f.side][0]
    grade = ("small", "moderate", "large").index(f.severity)
    rim = (rng.uniform(0.9, 1.6), rng.uniform(1.7, 2.8), rng.uniform(3.0, 4.5))[grade]
    x, y, apex = a.x_cm, a.y_cm, a.apex_y[f.side]
    medial = x * np.float32(sign) < np.float32(sign * hx)
    if f.zone == "apical":
        reach = (6.0, 10.0, 16.0)[grade] * rng.uniform(0.8, 1.2)
        taper = np.clip(1.0 - (y - apex) / np.float32(reach), 0.0, 1.0) ** 0.7
        medial &= y > apex + 3.0
    else:
        middle = apex + rng.uniform(0.4, 0.6) * (a.base_y[f.side] - apex)
        reach = (4.0, 6.5, 9.0)[grade] * rng.uniform(0.8, 1.2)
        taper = np.clip(1.0 - np.abs(y - np.float32(middle)) / np.float32(reach), 0.0, 1.0) ** 0.5
    # Distance to the chest wall only: mediastinum, heart, aortic knob and abdomen count as "inside".
    lung = a.lung[f.side]
    inside = (a.lung_full[f.side] | medial | a.abdomen).astype(np.uint8)
    distance = cv2.distanceTransform(inside, cv2.DIST_L2, 3) / np.float32(a.px_per_cm)
    thickness = np.float32(rim) * taper
    mask = lung & (distance < thickness)
    if fx.effusion is not None and (mask & ~fx.effusion).any():  # the air sits above any fluid
        mask &= ~fx.effusion
    edge = lung & (distance >= thickness) & (thickness > 0.3)
    line = edge & (distance < thickness + np.float32(max(0.1, 1.2 / a.px_per_cm)))
    fx["lucency"][mask] = 1.0
    fx["solid"] += np.where(line, rng.uniform(0.06, 0.1), 0.0).astype(np.float32)
    _add_opacity(fx, edge & (distance < thickness + 0.8), np.float32(0.08 + 0.05 * grade))  # collapsed lung
    return mask


def _edema(f: Finding, a: Anatomy, fx: _Effects, rng: np.random.Generator) -> np.ndarray:
    """Bilateral perihilar ("bat-wing") haze fading towards the periphery."""
    grade = ("mild", "moderate", "severe").index(f.severity)
    level, scale = (0.35, 0.5, 0.65)[grade] * rng.uniform(0.9, 1.15), (0.8, 1.0, 1.2)[grade]
    texture = 1.0 + 0.25 * _noise(a, rng, 1.5)
    parts = []
    for side, sign in SIDE_SIGN.items():
        hx, hy = a.hilum[side]
        cx, cy = hx + sign * rng.uniform(0.5, 2.0), hy + rng.uniform(-0.5, 1.5)
        rx, ry = scale * rng.uniform(3.5, 5.0), scale * rng.uniform(4.5, 6.5)
        rows, cols = _window(a, np.array([cx, cy]), 2.0 * max(rx, ry))
        x, y = a.x_cm[rows, cols], a.y_cm[rows, cols]
        haze = np.zeros((a.size, a.size), np.float32)
        haze[rows, cols] = np.exp(-1.5 * (((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2))
        haze *= texture
        mask = a.lung[side] & (haze > 0.4)
        _add_opacity(fx, haze > 0.05, level * np.clip(haze * 1.3 - 0.1, 0.0, 1.0))
        parts.append(mask)
    return parts[0] | parts[1]


def _cardiomegaly(f: Finding, a: Anatomy, fx: _Effects, rng: np.random.Generator) -> np.ndarray:
    """The heart was drawn enlarged by :func:`sample_anatomy`; the mask is its silhouette."""
    return a.heart_mask.copy()


_RENDERERS = {
    "consolidation": _consolidation,
    "atelectasis": _atelectasis,
    "pleural_effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "cardiomegaly": _cardiomegaly,
    "nodule": _nodule,
    "mass": _nodule,
    "edema": _edema,
}


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


def _compose(layers: AnatomyLayers, fx: _Effects, a: Anatomy, rng: np.random.Generator) -> np.ndarray:
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
        if finding.kind not in _RENDERERS:
            raise ValueError(f"unknown finding kind {finding.kind!r}; expected one of {FINDING_KINDS}")


def render_case_with_anatomy(case: Case, size: int, rng: np.random.Generator) -> tuple[np.ndarray, Anatomy]:
    """:func:`render_case`, also returning the patient's :class:`~training.phantoms.anatomy.Anatomy`
    (lung and heart masks, hila, midline, the pixel <-> patient-frame mapping)."""
    _validate(case, size)
    anatomy = sample_anatomy(case, size, rng)
    layers = draw_anatomy(anatomy, rng)
    exposure = Exposure.sample(rng)
    fx = _Effects(size)
    for finding in sorted(case.findings, key=lambda f: _ORDER.index(f.kind)):
        mask = _RENDERERS[finding.kind](finding, anatomy, fx, rng)
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
