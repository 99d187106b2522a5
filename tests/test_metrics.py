"""Tests of afloc.localization.metrics against tiny hand-computed arrays (docs/method.md section 5) and naive
oracles."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from afloc.localization.metrics import (
    THRESHOLDS,
    bootstrap_auc_ci,
    bootstrap_ci,
    bootstrap_macro_ci,
    cnr,
    dice,
    iou,
    macro_average,
    pointing_game,
    roc_auc,
    summarize,
    threshold_metrics,
    valid_pixels,
)

NAN = float("nan")

# Ground truth = the top-left 2x2 block (4 pixels).
MASK = np.zeros((4, 4), dtype=bool)
MASK[:2, :2] = True
# Above 0.2: 0.9, 0.5 (inside) and 0.3, 0.25 (outside) -> TP 2, |P| 4, |G| 4: IoU 2/6, Dice 4/8.
HEATMAP = np.array(
    [
        [0.9, 0.5, 0.3, -1.0],
        [0.1, 0.0, 0.25, -1.0],
        [-1.0, -1.0, -1.0, -1.0],
        [-1.0, -1.0, -1.0, -1.0],
    ]
)


@pytest.fixture(autouse=True)
def _warnings_are_errors():
    """No metric may emit a RuntimeWarning (e.g. "Mean of empty slice") on the NaN paths."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_iou_and_dice_hand_computed():
    assert iou(HEATMAP, MASK, 0.2) == pytest.approx(1 / 3)
    assert dice(HEATMAP, MASK, 0.2) == pytest.approx(1 / 2)
    # 0.1 is not > 0.1: same prediction as at 0.2.
    assert iou(HEATMAP, MASK, 0.1) == pytest.approx(1 / 3)
    # Above 0.3: 0.9, 0.5 -> TP 2, |P| 2, |G| 4.
    assert iou(HEATMAP, MASK, 0.3) == pytest.approx(2 / 4)
    assert dice(HEATMAP, MASK, 0.3) == pytest.approx(4 / 6)
    # Above 0.5: 0.9 -> TP 1, |P| 1, |G| 4.
    assert iou(HEATMAP, MASK, 0.5) == pytest.approx(1 / 4)
    assert dice(HEATMAP, MASK, 0.5) == pytest.approx(2 / 5)
    # Predicted pixels, none inside the ground truth (the bottom-right pixel): defined, and 0.
    corner = np.zeros_like(MASK)
    corner[3, 3] = True
    assert iou(HEATMAP, corner, 0.2) == 0.0
    assert dice(HEATMAP, corner, 0.2) == 0.0
    assert isinstance(iou(HEATMAP, MASK, 0.2), float)


def test_empty_prediction_or_empty_mask_is_nan():
    assert math.isnan(iou(HEATMAP, MASK, 0.95))
    assert math.isnan(dice(HEATMAP, MASK, 0.95))
    empty = np.zeros_like(MASK)
    assert math.isnan(iou(HEATMAP, empty, 0.2))
    assert math.isnan(dice(HEATMAP, empty, 0.2))


def test_nan_pixels_are_excluded_from_prediction_and_ground_truth():
    heatmap = np.array([[0.8, NAN], [-1.0, NAN]])
    mask = np.array([[True, True], [False, False]])
    # The NaN pixel inside the mask is not a miss: G = {(0, 0)}, P = {(0, 0)}.
    assert iou(heatmap, mask, 0.5) == 1.0
    assert dice(heatmap, mask, 0.5) == 1.0
    # A mask covering only NaN pixels is an empty ground truth.
    assert math.isnan(iou(heatmap, np.array([[False, True], [False, True]]), 0.5))
    np.testing.assert_array_equal(valid_pixels(heatmap), [[True, False], [True, False]])


def test_threshold_sweep_with_undefined_thresholds():
    heatmap = np.array([[0.35, 0.15, -1.0], [0.25, -1.0, -1.0]])
    mask = np.array([[True, True, False], [False, False, False]])
    result = threshold_metrics(heatmap, mask)
    assert set(result) == {"iou", "dice", "iou_mean", "dice_mean"}
    # t=0.1: P={.35,.15,.25}, TP 2; t=0.2: P={.35,.25}, TP 1; t=0.3: P={.35}, TP 1; t>=0.4: empty prediction.
    np.testing.assert_allclose(result["iou"], [2 / 3, 1 / 3, 1 / 2, NAN, NAN])
    np.testing.assert_allclose(result["dice"], [4 / 5, 2 / 4, 2 / 3, NAN, NAN])
    assert result["iou_mean"] == pytest.approx((2 / 3 + 1 / 3 + 1 / 2) / 3)
    assert result["dice_mean"] == pytest.approx(59 / 90)
    # Vectorised sweep == one call per threshold.
    swept = threshold_metrics(HEATMAP, MASK)
    np.testing.assert_array_equal(swept["iou"], [iou(HEATMAP, MASK, t) for t in THRESHOLDS])
    np.testing.assert_array_equal(swept["dice"], [dice(HEATMAP, MASK, t) for t in THRESHOLDS])
    # All thresholds undefined: NaN means, no warning (the autouse fixture turns warnings into errors).
    empty = threshold_metrics(np.full((2, 2), -1.0), np.eye(2, dtype=bool))
    assert math.isnan(empty["iou_mean"]) and math.isnan(empty["dice_mean"])


def test_iou_matches_naive_pixel_loop():
    rng = np.random.default_rng(3)
    heatmap = rng.uniform(-1, 1, size=(9, 7))
    heatmap[rng.random((9, 7)) < 0.2] = NAN
    mask = rng.random((9, 7)) < 0.4
    for threshold in THRESHOLDS:
        valid = ~np.isnan(heatmap.ravel())
        cells = list(zip(heatmap.ravel()[valid] > threshold, mask.ravel()[valid], strict=True))
        tp = sum(p and g for p, g in cells)
        n_p, n_g = sum(p for p, _ in cells), sum(g for _, g in cells)
        assert iou(heatmap, mask, threshold) == pytest.approx(tp / (n_p + n_g - tp))
        assert dice(heatmap, mask, threshold) == pytest.approx(2 * tp / (n_p + n_g))


def test_shape_mismatch_and_bad_mask_raise():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(3, 3\)"):
        iou(HEATMAP, np.zeros((3, 3), dtype=bool), 0.2)
    for metric in (cnr, pointing_game, threshold_metrics):
        with pytest.raises(ValueError, match="same shape"):
            metric(HEATMAP, np.zeros((4, 3), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        dice(HEATMAP, MASK * 2, 0.2)
    assert iou(HEATMAP, MASK.astype(int), 0.2) == pytest.approx(1 / 3)  # 0/1 integers are accepted


def test_cnr_signed_and_absolute():
    heatmap = np.array([[1.0, 0.5], [0.0, -0.5]])
    top = np.array([[True, True], [False, False]])
    # in: mean 0.75, var 0.0625; out: mean -0.25, var 0.0625 (ddof=0) -> 1 / sqrt(0.125) = 2 sqrt(2).
    assert cnr(heatmap, top) == pytest.approx(2 * math.sqrt(2))
    assert cnr(heatmap, ~top) == pytest.approx(-2 * math.sqrt(2))
    assert cnr(heatmap, ~top, absolute=True) == pytest.approx(2 * math.sqrt(2))
    # NaN pixels (inside or outside) are ignored.
    padded = np.array([[1.0, 0.5, NAN], [0.0, -0.5, NAN]])
    padded_mask = np.array([[True, True, True], [False, False, False]])
    assert cnr(padded, padded_mask) == pytest.approx(2 * math.sqrt(2))


def test_cnr_undefined_cases_are_nan():
    heatmap = np.array([[1.0, 0.5], [0.0, -0.5]])
    assert math.isnan(cnr(heatmap, np.ones((2, 2), dtype=bool)))  # empty outside
    assert math.isnan(cnr(heatmap, np.zeros((2, 2), dtype=bool)))  # empty inside
    assert math.isnan(cnr(np.full((2, 2), 0.3), np.eye(2, dtype=bool)))  # zero variance
    assert math.isnan(cnr(np.array([[NAN, 0.1], [0.2, 0.3]]), np.array([[True, False], [False, False]])))


def test_pointing_game_hit_miss_nan_and_ties():
    assert pointing_game(HEATMAP, MASK) == 1.0
    assert pointing_game(HEATMAP, ~MASK) == 0.0
    assert math.isnan(pointing_game(HEATMAP, np.zeros_like(MASK)))
    assert math.isnan(pointing_game(np.full((2, 2), NAN), np.eye(2, dtype=bool)))
    # The NaN pixel is never the arg-max; the valid maximum 0.4 is outside the mask.
    assert pointing_game(np.array([[NAN, 0.4], [0.1, 0.2]]), np.array([[True, False], [True, False]])) == 0.0
    # Ties: the first maximal pixel in row-major order decides (here (0, 1) before (1, 0)).
    tied = np.array([[0.0, 0.9], [0.9, 0.0]])
    assert pointing_game(tied, np.array([[False, True], [False, False]])) == 1.0
    assert pointing_game(tied, np.array([[False, False], [True, False]])) == 0.0


def test_macro_average_skips_all_nan_category():
    per_category, macro = macro_average([0.2, 0.4, NAN, NAN, 0.9, NAN], ["a", "a", "b", "b", "c", "c"])
    assert per_category["a"] == pytest.approx(0.3)
    assert math.isnan(per_category["b"])
    assert per_category["c"] == 0.9
    assert list(per_category) == ["a", "b", "c"]
    assert macro == pytest.approx(0.6)  # (0.3 + 0.9) / 2, b excluded
    assert math.isnan(macro_average([NAN, NAN], ["a", "b"])[1])
    with pytest.raises(ValueError, match="same length"):
        macro_average([0.1, 0.2], ["a"])


def test_bootstrap_ci_is_seeded_and_covers_the_mean():
    values = np.random.default_rng(1).normal(0.4, 0.1, size=200)
    first = bootstrap_ci(values, seed=0)
    assert bootstrap_ci(values, seed=0) == first
    assert bootstrap_ci(values, seed=1) != first
    assert first[0] < values.mean() < first[1]
    assert first[1] - first[0] < 0.05  # ~ 2 * 1.96 * 0.1 / sqrt(200) = 0.028
    assert bootstrap_ci([NAN, NAN]) == pytest.approx((NAN, NAN), nan_ok=True)


def test_bootstrap_ci_matches_naive_loop():
    values = np.array([0.1, NAN, 0.5, 0.7, 0.2, NAN, 0.9])
    draws = np.random.default_rng(7).integers(0, values.size, size=(200, values.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the oracle's all-NaN draws
        statistics = np.array([np.nanmean(values[row]) for row in draws])
    expected = np.percentile(statistics[~np.isnan(statistics)], [2.5, 97.5])
    np.testing.assert_allclose(bootstrap_ci(values, n_resamples=200, seed=7), expected)
    median_ci = bootstrap_ci(values, statistic=np.nanmedian, n_resamples=50, seed=7)
    assert median_ci[0] <= np.nanmedian(values) <= median_ci[1]


def test_bootstrap_macro_ci_matches_naive_loop():
    values = np.array([0.1, 0.3, NAN, 0.8, 0.6, 0.2, NAN, 0.5])
    categories = ["a", "a", "b", "b", "c", "c", "c", "d"]
    draws = np.random.default_rng(5).integers(0, values.size, size=(300, values.size))
    macros = np.array([macro_average(values[row], [categories[i] for i in row])[1] for row in draws])
    expected = np.percentile(macros[~np.isnan(macros)], [2.5, 97.5])
    np.testing.assert_allclose(bootstrap_macro_ci(values, categories, n_resamples=300, seed=5), expected)
    assert bootstrap_macro_ci(values, categories, seed=3) == bootstrap_macro_ci(values, categories, seed=3)
    assert bootstrap_macro_ci(values, categories, seed=3) != bootstrap_macro_ci(values, categories, seed=4)


def test_roc_auc_hand_computed_and_ties():
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # Pairs (pos, neg): (0.5, 0.2)=1, (0.5, 0.5)=1/2, (0.9, *)=2 -> 3.5 / 4.
    assert roc_auc([False, False, True, True], [0.2, 0.5, 0.5, 0.9]) == pytest.approx(0.875)
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert roc_auc([0, 1, 1], [0.1, 0.2, 0.3]) == 1.0
    assert roc_auc([1, 0, 0], [0.1, 0.2, 0.3]) == 0.0
    assert math.isnan(roc_auc([1, 1, 1], [0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="same shape"):
        roc_auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="binary"):
        roc_auc([0, 2], [0.1, 0.2])


def test_bootstrap_auc_ci_skips_single_class_draws():
    labels = np.array([0, 0, 0, 0, 1, 0])
    scores = np.array([0.1, 0.7, 0.3, 0.4, 0.6, 0.2])
    draws = np.random.default_rng(2).integers(0, labels.size, size=(400, labels.size))
    aucs = np.array([roc_auc(labels[row], scores[row]) for row in draws])
    assert np.isnan(aucs).any()  # the oracle does draw single-class resamples
    expected = np.percentile(aucs[~np.isnan(aucs)], [2.5, 97.5])
    np.testing.assert_allclose(bootstrap_auc_ci(labels, scores, n_resamples=400, seed=2), expected)
    assert bootstrap_auc_ci([1, 1], [0.1, 0.2]) == pytest.approx((NAN, NAN), nan_ok=True)


def test_summarize_plain_and_macro():
    values = [0.2, 0.4, NAN, 0.9]
    plain = summarize(values, n_resamples=100)
    assert plain["mean"] == pytest.approx(0.5) and plain["n"] == 3
    assert plain["ci_low"] <= plain["mean"] <= plain["ci_high"]
    macro = summarize(values, categories=["a", "a", "b", "c"], n_resamples=100)
    assert macro["mean"] == pytest.approx(0.6) and macro["n"] == 3
    assert (macro["ci_low"], macro["ci_high"]) == bootstrap_macro_ci(values, ["a", "a", "b", "c"], n_resamples=100)


@pytest.mark.parametrize("with_nan", [False, True])
@pytest.mark.parametrize("threshold", [-0.5, 0.2, 0.9, 1.5])
def test_localization_metrics_equals_the_single_metrics(with_nan, threshold):
    from afloc.localization.metrics import cnr, dice, iou, localization_metrics, pointing_game

    rng = np.random.default_rng(4)
    heatmap = rng.uniform(-1, 1, size=(37, 53)).astype(np.float32)
    mask = np.zeros((37, 53), bool)
    mask[5:20, 10:30] = True
    if with_nan:
        heatmap[:3] = np.nan
        heatmap[10, 12] = np.nan
    got = localization_metrics(heatmap, mask, threshold)
    expected = {
        "iou": iou(heatmap, mask, threshold),
        "dice": dice(heatmap, mask, threshold),
        "cnr": cnr(heatmap, mask),
        "pointing_game": pointing_game(heatmap, mask),
    }
    for key, value in expected.items():
        assert np.isnan(got[key]) == np.isnan(value), key
        if not np.isnan(value):
            assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    empty = localization_metrics(heatmap, np.zeros_like(mask), threshold)
    assert all(np.isnan(v) for v in empty.values())


def test_summaries_pass_their_seed_and_resample_count_on():
    values = np.array([0.2, 0.4, NAN, 0.9, 0.1, 0.6, 0.3])
    categories = ["a", "a", "b", "c", "c", "b", "a"]
    # the documented default seed is 0, in every entry point
    assert bootstrap_ci(values) == bootstrap_ci(values, seed=0)
    plain = summarize(values, n_resamples=50, seed=3)
    assert (plain["ci_low"], plain["ci_high"]) == bootstrap_ci(values, n_resamples=50, seed=3)
    assert summarize(values, n_resamples=50, seed=3) == plain  # reproducible, not freshly seeded
    macro = summarize(values, categories=categories, n_resamples=50, seed=3)
    assert (macro["ci_low"], macro["ci_high"]) == bootstrap_macro_ci(values, categories, n_resamples=50, seed=3)
    assert (macro["ci_low"], macro["ci_high"]) != bootstrap_macro_ci(values, categories, n_resamples=50, seed=0)


@pytest.mark.parametrize("confidence", [0.0, 1.0, 1.5, -0.2])
def test_confidence_outside_the_open_unit_interval_is_refused(confidence):
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0.1, 0.2, 0.3], confidence=confidence)
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_macro_ci([0.1, 0.2, 0.3], ["a", "a", "b"], confidence=confidence)


def test_mask_covering_every_valid_pixel():
    """No outside region: CNR is undefined (NaN, no division warning), the pointing game always hits."""
    from afloc.localization.metrics import localization_metrics

    heatmap = np.array([[0.1, 0.7], [NAN, -0.3]])
    mask = np.array([[True, True], [False, True]])  # every valid pixel
    got = localization_metrics(heatmap, mask, 0.0)
    assert math.isnan(got["cnr"]) and math.isnan(cnr(heatmap, mask))
    assert got["pointing_game"] == 1.0
    assert got["iou"] == pytest.approx(2 / 3)  # 2 predicted, 3 true, 2 shared


def test_a_single_threshold_is_a_sweep_of_one():
    single = threshold_metrics(HEATMAP, MASK, 0.2)
    assert single["iou"].shape == (1,) and single["iou_mean"] == pytest.approx(2 / 6)
    assert single["dice_mean"] == pytest.approx(4 / 8)
