"""Tests of the evaluation summary (training/evaluation/report.py) and comparison (compare.py) on hand examples."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest

from afloc.localization.metrics import THRESHOLDS, bootstrap_ci, bootstrap_macro_ci
from training.evaluation import compare as compare_module
from training.evaluation.report import (
    summarize_classification,
    summarize_localization,
    to_json_safe,
    write_outputs,
)

NAN = float("nan")
TWO_THRESHOLDS = (0.1, 0.3)
N_RESAMPLES = 200


def _record(sample_id, category, iou_at, dice_at, cnr, hit):
    """One record over TWO_THRESHOLDS; the per-sample means are the nanmeans over thresholds (protocol rule)."""
    record = {"sample_id": sample_id, "category": category, "phrase": f"{category} phrase", "prompt": "p"}
    record["image"] = f"images/{sample_id}.png"
    for t, i, d in zip(TWO_THRESHOLDS, iou_at, dice_at, strict=True):
        record[f"iou@{t:g}"], record[f"dice@{t:g}"] = i, d
    finite_iou, finite_dice = [v for v in iou_at if not math.isnan(v)], [v for v in dice_at if not math.isnan(v)]
    record["iou_mean"] = sum(finite_iou) / len(finite_iou) if finite_iou else NAN
    record["dice_mean"] = sum(finite_dice) / len(finite_dice) if finite_dice else NAN
    record["cnr"], record["pointing_game"] = cnr, hit
    return record


# Category A: 2 samples, B: 3 samples.
#   sample  iou@0.1 iou@0.3 -> iou_mean   cnr   pointing game
#   a1      0.4     0.2        0.3        1.0   1
#   a2      0.8     NaN        0.8        NaN   1
#   b1      0.1     0.3        0.2        2.0   1
#   b2      0.7     0.1        0.4        0.5   0
#   b3      0.2     NaN        0.2        -0.5  1
RECORDS = [
    _record("a1", "A", (0.4, 0.2), (0.5, 0.3), 1.0, 1.0),
    _record("a2", "A", (0.8, NAN), (0.9, NAN), NAN, 1.0),
    _record("b1", "B", (0.1, 0.3), (0.2, 0.4), 2.0, 1.0),
    _record("b2", "B", (0.7, 0.1), (0.8, 0.2), 0.5, 0.0),
    _record("b3", "B", (0.2, NAN), (0.3, NAN), -0.5, 1.0),
]


def _summary(records=RECORDS, seed=0):
    return summarize_localization(records, thresholds=TWO_THRESHOLDS, n_resamples=N_RESAMPLES, seed=seed)


def test_macro_and_micro_against_hand_computation():
    summary = _summary()
    iou = summary["iou_mean"]
    # A: (0.3 + 0.8) / 2 = 0.55; B: (0.2 + 0.4 + 0.2) / 3 = 0.8 / 3; macro = mean of the two.
    assert iou["per_category"]["A"]["mean"] == pytest.approx(0.55)
    assert iou["per_category"]["B"]["mean"] == pytest.approx(0.8 / 3)
    assert iou["macro"] == pytest.approx((0.55 + 0.8 / 3) / 2)  # 0.408333
    assert iou["micro"] == pytest.approx((0.3 + 0.8 + 0.2 + 0.4 + 0.2) / 5)  # 0.38: every sample once
    assert iou["n"] == 5 and iou["per_category"]["A"]["n"] == 2 and iou["per_category"]["B"]["n"] == 3
    # CNR: A has one finite value (1.0); B: (2.0 + 0.5 - 0.5) / 3.
    assert summary["cnr"]["per_category"]["A"] == {**summary["cnr"]["per_category"]["A"], "mean": 1.0, "n": 1}
    assert summary["cnr"]["macro"] == pytest.approx((1.0 + 2.0 / 3) / 2)
    assert summary["cnr"]["micro"] == pytest.approx(3.0 / 4)
    # Pointing game: A 2/2, B 2/3 -> macro 5/6, micro 4/5.
    assert summary["pointing_game"]["macro"] == pytest.approx((1.0 + 2.0 / 3) / 2)
    assert summary["pointing_game"]["micro"] == pytest.approx(0.8)
    assert summary["n_samples"] == 5 and summary["categories"] == ["A", "B"]
    assert summary["thresholds"] == [0.1, 0.3]


def test_per_threshold_rule_differs_from_macro_of_sample_means():
    summary = _summary()
    # t = 0.1: A (0.4 + 0.8) / 2 = 0.6, B (0.1 + 0.7 + 0.2) / 3 = 1/3 -> (0.6 + 1/3) / 2.
    # t = 0.3: A 0.2 (a2 undefined), B (0.3 + 0.1) / 2 = 0.2 -> 0.2.
    at_01, at_03 = (0.6 + 1.0 / 3) / 2, 0.2
    assert summary["per_threshold"]["iou"] == {"0.1": pytest.approx(at_01), "0.3": pytest.approx(at_03)}
    assert summary["iou_mean_of_thresholds"] == pytest.approx((at_01 + at_03) / 2)  # 0.3333
    assert summary["per_threshold_mean"]["iou"]["mean"] == summary["iou_mean_of_thresholds"]
    # The paper's rule and the macro of per-sample means (0.4083) differ when NaN patterns differ ...
    assert summary["iou_mean_of_thresholds"] != pytest.approx(summary["iou_mean"]["macro"])
    # ... and agree without NaN (both are linear in the same values).
    full = [_record(f"s{k}", "AB"[k % 2], (0.1 * k, 0.05 * k), (0.2, 0.1 * k), 0.0, 1.0) for k in range(1, 6)]
    full_summary = _summary(full)
    for metric in ("iou", "dice"):
        assert full_summary[f"{metric}_mean_of_thresholds"] == pytest.approx(full_summary[f"{metric}_mean"]["macro"])


def test_default_thresholds_read_every_key():
    record = {"sample_id": "x", "category": "A", "iou_mean": 0.5, "dice_mean": 0.6, "cnr": 1.0, "pointing_game": 1}
    for k, t in enumerate(THRESHOLDS):
        record[f"iou@{t:g}"], record[f"dice@{t:g}"] = 0.1 * k, 0.2
    summary = summarize_localization([record], n_resamples=10)
    assert list(summary["per_threshold"]["iou"]) == ["0.1", "0.2", "0.3", "0.4", "0.5"]
    assert summary["iou_mean_of_thresholds"] == pytest.approx(0.2)
    del record["dice@0.4"]
    with pytest.raises(ValueError, match="dice@0.4"):
        summarize_localization([record], n_resamples=10)
    with pytest.raises(ValueError, match="'x' has no category"):
        summarize_localization([{**record, "category": None}], n_resamples=10)
    with pytest.raises(ValueError, match="no records"):
        summarize_localization([])


def test_nan_only_category_is_kept_but_excluded_from_the_macro():
    empty = _record("c1", "C", (NAN, NAN), (NAN, NAN), NAN, NAN)
    with_empty, without = _summary([*RECORDS, empty]), _summary()
    assert with_empty["categories"] == ["A", "B", "C"]
    for metric in ("iou_mean", "dice_mean", "cnr", "pointing_game"):
        assert with_empty[metric]["macro"] == pytest.approx(without[metric]["macro"])
        cell = with_empty[metric]["per_category"]["C"]
        assert math.isnan(cell["mean"]) and cell["n"] == 0 and all(math.isnan(v) for v in cell["ci"])
    assert with_empty["per_threshold"]["iou"]["0.1"] == pytest.approx(without["per_threshold"]["iou"]["0.1"])


def test_bootstrap_intervals_are_seeded_and_use_afloc_metrics():
    first, again, other = _summary(seed=3), _summary(seed=3), _summary(seed=4)
    assert first == again  # no NaN in the CIs here, so dict equality is exact
    assert first != other  # 5 samples: some 2.5/97.5 percentiles coincide across seeds, not all intervals
    values = np.array([r["iou_mean"] for r in RECORDS])
    categories = [r["category"] for r in RECORDS]
    assert first["iou_mean"]["ci"] == list(bootstrap_macro_ci(values, categories, N_RESAMPLES, seed=3))
    assert first["iou_mean"]["per_category"]["B"]["ci"] == list(
        bootstrap_ci(values[2:], n_resamples=N_RESAMPLES, seed=3)
    )
    low, high = first["iou_mean"]["ci"]
    assert low <= first["iou_mean"]["macro"] <= high


def test_paper_rule_interval_with_one_threshold_equals_bootstrap_macro_ci():
    """The vectorised threshold-macro bootstrap against afloc.localization.metrics' per-threshold one (same
    index draw)."""
    single = summarize_localization(RECORDS, thresholds=(0.3,), n_resamples=N_RESAMPLES, seed=7)
    values = np.array([r["iou@0.3"] for r in RECORDS])
    expected = bootstrap_macro_ci(values, [r["category"] for r in RECORDS], N_RESAMPLES, seed=7)
    assert single["per_threshold_mean"]["iou"]["ci"] == pytest.approx(list(expected), abs=1e-12)


def test_classification_auc_summary_by_hand():
    labels = {"effusion": np.array([1, 1, 0, 0]), "nodule": np.array([1, 0, 1, 0]), "absent": np.zeros(4)}
    scores = {
        # pairs (pos, neg): 0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1 -> 3/4
        "effusion": np.array([0.9, 0.4, 0.5, 0.1]),
        # 0.8>0.2, 0.8>0.6, 0.6>0.2, 0.6=0.6 (1/2) -> 3.5/4
        "nodule": np.array([0.8, 0.2, 0.6, 0.6]),
        "absent": np.array([0.1, 0.2, 0.3, 0.4]),
    }
    summary = summarize_classification(labels, scores, n_resamples=N_RESAMPLES)
    assert summary["per_class"]["effusion"]["auc"] == pytest.approx(0.75)
    assert summary["per_class"]["nodule"]["auc"] == pytest.approx(0.875)
    assert math.isnan(summary["per_class"]["absent"]["auc"])  # a single class: undefined, out of the macro
    assert summary["macro_auc"] == pytest.approx((0.75 + 0.875) / 2)
    assert summary["per_class"]["effusion"]["n_pos"] == 2 and summary["per_class"]["absent"]["n_neg"] == 4
    assert summary["n_classes"] == 3
    with pytest.raises(ValueError, match="only in scores"):
        summarize_classification({"effusion": labels["effusion"]}, scores)


def _write(out_dir, model, dataset="ms-cxr", records=RECORDS, classification=False):
    summary = _summary(records)
    if classification:
        summary["classification"] = summarize_classification(
            {"x": np.array([1, 0, 1, 0])}, {"x": np.array([0.9, 0.1, 0.2, 0.3])}, n_resamples=20
        )
    paths = write_outputs(out_dir, records, summary, {"model": model, "dataset": dataset, "protocol": "reference"})
    return summary, paths


def test_write_outputs_writes_every_file_and_json_round_trips(tmp_path):
    records = [*RECORDS, _record("c1", "C", (NAN, NAN), (NAN, NAN), NAN, NAN)]  # C: NaN-only
    summary, paths = _write(tmp_path / "run", "afloc-ours", records=records, classification=True)
    names = ["samples.csv", "summary.json", "summary.csv", "per_category.png", "threshold_curves.png"]
    assert [p.name for p in paths] == names
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths[3:])

    text = paths[1].read_text()
    assert "NaN" not in text  # strict JSON
    document = json.loads(text)
    assert set(document) == {"meta", "localization", "classification"}
    assert document["meta"]["model"] == "afloc-ours" and "date" in document["meta"]
    localization = {k: v for k, v in summary.items() if k != "classification"}
    assert document["localization"] == to_json_safe(localization)  # the whole summary round-trips
    assert document["classification"] == to_json_safe(summary["classification"])
    assert document["classification"]["per_class"]["x"]["auc"] == pytest.approx(0.75)
    assert document["localization"]["cnr"]["per_category"]["C"] == {"mean": None, "ci": [None, None], "n": 0}
    assert document["localization"]["iou_mean"]["macro"] == pytest.approx((0.55 + 0.8 / 3) / 2)

    samples = pd.read_csv(paths[0])
    assert list(samples["sample_id"]) == ["a1", "a2", "b1", "b2", "b3", "c1"]
    assert math.isnan(samples.loc[1, "iou@0.3"])
    table = pd.read_csv(paths[2])
    assert list(table["category"]) == ["A", "B", "C", "macro"] and list(table["n"]) == [2, 3, 1, 6]
    for column in ("iou_mean", "iou_ci_low", "iou_ci_high", "dice_mean", "cnr_mean", "pointing_game_ci_high"):
        assert column in table.columns
    # the headline IoU is the paper's rule; our per-sample mean has its own name
    assert table.loc[3, "iou_mean"] == pytest.approx(summary["per_threshold_mean"]["iou"]["mean"])
    assert table.loc[3, "iou_sample_mean"] == pytest.approx(summary["iou_mean"]["macro"])
    assert "iou_authors_ci_low" not in table.columns  # the authors' interval only under the paper preset
    assert table.loc[0, "cnr_n"] == 1 and math.isnan(table.loc[2, "cnr_mean"])


@pytest.fixture(scope="module")
def result_dirs(tmp_path_factory):
    """Three evaluation folders written by write_outputs: two models on MS-CXR, one of them also on CheXlocalize."""
    root = tmp_path_factory.mktemp("results")
    _write(root / "ours", "afloc-ours")
    _write(root / "base", "baseline-gloria")
    _write(root / "other", "afloc-ours", dataset="chexlocalize")
    return [root / name for name in ("ours", "base", "other")]


def test_compare_cli_two_models_and_reported_column(result_dirs, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = [str(path) for path in result_dirs]
    assert compare_module.main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    markdown = (out / "comparison.md").read_text()
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    for text in (printed, markdown):
        assert "afloc-ours" in text and "baseline-gloria" in text and "AFLoc (reported)" in text
        assert "read off the authors' figure (approximate)" in text
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line for line in markdown.splitlines()}
    assert rows[("ms-cxr", "IoU")].rstrip(" |").endswith("0.325")
    assert rows[("ms-cxr", "CNR")].rstrip(" |").endswith("1.64")
    assert rows[("chexlocalize", "IoU")].rstrip(" |").endswith("—")  # no reference number for this dataset
    header = markdown.splitlines()[2]
    assert header.count("afloc-ours") == 1  # one model on two datasets: one column
    ours = _summary()["per_threshold_mean"]["iou"]
    assert f"{ours['mean']:.3f} [{ours['ci'][0]:.3f}, {ours['ci'][1]:.3f}]" in rows[("ms-cxr", "IoU")]

    library = compare_module.compare(argv[:2], tmp_path / "lib", reported=False)
    assert "AFLoc (reported)" not in library and "afloc-ours" in library
    assert compare_module.main([*argv[:2], "--no-reported", "--out", str(tmp_path / "no")]) == 0
    assert "AFLoc (reported)" not in (tmp_path / "no" / "comparison.md").read_text()


def test_compare_disambiguates_duplicate_models(result_dirs, tmp_path):
    for name in ("run1", "run2"):
        shutil.copytree(result_dirs[0], tmp_path / name)
    markdown = compare_module.compare([tmp_path / "run1", tmp_path / "run2", result_dirs[0]], tmp_path / "out")
    assert "afloc-ours (run1)" in markdown and "afloc-ours (run2)" in markdown and "afloc-ours (ours)" in markdown
    same_twice = compare_module.compare([result_dirs[1], result_dirs[1]], tmp_path / "twice", reported=False)
    header = same_twice.splitlines()[0]
    assert f"baseline-gloria ({result_dirs[1]}) #1" in header and f"baseline-gloria ({result_dirs[1]}) #2" in header


def test_compare_missing_or_invalid_dir_returns_2(result_dirs, tmp_path, capsys):
    missing = tmp_path / "does-not-exist"
    assert compare_module.main([str(result_dirs[0]), str(missing), "--out", str(tmp_path / "o")]) == 2
    assert str(missing) in capsys.readouterr().err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "summary.json").write_text("{not json")
    assert compare_module.main([str(broken), "--out", str(tmp_path / "o")]) == 2
    error = capsys.readouterr().err
    assert str(broken) in error and "not valid JSON" in error
    (broken / "summary.json").write_text('{"meta": {}}')
    assert compare_module.main([str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "localization" in capsys.readouterr().err


# ------------------------------------------------------------------------------ behaviours found by mutation


def _many_records(n=90, seed=11):
    """Enough random records that bootstrap percentiles move with the seed and the confidence level."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        iou_at = tuple(float(v) for v in rng.random(2))
        records.append(_record(f"s{i}", "ABC"[i % 3], iou_at, iou_at, float(rng.normal()), float(rng.random() < 0.5)))
    return records


def test_bootstrap_settings_reach_every_interval():
    records = _many_records()
    summary = summarize_localization(records, thresholds=TWO_THRESHOLDS, n_resamples=N_RESAMPLES, seed=5)
    values = np.array([r["cnr"] for r in records])
    in_a = values[[r["category"] == "A" for r in records]]
    assert summary["cnr"]["per_category"]["A"]["ci"] == list(bootstrap_ci(in_a, n_resamples=N_RESAMPLES, seed=5))
    assert summary["cnr"]["per_category"]["A"]["ci"] != list(bootstrap_ci(in_a, n_resamples=N_RESAMPLES, seed=0))
    single = summarize_localization(records, thresholds=(0.3,), n_resamples=N_RESAMPLES, seed=5, confidence=0.9)
    column = np.array([r["iou@0.3"] for r in records])
    expected = bootstrap_macro_ci(column, [r["category"] for r in records], N_RESAMPLES, confidence=0.9, seed=5)
    assert single["per_threshold_mean"]["iou"]["ci"] == pytest.approx(list(expected), abs=1e-12)


def test_none_values_count_as_undefined_and_missing_keys_are_named():
    with_none = [dict(r) for r in RECORDS]
    with_none[1]["cnr"] = None  # a NaN that went through JSON
    assert _summary(with_none)["cnr"] == _summary()["cnr"]
    missing = [dict(r) for r in RECORDS]
    del missing[3]["cnr"]
    with pytest.raises(ValueError, match="record 'b2' has no 'cnr'"):
        _summary(missing)


def test_plot_titles_and_interval_keys():
    from training.evaluation.report import _plot_title

    assert _plot_title({"model": "afloc", "dataset": "ms-cxr", "prompt_mode": "", "protocol": "x"}) == "afloc / ms-cxr"
    summary = summarize_classification({"x": np.array([1, 0, 1, 0])}, {"x": np.array([0.9, 0.1, 0.2, 0.3])}, 20)
    assert set(summary["per_class"]["x"]) == {"auc", "ci", "n_pos", "n_neg"} and len(summary["per_class"]["x"]["ci"])


def test_write_outputs_accepts_a_nested_summary(tmp_path):
    localization = _summary()
    nested = {"localization": localization, "classification": None}
    paths = write_outputs(tmp_path / "nested", RECORDS, nested, {"model": "m", "dataset": "d"})
    document = json.loads(paths[1].read_text())
    assert document["localization"] == to_json_safe(localization) and "classification" not in document


def test_grouped_bars_leave_missing_means_empty():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.evaluation.report import grouped_bars

    figure, axis = plt.subplots()
    bars = grouped_bars(axis, ["A", "B"], {"afloc": ([0.4, None], [[0.3, 0.5], [None, None]])})
    heights = [patch.get_height() for patch in bars["afloc"]]
    plt.close(figure)
    assert heights[0] == pytest.approx(0.4) and math.isnan(heights[1])


def test_formula_leading_text_is_escaped_in_the_csv_tables(tmp_path):
    """A phrase or category from a dataset file that starts like a spreadsheet formula is written with a leading
    quote, in samples.csv and summary.csv; numbers (negative ones included) are written as numbers."""
    import csv

    from training.evaluation.report import spreadsheet_safe

    records = [dict(r) for r in RECORDS]
    records[0] = {**records[0], "phrase": "=HYPERLINK(1)", "prompt": "@SUM(A1)", "cnr": -0.5}
    summary = summarize_localization(records, thresholds=(0.1, 0.3), n_resamples=10, seed=0)
    write_outputs(tmp_path, records, summary, {"model": "m"})
    with (tmp_path / "samples.csv").open(newline="") as handle:
        row = next(csv.DictReader(handle))
    assert row["phrase"].startswith("'=") and row["prompt"] == "'@SUM(A1)" and float(row["cnr"]) == -0.5
    assert spreadsheet_safe("-1 opacity") == "'-1 opacity" and spreadsheet_safe(-1.0) == -1.0
    assert spreadsheet_safe("left effusion") == "left effusion"
