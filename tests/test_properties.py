"""Property-based geometry tests (Hypothesis, issue #30): random sizes, boxes and paddings, exact round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from afloc.imaging.transforms import pad_resize, pad_resize_mapping
from training.evaluation.datasets import LocalizationSample

sides = st.integers(min_value=2, max_value=900)
model_sizes = st.sampled_from([32, 64, 176, 224])


@settings(max_examples=200, deadline=None)
@given(height=sides, width=sides, size=model_sizes)
def test_pad_resize_keeps_the_aspect_and_centres_the_content(height, width, size):
    m = pad_resize_mapping(height, width, size)
    assert max(m.resized_height, m.resized_width) == size
    if height >= width:
        assert m.resized_height == size and m.left == (size - m.resized_width) // 2 and m.top == 0
    else:
        assert m.resized_width == size and m.top == (size - m.resized_height) // 2 and m.left == 0
    # the short side is the long side's scale applied to it, truncated (never more than one pixel off)
    short, long_ = min(height, width), max(height, width)
    assert abs(min(m.resized_height, m.resized_width) - short * size / long_) < 1.0 + 1e-9


@settings(max_examples=200, deadline=None)
@given(height=sides, width=sides, size=model_sizes, data=st.data())
def test_boxes_and_points_round_trip_through_model_space(height, width, size, data):
    m = pad_resize_mapping(height, width, size)
    x = data.draw(st.floats(0, width - 1))
    y = data.draw(st.floats(0, height - 1))
    w = data.draw(st.floats(0.5, width - x))
    h = data.draw(st.floats(0.5, height - y))
    box = np.array([[x, y, w, h]])
    np.testing.assert_allclose(m.boxes_to_original(m.boxes_to_model(box)), box, rtol=1e-9, atol=1e-6)
    model_box = m.boxes_to_model(box)[0]
    # inside the content area of the padded square, on the right axis
    assert m.left - 1e-6 <= model_box[0] <= m.left + m.resized_width + 1e-6
    assert m.top - 1e-6 <= model_box[1] <= m.top + m.resized_height + 1e-6
    np.testing.assert_allclose(m.points_to_original(m.points_to_model(box[:, :2])), box[:, :2], atol=1e-6)


@settings(max_examples=60, deadline=None)
@given(height=st.integers(8, 300), width=st.integers(8, 300), data=st.data())
def test_a_corner_box_lands_in_the_same_corner_of_model_space_and_back(height, width, data):
    size = 64
    w = data.draw(st.integers(1, max(1, width // 3)))
    h = data.draw(st.integers(1, max(1, height // 3)))
    truth = LocalizationSample(Path("x.png"), "p", "c", boxes=[[width - w, height - h, w, h]]).gt_mask(height, width)
    assert truth.sum() == w * h and truth[-1, -1] and not truth[0, 0]
    m = pad_resize_mapping(height, width, size)
    assume(min(m.resized_height, m.resized_width) >= 4)  # a content strip of 1-3 rows has no separate corners
    in_model = m.mask_to_model(truth)
    rows, cols = np.nonzero(in_model)
    if rows.size:  # a box smaller than a model pixel may vanish under nearest-neighbour sampling
        assert rows.max() == m.top + m.resized_height - 1 and cols.max() == m.left + m.resized_width - 1
    heat = np.zeros((size, size), np.float32)  # the content's bottom-right quarter is hot
    heat[m.top + m.resized_height * 3 // 4 : m.top + m.resized_height,
         m.left + m.resized_width * 3 // 4 : m.left + m.resized_width] = 1.0  # fmt: skip
    back = m.heatmap_to_original(heat)
    assert back.shape == (height, width)
    hot = back > 0.5
    assert hot[-1, -1] and not hot[0, 0] and not hot[0, -1] and not hot[-1, 0]


@settings(max_examples=60, deadline=None)
@given(height=st.integers(2, 200), width=st.integers(2, 200), size=st.sampled_from([16, 48]))
def test_pad_resize_output_has_the_content_where_the_mapping_says(height, width, size):
    image = np.ones((height, width), np.float32)
    padded, m = pad_resize(image, size)
    assert padded.shape == (size, size)
    content = np.zeros((size, size), bool)
    content[m.top : m.top + m.resized_height, m.left : m.left + m.resized_width] = True
    assert (padded[content] > 0.99).all() and (padded[~content] == 0).all()
