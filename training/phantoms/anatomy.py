"""PhantomCXR anatomy: a randomly varied patient (shapes and coordinates; drawn by :mod:`training.phantoms.drawing`).

Coordinates. Shapes live in the *patient frame*, in centimetres: x grows to the image right (the patient's
LEFT), y grows downwards, the origin is near the middle of the chest. :meth:`Anatomy.to_pixels` maps it to
pixel ``(column, row)`` coordinates with the patient's scale (field of view), small rotation and shift, so
one set of shapes gives every film. ``Anatomy.x_cm`` / ``y_cm`` hold the patient-frame position of every pixel.

The patient is drawn as density layers by :func:`training.phantoms.drawing.draw_anatomy`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field

import cv2
import numpy as np

from training.phantoms.schema import Case

SIDE_SIGN = {"right": -1.0, "left": 1.0}  # the patient's right lung is on the image's left
_SHIFT = 4  # sub-pixel bits of cv2 drawing coordinates
_CARDIOMEGALY_CTR = {"mild": (0.54, 0.59), "moderate": (0.59, 0.65), "severe": (0.65, 0.72)}


@functools.lru_cache(maxsize=8)
def pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only ``(columns, rows)`` float32 ``[size, size]`` pixel coordinates, cached per size."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float32)
    cols.flags.writeable = False
    rows.flags.writeable = False
    return cols, rows


def smooth(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur; wide kernels run on a downsampled copy (same look, a fraction of the time)."""
    if sigma_px < 0.3:
        return image
    factor = int(sigma_px // 2.5)
    if factor < 2:
        return cv2.GaussianBlur(image, (0, 0), sigma_px)
    h, w = image.shape
    small = cv2.resize(image, (max(w // factor, 1), max(h // factor, 1)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma_px / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


@functools.lru_cache(maxsize=8)
def _unit_circle(n: int) -> np.ndarray:
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([np.cos(t), np.sin(t)])


def ellipse_points(cx, cy, a, b, angle=0.0, n: int = 40) -> np.ndarray:
    """Points ``[..., n, 2]`` of ellipses (semi-axes ``a``, ``b``, rotated by ``angle`` rad); arguments broadcast."""
    cos_t, sin_t = _unit_circle(n)
    cx, cy, a, b, angle = (np.asarray(v, dtype=np.float64)[..., None] for v in (cx, cy, a, b, angle))
    x, y = a * cos_t, b * sin_t
    c, s = np.cos(angle), np.sin(angle)
    shape = np.broadcast_shapes(cx.shape, cy.shape, x.shape, c.shape)
    out = np.empty(shape + (2,))
    out[..., 0] = cx + c * x - s * y
    out[..., 1] = cy + s * x + c * y
    return out


def chaikin(points: np.ndarray, iterations: int = 3) -> np.ndarray:
    """Corner-cutting smoothing of a closed polygon ``[N, 2]`` (a smooth outline from a few control points)."""
    for _ in range(iterations):
        following = np.roll(points, -1, axis=0)
        points = np.stack([0.75 * points + 0.25 * following, 0.25 * points + 0.75 * following], 1).reshape(-1, 2)
    return points


def bands(centre_lines: np.ndarray, width_start, width_end=None) -> np.ndarray:
    """Polygons ``[n, 2k, 2]`` of bands around centre lines ``[n, k, 2]``, tapering from ``width_start`` to
    ``width_end`` (scalars or ``[n]``); filling them is far cheaper than drawing thick polylines."""
    width_end = width_start if width_end is None else width_end
    step = np.diff(centre_lines, axis=1)
    tangent = np.concatenate([step[:, :1], step[:, :-1] + step[:, 1:], step[:, -1:]], axis=1)
    tangent /= np.linalg.norm(tangent, axis=-1, keepdims=True) + 1e-9
    normal = np.stack([-tangent[..., 1], tangent[..., 0]], -1)
    t = np.linspace(0.0, 1.0, centre_lines.shape[1])
    half = 0.5 * ((1 - t) * np.asarray(width_start)[..., None] + t * np.asarray(width_end)[..., None])
    half = np.broadcast_to(half, centre_lines.shape[:2])[..., None]
    return np.concatenate([centre_lines + half * normal, (centre_lines - half * normal)[:, ::-1]], axis=1)


@dataclass
class Anatomy:
    """One patient's geometry (centimetres in the patient frame unless named ``_px``) and landmark masks.

    Per-side dictionaries are keyed by patient side, ``"right"`` / ``"left"``; masks are bool ``[size, size]``.
    """

    size: int
    view: str
    px_per_cm: float
    centre_px: tuple[float, float]  # pixel position of the patient-frame origin
    rotation: float  # radians
    half_width: float  # inner rib cage half width
    wall: float  # chest wall soft-tissue thickness
    apex_y: dict[str, float]
    base_y: dict[str, float]  # costophrenic angles
    dome_y: dict[str, float]
    dome_x: dict[str, float]  # |x| of each dome's top
    lateral_x: dict[str, float]  # |x| of each lung's widest point
    mediastinum_x: float  # half width of the upper mediastinum
    hilum: dict[str, tuple[float, float]]
    heart: np.ndarray = field(repr=False)  # heart outline [N, 2]
    knob: tuple[float, float, float] = (0.0, 0.0, 0.0)  # aortic knob centre x, y and radius
    carina_y: float = 0.0
    clavicle_y: float = 0.0
    female: bool = False
    outlines: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # lung outlines [N, 2]
    lung: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # visible lung fields
    lung_full: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # with the retrocardiac lung
    heart_mask: np.ndarray | None = field(default=None, repr=False)  # heart silhouette above the diaphragm
    abdomen: np.ndarray | None = field(default=None, repr=False)  # below the diaphragm
    _edge_distance: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def _grid(self) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = pixel_grid(self.size)
        c, s, k = (np.float32(v) for v in (np.cos(self.rotation), np.sin(self.rotation), self.px_per_cm))
        dx, dy = (cols - np.float32(self.centre_px[0])) / k, (rows - np.float32(self.centre_px[1])) / k
        return c * dx + s * dy, c * dy - s * dx

    @property
    def x_cm(self) -> np.ndarray:
        """Patient-frame x (cm) of every pixel, ``[size, size]``."""
        return self._grid[0]

    @property
    def y_cm(self) -> np.ndarray:
        """Patient-frame y (cm) of every pixel, ``[size, size]``."""
        return self._grid[1]

    def rescaled(self, size: int) -> Anatomy:
        """The same patient on a ``size``-pixel film (pixel centres aligned as ``cv2.resize`` aligns them)."""
        f = size / self.size
        centre = ((self.centre_px[0] + 0.5) * f - 0.5, (self.centre_px[1] + 0.5) * f - 0.5)
        return dataclasses.replace(self, size=size, px_per_cm=self.px_per_cm * f, centre_px=centre, _edge_distance={})

    def diaphragm_outline(self) -> np.ndarray:
        """Closed polygon ``[N, 2]`` of everything below the diaphragm (the abdomen)."""
        x = np.linspace(-30.0, 30.0, 61, dtype=np.float32)
        curve = np.stack([x, np.minimum(self.diaphragm_y(x), 40.0)], -1)
        return np.concatenate([curve, [[30.0, 60.0], [-30.0, 60.0]]])

    @functools.cached_property
    def _affine(self) -> np.ndarray:
        c, s, k = np.cos(self.rotation), np.sin(self.rotation), self.px_per_cm
        return np.array([[k * c, k * s], [-k * s, k * c], list(self.centre_px)])

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """Patient-frame points ``[..., 2]`` (cm) to pixel ``(column, row)`` coordinates."""
        return np.asarray(points, dtype=np.float64) @ self._affine[:2] + self._affine[2]

    def cv_points(self, polylines: list[np.ndarray] | np.ndarray) -> list[np.ndarray] | np.ndarray:
        """Polylines (cm) as the fixed-point int32 arrays cv2 draws with ``shift=_SHIFT`` (one transform)."""
        if isinstance(polylines, np.ndarray):
            return np.round(self.to_pixels(polylines) * (1 << _SHIFT)).astype(np.int32)
        ends = np.cumsum([len(p) for p in polylines])
        points = np.round(self.to_pixels(np.concatenate(polylines)) * (1 << _SHIFT)).astype(np.int32)
        return [points[end - len(p) : end] for p, end in zip(polylines, ends, strict=True)]

    def fill(self, canvas: np.ndarray, polygons: list[np.ndarray] | np.ndarray, value: float = 1.0) -> np.ndarray:
        """Fill polygons (cm) into ``canvas`` with ``value`` (in place; returns the canvas)."""
        cv2.fillPoly(canvas, self.cv_points(polygons), value, cv2.LINE_8, _SHIFT)
        return canvas

    def lines(
        self, canvas: np.ndarray, polylines: list[np.ndarray] | np.ndarray, width_cm: float, value: float = 1.0
    ) -> np.ndarray:
        """Draw open polylines (cm) ``width_cm`` wide into ``canvas`` (in place; returns the canvas)."""
        width = max(1, int(round(width_cm * self.px_per_cm)))
        cv2.polylines(canvas, self.cv_points(polylines), False, value, width, cv2.LINE_8, _SHIFT)
        return canvas

    def blank(self, dtype: type = np.float32) -> np.ndarray:
        return np.zeros((self.size, self.size), dtype)

    def diaphragm_y(self, x: np.ndarray) -> np.ndarray:
        """y of the diaphragm (the top of the abdomen) under patient-frame ``x`` (either side)."""
        x = np.asarray(x, dtype=np.float32)
        return np.where(x < 0, self._dome("right", np.abs(x)), self._dome("left", np.abs(x)))

    def _dome(self, side: str, ax: np.ndarray) -> np.ndarray:
        top, peak, cp = self.dome_y[side], self.dome_x[side], self.lateral_x[side] - 0.4
        lateral = top + (self.base_y[side] - top) * ((ax - peak) / (cp - peak)) ** 2
        medial = np.minimum(top + 0.8 * ((peak - ax) / max(peak - 1.0, 1e-3)) ** 2, top + 1.0)
        return np.where(ax > peak, lateral, medial).astype(np.float32)

    def zone_band(self, side: str, zone: str) -> np.ndarray:
        """Visible lung of ``side`` within the upper / middle / lower third of its height."""
        top, bottom = self.apex_y[side], self.base_y[side]
        k = ("upper", "middle", "lower").index(zone)
        y0, y1 = top + k * (bottom - top) / 3.0, top + (k + 1) * (bottom - top) / 3.0
        return self.lung[side] & (self.y_cm >= y0) & (self.y_cm < y1)

    def edge_distance(self, side: str) -> np.ndarray:
        """Distance (cm) of every pixel of the visible lung of ``side`` to its boundary (0 outside)."""
        if side not in self._edge_distance:
            lung = self.lung[side].astype(np.uint8)
            self._edge_distance[side] = cv2.distanceTransform(lung, cv2.DIST_L2, 3) / np.float32(self.px_per_cm)
        return self._edge_distance[side]

    def to_patient(self, pixels: np.ndarray) -> np.ndarray:
        """Pixel ``(column, row)`` coordinates ``[..., 2]`` to patient-frame points (cm)."""
        return (np.asarray(pixels, dtype=np.float64) - self._affine[2]) @ np.linalg.inv(self._affine[:2])

    def midline_px(self, row: float | None = None) -> float:
        """Column of the patient's midline (x = 0) at pixel ``row`` (default: the middle row)."""
        row = (self.size - 1) / 2 if row is None else row
        c, s = np.cos(self.rotation), np.sin(self.rotation)
        # solve to_pixels([0, y])[1] == row for y, then take the column
        y = (row - self.centre_px[1]) / (self.px_per_cm * c)
        return float(self.centre_px[0] - self.px_per_cm * s * y)

    def mirror_px(self, mask: np.ndarray) -> np.ndarray:
        """``mask`` reflected about the patient's midline (x -> -x in the patient frame), nearest pixel."""
        rows, cols = np.nonzero(mask)
        points = self.to_patient(np.stack([cols, rows], -1)) * [-1, 1]
        mirrored = np.rint(self.to_pixels(points)).astype(int)
        inside = ((mirrored >= 0) & (mirrored < self.size)).all(-1)
        out = np.zeros_like(mask, dtype=bool)
        out[mirrored[inside, 1], mirrored[inside, 0]] = True
        return out


def sample_anatomy(case: Case, size: int, rng: np.random.Generator) -> Anatomy:
    """Draw one patient (size, pose, inspiration, heart, hila) and compute the lung / heart masks."""
    ap = case.view == "AP"
    findings = {f.kind: f for f in case.findings}
    field_of_view = rng.uniform(32.0, 38.0) * (0.94 if ap else 1.0)  # AP films are magnified
    shift = np.clip(rng.normal(0.0, 1.2, 2), -2.5, 2.5)  # patient-frame origin from the image centre, cm
    rotation = np.deg2rad(float(np.clip(rng.normal(0.0, 2.5), -6.0, 6.0)))
    half_width = rng.uniform(11.5, 14.5)
    height = rng.uniform(19.0, 24.5) * (half_width / 13.0) ** 0.5 - (1.5 if ap else 0.0)
    apex = -0.56 * height + float(np.clip(rng.normal(0.0, 0.7), -1.4, 1.4))
    # Widen the field if needed so that the whole chest stays on the film (margin ~1 cm, rotation included).
    reach = max(half_width + 0.6 + abs(shift[0]), -apex + 1.6 + abs(shift[1]), apex + height + 1.5 + abs(shift[1]))
    px_per_cm = size / max(field_of_view, 2.0 * reach)
    shift = shift * px_per_cm
    base = apex + height
    base_y = {"right": base, "left": base + rng.uniform(0.2, 1.0)}
    drop = rng.uniform(2.3, 3.8)
    dome_y = {"right": base - drop, "left": base - drop + rng.uniform(0.8, 2.2)}
    dome_y["left"] = min(dome_y["left"], base_y["left"] - 1.2)
    atelectasis = findings.get("atelectasis")
    if atelectasis is not None and atelectasis.severity != "mild" and atelectasis.zone != "upper":
        loss = 1.0 if atelectasis.severity == "moderate" else 2.0  # volume loss: the hemidiaphragm rises
        dome_y[atelectasis.side] -= loss
        base_y[atelectasis.side] -= 0.5 * loss
    lateral_x = {side: half_width - 0.7 + rng.normal(0, 0.2) for side in SIDE_SIGN}
    mediastinum_x = rng.uniform(1.6, 2.2) + (0.6 if ap else 0.0)
    hilum_y = apex + rng.uniform(0.38, 0.46) * height
    knob = (mediastinum_x + rng.uniform(-0.3, 0.3), apex + rng.uniform(5.0, 6.5), rng.uniform(1.2, 1.8))
    cardiomegaly = findings.get("cardiomegaly")
    ctr = rng.uniform(*_CARDIOMEGALY_CTR[cardiomegaly.severity]) if cardiomegaly else rng.uniform(0.39, 0.5)
    width = ctr * 2.0 * half_width * (1.07 if ap else 1.0)  # the heart is anterior: magnified on AP
    floor = 0.5 * (dome_y["right"] + dome_y["left"]) + 1.2
    anatomy = Anatomy(
        size=size,
        view=case.view,
        px_per_cm=px_per_cm,
        centre_px=(size / 2 + shift[0], size / 2 + shift[1]),
        rotation=rotation,
        half_width=half_width,
        wall=rng.uniform(0.9, 2.6),
        apex_y={"right": apex + rng.normal(0, 0.3), "left": apex + rng.normal(0, 0.3)},
        base_y=base_y,
        dome_y=dome_y,
        dome_x={side: lateral_x[side] * rng.uniform(0.38, 0.52) for side in SIDE_SIGN},
        lateral_x=lateral_x,
        mediastinum_x=mediastinum_x,
        hilum={
            "right": (-(mediastinum_x + rng.uniform(1.6, 2.6)), hilum_y + rng.uniform(0.3, 1.0)),
            "left": (mediastinum_x + rng.uniform(1.6, 2.6), hilum_y - rng.uniform(0.0, 0.6)),
        },
        heart=_heart_outline(width, floor, hilum_y, mediastinum_x, knob, rng),
        knob=knob,
        carina_y=hilum_y - rng.uniform(0.8, 1.8),
        clavicle_y=apex + (rng.uniform(1.0, 2.2) if ap else rng.uniform(2.6, 4.0)),
        female=bool(rng.random() < 0.4),
    )
    _build_masks(anatomy)
    return anatomy


def _heart_outline(width, floor, hilum_y, mediastinum_x, knob, rng) -> np.ndarray:
    """Cardiac silhouette from control points: right atrial border, left ventricle, bottom below the diaphragm."""
    right = -width * rng.uniform(0.3, 0.4)
    left = right + width
    top_right, top_left = hilum_y + rng.uniform(0.5, 1.5), knob[1] + knob[2] + rng.uniform(0.3, 1.0)
    span, lift = floor - top_right, rng.uniform(1.0, 2.5)
    controls = [
        [-0.9 * mediastinum_x, top_right - 0.6],
        [right + 0.5, top_right + 0.4 * span],
        [right, top_right + 0.75 * span],
        [right + 0.8, floor + 0.6],
        [left - 2.0, floor + 1.4],
        [left + 0.4, floor - lift],
        [left - 0.2 * (left - mediastinum_x), floor - lift - 0.45 * (floor - lift - top_left)],
        [left - 0.5 * (left - mediastinum_x), floor - lift - 0.8 * (floor - lift - top_left)],
        [mediastinum_x + 0.8, top_left],
        [mediastinum_x - 0.2, top_left - 0.6],
    ]
    return chaikin(np.array(controls), 3)


def _lung_outline(anatomy: Anatomy, side: str) -> np.ndarray:
    """Closed outline ``[N, 2]`` of one lung: apex cap, lateral wall, diaphragm dome, mediastinal border."""
    apex, base, lateral = anatomy.apex_y[side], anatomy.base_y[side], anatomy.lateral_x[side]
    medial_top, cap = anatomy.mediastinum_x, 3.0
    cap_lateral = 0.8 * lateral
    t = np.linspace(np.pi, 0.0, 12)
    centre, radius = 0.5 * (medial_top + cap_lateral), 0.5 * (cap_lateral - medial_top)
    cap_x, cap_y = centre + radius * np.cos(t), apex + cap - cap * np.sin(t) ** 0.6
    t = np.linspace(0.0, 1.0, 16)[1:]
    wall_y = apex + cap + t * (base - apex - cap)
    wall_x = cap_lateral + (lateral - cap_lateral) * (1.0 - (1.0 - t) ** 2.5) - 0.4 * t**4
    dome_x = np.linspace(wall_x[-1], 1.0, 18)[1:]
    dome_y = anatomy._dome(side, dome_x.astype(np.float32))
    xs, ys = np.concatenate([cap_x, wall_x, dome_x]), np.concatenate([cap_y, wall_y, dome_y])
    return np.stack([SIDE_SIGN[side] * xs, ys], axis=-1)


def _build_masks(anatomy: Anatomy) -> None:
    for side in SIDE_SIGN:
        anatomy.outlines[side] = _lung_outline(anatomy, side)
    anatomy.abdomen = anatomy.fill(anatomy.blank(np.uint8), [anatomy.diaphragm_outline()]).astype(bool)
    heart = anatomy.fill(anatomy.blank(np.uint8), [anatomy.heart]).astype(bool)
    anatomy.heart_mask = heart & ~anatomy.abdomen
    knob = anatomy.fill(anatomy.blank(np.uint8), ellipse_points(*anatomy.knob, anatomy.knob[2])[None]).astype(bool)
    for side in SIDE_SIGN:
        full = anatomy.fill(anatomy.blank(np.uint8), [anatomy.outlines[side]]).astype(bool)
        anatomy.lung_full[side] = full
        anatomy.lung[side] = full & ~heart & ~knob
