"""What the localize CLI's overlay PNG shows: the ground-truth box's pixels and the contour at ``--threshold``.

The expectations are written from the CLI's promise, not from its earlier output: a box ``[x, y, w, h]`` covers
pixel columns ``x .. x+w-1`` and rows ``y .. y+h-1`` and its outline is drawn dashed in pure white over black; the
contour is drawn in pure yellow (on a black halo) on the boundary of ``heatmap > threshold``, where ``heatmap`` is
the ``.npy`` written next to the PNG.
The thresholds are two quantiles of that heatmap, so a contour at any other (fixed or default) level fails.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

import afloc
from afloc.__main__ import main as localize_main

WHITE, BLACK, YELLOW = (255, 255, 255), (0, 0, 0), (255, 255, 0)
HEIGHT, WIDTH = 120, 90
BOX = (10, 15, 30, 20)  # x, y, w, h: columns 10..39, rows 15..34


def box_outline(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    outline = np.zeros(shape, bool)
    outline[y, x : x + w] = outline[y + h - 1, x : x + w] = True
    outline[y : y + h, x] = outline[y : y + h, x + w - 1] = True
    return outline


def find_overlay(figure: np.ndarray, outline: np.ndarray) -> tuple[int, int]:
    """Offset of the image inside the figure: where the box outline lies on pure white and black pixels, with the
    white dashes on a third or more of it."""
    white, black = (figure == WHITE).all(axis=2), (figure == BLACK).all(axis=2)
    rows, cols = np.nonzero(outline)
    height, width = outline.shape
    hits = [
        (dy, dx)
        for dy in range(figure.shape[0] - height + 1)
        for dx in range(figure.shape[1] - width + 1)
        if (white | black)[rows + dy, cols + dx].all()
        and white[rows + dy, cols + dx].mean() > 0.3
        and not white[dy : dy + height, dx : dx + width][~outline].any()
    ]
    assert len(hits) == 1, f"the box outline was found {len(hits)} times in the figure"
    return hits[0]


def test_overlay_has_the_box_pixels_and_the_contour_at_the_given_threshold(tmp_path, tiny_config, tiny_tokenizer):
    """Bug class: the CLI ignoring ``--threshold`` (contour at another level or none) or never drawing the boxes."""
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    afloc.save_pretrained(afloc.AFLoc(tiny_config).eval(), model_dir, tiny_tokenizer, afloc.Preprocessing(64))
    rows, cols = np.mgrid[:HEIGHT, :WIDTH]
    film = 60 + 120 * np.exp(-((rows - 80) ** 2 + (cols - 60) ** 2) / 400) + cols  # a bright blob on a ramp
    Image.fromarray(film.clip(0, 255).astype(np.uint8)).save(tmp_path / "film.png")
    (tmp_path / "boxes.csv").write_text(f"image,x,y,w,h,label\nfilm.png,{','.join(map(str, BOX))},\n")
    argv = [str(tmp_path / "film.png"), "--prompt", "mass", "--model", str(model_dir)]

    # without --threshold and --boxes: neither colour anywhere in the figure
    assert localize_main([*argv, "--out", str(tmp_path / "plain")]) == 0
    figure = np.asarray(Image.open(tmp_path / "plain" / "film__mass.png").convert("RGB"))
    assert not (figure == YELLOW).all(axis=2).any() and not (figure == WHITE).all(axis=2)[:HEIGHT, :WIDTH].any()
    heatmap = np.load(tmp_path / "plain" / "film__mass.npy")
    assert heatmap.shape == (HEIGHT, WIDTH) and np.isfinite(heatmap).all()

    outline = box_outline((HEIGHT, WIDTH), BOX)
    for quantile in (0.3, 0.7):
        threshold = f"{np.quantile(heatmap, quantile):.6f}"
        out = tmp_path / f"q{quantile}"
        assert (
            localize_main([*argv, "--out", str(out), "--boxes", str(tmp_path / "boxes.csv"), "--threshold", threshold])
            == 0
        )
        assert np.array_equal(np.load(out / "film__mass.npy"), heatmap)
        figure = np.asarray(Image.open(out / "film__mass.png").convert("RGB"))
        dy, dx = find_overlay(figure, outline)
        overlay = figure[dy : dy + HEIGHT, dx : dx + WIDTH]
        assert not (overlay == WHITE).all(axis=2)[~outline].any(), "white outside the box outline"

        region = heatmap > float(threshold)
        assert 0.2 < region.mean() < 0.8, region.mean()
        # boundary: region pixels with a 4-neighbour outside it (outside the image counts as outside)
        boundary = region & ~ndimage.binary_erosion(region, border_value=0)
        yellow = (overlay == YELLOW).all(axis=2)
        assert not (yellow & ~region).any(), "contour pixels outside heatmap > threshold"
        visible = boundary & ~ndimage.binary_dilation(outline)  # the box and its halo are drawn last, over the contour
        assert yellow[visible].mean() > 0.9, yellow[visible].mean()
        assert not yellow[region & ~ndimage.binary_dilation(boundary)].any(), "contour inside the region"
