"""Model cards take their evaluation table from the evaluation files."""

from __future__ import annotations

import math

import pytest

from afloc.model_card import render_model_card
from training.card import evaluation_table, main, update_card
from training.evaluation.report import summarize_localization, write_outputs


def _records(offset: float):
    rows = []
    for k in range(6):
        row = {"sample_id": f"s{k}", "category": "a" if k < 3 else "b", "phrase": "p", "prompt": "p", "image": "i"}
        for t in (0.1, 0.2, 0.3, 0.4, 0.5):
            row[f"iou@{t:g}"] = min(1.0, 0.1 * k + offset)
            row[f"dice@{t:g}"] = min(1.0, 0.15 * k + offset)
        row.update(
            iou_mean=min(1.0, 0.1 * k + offset),
            dice_mean=min(1.0, 0.15 * k + offset),
            cnr=k + offset,
            pointing_game=float(k % 2),
            side_mass=0.9 if k < 2 else math.nan,
        )
        rows.append(row)
    return rows


def test_card_table_comes_from_summary_files(tmp_path):
    results = []
    for name, offset in (("model_a", 0.2), ("baseline:random", 0.0)):
        folder = tmp_path / name.replace(":", "_")
        records = _records(offset)
        summary = summarize_localization(records, n_resamples=50)
        summary["side_mass"] = {"mean": 0.9, "ci": [0.9, 0.9], "n": 2}
        write_outputs(folder, records, summary, {"model": name, "dataset": "phantom", "n_samples": len(records)})
        results.append(folder)
    table = evaluation_table(results)
    assert "| model_a | 6 |" in table and "| baseline:random | 6 |" in table
    model = tmp_path / "model"
    model.mkdir()
    (model / "README.md").write_text(render_model_card("m", metrics="old numbers", synthetic_data=True))
    update_card(model, results, note="Test split.")
    card = (model / "README.md").read_text()
    assert table in card and "old numbers" not in card and "## Limitations" in card
    update_card(model, results[:1])  # replacing again keeps one Evaluation section
    assert (model / "README.md").read_text().count("## Evaluation") == 1
    with pytest.raises(ValueError, match="no summary.json"):
        evaluation_table([tmp_path / "nothing"])
    assert main(["--model", str(model), "--results", str(tmp_path / "nothing")]) == 2
