"""Overlay rendering: exact pixels where nothing is drawn, colours against matplotlib, geometry of boxes/contours."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from PIL import Image

from afloc.localization.overlay import (
    add_colorbar,
    add_legend,
    colorize,
    render_figure,
    render_overlay,
    save_png,
    to_rgb_uint8,
)

YELLOW, WHITE, BLACK = (255, 255, 0), (255, 255, 255), (0, 0, 0)


def _grey(height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)


def _blob(height: int = 64, width: int = 64) -> np.ndarray:
    """A Gaussian bump normalised to [-1, 1] with its peak (1.0) at the centre."""
    y, x = np.mgrid[0:height, 0:width]
    bump = np.exp(-(((x - width / 2) / (width / 8)) ** 2 + ((y - height / 2) / (height / 8)) ** 2))
    return (2 * (bump - bump.min()) / (bump.max() - bump.min()) - 1).astype(np.float32)


def _cmap_bytes(value: float, name: str = "RdBu_r") -> np.ndarray:
    """Reference colour from matplotlib itself for a value on [-1, 1]."""
    return np.asarray(matplotlib.colormaps[name]((value + 1) / 2, bytes=True)[:3])


def _has_color(rgb: np.ndarray, color) -> np.ndarray:
    return (rgb == np.asarray(color, dtype=np.uint8)).all(axis=-1)


def test_to_rgb_uint8_shapes_and_values():
    grey = _grey(5, 7)
    assert np.array_equal(to_rgb_uint8(grey), np.repeat(grey[..., None], 3, axis=2))
    assert np.array_equal(to_rgb_uint8(grey[..., None]), to_rgb_uint8(grey))
    floats = np.array([[0.0, 0.5, 1.0]])
    assert to_rgb_uint8(floats)[0, :, 0].tolist() == [0, 128, 255]
    rgb = np.random.default_rng(1).random((4, 6, 3))
    out = to_rgb_uint8(rgb)
    assert out.dtype == np.uint8 and out.shape == (4, 6, 3) and out.flags.c_contiguous
    assert np.array_equal(out, np.rint(rgb * 255).astype(np.uint8))


@pytest.mark.parametrize(
    "bad", [np.full((4, 4), 2.0), np.full((4, 4), np.nan), np.zeros((4, 4), np.uint16), np.zeros((4, 4, 4), np.uint8)]
)
def test_to_rgb_uint8_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        to_rgb_uint8(bad)


def test_colorize_matches_matplotlib_and_nan_is_transparent():
    cmap = matplotlib.colormaps["RdBu_r"]
    # Bin centres and the exact ends: no float rounding ambiguity about which of the N bins a value falls in.
    values = np.concatenate([-1 + (np.arange(cmap.N) + 0.5) * 2 / cmap.N, [-1.0, 0.0, 1.0, -3.0, 3.0]])
    heatmap = np.append(values, np.nan).reshape(1, -1)
    rgba = colorize(heatmap)
    assert rgba.shape == (1, heatmap.shape[1], 4) and rgba.dtype == np.float64
    np.testing.assert_array_equal(rgba[0, :-1], cmap(np.clip((values + 1) / 2, 0, 1)))
    assert rgba[0, -1, 3] == 0.0
    viridis = matplotlib.colormaps["viridis"]
    np.testing.assert_array_equal(colorize(np.array([[5.0]]), "viridis", vmin=0, vmax=10)[0, 0], viridis(0.5))
    with pytest.raises(ValueError, match="vmin"):
        colorize(heatmap, vmin=1.0, vmax=1.0)


def test_overlay_shape_dtype_and_nan_pixels_are_the_image():
    grey, heatmap = _grey(), _blob()
    heatmap[:10, :] = np.nan
    out = render_overlay(grey, heatmap)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert np.array_equal(out[:10], np.repeat(grey[:10, :, None], 3, axis=2))
    assert not np.array_equal(out[10:], np.repeat(grey[10:, :, None], 3, axis=2))


def test_opacity_zero_is_the_image_and_one_is_the_colormap():
    grey, heatmap = _grey(), _blob()
    assert np.array_equal(render_overlay(grey, heatmap, opacity=0.0), to_rgb_uint8(grey))
    for value in (-1.0, 0.0, 1.0):
        out = render_overlay(grey, np.full((64, 64), value), opacity=1.0)
        assert _has_color(out, _cmap_bytes(value)).all(), value
    assert (render_overlay(grey, heatmap, opacity=1.0)[32, 32] == _cmap_bytes(1.0)).all()  # the blob's peak


def test_half_opacity_matches_a_naive_blend():
    grey, heatmap = _grey(), _blob()
    table = matplotlib.colormaps["RdBu_r"](np.arange(256), bytes=True)[:, :3].astype(float)
    colours = table[np.clip(np.floor((heatmap.astype(float) + 1) / 2 * 256), 0, 255).astype(int)]
    expected = 0.7 * grey[..., None] + 0.3 * colours
    assert np.abs(render_overlay(grey, heatmap, opacity=0.3).astype(float) - expected).max() <= 1.0


def test_threshold_contour_only_when_requested_and_non_empty():
    grey = np.full((64, 64), 128, np.uint8)  # blends of a grey 128 never reach pure yellow
    heatmap = _blob()
    assert not _has_color(render_overlay(grey, heatmap), YELLOW).any()
    assert not _has_color(render_overlay(grey, heatmap, threshold=1.5), YELLOW).any()  # empty region
    contour = _has_color(render_overlay(grey, heatmap, threshold=0.5), YELLOW)
    assert contour.any()
    # Every contour pixel lies on the boundary of heatmap > 0.5 (line width 1 at 64 px).
    region = heatmap > 0.5
    inner = region.copy()
    inner[1:-1, 1:-1] = region[1:-1, 1:-1] & region[:-2, 1:-1] & region[2:, 1:-1] & region[1:-1, :-2] & region[1:-1, 2:]
    assert (region & ~inner)[contour].all()
    assert contour[region & ~inner].mean() > 0.9


def test_hidden_below_threshold_shows_the_image():
    grey, heatmap = _grey(), _blob()
    out = render_overlay(grey, heatmap, threshold=0.5, show_below_threshold=False, contour_color=(1, 2, 3))
    far = heatmap < 0.0  # well away from the contour
    assert np.array_equal(out[far], to_rgb_uint8(grey)[far])
    assert not np.array_equal(out[heatmap > 0.8], to_rgb_uint8(grey)[heatmap > 0.8])


def test_boxes_drawn_on_their_edges_dashed_white_over_black():
    grey = np.full((64, 64), 100, np.uint8)
    out = render_overlay(grey, np.zeros((64, 64)), opacity=0.0, boxes=[[10, 12, 20, 15]])
    white, black = _has_color(out, WHITE), _has_color(out, BLACK)
    # Edges on columns 10 and 29, rows 12 and 26 (the box covers pixels x..x+w-1): every edge pixel is white or
    # black, the white ones only on the edges, in dashes (white and black alternate along each edge).
    outline = np.zeros((64, 64), bool)
    outline[12, 10:30] = outline[26, 10:30] = outline[12:27, 10] = outline[12:27, 29] = True
    assert (white | black)[outline].all() and not white[~outline].any()
    assert 0.3 < white[outline].mean() < 0.7
    assert np.count_nonzero(np.diff(white[12, 10:30].astype(int))) >= 3  # dashes, not one solid run
    # the black halo is one or two pixels on each side of a 1-pixel line, and nothing further out changes
    assert black[11, 10:30].all() and black[13, 11:29].all() and not black[9, 15] and not black[15, 15]
    assert (out[19, 20] == 100).all()


def test_box_labels_and_line_width():
    grey = np.full((512, 512), 100, np.uint8)
    box = [[200.4, 200.0, 100.0, 80.0]]
    plain = render_overlay(grey, np.zeros((512, 512)), opacity=0.0, boxes=box)
    line = _has_color(plain, WHITE) | _has_color(plain, BLACK)
    assert line[200, 200:300].all() and line[201, 200:300].all()  # default width 2 at 512 px
    assert _has_color(plain, WHITE)[200:202, 200:300].any()
    labelled = render_overlay(grey, np.zeros((512, 512)), opacity=0.0, boxes=box, box_labels=["nodule"])
    changed = (labelled != plain).any(axis=-1)
    assert changed.any() and not changed[201:].any()  # the tag sits above the box
    tagged_top = render_overlay(grey, np.zeros((512, 512)), opacity=0.0, boxes=[[5, 0, 50, 50]], box_labels=["x"])
    assert tagged_top.shape == (512, 512, 3)


def test_colorbar_and_legend_sizes():
    overlay = render_overlay(_grey(), _blob())
    bar = add_colorbar(overlay)
    assert bar.dtype == np.uint8 and bar.shape[0] == 64 and bar.shape[1] > 64
    assert np.array_equal(bar[:, :64], overlay)
    assert not np.array_equal(add_colorbar(overlay, threshold=0.5), bar)
    legend = add_legend(bar, [("ground truth", WHITE), ("threshold contour", YELLOW)])
    assert legend.shape[1] == bar.shape[1] and legend.shape[0] > 64
    assert np.array_equal(legend[:64], bar)
    assert np.array_equal(add_legend(bar, []), bar)


def test_render_figure_rgb_odd_size_and_title():
    rgb = np.random.default_rng(2).random((37, 53, 3))
    heatmap = _blob(37, 53)
    heatmap[0] = np.nan
    overlay = render_overlay(rgb, heatmap, threshold=0.2, boxes=[[3, 4, 10, 9]], box_labels=["a"])
    assert overlay.shape == (37, 53, 3)
    assert np.array_equal(overlay[0, 20:40], to_rgb_uint8(rgb)[0, 20:40])
    figure = render_figure(rgb, heatmap, threshold=0.2, boxes=[[3, 4, 10, 9]])
    titled = render_figure(rgb, heatmap, threshold=0.2, boxes=[[3, 4, 10, 9]], title="a very long title " * 5)
    assert figure.dtype == np.uint8 and figure.shape[0] > 37 and figure.shape[1] > 53
    assert titled.shape[1] == figure.shape[1] and titled.shape[0] > figure.shape[0]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"heatmap": np.zeros((8, 9))}, r"\(8, 9\).*\(8, 8\)"),
        ({"opacity": -0.1}, "opacity"),
        ({"opacity": 1.5}, "opacity"),
        ({"opacity": float("nan")}, "opacity"),
        ({"cmap": "no_such_map"}, "colormap"),
        ({"boxes": [[1, 2, 3]]}, "boxes"),
        ({"boxes": [[1, 2, 3, 4]], "box_labels": ["a", "b"]}, "labels"),
        ({"threshold": float("inf")}, "threshold"),
    ],
)
def test_render_overlay_rejects_bad_arguments(kwargs, message):
    arguments = {"image": _grey(8, 8), "heatmap": np.zeros((8, 8))} | kwargs
    with pytest.raises(ValueError, match=message):
        render_overlay(arguments.pop("image"), arguments.pop("heatmap"), **arguments)


def test_save_png_round_trip(tmp_path):
    figure = render_figure(_grey(), _blob(), threshold=0.5, title="round trip")
    save_png(tmp_path / "figure.png", figure)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "figure.png").convert("RGB")), figure)
    with pytest.raises(ValueError, match="does not exist"):
        save_png(tmp_path / "missing" / "figure.png", figure)
    with pytest.raises(ValueError, match=".png"):
        save_png(tmp_path / "figure.jpg", figure)


def _luminance(rgb) -> np.ndarray:
    """WCAG 2.x relative luminance of sRGB colours ``[..., 3]`` (uint8)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return c @ np.array([0.2126, 0.7152, 0.0722])


def contrast_ratio(a, b) -> np.ndarray:
    """WCAG contrast ratio ``(L1 + 0.05) / (L2 + 0.05)`` with ``L1`` the lighter."""
    la, lb = _luminance(a), _luminance(b)
    return (np.maximum(la, lb) + 0.05) / (np.minimum(la, lb) + 0.05)


def line_neighbours(rgb: np.ndarray, colours) -> tuple[np.ndarray, np.ndarray]:
    """The drawn line (pixels of ``colours``, e.g. the contour's yellow and its black halo, next to one another) and
    the pixels just outside it (what the line is seen against)."""
    from scipy import ndimage

    hits = [_has_color(rgb, c) for c in colours]
    line = np.zeros(rgb.shape[:2], bool)
    for k, hit in enumerate(hits):  # a line pixel touches a pixel of another of the line's colours
        others = np.logical_or.reduce([h for j, h in enumerate(hits) if j != k])
        line |= hit & ndimage.binary_dilation(others, iterations=2)
    return line, ndimage.binary_dilation(line) & ~line


def test_the_contour_and_boxes_contrast_3_to_1_with_the_heat_beside_them():
    """WCAG 1.4.11: a graphic needs 3:1 against what is beside it. Each line is two-tone (yellow on black; white
    dashes on black), so one of its tones reaches 3:1 against any heat colour; yellow alone does not (it fails on
    the light middle of the colour scale)."""
    rng = np.random.default_rng(0)
    film = rng.integers(40, 230, (160, 160), dtype=np.uint8)
    y, x = np.mgrid[0:160, 0:160]
    heatmap = np.cos(x / 25.0) * np.sin(y / 31.0)  # every value of the colour scale, light middle included
    for threshold in (-0.6, 0.0, 0.05, 0.5):
        for opacity in (0.5, 1.0):
            out = render_overlay(film, heatmap, threshold=threshold, opacity=opacity, boxes=[[20, 30, 70, 60]])
            for colours in ((YELLOW, BLACK), (WHITE, BLACK)):
                line, beside = line_neighbours(out, colours)
                assert line.any() and beside.any()
                best = np.maximum(contrast_ratio(colours[0], out[beside]), contrast_ratio(colours[1], out[beside]))
                assert best.min() >= 3.0, (threshold, opacity, colours, best.min())
    # without its halo the yellow line would fail: on the light middle of the scale it is under 3:1
    middle = np.asarray(render_overlay(np.full((4, 4), 200, np.uint8), np.zeros((4, 4)), opacity=0.5))[0, 0]
    assert contrast_ratio(YELLOW, middle) < 3.0
