"""PhantomCXR's normal patient drawn as attenuation ("density") layers: body, lungs' air, bone, lung markings.

:func:`draw_anatomy` returns maps in display units (0 = air outside the body, about 0.9 = the abdomen; bone adds
about 0.1): soft tissue thickness minus the air in the lungs, plus bone. Lung markings are a separate layer so that
findings can remove them (a pneumothorax has none) and opacities can hide them. The patient's shapes and
coordinates are :class:`training.phantoms.anatomy.Anatomy`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .anatomy import SIDE_SIGN, Anatomy, bands, ellipse_points, smooth


@dataclass
class AnatomyLayers:
    """Rendered anatomy, ``[size, size]`` float32 each.

    Attributes:
        density: attenuation in display units, without lung markings.
        markings: lung markings (vessels, hila, parenchyma), added to ``density`` times ``air`` by the renderer.
        air: aeration of each pixel (0 outside the lungs, about 1 in the middle of a lung): opacities replace
            a fraction of it, so a fully consolidated lobe reaches soft-tissue density.
        air_density: the density that full aeration removes.
    """

    density: np.ndarray
    markings: np.ndarray
    air: np.ndarray
    air_density: float  # density removed by full aeration


def _lateral_profile(outline: np.ndarray, y: np.ndarray) -> np.ndarray:
    """|x| of a lung's lateral edge at heights ``y`` (from the apex cap and the lateral wall)."""
    top = int(np.argmin(outline[:12, 1]))
    part = outline[top:27]
    return np.interp(y, part[:, 1], np.abs(part[:, 0]))


def _ribs(anatomy: Anatomy, side: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Posterior ``[12, 14, 2]`` and anterior ``[9, 10, 2]`` rib centre lines of one side."""
    sign, apex = SIDE_SIGN[side], anatomy.apex_y[side]
    spacing = (anatomy.base_y[side] - apex + 1.5) / 10.0
    k = np.arange(12)
    y0 = apex - 0.6 + k * spacing * (1.0 + 0.015 * k) + rng.normal(0.0, 0.12, 12)
    x_end = _lateral_profile(anatomy.outlines[side], y0 + 2.5) + 0.9
    t = np.linspace(0.0, 1.0, 14)
    xs = 1.3 + (x_end[:, None] - 1.3) * t**0.9
    rise, fall = rng.uniform(1.8, 2.6), rng.uniform(4.4, 5.4)  # up from the spine, then down the lateral wall
    ys = y0[:, None] - rise * t + fall * t**3
    posterior = np.stack([sign * xs, ys], axis=-1)
    k = k[:9]
    u = np.linspace(0.0, 1.0, 10)
    span = x_end[k, None] - 3.5 - 0.15 * k[:, None]
    ax = x_end[k, None] - span * u
    ay = ys[k, -1:] + 0.3 + span * u * 0.45 - 0.9 * (u - u**2) * span / 6.0
    return posterior, np.stack([sign * ax, ay], axis=-1)


def _torso(anatomy: Anatomy, neck: float) -> list[np.ndarray]:
    """The body outline and the arms (patient frame)."""
    w = anatomy.half_width + anatomy.wall
    top, base = min(anatomy.apex_y.values()), max(anatomy.base_y.values())
    half = np.array(
        [
            [neck, -40.0],
            [neck + 0.5, top - 3.5],
            [0.65 * w, top - 2.3],
            [w + 2.4, top - 0.8],
            [w + 3.2, top + 1.6],
            [w + 1.0, top + 7.0],
            [w + 0.3, base],
            [w + 0.8, 40.0],
        ]
    )
    arm = np.array([[w + 3.2, top + 1.6], [w + 6.5, top + 5], [w + 6.5, 40.0], [w + 1.6, 40.0], [w + 1.4, top + 8]])
    return [np.concatenate([half, (half * [-1, 1])[::-1]]), arm, arm * [-1, 1]]


def draw_anatomy(anatomy: Anatomy, rng: np.random.Generator) -> AnatomyLayers:
    """Render the normal patient of ``anatomy`` (the findings are added by the renderer).

    Smooth fields (body, air, heart, abdomen, hila) are drawn at half resolution and upsampled once; bone and
    vessels, the sharp detail, at full resolution.
    """
    a, size = anatomy, anatomy.size
    low = a.rescaled(max(size // 2, 64))
    s = low.px_per_cm
    w = a.half_width + a.wall
    torso, *arms = _torso(a, rng.uniform(3.0, 4.2))
    body = low.fill(low.blank(), [torso])
    if rng.random() < 0.6:
        low.fill(body, arms, rng.uniform(0.7, 1.0))
    carina = np.array([0.0, a.carina_y])  # mediastinal air: trachea, main bronchi, gastric bubble
    low.lines(body, [np.array([[0.1, -40.0], [-0.3, a.knob[1]], carina])], rng.uniform(1.5, 2.0), 0.88)
    low.lines(
        body, [np.array([carina, [-2.4, a.carina_y + 1.8]]), np.array([carina, [2.6, a.carina_y + 2.4]])], 1.1, 0.9
    )
    if rng.random() < 0.6:
        bubble = ellipse_points(rng.uniform(3.0, 7.0), a.dome_y["left"] + rng.uniform(1.2, 2.2), 2.4, 1.4)
        low.fill(body, bubble[None], rng.uniform(0.85, 0.93))
    body = smooth(body, 0.3 * s)
    thickness = np.sqrt(np.clip(1.0 - (low.x_cm / np.float32(w + 1.0)) ** 2, 0.1, 1.0))
    abdomen = smooth(low.fill(low.blank(), [a.diaphragm_outline()]), 0.5 * s)
    density = body * (0.22 + 0.56 * thickness + 0.06 * abdomen)
    cells = max(4, int(low.size / (2.5 * s)))  # bowel gas: dark blobs well below the domes
    gas = cv2.resize(
        rng.standard_normal((cells, cells)).astype(np.float32), (low.size,) * 2, interpolation=cv2.INTER_CUBIC
    )
    below = np.clip((low.y_cm - np.float32(max(a.dome_y.values()) + 3.0)) / 3.0, 0.0, 1.0)
    density -= rng.uniform(0.04, 0.1) * np.clip(1.5 * (gas - 1.0), 0.0, 1.0) * below * body

    # Lungs: the air path is longest in the middle of each lung; the heart and aortic knob displace it.
    lungs = low.fill(low.blank(), [a.outlines["right"], a.outlines["left"]])
    solid = low.fill(low.blank(), [a.heart, ellipse_points(*a.knob, a.knob[2])])
    air = np.minimum(smooth(lungs, 0.2 * s) * (0.35 + 0.9 * smooth(lungs, 2.0 * s)), 1.0)
    air *= 1.0 - 0.85 * smooth(solid, 0.12 * s)
    air_density = rng.uniform(0.42, 0.52)
    density -= air_density * air
    if a.female:
        density += _breasts(low, rng)
    hila = [
        ellipse_points(hx + np.sign(hx) * 0.4, hy + 0.8, 1.0, 2.0, np.sign(hx) * 0.3) for hx, hy in a.hilum.values()
    ]
    n = max(4, size // 12)
    parenchyma = cv2.resize(
        rng.standard_normal((n, n)).astype(np.float32), (low.size,) * 2, interpolation=cv2.INTER_CUBIC
    )
    markings = rng.uniform(0.04, 0.06) * smooth(low.fill(low.blank(), hila), 0.4 * s) + 0.012 * parenchyma

    def upsample(image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)

    bone = _bone(a, rng) * (1.0 - 0.75 * upsample(abdomen))  # dense abdomen: bone contrast drops
    return AnatomyLayers(
        upsample(density) + bone,
        upsample(markings) + _vessels(a, rng),
        np.minimum(upsample(air), 1.0),
        air_density,
    )


def _bone(a: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Ribs (posterior with a cortical rim, anterior faint), clavicles, humeral heads, scapulae, spine.

    cv2 drawing sets pixels rather than adding, so overlapping bones go on separate canvases that are summed.
    """
    posterior, anterior, clavicles = a.blank(), a.blank(), a.blank()
    w, top = a.half_width + a.wall, min(a.apex_y.values())
    rib_width = rng.uniform(0.75, 1.05)
    ribs = [_ribs(a, side, rng) for side in SIDE_SIGN]
    back, front = np.concatenate([r[0] for r in ribs]), np.concatenate([r[1] for r in ribs])
    a.fill(posterior, bands(back, rib_width, 0.8 * rib_width), 1.0)
    a.fill(posterior, bands(back, 0.55 * rib_width, 0.4 * rib_width), 0.8)  # brighter cortex at the edges
    a.fill(anterior, bands(front, 1.3 * rib_width, 1.5 * rib_width), 0.55)
    lift = rng.uniform(0.3, 1.5) if a.view == "AP" else rng.uniform(1.0, 3.0)
    cy = a.clavicle_y + rng.normal(0.0, 0.3, 2)
    line = np.array([[1.3, 0.6], [4.0, 0.0], [8.0, -0.4 * lift], [w, -lift], [w + 3, -lift]])
    line = np.stack([line * [-1, 1] + [0, cy[0]], line + [0, cy[1]]])
    width = rng.uniform(1.3, 1.8)
    a.fill(clavicles, bands(line, 1.2 * width, width), 1.0)
    a.fill(clavicles, bands(line, 0.6 * width, 0.5 * width), 0.8)
    a.fill(anterior, ellipse_points([-w - 2.8, w + 2.8], top + 0.3, 2.5, 2.7), 0.6)  # humeral heads
    if a.view == "AP" or rng.random() < 0.3:  # the scapula's medial border over the lateral lung
        scapula = np.array([[w - 0.3, 1.0], [w - 2.5, 6], [w - 2.0, 12]])
        a.lines(anterior, [scapula * [-1, 1] + [0, cy[0]], scapula + [0, cy[1]]], 0.2, 0.35)
    _spine(a, anterior, rng)
    return smooth(0.075 * (posterior + anterior + clavicles), 0.06 * a.px_per_cm)


def _spine(a: Anatomy, canvas: np.ndarray, rng: np.random.Generator) -> None:
    """Vertebral bodies with denser pedicles and spinous processes down the midline (canvas unit: 0.1)."""
    height = rng.uniform(2.2, 2.6)
    tops = np.arange(min(a.apex_y.values()) - 8.0, max(a.base_y.values()) + 8.0, height) + rng.uniform(0, height)
    half = 1.6 + 0.025 * (tops - a.apex_y["right"])
    bottoms = tops + height - 0.5
    bodies = np.stack([np.stack([-half, half, half, -half], 1), np.stack([tops, tops, bottoms, bottoms], 1)], -1)
    a.fill(canvas, bodies, 0.35)
    x = np.concatenate([half - 0.45, 0.45 - half, 0 * half])
    y = np.concatenate([tops + 0.35 * height] * 2 + [tops + 0.75 * height])
    a.fill(canvas, ellipse_points(x, y, 0.3, 0.45, n=10), 0.55)


def _breasts(a: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Two soft-tissue shadows over the lower zones with a curved inferior edge."""
    rx, ry = rng.uniform(5.0, 7.5), rng.uniform(4.0, 6.0)
    cy = max(a.base_y.values()) - rng.uniform(1.5, 4.0)
    centres = np.array([-1.0, 1.0]) * rng.uniform(0.5, 0.65, 2) * a.half_width
    canvas = a.fill(a.blank(), ellipse_points(centres, cy, rx, ry))
    ramp = np.clip((a.y_cm - np.float32(cy - ry)) / np.float32(1.2 * ry), 0.0, 1.0) ** 0.5
    return rng.uniform(0.025, 0.055) * smooth(canvas, 0.3 * a.px_per_cm) * ramp


def _vessels(a: Anatomy, rng: np.random.Generator) -> np.ndarray:
    """Vessels radiating from the hila: thick centrally, thin and sparse peripherally."""
    proximal, distal = [], []
    for side, sign in SIDE_SIGN.items():
        hx, hy = a.hilum[side]
        n = int(rng.integers(14, 20))
        angles = np.sort(rng.uniform(-1.45, 1.7, n))
        lengths = rng.uniform(4.5, 10.0, n) * a.half_width / 13.0
        t = np.linspace(0.0, 1.0, 6)[None, :, None]
        bend = angles[:, None] + rng.normal(0.0, 0.35, (n, 1)) * np.linspace(0.0, 1.0, 6)  # curving vessels
        direction = np.stack([sign * np.cos(bend), np.sin(bend)], -1)
        origin = np.array([hx, hy]) + rng.normal(0.0, 0.7, (n, 1, 2))
        rays = origin + np.cumsum(np.concatenate([0 * direction[:, :1], direction[:, 1:]], 1), 1) * (
            lengths[:, None, None] / 5
        )
        rays += rng.normal(0.0, 0.15, rays.shape) * t
        proximal.append(rays[:, :3])
        distal += list(rays[:, 2:])
        for offset in (2, 3):  # one branch on each side of the ray
            turn = angles + rng.choice([-1, 1], n) * rng.uniform(0.3, 0.6, n)
            start = rays[:, offset]
            branch = np.stack([sign * np.cos(turn), np.sin(turn)], -1) * (lengths * (1 - offset / 5) * 0.7)[:, None]
            distal += list(np.stack([start, start + 0.5 * branch, start + branch], 1))
    vessels = a.fill(a.blank(), bands(np.concatenate(proximal), rng.uniform(0.35, 0.5), 0.2), 1.0)
    vessels = a.lines(vessels, distal, 0.1, 0.7)
    return rng.uniform(0.07, 0.1) * smooth(vessels, 0.08 * a.px_per_cm)
