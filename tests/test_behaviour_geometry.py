"""Pad-resize arithmetic, checked against values worked out by hand.

The short side is ``short * size / long`` *truncated* (the reference's ``int()``); the padding is split
``floor(pad / 2)`` before and ``ceil(pad / 2)`` after. The cases are chosen so that the scaled side has a
fractional part of 0.5 or more, where rounding instead of truncating gives a different image.
"""

from __future__ import annotations

import numpy as np
import pytest

from afloc.imaging.transforms import Preprocessing, pad_resize, pad_resize_mapping

# (height, width, size, rule) -> (resized_height, resized_width, top, left), worked by hand:
HAND_WORKED = [
    # 65 * 64 / 100 = 41.6 -> 41 (rounding: 42); pad 23 -> 11 left, 12 right
    ((100, 65, 64, "exact"), (64, 41, 0, 11)),
    ((65, 100, 64, "exact"), (41, 64, 11, 0)),
    # 131 * 224 / 300 = 97.81 -> 97 (rounding: 98); pad 127 -> 63 / 64
    ((300, 131, 224, "exact"), (224, 97, 0, 63)),
    # 1021 * 224 / 1023 = 223.56 -> 223 (rounding would make the film square); pad 1 -> 0 / 1
    ((1023, 1021, 224, "exact"), (224, 223, 0, 0)),
    ((1021, 1023, 224, "exact"), (223, 224, 0, 0)),
    # 3 * 8 / 5 = 4.8 -> 4 (rounding: 5); pad 4 -> 2 / 2
    ((5, 3, 8, "exact"), (8, 4, 0, 2)),
    # 171 * (224 / 256) = 149.625 -> 149 under the reference rule too; pad 75 -> 37 / 38
    ((256, 171, 224, "reference"), (224, 149, 0, 37)),
    # the reference rule's double rounding: 299 * (224 / 299) = 223.99999999999997 -> 223
    ((299, 299, 224, "reference"), (224, 223, 0, 0)),
    ((299, 299, 224, "exact"), (224, 224, 0, 0)),
]


@pytest.mark.parametrize(("args", "expected"), HAND_WORKED, ids=lambda v: "x".join(map(str, v)))
def test_pad_resize_truncates_the_short_side_and_splits_the_padding(args, expected):
    """Bug class: the resized side rounded instead of truncated, or the padding split the other way round."""
    height, width, size, rule = args
    mapping = pad_resize_mapping(height, width, size, rule)
    got = (mapping.resized_height, mapping.resized_width, mapping.top, mapping.left)
    assert got == expected
    padded, _ = pad_resize(np.ones((height, width), np.float32), size, rule)
    rows, cols = np.nonzero(padded)
    resized_height, resized_width, top, left = expected
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (
        top,
        top + resized_height,
        left,
        left + resized_width,
    )


@pytest.mark.parametrize("resize_8bit", [False, True])
def test_preprocessing_pads_with_black_around_the_truncated_content(resize_8bit):
    """Same bug class through the model's preprocessing (normalised padding = -1, content = +1)."""
    tensor, mapping = Preprocessing(64, resize_8bit=resize_8bit)(np.ones((100, 65), np.float32))
    assert (mapping.resized_width, mapping.left) == (41, 11)
    content = (tensor[0] > 0).numpy()
    assert content[:, 11:52].all() and not content[:, :11].any() and not content[:, 52:].any()


def test_heatmap_back_to_original_uses_the_truncated_content():
    """A model-space map that is 1 on the content columns and 0 on the padding maps back to all ones."""
    mapping = pad_resize_mapping(100, 65, 64)
    model = np.zeros((64, 64), np.float32)
    model[:, 11:52] = 1.0
    assert np.array_equal(mapping.heatmap_to_original(model), np.ones((100, 65), np.float32))
