"""Heatmap overlays for chest X-rays: colour blend, threshold contour, boxes, colour bar, legend and title.

Shared by the CLI (PNG output) and the Gradio demo, hence numpy + cv2 only, with matplotlib used just for its
colormap tables (no pyplot, no global state): a 1024 x 1024 overlay renders in a few milliseconds.
Heatmaps are float ``[H, W]`` similarities on ``[-1, 1]``, NaN = no value (transparent). Boxes are
``[x, y, w, h]`` (COCO) in image pixels, origin at the top-left corner of the top-left pixel, as in
:mod:`afloc.imaging.transforms`. Text uses cv2's Hershey font, which covers ASCII only.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import matplotlib
import numpy as np

__all__ = ["add_colorbar", "add_legend", "colorize", "render_figure", "render_overlay", "save_png", "to_rgb_uint8"]

Color = tuple[int, int, int]
# Dark figure chrome: X-rays are dark, and the yellow contour / white box swatches stay legible on it.
_BACKGROUND: Color = (20, 20, 20)
_FOREGROUND: Color = (235, 235, 235)
_FONT = cv2.FONT_HERSHEY_SIMPLEX
CONTOUR_COLOR: Color = (255, 255, 0)
BOX_COLOR: Color = (255, 255, 255)
HALO_COLOR: Color = (0, 0, 0)
"""Lines are drawn two-tone so that one tone contrasts with whatever lies beside it (WCAG 1.4.11 asks 3:1 for a
graphic against its neighbours): the contour in yellow on a black halo, the boxes dashed white over black. Yellow
and white reach 3:1 against the dark and saturated heat colours, black against the light ones; no red-green pair."""


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Convert ``[H, W]``, ``[H, W, 1]`` or ``[H, W, 3]`` uint8 (or float in ``[0, 1]``, scaled by 255 and rounded)
    to a new C-contiguous uint8 ``[H, W, 3]``; ValueError on other shapes/dtypes or floats outside ``[0, 1]``."""
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)) or 0 in array.shape:
        raise ValueError(f"image must be [H, W] or [H, W, 3], got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        low, high = float(array.min()), float(array.max())
        if not (low >= -1e-6 and high <= 1 + 1e-6):  # also catches NaN
            raise ValueError(f"float images must lie in [0, 1], got range [{low}, {high}]")
        array = np.rint(np.clip(array, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise ValueError(f"image dtype must be uint8 or float in [0, 1], got {array.dtype}")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    return np.array(array, dtype=np.uint8, order="C", copy=True)


@functools.lru_cache(maxsize=32)
def _tables(cmap: str) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float RGBA ``[N, 4]`` and uint8 RGB ``[N, 3]`` tables (the latter is matplotlib's ``bytes=True``)."""
    if cmap not in matplotlib.colormaps:
        raise ValueError(f"unknown matplotlib colormap {cmap!r}")
    colormap = matplotlib.colormaps[cmap]
    rgba, rgb = colormap(np.arange(colormap.N)), colormap(np.arange(colormap.N), bytes=True)[:, :3].copy()
    for table in (rgba, rgb):
        table.setflags(write=False)  # cached and shared between calls
    return rgba, rgb


def _indices(heatmap: np.ndarray, n: int, vmin: float, vmax: float) -> tuple[np.ndarray, np.ndarray]:
    """Colormap row of every pixel, ``floor(N (h - vmin) / (vmax - vmin))`` clipped to ``[0, N-1]`` as in
    ``Colormap.__call__``, and the mask of non-NaN pixels."""
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmin < vmax):
        raise ValueError(f"need finite vmin < vmax, got vmin={vmin}, vmax={vmax}")
    valid = ~np.isnan(heatmap)
    scaled = (heatmap - np.float32(vmin)) * np.float32(n / (vmax - vmin))
    scaled[~valid] = 0.0  # NaN cannot be cast to an integer; these pixels are masked out anyway
    np.clip(scaled, 0, n - 1, out=scaled)
    return scaled.astype(np.intp), valid


def colorize(heatmap: np.ndarray, cmap: str = "RdBu_r", vmin: float = -1.0, vmax: float = 1.0) -> np.ndarray:
    """Map a float ``[H, W]`` heatmap to float RGBA ``[H, W, 4]``, equal to matplotlib's
    ``colormaps[cmap](Normalize(vmin, vmax)(heatmap))`` (values outside get the end colours); NaN pixels are
    ``(0, 0, 0, 0)``, i.e. transparent."""
    rgba_table, _ = _tables(cmap)
    indices, valid = _indices(np.asarray(heatmap, dtype=np.float32), len(rgba_table), vmin, vmax)
    rgba = np.take(rgba_table, indices, axis=0)  # a lookup, not cmap(): 10x faster, the same colours
    rgba[~valid] = 0.0
    return rgba


def _color(value: Sequence[int], name: str) -> Color:
    if len(value) != 3 or not all(0 <= int(c) <= 255 for c in value):
        raise ValueError(f"{name} must be three integers in [0, 255], got {value!r}")
    return tuple(int(c) for c in value)


def _font_height(size: int) -> int:
    """Cap height in pixels of text drawn next to an image of side ``size``."""
    return max(9, round(size / 48))


def _text_size(text: str, height: int) -> tuple[int, int, float, int]:
    """Width, height, font scale and thickness of ``text`` with cap height ``height``."""
    thickness = max(1, round(height / 14))
    scale = cv2.getFontScaleFromHeight(_FONT, height, thickness)
    (width, text_height), _ = cv2.getTextSize(text, _FONT, scale, thickness)
    return width, text_height, scale, thickness


def _put_text(canvas: np.ndarray, text: str, x: int, y_top: int, height: int, color: Color = _FOREGROUND) -> None:
    _, text_height, scale, thickness = _text_size(text, height)
    cv2.putText(canvas, text, (int(x), int(y_top + text_height)), _FONT, scale, color, thickness, cv2.LINE_AA)


def _halo(width: int) -> int:
    """Width of the dark line under a line of ``width`` (one more pixel on each side, more for thick lines)."""
    return width + 2 * max(1, (width + 1) // 2)


def _dashed_rectangle(canvas: np.ndarray, corners: tuple[int, int, int, int], color: Color, width: int) -> None:
    """A rectangle in ``HALO_COLOR`` with dashes of ``color`` over it (dash and gap 3 line widths long)."""
    x0, y0, x1, y1 = corners
    cv2.rectangle(canvas, (x0, y0), (x1, y1), HALO_COLOR, _halo(width), cv2.LINE_8)
    dash = 3 * max(2, width)
    for (ax, ay), (bx, by) in (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))):
        length = max(abs(bx - ax), abs(by - ay))
        for start in range(0, length + 1, 2 * dash):
            end = min(start + dash - 1, length)
            fa, fb = start / max(length, 1), end / max(length, 1)
            p = (round(ax + (bx - ax) * fa), round(ay + (by - ay) * fa))
            q = (round(ax + (bx - ax) * fb), round(ay + (by - ay) * fb))
            cv2.line(canvas, p, q, color, width, cv2.LINE_8)


def _draw_swatch(strip: np.ndarray, x: int, y: int, size: tuple[int, int], color: Color, kind: str) -> None:
    """A legend swatch drawn as the line it names: ``"box"`` dashed over black, ``"contour"`` on a black halo."""
    width, height = size
    cv2.rectangle(strip, (x, y), (x + width - 1, y + height - 1), HALO_COLOR, cv2.FILLED)
    inner = max(1, height // 3)
    if kind == "box":
        for left in range(x + 1, x + width - 1, 2 * max(2, inner)):
            cv2.rectangle(strip, (left, y + inner), (min(left + max(2, inner) - 1, x + width - 2), y + 2 * inner - 1),
                          color, cv2.FILLED)  # fmt: skip
    else:
        cv2.rectangle(strip, (x + 1, y + inner), (x + width - 2, y + 2 * inner - 1), color, cv2.FILLED)


def _draw_boxes(canvas: np.ndarray, boxes, labels, color: Color, width: int) -> None:
    boxes = np.asarray(boxes, dtype=np.float64)
    boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
    if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all() or (boxes[:, 2:] < 0).any():
        raise ValueError(f"boxes must be finite [K, 4] [x, y, w, h] with w, h >= 0, got {boxes.tolist()}")
    if labels is not None and len(labels) != len(boxes):
        raise ValueError(f"got {len(labels)} box labels for {len(boxes)} boxes")
    image_width = canvas.shape[1]
    font = _font_height(min(canvas.shape[:2]))
    for k, (x, y, w, h) in enumerate(boxes):
        # The box covers pixel columns x .. x+w-1 (origin at the corner of the top-left pixel).
        x0, y0, x1, y1 = round(x), round(y), max(round(x), round(x + w) - 1), max(round(y), round(y + h) - 1)
        _dashed_rectangle(canvas, (x0, y0, x1, y1), color, width)
        if labels is None or not labels[k]:
            continue
        text_width, pad = _text_size(str(labels[k]), font)[0], max(2, font // 4)
        tag_height = font + 2 * pad
        # A filled tag above the box, else below it, else inside its top edge; kept within the image.
        above, below = y0 - width // 2 - tag_height, y1 + (width + 1) // 2 + 1
        top = above if above >= 0 else below if below + tag_height <= canvas.shape[0] else y0 + (width + 1) // 2
        left = min(max(0, x0 - width // 2), max(0, image_width - text_width - 2 * pad))
        cv2.rectangle(canvas, (left, top), (left + text_width + 2 * pad, top + tag_height - 1), HALO_COLOR, cv2.FILLED)
        _put_text(canvas, str(labels[k]), left + pad, top + pad, font, color)


def render_overlay(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    opacity: float = 0.5,
    threshold: float | None = None,
    cmap: str = "RdBu_r",
    show_below_threshold: bool = True,
    boxes=None,
    box_labels: Sequence[str] | None = None,
    contour_color: Sequence[int] = CONTOUR_COLOR,
    box_color: Sequence[int] = BOX_COLOR,
    line_width: int | None = None,
) -> np.ndarray:
    """Blend a similarity heatmap over an image and draw the threshold contour and boxes.

    Pixels that show no colour (NaN heatmap, or ``heatmap <= threshold`` when ``show_below_threshold`` is
    False) are exactly ``to_rgb_uint8(image)`` unless a contour or box is drawn over them.

    Args:
        image: ``[H, W]`` or ``[H, W, 3]``, uint8 or float in ``[0, 1]``.
        heatmap: float ``[H, W]`` on ``[-1, 1]`` (the colormap spans exactly that range); NaN = transparent.
        opacity: weight of the colour in the blend, in ``[0, 1]`` (the colormap's own alpha is not used).
        threshold: when given, the outline of ``heatmap > threshold`` is drawn in ``contour_color`` on a black
            halo.
        cmap: name of a (diverging) matplotlib colormap.
        show_below_threshold: False shows the colour only where ``heatmap > threshold``.
        boxes: array-like ``[K, 4]`` of ``[x, y, w, h]`` in image pixels, drawn dashed in ``box_color`` over black.
        box_labels: ``K`` strings written in ``box_color`` on a black tag above each box (empty ones skipped).
        contour_color, box_color: RGB colours.
        line_width: contour and box line width; None = ``max(1, round(min(H, W) / 256))``.

    Returns:
        uint8 ``[H, W, 3]``.

    Raises:
        ValueError: on a heatmap/image shape mismatch, an opacity outside ``[0, 1]``, bad boxes or colours.
    """
    rgb, heatmap = to_rgb_uint8(image), np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != rgb.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match image shape {np.shape(image)}")
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must lie in [0, 1], got {opacity}")
    if threshold is not None and not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if line_width is None:
        line_width = max(1, round(min(rgb.shape[:2]) / 256))
    elif line_width < 1:
        raise ValueError(f"line_width must be >= 1, got {line_width}")
    contour_color, box_color = _color(contour_color, "contour_color"), _color(box_color, "box_color")

    _, rgb_table = _tables(cmap)
    indices, shown = _indices(heatmap, len(rgb_table), -1.0, 1.0)
    region = heatmap > threshold if threshold is not None else None  # NaN > t is False: NaN is never inside
    if region is not None and not show_below_threshold:
        shown &= region
    out = cv2.addWeighted(rgb, 1.0 - opacity, np.take(rgb_table, indices, axis=0), opacity, 0.0)
    cv2.copyTo(rgb, (~shown).view(np.uint8), out)  # in place: hidden pixels are the input image, bit-exact
    if region is not None:
        contours = cv2.findContours(region.view(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)[-2]
        cv2.drawContours(out, contours, -1, HALO_COLOR, _halo(line_width), cv2.LINE_8)
        cv2.drawContours(out, contours, -1, contour_color, line_width, cv2.LINE_8)
    if boxes is not None:
        _draw_boxes(out, boxes, box_labels, box_color, line_width)
    return out


def add_colorbar(
    rgb: np.ndarray,
    cmap: str = "RdBu_r",
    vmin: float = -1.0,
    vmax: float = 1.0,
    label: str | None = "similarity",
    threshold: float | None = None,
) -> np.ndarray:
    """Return a new uint8 ``[H, W + strip, 3]`` image: ``rgb`` with a vertical colour bar on its right.

    Args:
        rgb: image as accepted by :func:`to_rgb_uint8`; the strip's size scales with its height ``H``.
        cmap, vmin, vmax: the colour scale, as in :func:`colorize`; 5 ticks (fewer on short bars).
        label: written bottom-to-top beside the ticks; None or "" for none.
        threshold: marked as a line across the bar when it lies in ``[vmin, vmax]``.
    """
    rgb = to_rgb_uint8(rgb)
    height = rgb.shape[0]
    font = _font_height(height)  # strips and text scale with the image height
    gap, tick_length = max(3, font // 2), max(2, font // 3)
    bar_width = max(6, round(font * 1.2))
    bar_top = min(font, max(0, (height - 2) // 2))  # room for half a tick label above and below the bar
    bar_height = max(2, height - 2 * bar_top)
    # 5 ticks, fewer where their labels would overlap on a short bar (small images).
    ticks = np.linspace(vmin, vmax, 5 if bar_height >= 6 * font else 3 if bar_height >= 3 * font else 2)
    tick_texts = [f"{value:g}" for value in ticks]
    label_width = font + 2 * gap if label else 0
    text_width = max(_text_size(text, font)[0] for text in tick_texts)
    strip = np.full(
        (height, 2 * gap + bar_width + tick_length + text_width + gap + label_width, 3), _BACKGROUND, np.uint8
    )

    _, rgb_table = _tables(cmap)
    column = np.linspace(vmax, vmin, bar_height, dtype=np.float32)[:, None]
    indices, _ = _indices(column, len(rgb_table), vmin, vmax)
    x0, x1 = gap, gap + bar_width
    strip[bar_top : bar_top + bar_height, x0:x1] = np.take(rgb_table, indices, axis=0)

    def row(value: float) -> int:
        return bar_top + round((vmax - value) / (vmax - vmin) * (bar_height - 1))

    for value, text in zip(ticks, tick_texts, strict=True):
        y = row(value)
        cv2.line(strip, (x1, y), (x1 + tick_length - 1, y), _FOREGROUND, 1, cv2.LINE_8)
        _put_text(strip, text, x1 + tick_length + max(1, gap // 2), y - font // 2, font)
    if threshold is not None and vmin <= threshold <= vmax:
        y, thickness = row(threshold), max(1, font // 8)
        cv2.line(strip, (x0 - gap // 2, y), (x1 + gap // 2 - 1, y), (0, 0, 0), thickness + 2, cv2.LINE_8)
        cv2.line(strip, (x0 - gap // 2, y), (x1 + gap // 2 - 1, y), _FOREGROUND, thickness, cv2.LINE_8)
    if label:
        # Drawn horizontally on a small canvas, then rotated to read bottom-to-top like matplotlib's labels.
        label_canvas = np.full((font * 2, _text_size(label, font)[0] + 2, 3), _BACKGROUND, np.uint8)
        _put_text(label_canvas, label, 1, font // 2, font)
        rotated = np.rot90(label_canvas)[:height]
        top, left = (height - rotated.shape[0]) // 2, strip.shape[1] - label_width + gap // 2
        strip[top : top + rotated.shape[0], left : left + rotated.shape[1]] = rotated[:, : strip.shape[1] - left]
    return np.concatenate([rgb, strip], axis=1)


def add_legend(rgb: np.ndarray, entries: Sequence[tuple[str, Sequence[int]]]) -> np.ndarray:
    """Return a new uint8 ``[H + strip, W, 3]`` image: ``rgb`` with a legend strip below (a copy if no entries).

    ``entries`` are ``(name, (r, g, b))`` pairs, e.g. ``[("ground truth", BOX_COLOR)]``, drawn as a swatch and
    the name, wrapped into rows. A swatch looks like the line it names: ``BOX_COLOR`` dashed over black, any
    other colour on a black halo (the contour).
    """
    rgb = to_rgb_uint8(rgb)
    if not entries:
        return rgb
    width = rgb.shape[1]
    font = _font_height(rgb.shape[0])
    gap, swatch, row_height = max(4, font), max(6, round(font * 1.6)), 2 * font
    positions, x, y = [], gap, font // 2
    for name, color in entries:
        item_width = swatch + gap // 2 + _text_size(name, font)[0]
        if x > gap and x + item_width > width - gap:  # wrap to a new row
            x, y = gap, y + row_height
        positions.append((name, _color(color, f"legend colour of {name!r}"), x, y))
        x += item_width + 2 * gap
    strip = np.full((y + row_height, width, 3), _BACKGROUND, np.uint8)
    for name, color, x, y in positions:
        _draw_swatch(strip, x, y, (swatch, font), color, "box" if color == BOX_COLOR else "contour")
        _put_text(strip, name, x + swatch + gap // 2, y, font)
    return np.concatenate([rgb, strip], axis=0)


def _fitted(text: str, font: int, width: int) -> str:
    """``text`` cut with "..." to fit ``width`` pixels."""
    while len(text) > 1 and _text_size(text, font)[0] > width:
        text = text[: -4 if text.endswith("...") else -1].rstrip() + "..."
    return text


def add_footer(rgb: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """Return a new uint8 image: ``rgb`` with a strip of text ``lines`` below (each cut with "..." to fit; ASCII:
    the drawing font has no other characters). For the provenance an exported figure must keep."""
    rgb = to_rgb_uint8(rgb)
    width, font = rgb.shape[1], _font_height(rgb.shape[0])
    strip = np.full((font * (2 * len(lines) + 1), width, 3), _BACKGROUND, np.uint8)
    for index, line in enumerate(lines):
        _put_text(strip, _fitted(line.encode("ascii", "replace").decode(), font, width - 2 * font), font,
                  font * (2 * index + 1), font)  # fmt: skip
    return np.concatenate([rgb, strip], axis=0)


def _add_title(rgb: np.ndarray, title: str, font: int) -> np.ndarray:
    """Prepend a strip with ``title`` centred, cut with "..." to fit the width."""
    width = rgb.shape[1]
    title = _fitted(title, font, width - 2 * font)
    strip = np.full((3 * font, width, 3), _BACKGROUND, np.uint8)
    _put_text(strip, title, max(0, (width - _text_size(title, font)[0]) // 2), font, font)
    return np.concatenate([strip, rgb], axis=0)


def render_figure(
    image: np.ndarray,
    heatmap: np.ndarray,
    *,
    title: str | None = None,
    opacity: float = 0.5,
    threshold: float | None = None,
    boxes=None,
    box_labels: Sequence[str] | None = None,
    cmap: str = "RdBu_r",
) -> np.ndarray:
    """Overlay + colour bar + legend (+ title strip) as one uint8 ``[H', W', 3]`` image, e.g. for the CLI's PNG.

    Arguments as in :func:`render_overlay`. The legend names the boxes "ground truth" when there are any, and
    the contour ``heatmap > threshold`` when a threshold is given.
    """
    overlay = render_overlay(
        image, heatmap, opacity=opacity, threshold=threshold, cmap=cmap, boxes=boxes, box_labels=box_labels
    )
    figure = add_colorbar(overlay, cmap, threshold=threshold)
    entries = []
    if boxes is not None and np.asarray(boxes).size > 0:
        entries.append(("ground truth", BOX_COLOR))
    if threshold is not None:
        entries.append((f"heatmap > {threshold:g}", CONTOUR_COLOR))
    figure = add_legend(figure, entries)
    return _add_title(figure, title, _font_height(overlay.shape[0])) if title else figure


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an RGB (or grey) uint8 image as PNG; ValueError if the suffix is not ``.png`` or the folder is missing."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_png writes .png files, got {path}")
    if not path.parent.is_dir():
        raise ValueError(f"folder {path.parent} does not exist (for {path})")
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(to_rgb_uint8(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    path.write_bytes(encoded.tobytes())  # imencode + write_bytes also handles non-ASCII paths


def slug(text: str, limit: int = 60, empty: str = "prompt") -> str:
    """A file-name part from free text (a prompt, an image name): lower-case letters and digits joined by ``_``,
    at most ``limit`` characters; ``empty`` when nothing is left."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or empty
