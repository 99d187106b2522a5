"""Pad-resize geometry: the reference formula, round trips, heatmaps back to the exact original size."""

from __future__ import annotations

import numpy as np
import pytest

from afloc.imaging.transforms import Preprocessing, pad_resize, pad_resize_mapping


@pytest.mark.parametrize(
    ("height", "width", "resized", "pad_before"),
    [
        (1000, 600, (224, 134), 45),  # int(600 * 224 / 1000) = 134, pad 90 -> 45 left, 45 right
        (600, 1001, (134, 224), 45),  # int(600 * 224 / 1001) = 134.26 -> 134 rows
        (513, 511, (224, 223), 0),  # int(511 * 224 / 513) = 223.1 -> 223, pad 1 -> 0 left, 1 right
        (300, 300, (224, 224), 0),
    ],
)
def test_reference_formula(height, width, resized, pad_before):
    m = pad_resize_mapping(height, width, 224)
    assert (m.resized_height, m.resized_width) == resized
    assert (m.left if height >= width else m.top) == pad_before


def test_pad_resize_places_content_and_zero_pads():
    image = np.ones((100, 50), dtype=np.float32)
    out, m = pad_resize(image, 64)
    assert out.shape == (64, 64)
    assert m.left == 16 and m.resized_width == 32
    assert np.all(out[:, :16] == 0) and np.all(out[:, 48:] == 0) and np.allclose(out[:, 16:48], 1, atol=1e-6)
    rgb, _ = pad_resize(np.ones((30, 90, 3), np.float32), 64)
    assert rgb.shape == (64, 64, 3)


@pytest.mark.parametrize(("height", "width"), [(1024, 1024), (731, 517), (517, 731), (2000, 1653), (37, 91)])
def test_box_round_trip_within_one_pixel(height, width):
    m = pad_resize_mapping(height, width, 224)
    boxes = np.array([[0, 0, width, height], [10.5, 20.25, 30, 17], [width - 5, height - 9, 4, 8]])
    back = m.boxes_to_original(m.boxes_to_model(boxes))
    assert np.abs(back - boxes).max() < 1.0
    model_boxes = m.boxes_to_model(boxes)
    # the whole image maps onto the content area
    assert np.allclose(model_boxes[0], [m.left, m.top, m.resized_width, m.resized_height])
    points = np.array([[0, 0], [width, height], [width / 3, height / 7]])
    assert np.abs(m.points_to_original(m.points_to_model(points)) - points).max() < 1.0


@pytest.mark.parametrize(("height", "width"), [(731, 517), (517, 731), (225, 224), (101, 99)])
def test_heatmap_back_to_exact_original_size(height, width):
    m = pad_resize_mapping(height, width, 224)
    heatmap = np.zeros((224, 224), np.float32)
    # a mark in the padding must vanish; a vertical ramp over the content must survive
    heatmap[: m.top, :] = 5.0
    heatmap[:, : m.left] = 5.0
    rows = np.arange(224, dtype=np.float32)[:, None]
    heatmap[m.top : m.top + m.resized_height, m.left : m.left + m.resized_width] = (rows / 224.0)[
        m.top : m.top + m.resized_height
    ]
    out = m.heatmap_to_original(heatmap)
    assert out.shape == (height, width)
    assert out.max() < 1.0  # no padding value leaked in
    assert out[0].mean() < out[-1].mean()  # orientation kept
    stacked = m.heatmap_to_original(np.stack([heatmap, heatmap]))
    assert stacked.shape == (2, height, width)


def test_heatmap_nan_margin_stays_nan():
    m = pad_resize_mapping(224, 224, 224)
    heatmap = np.zeros((224, 224), np.float32)
    heatmap[:14] = np.nan
    out = m.heatmap_to_original(heatmap)
    assert np.isnan(out[:14]).all() and not np.isnan(out[20:]).any()


def test_mask_to_model_matches_boxes():
    m = pad_resize_mapping(400, 200, 100)
    mask = np.zeros((400, 200), bool)
    mask[100:200, 50:150] = True
    model_mask = m.mask_to_model(mask)
    x, y, w, h = m.boxes_to_model([[50, 100, 100, 100]])[0]
    ys, xs = np.nonzero(model_mask)
    assert abs(xs.min() - x) <= 1 and abs(ys.min() - y) <= 1
    assert abs(xs.max() + 1 - (x + w)) <= 1 and abs(ys.max() + 1 - (y + h)) <= 1
    with pytest.raises(ValueError, match="does not match"):
        m.mask_to_model(np.zeros((10, 10), bool))


def test_errors():
    with pytest.raises(ValueError, match="too small"):
        pad_resize_mapping(1, 100, 224)
    with pytest.raises(ValueError, match="224x224"):
        pad_resize_mapping(100, 100, 224).heatmap_to_original(np.zeros((100, 100)))
    with pytest.raises(ValueError, match="unknown preprocessing keys"):
        Preprocessing.from_dict({"image_size": 224, "flip": True})


def test_preprocessing_normalises_and_replicates_grey():
    pre = Preprocessing(image_size=32)
    tensor, mapping = pre(np.full((64, 32), 1.0, np.float32))
    assert tensor.shape == (3, 32, 32)
    assert float(tensor[:, :, 8:24].min()) == pytest.approx(1.0, abs=1e-5)  # content: (1 - 0.5) / 0.5
    assert float(tensor[:, :, :8].max()) == -1.0  # zero padding -> -1
    rgb = np.zeros((32, 32, 3), np.float32)
    rgb[..., 0] = 1.0
    tensor, _ = pre(rgb)
    assert float(tensor[0].mean()) == 1.0 and float(tensor[1].mean()) == -1.0
    assert Preprocessing.from_dict(pre.to_dict()) == pre


def test_the_smallest_image_is_two_by_two():
    assert pad_resize_mapping(2, 2, 8).resized_width == 8
    assert pad_resize_mapping(3, 2, 8).resized_width == 5  # int(2 * 8 / 3)
    for height, width in ((1, 2), (2, 1)):
        with pytest.raises(ValueError, match="too small"):
            pad_resize_mapping(height, width, 8)


def test_mask_to_model_samples_pixel_centres():
    """Nearest pixel centre: a 2x upscale repeats each pixel as a 2x2 block, a 2x downscale keeps the odd pixels."""
    checker = (np.indices((4, 4)).sum(axis=0) % 2).astype(bool)
    up = pad_resize_mapping(4, 4, 8).mask_to_model(checker)
    np.testing.assert_array_equal(up, np.kron(checker, np.ones((2, 2), dtype=bool)))
    mask = np.random.default_rng(0).random((8, 8)) > 0.5
    np.testing.assert_array_equal(pad_resize_mapping(8, 8, 4).mask_to_model(mask), mask[1::2, 1::2])


def test_8bit_resize_quantises_and_clips():
    """``resize_8bit`` sees whole grey levels; values outside [0, 1] clip to black / white instead of wrapping."""
    rng = np.random.default_rng(1)
    image = rng.random((16, 12)).astype(np.float32)
    tensor, _ = Preprocessing(image_size=7, resize_8bit=True)(image)
    levels = (tensor.numpy() * 0.5 + 0.5) * 255.0
    np.testing.assert_allclose(levels, np.rint(levels), atol=1e-3)
    assert not np.allclose(
        (Preprocessing(image_size=7)(image)[0].numpy() * 0.5 + 0.5) * 255.0,
        np.rint((Preprocessing(image_size=7)(image)[0].numpy() * 0.5 + 0.5) * 255.0),
        atol=1e-3,
    )  # the float path does not quantise
    out_of_range = np.array([[-0.2, 1.3], [0.5, 0.0]], dtype=np.float32)
    tensor, _ = Preprocessing(image_size=2, resize_8bit=True)(out_of_range)
    expected = np.array([[0, 255], [128, 0]]) / 255.0
    np.testing.assert_allclose(tensor[0].numpy() * 0.5 + 0.5, expected, atol=1e-6)


def test_preprocessing_settings_are_checked():
    with pytest.raises(ValueError, match="std > 0"):
        Preprocessing(std=(0.5, 0.5, 0.0))
    # files written before "resize" was recorded load with the default
    assert Preprocessing.from_dict({"image_size": 64}).resize == "pad_resize_inter_area"
    with pytest.raises(ValueError, match="unsupported resize 'bilinear'"):
        Preprocessing.from_dict({"image_size": 64, "resize": "bilinear"})
