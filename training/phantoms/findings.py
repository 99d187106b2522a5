"""PhantomCXR findings: each finding kind drawn into the effect maps of one patient (its exact mask returned).

Findings change three effect maps rather than the image: ``opacity`` (the fraction of the lung's air replaced
by fluid or collapsed tissue: a fully opacified lobe reaches soft-tissue density and hides the lung markings),
``solid`` (density added by a nodule or mass, visible over bone too) and ``lucency`` (a pneumothorax: air
without lung markings). :data:`RENDERERS` maps a finding kind to its drawing function; the renderer
(:mod:`training.phantoms.render`) composes the maps with the patient and simulates the imaging chain.
"""

from __future__ import annotations

import cv2
import numpy as np

from training.phantoms.anatomy import SIDE_SIGN, Anatomy, bands, smooth
from training.phantoms.schema import Finding


class Effects:
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


def _nodule(f: Finding, a: Anatomy, fx: Effects, rng: np.random.Generator) -> np.ndarray:
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


def _consolidation(f: Finding, a: Anatomy, fx: Effects, rng: np.random.Generator) -> np.ndarray:
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


def _add_opacity(fx: Effects, mask: np.ndarray, opacity: np.ndarray) -> None:
    """Opacities of several findings combine like independent absorbers: 1 - (1 - a)(1 - b)."""
    target = fx["opacity"]
    value = np.where(mask, np.clip(opacity, 0.0, 1.0), 0.0)
    target += value * (1.0 - target)


def _atelectasis(f: Finding, a: Anatomy, fx: Effects, rng: np.random.Generator) -> np.ndarray:
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


def _effusion_side(f: Finding, side: str, a: Anatomy, fx: Effects, rng: np.random.Generator) -> np.ndarray:
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


def _effusion(f: Finding, a: Anatomy, fx: Effects, rng: np.random.Generator) -> np.ndarray:
    sides = SIDE_SIGN if f.side == "bilateral" else (f.side,)
    return np.logical_or.reduce([_effusion_side(f, side, a, fx, rng) for side in sides])


def _pneumothorax(f: Finding, a: Anatomy, fx: Effects, rng: np.random.Generator) -> np.ndarray:
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


def _edema(f: Finding, a: Anatomy, fx: Effects, rng: np.random.Generator) -> np.ndarray:
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


def _cardiomegaly(f: Finding, a: Anatomy, fx: Effects, rng: np.random.Generator) -> np.ndarray:
    """The heart was drawn enlarged by :func:`sample_anatomy`; the mask is its silhouette."""
    return a.heart_mask.copy()


RENDERERS = {
    "consolidation": _consolidation,
    "atelectasis": _atelectasis,
    "pleural_effusion": _effusion,
    "pneumothorax": _pneumothorax,
    "cardiomegaly": _cardiomegaly,
    "nodule": _nodule,
    "mass": _nodule,
    "edema": _edema,
}
