"""Aggregate per-sample evaluation records into a summary with bootstrap CIs, and write it out.

Input: the protocol's records, one dict per (image, phrase) sample with ``sample_id``, ``category``, ``phrase``,
``prompt``, ``image``, ``iou@{t:g}`` and ``dice@{t:g}`` per threshold, ``iou_mean``, ``dice_mean``, ``cnr`` and
``pointing_game`` (NaN or ``None`` = undefined, skipped by every aggregate).

Two IoU / Dice headlines are reported, because they differ whenever NaN patterns differ across thresholds:

* ``iou_mean`` (and ``dice_mean``): the macro average of each sample's ``iou_mean``, itself the nanmean over the
  thresholds where that sample's prediction is non-empty. Every sample counts once, whatever its NaN pattern.
* ``per_threshold_mean`` (``iou_mean_of_thresholds``): the paper's rule (docs/method.md section 5): for each
  threshold, nanmean per category then mean over categories; then the mean over thresholds. A sample with an
  empty prediction at a high threshold drops out of that threshold only, so each threshold's average is over a
  different set of samples. Use this one to compare with the reported numbers.

Without NaN the two are equal (both are linear in the same values). All bootstraps are seeded percentile
intervals over samples (``afloc.localization.metrics``); the same seed gives the same intervals.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from afloc.localization.metrics import (
    THRESHOLDS,
    bootstrap_auc_ci,
    bootstrap_ci,
    bootstrap_macro_ci,
    macro_average,
    nanmean,
    per_category_bound_average_ci,
    roc_auc,
)

logger = logging.getLogger(__name__)

HEADLINE_METRICS: tuple[str, ...] = ("iou_mean", "dice_mean", "cnr", "pointing_game")
"""The per-sample metrics summarized per category (``summary.json``); the headline IoU and Dice are the paper's
rule (:func:`headline`)."""
LABELS = {"iou": "IoU (mean over t)", "dice": "Dice (mean over t)", "pointing_game": "pointing game"}


def threshold_key(metric: str, threshold: float) -> str:
    """Record key of a per-threshold metric, e.g. ``threshold_key("iou", 0.1) == "iou@0.1"`` (``{t:g}``)."""
    return f"{metric}@{threshold:g}"


def _mean_of_present(values: np.ndarray) -> float:
    return float(nanmean(np.asarray(values, dtype=np.float64)))


def _column(records: Sequence[Mapping], key: str) -> np.ndarray:
    """``[N]`` float values of ``key``; ``None`` (a NaN that went through JSON/CSV) becomes NaN."""
    values = np.empty(len(records), dtype=np.float64)
    for i, record in enumerate(records):
        if key not in record:
            raise ValueError(f"record {record.get('sample_id', i)!r} has no {key!r}; keys are {sorted(record)}")
        value = record[key]
        values[i] = float("nan") if value is None else float(value)
    return values


def _ci(interval: tuple[float, float]) -> list[float]:
    return [float(interval[0]), float(interval[1])]


def _threshold_macro_ci(
    matrix: np.ndarray, codes: np.ndarray, n_resamples: int, confidence: float, seed: int
) -> list[float]:
    """Bootstrap interval of the paper's rule: mean over thresholds of (per threshold) the macro average.

    ``matrix [N, T]``; samples are resampled jointly across thresholds and categories with the index draw of
    ``afloc.localization.metrics`` (``default_rng(seed).integers(0, N, (n_resamples, N))``), so with one
    threshold this is
    ``bootstrap_macro_ci`` exactly.
    """
    n, n_categories = matrix.shape[0], int(codes.max()) + 1
    if not np.isfinite(matrix).any():
        return [float("nan"), float("nan")]
    index = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    cells = (codes[index] + n_categories * np.arange(n_resamples)[:, None]).reshape(-1)
    size = n_resamples * n_categories
    per_threshold = []
    for column in matrix.T:
        resampled = column[index].reshape(-1)
        present = ~np.isnan(resampled)
        totals = np.bincount(cells, weights=np.where(present, resampled, 0.0), minlength=size)
        counts = np.bincount(cells, weights=present.astype(np.float64), minlength=size)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (totals / counts).reshape(n_resamples, n_categories)
        per_threshold.append(nanmean(means, axis=1))
    statistics = nanmean(np.stack(per_threshold, axis=1), axis=1)
    statistics = statistics[~np.isnan(statistics)]
    if statistics.size == 0:
        return [float("nan"), float("nan")]
    alpha = 100.0 * (1.0 - confidence) / 2.0
    return _ci(tuple(np.percentile(statistics, [alpha, 100.0 - alpha])))


def authors_sample_means(matrix: np.ndarray) -> np.ndarray:
    """``[N]`` each sample's mean over thresholds as the authors' interval computes it: the sum of its defined
    values (a threshold where it is undefined adds 0) over the number of thresholds; NaN where none is defined."""
    defined = ~np.isnan(matrix)
    sums = np.where(defined, matrix, 0.0).sum(axis=1) / matrix.shape[1]
    return np.where(defined.any(axis=1), sums, np.nan)


def _over_thresholds(macros: Sequence[float], aggregation: str) -> float:
    """The mean over thresholds of per-threshold averages: ``nanmean`` skips an undefined threshold (ours),
    ``mean`` lets it make the result NaN (the authors')."""
    values = np.asarray(macros, dtype=np.float64)
    return float(np.mean(values)) if aggregation == "mean" else _mean_of_present(values)


def summarize_localization(
    records: Sequence[Mapping[str, Any]],
    thresholds: Sequence[float] = THRESHOLDS,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    aggregation: str = "nanmean",
    authors_ci: bool = False,
) -> dict[str, Any]:
    """Macro / micro averages, bootstrap CIs and per-category results of the localization records.

    Args:
        records: per-sample dicts (module docstring); ``category`` is converted with ``str``.
        thresholds: the thresholds whose ``iou@{t:g}`` / ``dice@{t:g}`` keys the records carry.
        n_resamples, seed, confidence: of every bootstrap (same seed, same intervals).
        aggregation: the mean over thresholds: ``"nanmean"`` (ours) or ``"mean"`` (the authors', NaN-propagating).
        authors_ci: also the authors' interval (``authors_ci``, :func:`per_category_bound_average_ci`) for the
            headline IoU, Dice and CNR (the paper preset).

    Returns:
        Plain Python values (NaN where undefined; :func:`write_outputs` writes it as null)::

            {"n_samples", "categories", "thresholds",
             "<metric>": {"macro", "ci": [lo, hi], "micro", "n",
                          "per_category": {category: {"mean", "ci": [lo, hi], "n"}}}  for the HEADLINE_METRICS,
             "per_threshold": {"iou": {"0.1": macro, ...}, "dice": {...}},
             "per_threshold_mean": {"iou": {"mean", "ci", "per_category": {category: {"mean", "ci"}}}, "dice"},
             "iou_mean_of_thresholds", "dice_mean_of_thresholds"}

        The headline IoU and Dice are ``per_threshold_mean`` (the paper's rule); ``iou_mean`` / ``dice_mean`` are
        the macro of per-sample means (written as ``iou_sample_mean`` in ``summary.csv``). With ``authors_ci``,
        ``per_threshold_mean[metric]`` and ``cnr`` carry ``authors_ci: [lo, hi]``.

        A category whose values are all NaN keeps an entry (``mean`` NaN, ``n`` 0) but is left out of the macro.

    Raises:
        ValueError: on no records, no thresholds, or a record without a needed key (named).
    """
    if len(records) == 0:
        raise ValueError("no records to summarize")
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds:
        raise ValueError("thresholds must not be empty")
    for i, record in enumerate(records):
        if record.get("category") is None:
            raise ValueError(f"record {record.get('sample_id', i)!r} has no category; keys are {sorted(record)}")
    categories = [str(record["category"]) for record in records]
    names, codes = np.unique(np.asarray(categories, dtype=str), return_inverse=True)
    names, codes = [str(name) for name in names], codes.reshape(-1)
    summary: dict[str, Any] = {"n_samples": len(records), "categories": names, "thresholds": list(thresholds)}

    for metric in HEADLINE_METRICS:
        values = _column(records, metric)
        per_category_means, macro = macro_average(values, categories)
        per_category = {}
        for k, name in enumerate(names):
            in_category = values[codes == k]
            per_category[name] = {
                "mean": per_category_means[name],
                "ci": _ci(bootstrap_ci(in_category, n_resamples=n_resamples, confidence=confidence, seed=seed)),
                "n": int(np.isfinite(in_category).sum()),
            }
        summary[metric] = {
            "macro": macro,
            "ci": _ci(bootstrap_macro_ci(values, categories, n_resamples, confidence, seed)),
            "micro": _mean_of_present(values),
            "n": int(np.isfinite(values).sum()),
            "per_category": per_category,
        }

    summary["per_threshold"], summary["per_threshold_mean"] = {}, {}
    for metric in ("iou", "dice"):
        matrix = np.stack([_column(records, threshold_key(metric, t)) for t in thresholds], axis=1)
        macros = [macro_average(column, categories)[1] for column in matrix.T]
        summary["per_threshold"][metric] = {f"{t:g}": m for t, m in zip(thresholds, macros, strict=True)}
        mean = _over_thresholds(macros, aggregation)
        ci = _threshold_macro_ci(matrix, codes, n_resamples, confidence, seed)
        per_category = {}
        for k, name in enumerate(names):
            rows = matrix[codes == k]
            category_macros = [_mean_of_present(column) for column in rows.T]
            per_category[name] = {
                "mean": _over_thresholds(category_macros, aggregation),
                "ci": _threshold_macro_ci(rows, np.zeros(len(rows), dtype=int), n_resamples, confidence, seed),
                "n": int(np.isfinite(rows).any(axis=1).sum()),
            }
        summary["per_threshold_mean"][metric] = {"mean": mean, "ci": ci, "per_category": per_category}
        if authors_ci:
            interval = per_category_bound_average_ci(
                authors_sample_means(matrix), categories, n_resamples, confidence, seed
            )
            summary["per_threshold_mean"][metric]["authors_ci"] = _ci(interval)
        summary[f"{metric}_mean_of_thresholds"] = mean
    if authors_ci:
        interval = per_category_bound_average_ci(_column(records, "cnr"), categories, n_resamples, confidence, seed)
        summary["cnr"]["authors_ci"] = _ci(interval)
    return summary


def summarize_classification(
    labels: Mapping[str, np.ndarray],
    scores: Mapping[str, np.ndarray],
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """Per-class ROC-AUC with a bootstrap CI, and the macro AUC over the classes where it is defined.

    Args:
        labels: ``{class: [N_c] binary}``; scores: ``{class: [N_c] float}`` with the same classes and shapes.

    Returns:
        ``{"per_class": {class: {"auc", "ci": [lo, hi], "n_pos", "n_neg"}}, "macro_auc", "n_classes"}``; a class
        with a single label value has AUC NaN and is left out of ``macro_auc``.

    Raises:
        ValueError: if the classes differ (listed), or on the checks of ``afloc.localization.metrics.roc_auc``.
    """
    if set(labels) != set(scores):
        raise ValueError(
            f"labels and scores must have the same classes; only in labels: {sorted(set(labels) - set(scores))}, "
            f"only in scores: {sorted(set(scores) - set(labels))}"
        )
    per_class = {}
    for name in labels:
        y = np.asarray(labels[name])
        try:
            auc = roc_auc(y, scores[name])
            ci = bootstrap_auc_ci(y, scores[name], n_resamples=n_resamples, confidence=confidence, seed=seed)
        except ValueError as error:
            raise ValueError(f"class {name!r}: {error}") from error
        n_positive = int(y.astype(bool).sum())
        per_class[str(name)] = {"auc": auc, "ci": _ci(ci), "n_pos": n_positive, "n_neg": int(y.size - n_positive)}
    aucs = np.array([entry["auc"] for entry in per_class.values()], dtype=np.float64)
    return {"per_class": per_class, "macro_auc": _mean_of_present(aucs), "n_classes": len(per_class)}


def to_json_safe(value: Any) -> Any:
    """A copy with NaN/inf as ``None`` and numpy scalars/arrays and paths as plain Python (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): to_json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [to_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def headline(localization: Mapping[str, Any], metric: str, category: str | None = None) -> dict[str, Any]:
    """``{"mean", "ci", "n"[, "authors_ci"]}`` of a headline metric, for the macro (``category`` None) or one
    category. IoU and Dice follow the paper's rule (``per_threshold_mean``; a summary written before it had
    per-category values falls back to the per-sample means); CNR and the pointing game are macro averages."""
    if metric in ("iou", "dice"):
        entry = localization.get("per_threshold_mean", {}).get(metric, {})
        if category is None:
            return {"mean": entry.get("mean"), "ci": entry.get("ci"), "n": localization[f"{metric}_mean"]["n"]} | (
                {"authors_ci": entry["authors_ci"]} if "authors_ci" in entry else {}
            )
        cell = entry.get("per_category", {}).get(category)
        if cell is not None:
            return dict(cell)
        metric = f"{metric}_mean"
    entry = localization[metric]
    if category is None:
        return {"mean": entry["macro"], "ci": entry["ci"], "n": entry["n"]} | (
            {"authors_ci": entry["authors_ci"]} if "authors_ci" in entry else {}
        )
    return dict(entry["per_category"][category])


CSV_METRICS = ("iou", "dice", "cnr", "pointing_game")


def _summary_rows(localization: Mapping[str, Any]) -> list[dict[str, Any]]:
    """summary.csv rows: each category then ``macro``. ``iou`` and ``dice`` are the paper's rule (per threshold:
    mean per category, then over categories; then the mean over thresholds), ``iou_sample_mean`` and
    ``dice_sample_mean`` our per-sample means; ``<metric>_n`` counts the defined samples, ``<metric>_authors_ci_*``
    (paper preset only, macro row) the authors' interval."""
    rows = []
    for name in [*localization["categories"], "macro"]:
        category = None if name == "macro" else name
        row: dict[str, Any] = {"category": name}
        for metric in CSV_METRICS:
            cell = headline(localization, metric, category)
            row[f"{metric}_mean"] = cell["mean"]
            row[f"{metric}_ci_low"], row[f"{metric}_ci_high"] = cell["ci"]
            row[f"{metric}_n"] = cell["n"]
            if "authors_ci" in cell:
                row[f"{metric}_authors_ci_low"], row[f"{metric}_authors_ci_high"] = cell["authors_ci"]
        for metric in ("iou_mean", "dice_mean"):
            entry = localization[metric]
            cell = entry if category is None else entry["per_category"][name]
            short = metric.replace("_mean", "_sample_mean")
            row[short] = cell["macro" if category is None else "mean"]
            row[f"{short}_ci_low"], row[f"{short}_ci_high"] = cell["ci"]
        rows.append(row)
    return rows


FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """A text cell that a spreadsheet program would run as a formula (it starts with ``=``, ``+``, ``-``, ``@``, a
    tab or a carriage return: a phrase from a dataset file can) gets a leading ``'``; anything else is unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_LEADS):
        return "'" + value
    return value


def write_outputs(
    out_dir: str | Path, records: Sequence[Mapping[str, Any]], summary: Mapping[str, Any], meta: Mapping[str, Any]
) -> list[Path]:
    """Write the evaluation folder: tables, ``summary.json`` and plots.

    Args:
        out_dir: created if needed.
        records: the per-sample records (written to ``samples.csv``, NaN as an empty cell, text that a spreadsheet
            would run as a formula escaped with a leading ``'``).
        summary: :func:`summarize_localization`'s dict, optionally with a ``"classification"`` entry holding
            :func:`summarize_classification`'s dict (or a dict ``{"localization": ..., "classification": ...}``).
        meta: run description (model, dataset, protocol, prompt mode, checkpoint, ...); ``date`` (UTC, ISO 8601)
            is added when missing.

    ``summary.json`` = ``{"meta": meta, "localization": summary, "classification": ...}`` (the last key only when
    present), strict JSON with NaN written as ``null``. ``summary.csv`` has one row per category plus ``macro``
    with ``category``, ``n`` (samples) and ``<m>_mean``, ``<m>_ci_low``, ``<m>_ci_high``, ``<m>_n`` (defined
    samples) for ``m`` in ``iou``, ``dice`` (the paper's rule: per threshold, mean per category then over
    categories; then the mean over thresholds), ``cnr``, ``pointing_game``; then ``iou_sample_mean`` and
    ``dice_sample_mean`` (ours: each sample's mean over thresholds, then the macro) with their CIs; under the paper
    preset also ``<m>_authors_ci_low`` / ``_high`` (the authors' interval, macro row).

    Returns:
        The written paths: samples.csv, summary.json, summary.csv, per_category.png, threshold_curves.png.
    """
    import pandas as pd

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "localization" in summary:
        localization, classification = summary["localization"], summary.get("classification")
    else:
        localization = {k: v for k, v in summary.items() if k != "classification"}
        classification = summary.get("classification")
    meta = dict(meta)
    meta.setdefault("date", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    paths = [out_dir / name for name in ("samples.csv", "summary.json", "summary.csv")]
    safe = [{key: spreadsheet_safe(value) for key, value in r.items()} for r in records]
    pd.DataFrame.from_records(safe).to_csv(paths[0], index=False)
    document = {"meta": meta, "localization": localization}
    if classification is not None:
        document["classification"] = classification
    paths[1].write_text(json.dumps(to_json_safe(document), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    table = pd.DataFrame(_summary_rows(localization))
    counts = pd.Series([str(r.get("category")) for r in records]).value_counts()
    table.insert(1, "n", [int(counts.get(c, 0)) if c != "macro" else len(records) for c in table["category"]])
    table.map(spreadsheet_safe).to_csv(paths[2], index=False)
    paths.append(plot_per_category(localization, out_dir / "per_category.png", title=_plot_title(meta)))
    paths.append(plot_threshold_curves(localization, out_dir / "threshold_curves.png", title=_plot_title(meta)))
    logger.info("wrote %s", ", ".join(str(p) for p in paths))
    return paths


def _plot_title(meta: Mapping[str, Any]) -> str:
    return " / ".join(str(meta[k]) for k in ("model", "dataset", "prompt_mode") if meta.get(k) not in (None, ""))


def new_figure(n_columns: int, size: tuple[float, float], width_ratios: Sequence[float] | None = None):
    """A ``Figure`` on its own Agg canvas and its ``[n_columns]`` axes; pyplot and the global backend are untouched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, n_columns, squeeze=False, gridspec_kw={"width_ratios": width_ratios})[0]
    return figure, axes


def grouped_bars(axis, groups: Sequence[str], series: Mapping[str, tuple[Sequence, Sequence]], **bar_kwargs) -> dict:
    """Bars of each series side by side per group, with asymmetric CI error bars.

    ``series = {label: (means [G], cis [G] of [lo, hi])}``; NaN means draw no bar, NaN CIs no error bar, and an
    interval that does not contain its mean (possible for percentile intervals) is clipped at the mean.

    Returns:
        ``{label: BarContainer}``.
    """
    containers = {}
    positions, width = np.arange(len(groups)), 0.8 / max(len(series), 1)
    for k, (label, (means, cis)) in enumerate(series.items()):
        means = np.array([np.nan if m is None else m for m in means], dtype=np.float64)
        cis = np.array([[np.nan if v is None else v for v in ci] for ci in cis], dtype=np.float64).reshape(-1, 2)
        errors = np.clip(np.stack([means - cis[:, 0], cis[:, 1] - means]), 0.0, None)  # NaN: no error bar
        offset = (k - (len(series) - 1) / 2) * width
        containers[label] = axis.bar(
            positions + offset,
            means,
            width,
            yerr=None if np.isnan(errors).all() else errors,
            capsize=2,
            label=label,
            **bar_kwargs,
        )
    axis.set_xticks(positions)
    axis.set_xticklabels(groups, rotation=30, ha="right", fontsize=8)
    axis.axhline(0.0, color="black", linewidth=0.6)
    return containers


def plot_per_category(localization: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """Grouped bars per category (+ macro) of IoU, Dice (the paper's rule) and pointing game with CIs; CNR on its
    own axis."""
    groups = [*localization["categories"], "macro"]

    def series(metric: str) -> tuple[list, list]:
        cells = [headline(localization, metric, name) for name in localization["categories"]]
        cells.append(headline(localization, metric))
        return [c["mean"] for c in cells], [c["ci"] for c in cells]

    figure, (overlap_axis, cnr_axis) = new_figure(2, (4.0 + 1.1 * len(groups), 4.0), width_ratios=(3, 2))
    grouped_bars(overlap_axis, groups, {LABELS[m]: series(m) for m in ("iou", "dice", "pointing_game")})
    overlap_axis.set_ylim(0.0, 1.0)
    overlap_axis.set_title("overlap and pointing game (95% CI)", fontsize=9)
    overlap_axis.legend(fontsize=7)
    grouped_bars(cnr_axis, groups, {"CNR": series("cnr")}, color="tab:purple")
    cnr_axis.set_title("CNR, signed (95% CI)", fontsize=9)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return Path(path)


def plot_threshold_curves(localization: Mapping[str, Any], path: str | Path, title: str = "") -> Path:
    """Macro IoU and Dice against the threshold (the paper's per-threshold rule), with their mean as a line."""
    figure, (axis,) = new_figure(1, (5.0, 3.6))
    for metric, color in (("iou", "tab:blue"), ("dice", "tab:orange")):
        curve = localization["per_threshold"][metric]
        x = [float(t) for t in curve]
        y = [np.nan if v is None else v for v in curve.values()]
        axis.plot(x, y, "o-", color=color, label=f"{metric} (macro)")
        mean = localization["per_threshold_mean"][metric]["mean"]
        if mean is not None and np.isfinite(mean):
            axis.axhline(mean, color=color, linestyle="--", linewidth=0.8, label=f"{metric} mean over t = {mean:.3f}")
    axis.set_xlabel("threshold t (prediction = map > t)")
    axis.set_ylabel("macro average")
    axis.set_ylim(0.0, 1.0)
    axis.legend(fontsize=7)
    axis.set_title(title or "overlap vs threshold", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return Path(path)
