"""benchmarks/heatmap_area.py: area ratio, precision and recall of a thresholded heatmap, by hand."""

from __future__ import annotations

import numpy as np

from benchmarks.heatmap_area import area_statistics


def test_area_precision_recall_by_hand():
    heatmap = np.array([[0.9, 0.6, 0.2], [0.4, 0.0, np.nan], [0.0, 0.0, 0.0]])
    truth = np.zeros((3, 3), bool)
    truth[0, :2] = truth[1, 0] = True  # 3 true pixels
    stats = area_statistics(heatmap, truth, thresholds=(0.1, 0.5, 0.95))
    # > 0.1: 0.9, 0.6, 0.2, 0.4 -> 4 predicted, 3 of them true
    np.testing.assert_allclose(stats[0], [4 / 3, 3 / 4, 1.0])
    # > 0.5: 0.9, 0.6 -> 2 predicted, both true
    np.testing.assert_allclose(stats[1], [2 / 3, 1.0, 2 / 3])
    # > 0.95: nothing predicted: area 0, precision undefined, recall 0
    assert stats[2][0] == 0 and np.isnan(stats[2][1]) and stats[2][2] == 0
    assert np.isnan(area_statistics(heatmap, np.zeros((3, 3), bool))).all()
