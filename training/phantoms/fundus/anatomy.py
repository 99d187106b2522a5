"""A random eye: field of view, optic disc and cup, macula and fovea, vessel tree, and the named regions.

Geometry is in image pixels (x = column, y = row). Lengths scale with the disc diameter ``dd`` (about 0.29-0.35
field-of-view radii, as on 45-degree photographs such as IDRiD's). ``nasal`` is the image-x sign of the nasal
direction: +1 for a right eye (disc on the image's right), -1 for a left eye.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from .schema import REGIONS


@lru_cache(maxsize=4)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(x, y)``, each float32 ``[size, size]`` (read-only, cached)."""
    coords = np.arange(size, dtype=np.float32)
    x, y = np.meshgrid(coords, coords)
    x.flags.writeable = y.flags.writeable = False
    return x, y


def smooth_noise(size: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean smooth random field ``[size, size]`` with about ``cells`` features across the image."""
    n = max(3, int(cells))
    return cv2.resize(rng.standard_normal((n, n)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)


@dataclass
class Vessel:
    """A vessel segment: ``points [N, 2]`` (x, y) pixels, drawn ``width`` px wide; veins are darker and wider."""

    points: np.ndarray
    width: float
    vein: bool


@dataclass
class FundusAnatomy:
    """One eye as photographed.

    Attributes:
        size: image side in pixels.
        nasal: +1 (right eye: nasal is image-right) or -1 (left eye).
        centre, radius: field of view (circle) in pixels; it may be cut by the frame.
        dd: optic disc diameter in pixels (the unit of every other length).
        disc: disc centre ``(x, y)``; disc_radii: ``(rx, ry)`` (discs are slightly taller than wide).
        cup_ratio: cup-to-disc ratio.
        fovea: fovea centre ``(x, y)``: temporal to the disc and slightly below it.
        arcades: the main vein of each arcade (``"superotemporal"``, ``"inferotemporal"``, ``"superonasal"``,
            ``"inferonasal"``): ``[N, 2]`` points from the disc outwards.
        vessels: every vessel segment to draw.
    """

    size: int
    nasal: int
    centre: np.ndarray
    radius: float
    dd: float
    disc: np.ndarray
    disc_radii: tuple[float, float]
    cup_ratio: float
    fovea: np.ndarray
    arcades: dict[str, np.ndarray] = field(default_factory=dict)
    vessels: list[Vessel] = field(default_factory=list)

    def to_image(self, u: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
        """Eye-frame offsets from the disc centre (``u`` nasal, ``v`` down, pixels) -> image ``(x, y)``."""
        return np.stack([self.disc[0] + self.nasal * np.asarray(u), self.disc[1] + np.asarray(v)], axis=-1)

    def inside(self, point: np.ndarray, fraction: float = 0.9) -> bool:
        """Whether a point lies within ``fraction`` of the field of view and inside the frame."""
        in_circle = np.hypot(*(point - self.centre)) < fraction * self.radius
        margin = 0.04 * self.size
        return bool(in_circle and margin <= point[0] < self.size - margin and margin <= point[1] < self.size - margin)

    def sample_point(self, region: str, rng: np.random.Generator) -> np.ndarray | None:
        """A random lesion centre ``(x, y)`` in a named region, well inside the field of view and the frame;
        ``None`` when 30 tries all fell outside (the region is cut off on this photograph: choose another)."""
        if region not in REGIONS:
            raise ValueError(f"unknown region {region!r}; expected one of {REGIONS}")
        for _ in range(30):
            point = self._region_point(region, rng)
            if self.inside(point, 0.85):
                return point
        return None

    def _region_point(self, region: str, rng: np.random.Generator) -> np.ndarray:
        dd = self.dd
        if region == "macula":
            r, angle = 0.75 * dd * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            return self.fovea + r * np.array([np.cos(angle), np.sin(angle)])
        if region == "temporal_to_macula":
            return self.fovea + np.array([-self.nasal * rng.uniform(1.1, 2.0) * dd, rng.uniform(-0.6, 0.6) * dd])
        if region in ("superotemporal_arcade", "inferotemporal_arcade"):
            vein = self.arcades[region.split("_")[0]]
            k = int(rng.uniform(0.3, 0.85) * (len(vein) - 1))
            tangent = vein[min(k + 1, len(vein) - 1)] - vein[max(k - 1, 0)]
            normal = np.array([-tangent[1], tangent[0]]) / max(float(np.hypot(*tangent)), 1e-6)
            return vein[k] + normal * rng.uniform(-0.45, 0.45) * dd
        if region == "peripapillary":
            r, angle = rng.uniform(0.65, 0.95) * dd, rng.uniform(0, 2 * np.pi)
            return self.to_image(r * np.cos(angle), r * np.sin(angle))
        angles = {"superonasal": (35, 80), "inferonasal": (-80, -35), "nasal_to_disc": (-20, 20)}[region]
        angle = np.deg2rad(rng.uniform(*angles))
        r = rng.uniform(1.0, 2.2) * dd if region == "nasal_to_disc" else rng.uniform(1.1, 2.4) * dd
        return self.to_image(r * np.cos(angle), -r * np.sin(angle))


def _arc(a: float, b: float, centre_u: float, centre_v: float, theta: np.ndarray, sign: int) -> np.ndarray:
    """Eye-frame points ``[N, 2]`` (u, v) of an elliptic arc; ``sign`` -1 goes up, +1 down."""
    return np.stack([centre_u + a * np.cos(theta), centre_v + sign * b * np.sin(theta)], axis=-1)


def _branch(start: np.ndarray, direction: np.ndarray, length: float, bend: float, n: int = 8) -> np.ndarray:
    """A gently curved branch ``[n, 2]`` from ``start`` along ``direction`` (unit), bending by ``bend`` radians."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    angle0 = np.arctan2(direction[1], direction[0])
    angles = angle0 + bend * t[:, 0]
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=-1) * (length / (n - 1))
    return start + np.vstack([np.zeros((1, 2)), np.cumsum(steps[:-1], axis=0)])


def _add_vessel(anatomy: FundusAnatomy, points: np.ndarray, width: float, vein: bool, pieces: int = 3) -> None:
    """Split a vessel into ``pieces`` tapering segments (each one step narrower)."""
    bounds = np.linspace(0, len(points) - 1, pieces + 1).astype(int)
    for k in range(pieces):
        segment = points[bounds[k] : bounds[k + 1] + 1]
        anatomy.vessels.append(Vessel(segment, width * (1.0 - 0.22 * k), vein))


def _vessel_tree(anatomy: FundusAnatomy, rng: np.random.Generator) -> None:
    """Four arcades (artery + vein each) leaving the disc, curving around the macula or running nasally, with
    branches; small branches point towards the fovea but stop short of it (the foveal avascular zone)."""
    dd = anatomy.dd
    fovea_u = -float(np.hypot(*(anatomy.fovea - anatomy.disc)))
    fovea_v = float(anatomy.fovea[1] - anatomy.disc[1])
    vein_width = max(1.2, 0.06 * dd * rng.uniform(0.85, 1.15))
    theta = np.linspace(0.08, 2.45, 40)
    wiggle = 0.06 * dd * np.sin(theta[:, None] * rng.uniform(3, 6) + rng.uniform(0, 6.3))
    for name, sign in (("superotemporal", -1), ("inferotemporal", 1)):
        a = abs(fovea_u) * rng.uniform(1.0, 1.2)
        b = dd * rng.uniform(1.6, 2.1)
        for vein, scale in ((True, 1.0), (False, rng.uniform(0.86, 0.95))):
            uv = _arc(a * scale, b * scale, -a * scale + 0.05 * dd, 0.5 * fovea_v, theta, sign) + wiggle * scale
            points = anatomy.to_image(uv[:, 0], uv[:, 1])
            _add_vessel(anatomy, points, vein_width * (1.0 if vein else 0.72), vein)
            if vein:
                anatomy.arcades[name] = points
            for _ in range(int(rng.integers(2, 4))):  # branches to the periphery and towards the macula
                k = int(rng.uniform(0.3, 0.9) * (len(points) - 1))
                tangent = points[k + 1] - points[k - 1]
                tangent /= max(float(np.hypot(*tangent)), 1e-6)
                towards_fovea = anatomy.fovea - points[k]
                outward = -towards_fovea / max(float(np.hypot(*towards_fovea)), 1e-6)
                inward = rng.random() < 0.35
                direction = (-outward if inward else outward) + tangent * rng.uniform(0.2, 1.0)
                direction /= max(float(np.hypot(*direction)), 1e-6)
                length = dd * (rng.uniform(0.5, 0.9) if inward else rng.uniform(0.9, 2.0))
                branch = _branch(points[k], direction, length, rng.uniform(-0.5, 0.5))
                _add_vessel(anatomy, branch, vein_width * (0.45 if inward else 0.6) * (1.0 if vein else 0.75), vein, 2)
    for name, sign in (("superonasal", -1), ("inferonasal", 1)):
        a, b = dd * rng.uniform(1.2, 1.9), dd * rng.uniform(1.0, 1.6)
        for vein, scale in ((True, 1.0), (False, rng.uniform(0.85, 0.95))):
            uv = _arc(a * scale, b * scale, a * scale - 0.05 * dd, 0.0, np.pi - theta[:32] * 1.05, sign)
            points = anatomy.to_image(uv[:, 0], uv[:, 1])
            _add_vessel(anatomy, points, vein_width * 0.8 * (1.0 if vein else 0.72), vein)
            if vein:
                anatomy.arcades[name] = points
            k = int(rng.uniform(0.4, 0.8) * (len(points) - 1))
            direction = np.array([anatomy.nasal, sign * rng.uniform(-0.3, 0.6)])
            branch = _branch(points[k], direction / np.hypot(*direction), dd * rng.uniform(0.8, 1.5), 0.3)
            _add_vessel(anatomy, branch, vein_width * 0.5, vein, 2)
    for sign in (-1, 1):  # small nasal vessels straight from the disc
        direction = np.array([anatomy.nasal, sign * rng.uniform(0.05, 0.4)])
        start = anatomy.disc + np.array([anatomy.nasal * 0.2 * dd, sign * 0.1 * dd])
        branch = _branch(start, direction / np.hypot(*direction), dd * rng.uniform(1.2, 2.0), sign * 0.3)
        _add_vessel(anatomy, branch, vein_width * 0.45, bool(sign > 0), 2)


def sample_anatomy(size: int, eye: str, cup_ratio: float, rng: np.random.Generator) -> FundusAnatomy:
    """A random eye for a ``size x size`` photograph (macula- or posterior-pole-centred, with jitter)."""
    nasal = 1 if eye == "right" else -1
    radius = size * rng.uniform(0.44, 0.56)  # above 0.5 the frame cuts the field of view, as on many cameras
    centre = size / 2 + rng.uniform(-0.03, 0.03, 2) * size
    dd = radius * rng.uniform(0.29, 0.35)
    distance = dd * rng.uniform(2.1, 2.5)  # disc centre to fovea
    fovea = centre + np.array([-nasal * rng.uniform(0.0, 0.5) * distance, rng.uniform(-0.15, 0.15) * dd])
    fovea += rng.uniform(-0.1, 0.1, 2) * dd
    disc = fovea + np.array([nasal * distance, -rng.uniform(0.1, 0.5) * dd])  # the fovea lies below the disc
    radii = (0.5 * dd * rng.uniform(0.9, 1.0), 0.5 * dd * rng.uniform(1.0, 1.12))
    anatomy = FundusAnatomy(size, nasal, centre, float(radius), float(dd), disc, radii, cup_ratio, fovea)
    _vessel_tree(anatomy, rng)
    return anatomy
