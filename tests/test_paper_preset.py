"""Issue #26: the paper preset (``training evaluate --preset paper``) follows each rule of the authors' released
evaluation. Every rule is checked against a derivation written here from the rule's statement (overlapping boxes,
a two-level map, mixed-case phrases, a sample undefined at some thresholds only, a constant map, the box rule on an
odd image size), and the whole preset end to end on a small phantom set against numbers computed by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from afloc.localization.metrics import (
    THRESHOLDS,
    cnr,
    localization_metrics,
    per_category_bound_average_ci,
    pointing_game,
)
from training.evaluation.datasets import LocalizationSample, read_phantom
from training.evaluation.datasets.base import group_phrases_lowercase
from training.evaluation.evaluate import main as evaluate_main
from training.evaluation.protocol import ProtocolConfig, reference_box_mask, score_heatmap
from training.evaluation.report import authors_sample_means, summarize_localization
from training.phantoms.generate import CorpusSpec, generate_corpus


# ------------------------------------------------------------------------------ rules one by one
def _authors_cnr(heatmap: np.ndarray, summed: np.ndarray) -> float:
    """The rule as stated: the phrase's box masks are added; inside = pixels equal to 1, outside = equal to 0;
    population variances; 0 when both are 0."""
    inside, outside = heatmap[summed == 1], heatmap[summed == 0]
    variance = inside.var() + outside.var()
    return 0.0 if variance == 0 else (inside.mean() - outside.mean()) / math.sqrt(variance)


def test_overlapping_boxes_leave_their_overlap_out_of_both_cnr_regions():
    rng = np.random.default_rng(0)
    heatmap = rng.uniform(-1, 1, (40, 40))
    summed = np.zeros((40, 40), int)
    summed[5:25, 5:25] += 1
    summed[15:35, 15:35] += 1  # overlaps the first box on [15:25, 15:25]
    expected = _authors_cnr(heatmap, summed)
    assert cnr(heatmap, summed, regions="reference") == pytest.approx(expected, rel=1e-12)
    union = summed > 0
    ours = (heatmap[union].mean() - heatmap[~union].mean()) / math.sqrt(heatmap[union].var() + heatmap[~union].var())
    assert cnr(heatmap, union) == pytest.approx(ours, rel=1e-12) and abs(ours - expected) > 1e-3
    # through the protocol: counts for CNR under the preset, the union for IoU either way
    preset, default = ProtocolConfig.paper(), ProtocolConfig(box_rule="reference")
    assert score_heatmap(heatmap, summed.astype(np.uint16), THRESHOLDS, preset)["cnr"] == pytest.approx(expected)
    assert score_heatmap(heatmap, union, THRESHOLDS, default)["cnr"] == pytest.approx(ours)
    same_iou = [score_heatmap(heatmap, t, THRESHOLDS, c)["iou@0.3"] for t, c in ((summed.astype(np.uint16), preset),
                                                                                  (union, default))]  # fmt: skip
    assert same_iou[0] == same_iou[1]


def test_a_two_level_map_has_a_cnr_of_zero_under_the_preset_and_none_for_us():
    # a two-level map as the protocol produces it (min-max scaled: exactly -1 and 1; a level such as 0.8 would leave
    # a variance of ~1e-33 from rounding, in the authors' code as in ours)
    heatmap = np.full((20, 20), -1.0)
    heatmap[5:10, 5:10] = 1.0  # exactly the box: no variance inside, none outside
    box = np.zeros((20, 20), int)
    box[5:10, 5:10] = 1
    assert _authors_cnr(heatmap, box) == 0.0
    assert cnr(heatmap, box, regions="reference", flat=0.0) == 0.0
    assert math.isnan(cnr(heatmap, box > 0))
    assert score_heatmap(heatmap, box.astype(np.uint16), THRESHOLDS, ProtocolConfig.paper())["cnr"] == 0.0
    assert math.isnan(score_heatmap(heatmap, box > 0, THRESHOLDS, ProtocolConfig())["cnr"])


def test_a_constant_map_points_nowhere():
    flat = np.zeros((10, 10))
    mask = np.zeros((10, 10), bool)
    mask[0, 0] = True  # the first pixel: a constant map's arg-max would "hit" it
    assert math.isnan(pointing_game(flat, mask)) and math.isnan(localization_metrics(flat, mask, 0.3)["pointing_game"])
    flat[0, 0] = np.nan  # still constant over its valid pixels
    assert math.isnan(pointing_game(flat, ~mask))
    varied = np.zeros((10, 10))
    varied[0, 0] = 1.0
    assert pointing_game(varied, mask) == 1.0 == localization_metrics(varied, mask, 0.3)["pointing_game"]
    # and it is left out of the aggregate, not counted as a miss
    records = [_record("a", "x", [np.nan] * 5, pg=np.nan), _record("b", "x", [0.5] * 5, pg=1.0)]
    assert summarize_localization(records, n_resamples=20)["pointing_game"]["macro"] == 1.0


def test_mixed_case_phrases_of_one_image_become_one_sample():
    samples = [
        LocalizationSample("a.png", "Pleural effusion", "effusion", [[0, 0, 10, 10]]),
        LocalizationSample("a.png", "pleural effusion", "effusion", [[5, 5, 10, 10]]),
        LocalizationSample("b.png", "Pleural effusion", "effusion", [[1, 1, 2, 2]]),
        LocalizationSample("a.png", "left pleural effusion", "effusion", [[1, 1, 2, 2]]),
    ]
    grouped = group_phrases_lowercase(samples)
    assert [(Path(s.image_path).name, s.phrase, len(s.boxes)) for s in grouped] == [
        ("a.png", "pleural effusion", 2),
        ("b.png", "pleural effusion", 1),
        ("a.png", "left pleural effusion", 1),
    ]
    assert grouped[0].sample_id == "a|pleural effusion" and grouped[0].boxes.tolist() == [
        [0, 0, 10, 10],
        [5, 5, 10, 10],
    ]
    assert len({s.sample_id for s in samples}) == 4  # as-is (ours): four samples


def _authors_box_counts(boxes, height: int, width: int, size: int) -> np.ndarray:
    """The box rule as stated: scale by size / longer side, add floor((size - scaled short side) / 2) on the short
    axis, floor x, y, w and h each, add 1 over rows y .. y+h-1 and columns x .. x+w-1."""
    factor = size / max(height, width)
    pad = (size - int(min(height, width) * factor)) // 2
    counts = np.zeros((size, size), int)
    for x, y, w, h in boxes:
        x, y, w, h = x * factor, y * factor, w * factor, h * factor
        if height >= width:
            x += pad
        else:
            y += pad
        x, y, w, h = (int(math.floor(v)) for v in (x, y, w, h))
        counts[max(y, 0) : y + h, max(x, 0) : x + w] += 1
    return counts


@pytest.mark.parametrize("height, width", [(37, 53), (53, 37), (101, 99), (7, 3)])
def test_the_box_rule_on_odd_image_sizes(height, width):
    rng = np.random.default_rng(height * width)
    for _ in range(20):
        boxes = np.column_stack([rng.uniform(0, width * 0.8, 3), rng.uniform(0, height * 0.8, 3),
                                 rng.uniform(1, width / 2, 3), rng.uniform(1, height / 2, 3)])  # fmt: skip
        expected = _authors_box_counts(boxes, height, width, 29)
        np.testing.assert_array_equal(reference_box_mask(boxes, height, width, 29, counts=True), expected)
        np.testing.assert_array_equal(reference_box_mask(boxes, height, width, 29), expected > 0)


# ------------------------------------------------------------------------------ aggregation and intervals
def _record(sample: str, category: str, ious, pg: float = 1.0, cnr_value: float = 1.0) -> dict:
    record = {"sample_id": sample, "category": category, "iou_mean": float(np.nanmean(ious)) if np.isfinite(ious).any()
              else np.nan, "dice_mean": np.nan, "cnr": cnr_value, "pointing_game": pg}  # fmt: skip
    for t, value in zip(THRESHOLDS, ious, strict=True):
        record[f"iou@{t:g}"], record[f"dice@{t:g}"] = value, value
    record["dice_mean"] = record["iou_mean"]
    return record


def test_a_sample_undefined_at_some_thresholds_counts_per_threshold_in_the_headline():
    records = [
        _record("a1", "A", [0.6, 0.5, np.nan, np.nan, np.nan]),  # empty prediction above 0.2
        _record("a2", "A", [0.2, 0.2, 0.2, 0.2, 0.2]),
        _record("b1", "B", [0.4, 0.4, 0.4, 0.4, 0.4]),
    ]
    # by hand, the paper's rule: per threshold, category means, then their mean; then the mean over thresholds
    per_threshold = [np.mean([np.mean([0.6, 0.2]), 0.4]), np.mean([np.mean([0.5, 0.2]), 0.4]), 0.3, 0.3, 0.3]
    paper = np.mean(per_threshold)
    # ours per sample: each sample's mean over its defined thresholds, then category means, then their mean
    sample_means = np.mean([np.mean([0.55, 0.2]), 0.4])
    summary = summarize_localization(records, n_resamples=50)
    assert summary["per_threshold_mean"]["iou"]["mean"] == pytest.approx(paper)
    assert summary["iou_mean"]["macro"] == pytest.approx(sample_means) and abs(paper - sample_means) > 0.01
    per_category = summary["per_threshold_mean"]["iou"]["per_category"]
    assert per_category["A"]["mean"] == pytest.approx(np.mean([0.4, 0.35, 0.2, 0.2, 0.2]))
    assert per_category["B"]["mean"] == pytest.approx(0.4)
    # the authors' interval averages each sample over all thresholds with an undefined one counted as 0
    np.testing.assert_allclose(authors_sample_means(np.array([[0.6, 0.5, np.nan, np.nan, np.nan], [np.nan] * 5])),
                               [1.1 / 5, np.nan])  # fmt: skip
    # a threshold where nothing is defined: skipped by ours, NaN by the authors' plain mean
    empty = [_record(s, c, [0.5, np.nan, np.nan, np.nan, np.nan]) for s, c in (("a", "A"), ("b", "B"))]
    assert summarize_localization(empty, n_resamples=10)["per_threshold_mean"]["iou"]["mean"] == pytest.approx(0.5)
    assert math.isnan(
        summarize_localization(empty, n_resamples=10, aggregation="mean")["per_threshold_mean"]["iou"]["mean"]
    )


def test_the_authors_interval_averages_per_category_bounds():
    rng = np.random.default_rng(3)
    values = np.concatenate([rng.normal(0.3, 0.1, 40), rng.normal(0.6, 0.2, 25)])
    categories = ["a"] * 40 + ["b"] * 25
    resamples, seed = 200, 7
    index = np.random.default_rng(seed).integers(0, values.size, size=(resamples, values.size))
    lows, highs = [], []
    for name in ("a", "b"):  # each category's mean in every resample, sorted; the authors' order statistics
        means = sorted(np.mean([values[i] for i in row if categories[i] == name]) for row in index)
        lows.append(means[int(0.025 * resamples) - 1])
        highs.append(means[int(0.975 * resamples) - 1])
    low, high = per_category_bound_average_ci(values, categories, n_resamples=resamples, seed=seed)
    assert (low, high) == pytest.approx((np.mean(lows), np.mean(highs)), rel=1e-12)


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("paper_preset")
    generate_corpus(out, CorpusSpec(n=16, size=128, seed=5), workers=1, dicom_samples=0)
    return out


def _centre_map(size: int, margin: int) -> np.ndarray:
    """The centre baseline as the preset scores it: a Gaussian (sigma size / 4) on the model grid, the margin's
    border undefined, min-max to [-1, 1] over the rest."""
    axis = np.arange(size) - (size - 1) / 2
    gaussian = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * (size / 4) ** 2))
    gaussian[:margin], gaussian[-margin:], gaussian[:, :margin], gaussian[:, -margin:] = (np.nan,) * 4
    low, high = np.nanmin(gaussian), np.nanmax(gaussian)
    return 2 * (gaussian - low) / (high - low) - 1


def test_the_preset_end_to_end_on_a_phantom_set_gives_the_numbers_computed_by_hand(tmp_path, phantom, capsys):
    size, margin = 64, 14
    out = tmp_path / "paper"
    common = ["--baseline", "center", "--dataset", "phantom", "--images", str(phantom), "--split", "train",
              "--image-size", str(size), "--quiet", "--workers", "0", "--n-resamples", "50"]  # fmt: skip
    assert evaluate_main([*common, "--out", str(out), "--preset", "paper"]) == 0
    printed = capsys.readouterr().out
    assert "--preset paper" in printed and "the authors' interval" in printed
    document = json.loads((out / "summary.json").read_text())
    meta = document["meta"]
    assert meta["preset"] == "paper" and meta["margin"] == 14 and meta["box_rule"] == "reference"
    assert (meta["cnr_regions"], meta["flat_cnr"], meta["phrase_case"], meta["aggregation"]) == (
        "reference",
        "zero",
        "lower",
        "mean",
    )

    # by hand: every (image, lower-cased phrase), the authors' box counts, the centre map, the paper's rule
    heatmap = _centre_map(size, margin)
    valid = ~np.isnan(heatmap)
    samples = read_phantom(phantom, "train").samples
    groups: dict = {}
    for sample in samples:
        key = (str(sample.image_path), sample.phrase.lower())
        groups.setdefault(key, (sample.category, []))[1].extend(sample.boxes.tolist())
    per_threshold: dict = {t: {} for t in THRESHOLDS}
    cnrs: dict = {}
    for (image, _), (category, boxes) in groups.items():
        from PIL import Image

        width, height = Image.open(image).size
        counts = _authors_box_counts(boxes, height, width, size)
        truth = (counts > 0) & valid
        for t in THRESHOLDS:
            predicted = (heatmap > t) & valid
            union = (predicted | truth).sum()
            iou = (predicted & truth).sum() / union if predicted.sum() and truth.sum() else np.nan
            per_threshold[t].setdefault(category, []).append(iou)
        cnrs.setdefault(category, []).append(_authors_cnr(heatmap[valid], counts[valid]))
    macros = [np.nanmean([np.nanmean(v) for v in per_threshold[t].values()]) for t in THRESHOLDS]
    expected_iou = float(np.mean(macros))
    expected_cnr = float(np.nanmean([np.nanmean(v) for v in cnrs.values()]))
    assert document["meta"]["n_samples"] == len(groups)
    assert document["localization"]["per_threshold_mean"]["iou"]["mean"] == pytest.approx(expected_iou, rel=1e-6)
    assert document["localization"]["cnr"]["macro"] == pytest.approx(expected_cnr, rel=1e-6)
    table = pd.read_csv(out / "summary.csv").set_index("category")
    assert table.loc["macro", "iou_mean"] == pytest.approx(expected_iou, rel=1e-6)  # the headline is the paper's
    for column in ("iou_authors_ci_low", "iou_authors_ci_high", "cnr_authors_ci_low", "iou_sample_mean"):
        assert column in table.columns

    # the same run without the preset differs, and says so beside the paper's column
    plain = tmp_path / "plain"
    assert evaluate_main([*common, "--out", str(plain)]) == 0
    from training.evaluation.compare import build_table, load_result

    markdown, _ = build_table([out, plain], [load_result(out), load_result(plain)])
    header = next(line for line in markdown.splitlines() if line.startswith("| dataset"))
    assert "‡" in header and "Not comparable with the reported column" in markdown
    assert markdown.index("Not comparable") < markdown.index("| dataset")  # above the table


def test_the_preset_refuses_flags_that_contradict_it(tmp_path, phantom, capsys):
    base = ["--baseline", "center", "--dataset", "phantom", "--images", str(phantom), "--out", str(tmp_path / "x"),
            "--preset", "paper"]  # fmt: skip
    for extra, named in ((["--margin", "0"], "--margin 0"), (["--box-rule", "centre"], "--box-rule centre"),
                         (["--protocol", "native"], "--protocol native")):  # fmt: skip
        assert evaluate_main([*base, *extra]) == 2
        assert named in capsys.readouterr().err
    with pytest.raises(ValueError, match="fixes"):
        ProtocolConfig.paper(margin=0)
    with pytest.raises(ValueError, match="cnr_regions"):
        ProtocolConfig(cnr_regions="reference")  # counts need the reference box rule
