"""benchmarks/select_model.py: the choice rule (smallest z-margin over the baselines, largest wins), by hand."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.select_model import choose, clears, main, margins, read_scores


def _summary(folder, pg, iou, half_width=0.01, side=0.6):
    """A minimal `training evaluate` summary: PG and IoU (macro) and side mass (mean), each +- half_width."""
    folder.mkdir(parents=True)
    entry = lambda v, key="macro": {key: v, "ci": [v - half_width, v + half_width]}  # noqa: E731
    summary = {
        "meta": {"model": folder.name},
        "localization": {"pointing_game": entry(pg), "iou_mean": entry(iou), "side_mass": entry(side, "mean")},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_read_scores_turns_the_ci_into_a_standard_error(tmp_path):
    scores = read_scores(_summary(tmp_path / "m", 0.5, 0.2, half_width=0.0392))
    assert scores["pointing_game"][0] == 0.5 and scores["side_mass"][0] == 0.6
    assert scores["iou_mean"][1] == pytest.approx(0.02)
    assert "cnr" not in scores  # a metric the summary lacks is skipped, not invented
    with pytest.raises(ValueError, match="no summary.json"):
        read_scores(tmp_path / "missing")


def test_margin_and_clearing_by_hand():
    model = {"pointing_game": (0.5, 0.03), "iou_mean": (0.21, 0.004)}
    oracle = {"pointing_game": (0.4, 0.04), "iou_mean": (0.20, 0.003)}
    z = margins(model, oracle)
    assert z["pointing_game"] == pytest.approx(0.1 / 0.05)
    assert z["iou_mean"] == pytest.approx(0.01 / 0.005)
    # IoU CIs: model [0.2022, 0.2178], oracle [0.1941, 0.2059]: they overlap, so the minimum is not cleared
    assert not clears(model, oracle)
    assert clears({"pointing_game": (0.5, 0.01), "iou_mean": (0.23, 0.001)}, oracle)


def test_choose_prefers_the_safest_clearance_not_the_highest_pointing_game():
    oracle = {"pointing_game": (0.38, 0.006), "iou_mean": (0.202, 0.002)}
    candidates = {
        # highest PG, but IoU clears the oracle by little
        "peaky": {"pointing_game": (0.47, 0.009), "iou_mean": (0.214, 0.002)},
        # lower PG, both metrics clear by a wide margin
        "safe": {"pointing_game": (0.43, 0.009), "iou_mean": (0.230, 0.002)},
        # below the oracle on IoU: out
        "out": {"pointing_game": (0.60, 0.009), "iou_mean": (0.190, 0.002)},
    }
    chosen, rows = choose(candidates, {"oracle": oracle})
    assert chosen == "safe"
    by_name = {r["name"]: r for r in rows}
    assert not by_name["out"]["clears"] and by_name["out"]["binding"] == "iou_mean vs oracle"
    assert by_name["peaky"]["min_z"] == pytest.approx(0.012 / math.hypot(0.002, 0.002))


def test_choose_breaks_ties_on_pointing_game_and_reports_none_when_nothing_clears():
    oracle = {"pointing_game": (0.3, 0.01), "iou_mean": (0.2, 0.01)}
    twins = {
        "a": {"pointing_game": (0.5, 0.01), "iou_mean": (0.3, 0.01)},
        "b": {"pointing_game": (0.6, 0.01), "iou_mean": (0.3, 0.01)},
    }
    assert choose(twins, {"oracle": oracle})[0] == "b"
    assert choose({"low": {"pointing_game": (0.2, 0.01)}}, {"oracle": oracle})[0] is None
    with pytest.raises(ValueError, match="baseline"):
        choose(twins, {})


def test_cli_prints_the_table_and_exits_1_when_nothing_clears(tmp_path, capsys):
    oracle = _summary(tmp_path / "oracle", 0.3, 0.2, half_width=0.005)
    good = _summary(tmp_path / "good", 0.5, 0.3, half_width=0.005, side=0.8)
    bad = _summary(tmp_path / "bad", 0.31, 0.3, half_width=0.005)
    assert main([str(good), str(bad), "--baseline", str(oracle)]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"chosen: {good}"
    assert f"| {bad} |" in out and "| no |" in out
    assert main([str(bad), "--baseline", str(oracle)]) == 1
    capsys.readouterr()
    assert main([str(tmp_path / "typo"), "--baseline", str(oracle)]) == 2
    assert "typo: no summary.json" in capsys.readouterr().err
