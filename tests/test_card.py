"""Model cards take their evaluation table from the evaluation files."""

from __future__ import annotations

import math

import pytest

from afloc.hub.cards import render_model_card
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


def test_per_category_section_comes_from_summary_files(tmp_path):
    from training.card import per_category_table

    folder = tmp_path / "idrid_model"
    records = _records(0.2)
    write_outputs(folder, records, summarize_localization(records, n_resamples=50),
                  {"model": "m", "dataset": "yolo", "n_samples": len(records)})  # fmt: skip
    table = per_category_table([folder])
    rows = [line for line in table.splitlines() if line.startswith("| m |")]
    assert [row.split(" | ")[1] for row in rows] == ["a", "b", "macro"]
    # category a: samples 0-2, pointing game 0, 1, 0 -> 1/3; CNR 0.2, 1.2, 2.2 -> 1.20
    assert rows[0].startswith("| m | a | 3 | 0.333 [") and " | 1.20 [" in rows[0]
    model = tmp_path / "model"
    model.mkdir()
    (model / "README.md").write_text(render_model_card("m", synthetic_data=True))
    argv = ["--model", str(model), "--results", str(folder), "--per-category", str(folder), "--per-category-title",
            "Real photographs", "--per-category-note", "Per class."]  # fmt: skip
    assert main(argv) == 0 and main(argv) == 0  # twice: the section is replaced, not repeated
    card = (model / "README.md").read_text()
    assert card.count("## Real photographs") == 1 and "Per class.\n\n" + table in card
