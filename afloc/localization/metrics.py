"""Localization and classification metrics of the evaluation protocol (docs/method.md section 5).

Pure numpy functions (MONAI-metrics style), each with an explicit NaN / empty-mask policy:

* ``heatmap [H, W]`` is a float map on ``[-1, 1]``; NaN pixels (e.g. pad-resize padding) are *invalid* and
  are dropped from the prediction **and** the ground truth ``mask [H, W]`` (bool), as in the reference.
* An undefined metric is NaN, never 0, so aggregation skips the sample; aggregates treat NaN as missing and
  never warn "Mean of empty slice". Bootstraps are percentile intervals over samples, seeded through
  ``np.random.default_rng(seed)`` (same seed, same interval).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import rankdata

THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5)


def _float_map(heatmap: ArrayLike) -> np.ndarray:
    """The heatmap as a floating-point array (float32 stays float32: no copy of large maps)."""
    heatmap = np.asarray(heatmap)
    return heatmap if np.issubdtype(heatmap.dtype, np.floating) else heatmap.astype(np.float64)


def valid_pixels(heatmap: ArrayLike) -> np.ndarray:
    """Boolean map of the pixels that count (the non-NaN ones), same shape as ``heatmap``."""
    return ~np.isnan(_float_map(heatmap))


def _heatmap_and_mask(heatmap: ArrayLike, mask: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(heatmap, mask, valid)``: float64 map, boolean mask of the same shape, valid pixels."""
    heatmap = _float_map(heatmap)
    mask = np.asarray(mask)
    if heatmap.shape != mask.shape:
        raise ValueError(
            f"heatmap and mask must have the same shape, got heatmap {heatmap.shape} and mask {mask.shape}"
        )
    if mask.dtype != np.bool_:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"mask must be boolean (or 0/1), got values {np.unique(mask)[:6]}; pass `mask > 0`")
        mask = mask.astype(bool)
    return heatmap, mask, valid_pixels(heatmap)


def _samples(values: ArrayLike) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 1:
        raise ValueError(f"values must be one value per sample (1-D), got shape {values.shape}")
    return values


def nanmean(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """``np.nanmean`` (same sum / count arithmetic) that returns NaN for an all-NaN slice without warning."""
    present = ~np.isnan(values)
    total = np.where(present, values, 0.0).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / present.sum(axis=axis)


def _encode(categories: Sequence, n: int) -> tuple[list[str], np.ndarray]:
    """Sorted category names and each sample's integer code."""
    if len(categories) != n:
        raise ValueError(f"values and categories must have the same length, got {n} and {len(categories)}")
    names, codes = np.unique(np.asarray([str(c) for c in categories], dtype=str), return_inverse=True)
    return [str(name) for name in names], codes.reshape(-1)


def _resample_indices(n: int, n_resamples: int, confidence: float, seed: int) -> np.ndarray:
    """``[n_resamples, n]`` sample indices drawn with replacement (all draws at once, reproducible)."""
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1, got {n_resamples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _percentile_interval(statistics: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile interval of the resampled statistics, ignoring resamples where it is NaN."""
    statistics = statistics[~np.isnan(statistics)]
    if statistics.size == 0:
        return float("nan"), float("nan")
    alpha = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(statistics, [alpha, 100.0 - alpha])
    return float(low), float(high)


def _overlap_scores(heatmap: ArrayLike, mask: ArrayLike, thresholds: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """IoU and Dice ``[T]`` for every threshold at once (broadcast ``[T, N]`` over the valid pixels)."""
    heatmap, mask, valid = _heatmap_and_mask(heatmap, mask)
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thresholds.size == 0:
        raise ValueError("thresholds must not be empty")
    values, truth = heatmap[valid], mask[valid]
    predicted = values[None, :] > thresholds[:, None]
    true_positives = (predicted & truth).sum(axis=1)
    n_predicted = predicted.sum(axis=1)
    n_true = truth.sum()
    # True-positive-only policy (reference): an empty prediction or an empty ground truth is undefined.
    defined = (n_predicted > 0) & (n_true > 0)
    union = np.maximum(n_predicted + n_true - true_positives, 1)
    iou_values = np.where(defined, true_positives / union, np.nan)
    dice_values = np.where(defined, 2.0 * true_positives / np.maximum(n_predicted + n_true, 1), np.nan)
    return iou_values, dice_values


def iou(heatmap: ArrayLike, mask: ArrayLike, threshold: float) -> float:
    """Intersection over union of ``heatmap > threshold`` and ``mask`` over the valid (non-NaN) pixels.

    Args:
        heatmap: ``[H, W]`` float map on ``[-1, 1]``; NaN pixels are excluded from prediction and ground truth.
        mask: ``[H, W]`` boolean ground truth (0/1 integers accepted).
        threshold: a pixel is predicted positive when its value is strictly greater than ``threshold``.

    Returns:
        ``|P & G| / |P | G|``; NaN when the prediction or the valid ground truth is empty (true-positive-only
        policy), so a sample with no predicted pixel is skipped by ``nanmean`` rather than scored 0.

    Raises:
        ValueError: if the shapes differ (both are named) or the mask is not boolean/0-1.
    """
    return float(_overlap_scores(heatmap, mask, (threshold,))[0][0])


def dice(heatmap: ArrayLike, mask: ArrayLike, threshold: float) -> float:
    """Dice ``2 |P & G| / (|P| + |G|)`` with the same inputs and NaN policy as :func:`iou`."""
    return float(_overlap_scores(heatmap, mask, (threshold,))[1][0])


def threshold_metrics(
    heatmap: ArrayLike, mask: ArrayLike, thresholds: Sequence[float] = THRESHOLDS
) -> dict[str, np.ndarray | float]:
    """IoU and Dice over a threshold sweep, and their means (the headline numbers of the paper).

    Returns:
        ``{"iou": [T], "dice": [T], "iou_mean": float, "dice_mean": float}``; the means are ``nanmean`` over
        thresholds (thresholds with an empty prediction are skipped) and NaN, without warning, if all are NaN.
    """
    iou_values, dice_values = _overlap_scores(heatmap, mask, thresholds)
    return {
        "iou": iou_values,
        "dice": dice_values,
        "iou_mean": float(nanmean(iou_values)),
        "dice_mean": float(nanmean(dice_values)),
    }


CNR_REGIONS = ("union", "reference")


def cnr(
    heatmap: ArrayLike, mask: ArrayLike, absolute: bool = False, regions: str = "union", flat: float = float("nan")
) -> float:
    """Contrast-to-noise ratio ``(mean_in - mean_out) / sqrt(var_in + var_out)``, threshold-free.

    Means and population variances (``ddof=0``) are taken over the valid pixels inside / outside the mask.

    Args:
        heatmap: ``[H, W]`` float map; NaN pixels are excluded.
        mask: ``[H, W]`` ground truth: boolean for ``regions="union"``; for ``regions="reference"``, the number
            of boxes covering each pixel (the authors sum a phrase's box masks).
        absolute: ``False`` (default) keeps the sign, as the AFLoc reference does (a map brighter outside the
            box scores negative); ``True`` returns ``|CNR|`` as BioViL writes it.
        regions: ``"union"`` (ours): inside = any box, outside = no box. ``"reference"`` (the authors'): inside =
            pixels covered by exactly one box, outside = pixels covered by none; pixels where boxes overlap
            belong to neither region.
        flat: the value when both variances are 0 (a map constant inside and outside): NaN for us (no contrast
            to measure against no noise), 0 in the authors' evaluation.

    Returns:
        The CNR; NaN when the valid inside or outside region is empty, ``flat`` when both variances are 0.
    """
    if regions not in CNR_REGIONS:
        raise ValueError(f"regions must be one of {CNR_REGIONS}, got {regions!r}")
    if regions == "reference":
        heatmap, counts = _float_map(heatmap), np.asarray(mask)
        if heatmap.shape != counts.shape:
            raise ValueError(f"heatmap and mask must have the same shape, got {heatmap.shape} and {counts.shape}")
        valid = valid_pixels(heatmap)
        inside, outside = heatmap[valid & (counts == 1)], heatmap[valid & (counts == 0)]
    else:
        heatmap, mask, valid = _heatmap_and_mask(heatmap, mask)
        inside, outside = heatmap[valid & mask], heatmap[valid & ~mask]
    if inside.size == 0 or outside.size == 0:
        return float("nan")
    denominator = np.sqrt(inside.var(dtype=np.float64) + outside.var(dtype=np.float64))
    if denominator == 0:
        return float(flat)
    value = float((inside.mean(dtype=np.float64) - outside.mean(dtype=np.float64)) / denominator)
    return abs(value) if absolute else value


def _constant(values: np.ndarray) -> bool:
    """Whether the valid values of a map are all equal (no pixel is the map's hottest: no point to play)."""
    return bool(np.nanmax(values) == np.nanmin(values))


def pointing_game(heatmap: ArrayLike, mask: ArrayLike) -> float:
    """Pointing-game hit (CheXlocalize): is the arg-max of the heatmap inside the ground truth?

    The arg-max is taken over valid pixels only. Ties are broken like ``np.nanargmax`` (and CheXlocalize's
    single arg-max): the *first* maximal pixel in row-major order decides, not "any maximal pixel".

    Returns:
        1.0 for a hit, 0.0 for a miss; NaN (undefined, skipped by the aggregates) when the mask has no valid
        pixel, no pixel is valid, or the map is constant (its arg-max would be the first pixel, not a choice).
    """
    heatmap, mask, valid = _heatmap_and_mask(heatmap, mask)
    if not (valid & mask).any() or _constant(heatmap):
        return float("nan")
    return float(mask.reshape(-1)[np.nanargmax(heatmap)])


def macro_average(values: ArrayLike, categories: Sequence) -> tuple[dict[str, float], float]:
    """Per-category ``nanmean`` then the mean over categories (macro average, docs/method.md section 5).

    Args:
        values: ``[N]`` one value per sample, NaN for undefined samples.
        categories: ``[N]`` the category (finding) of each sample; names are converted with ``str``.

    Returns:
        ``(per_category, macro)``: ``per_category`` maps each name (sorted) to its ``nanmean`` (NaN when all of
        its values are NaN); ``macro`` averages the categories that are not NaN, NaN if there is none.
    """
    values = _samples(values)
    names, codes = _encode(categories, values.size)
    per_category = {name: float(nanmean(values[codes == k])) for k, name in enumerate(names)}
    return per_category, float(nanmean(np.array(list(per_category.values()), dtype=np.float64)))


def bootstrap_ci(
    values: ArrayLike,
    statistic: Callable[[np.ndarray], float] = np.nanmean,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over samples.

    All samples, NaN ones included, are resampled with replacement (``np.random.default_rng(seed)``), so the
    number of defined samples varies between resamples as it would between test sets. Resamples whose
    statistic is NaN (e.g. all-NaN draws) are left out of the percentiles.

    Returns:
        ``(low, high)``; ``(nan, nan)`` if no value is finite.
    """
    values = _samples(values)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    resampled = values[_resample_indices(values.size, n_resamples, confidence, seed)]
    if statistic is np.nanmean:  # vectorised fast path, same arithmetic as np.nanmean on each row
        statistics = nanmean(resampled, axis=1)
    else:
        statistics = np.array([statistic(row) for row in resampled], dtype=np.float64)
    return _percentile_interval(statistics, confidence)


def bootstrap_macro_ci(
    values: ArrayLike, categories: Sequence, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`macro_average`'s macro value.

    Samples (value, category) are resampled jointly and the macro average is recomputed on each resample; a
    category that is absent (or all-NaN) in a resample is left out of that resample's macro.

    Returns:
        ``(low, high)``; ``(nan, nan)`` if no value is finite.
    """
    values = _samples(values)
    names, codes = _encode(categories, values.size)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    index = _resample_indices(values.size, n_resamples, confidence, seed)
    resampled, n_categories = values[index], len(names)
    present = ~np.isnan(resampled)
    # One bincount over (resample, category) cells gives every per-category sum and count at once.
    cells = (codes[index] + n_categories * np.arange(n_resamples)[:, None]).reshape(-1)
    size = n_resamples * n_categories
    totals = np.bincount(cells, weights=np.where(present, resampled, 0.0).reshape(-1), minlength=size)
    counts = np.bincount(cells, weights=present.reshape(-1).astype(np.float64), minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        category_means = (totals / counts).reshape(n_resamples, n_categories)
    return _percentile_interval(nanmean(category_means, axis=1), confidence)


def per_category_bound_average_ci(
    values: ArrayLike, categories: Sequence, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """The authors' reported interval: the average over categories of each category's own bootstrap bounds.

    Samples are resampled jointly (as in :func:`bootstrap_macro_ci`), each category's mean is taken per resample,
    each category's bounds are read at the authors' order statistics (sorted resamples, indices
    ``int(a * R) - 1`` and ``int((1 - a) * R) - 1`` with ``a = (1 - confidence) / 2``), and the lower and upper
    bounds are averaged over the categories. This is not an interval of the macro average (the bounds of
    different categories do not occur in the same resamples): it is reported beside our
    :func:`bootstrap_macro_ci` only to compare with the paper's tables. The authors also round each bound to 3
    decimals before averaging; that is not done here.

    Returns:
        ``(low, high)``; ``(nan, nan)`` if no value is finite.
    """
    values = _samples(values)
    if not np.isfinite(values).any():
        return float("nan"), float("nan")
    names, codes = _encode(categories, values.size)
    index = _resample_indices(values.size, n_resamples, confidence, seed)
    resampled, resampled_codes = values[index], codes[index]
    alpha = (1.0 - confidence) / 2.0
    low_at, high_at = max(int(alpha * n_resamples) - 1, 0), max(int((1.0 - alpha) * n_resamples) - 1, 0)
    lows, highs = [], []
    for k in range(len(names)):
        means = nanmean(np.where(resampled_codes == k, resampled, np.nan), axis=1)
        means = np.sort(means[~np.isnan(means)])
        if means.size:
            lows.append(means[min(low_at, means.size - 1)])
            highs.append(means[min(high_at, means.size - 1)])
    return (float(np.mean(lows)), float(np.mean(highs))) if lows else (float("nan"), float("nan"))


def _binary_labels_and_scores(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise ValueError(f"labels and scores must be 1-D of the same shape, got {labels.shape} and {scores.shape}")
    if labels.dtype != np.bool_ and not np.isin(labels, (0, 1)).all():
        raise ValueError(f"labels must be binary (bool or 0/1), got values {np.unique(labels)[:6]}")
    if np.isnan(scores).any():
        raise ValueError("scores must not contain NaN")
    return labels.astype(np.float64), scores


def _auc_from_ranks(labels: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUC ``(R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg)`` along the last axis."""
    n_positive = labels.sum(axis=-1)
    n_negative = labels.shape[-1] - n_positive
    u_statistic = (ranks * labels).sum(axis=-1) - n_positive * (n_positive + 1) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((n_positive > 0) & (n_negative > 0), u_statistic / (n_positive * n_negative), np.nan)


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic, ties counted 1/2 (average ranks).

    Args:
        labels: ``[N]`` binary labels (bool or 0/1).
        scores: ``[N]`` scores, higher meaning more likely positive; NaN is not allowed.

    Returns:
        The AUC in ``[0, 1]``; NaN if only one class is present.

    Raises:
        ValueError: on a shape mismatch, non-binary labels or NaN scores.
    """
    labels, scores = _binary_labels_and_scores(labels, scores)
    return float(_auc_from_ranks(labels, rankdata(scores)))


def bootstrap_auc_ci(
    labels: ArrayLike, scores: ArrayLike, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of :func:`roc_auc`; resamples that draw a single class are skipped.

    Returns:
        ``(low, high)`` over the two-class resamples; ``(nan, nan)`` if the data have a single class.
    """
    labels, scores = _binary_labels_and_scores(labels, scores)
    if np.isnan(_auc_from_ranks(labels, rankdata(scores))):
        return float("nan"), float("nan")
    index = _resample_indices(labels.size, n_resamples, confidence, seed)
    return _percentile_interval(_auc_from_ranks(labels[index], rankdata(scores[index], axis=1)), confidence)


def summarize(
    values: ArrayLike, categories: Sequence | None = None, seed: int = 0, n_resamples: int = 1000
) -> dict[str, float | int]:
    """Point estimate, 95% bootstrap interval and count of one metric over a test set.

    Returns:
        ``{"mean", "ci_low", "ci_high", "n"}``: ``mean`` is the ``nanmean`` (the macro average when
        ``categories`` is given), ``n`` the number of finite values.
    """
    values = _samples(values)
    if categories is None:
        mean = float(nanmean(values))
        low, high = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
    else:
        mean = macro_average(values, categories)[1]
        low, high = bootstrap_macro_ci(values, categories, n_resamples=n_resamples, seed=seed)
    return {"mean": mean, "ci_low": low, "ci_high": high, "n": int(np.isfinite(values).sum())}


def localization_metrics(heatmap: ArrayLike, mask: ArrayLike, threshold: float) -> dict[str, float]:
    """IoU, Dice (at ``threshold``), signed CNR and pointing game in one pass over the pixels.

    Same definitions and NaN policies as :func:`iou`, :func:`dice`, :func:`cnr` and :func:`pointing_game`
    (the inputs are validated once; an interactive threshold slider calls this on every move).

    Returns:
        ``{"iou", "dice", "cnr", "pointing_game"}``.
    """
    heatmap, mask, valid = _heatmap_and_mask(heatmap, mask)
    if valid.all():  # the common case: no margin, no copy of the map
        values, truth = heatmap.reshape(-1), mask.reshape(-1)
    else:
        values, truth = heatmap[valid], mask[valid]
    predicted = values > threshold
    n_predicted, n_true = np.count_nonzero(predicted), np.count_nonzero(truth)
    true_positives = np.count_nonzero(predicted & truth)
    defined = n_predicted > 0 and n_true > 0
    result = {
        "iou": true_positives / (n_predicted + n_true - true_positives) if defined else float("nan"),
        "dice": 2.0 * true_positives / (n_predicted + n_true) if defined else float("nan"),
        "cnr": float("nan"),
        "pointing_game": float("nan"),
    }
    if n_true == 0:
        return result
    inside = values[truth].astype(np.float64)
    if n_true < values.size:
        # outside statistics from the totals: one float64 pass instead of a copy of the outside pixels
        all_values = values.astype(np.float64)
        n_out = values.size - n_true
        mean_out = (all_values.sum() - inside.sum()) / n_out
        var_out = max((np.dot(all_values, all_values) - np.dot(inside, inside)) / n_out - mean_out**2, 0.0)
        denominator = np.sqrt(inside.var() + var_out)
        if denominator > 0:
            result["cnr"] = float((inside.mean() - mean_out) / denominator)
    if not _constant(values):  # a constant map points nowhere (pointing_game's rule)
        result["pointing_game"] = float(mask.reshape(-1)[np.nanargmax(heatmap)])
    return {k: float(v) for k, v in result.items()}
