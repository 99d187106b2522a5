"""The real-data check on IDRiD fundus photographs with YOLO boxes: ``training evaluate --dataset yolo`` runs the
no-training baselines per class with confidence intervals on the shared files when they are present, and the test
skips cleanly when they are absent.

The folder is ``$AFLOC_IDRID_DIR`` or ``../shared/data/fundus/idrid`` next to the checkout (development data, never
committed). Expected sample counts are computed here from the ``.txt`` files, independently of the reader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import SHARED_DATA_HINT

from training.evaluation.evaluate import main as evaluate_main

ROOT = Path(__file__).resolve().parents[1]
IDRID = Path(os.environ.get("AFLOC_IDRID_DIR") or ROOT.parent / "shared" / "data" / "fundus" / "idrid")
CLASSES = ("optic_disc", "hard_exudates", "haemorrhage")


def idrid_dir() -> Path:
    if not (IDRID / "retinal.names").is_file() or not any(IDRID.glob("*.jpg")):
        pytest.skip(f"needs IDRiD photographs with YOLO boxes in {IDRID} (set AFLOC_IDRID_DIR, or {SHARED_DATA_HINT})")
    return IDRID


def expected_samples(folder: Path) -> dict[str, int]:
    """(image, class) pairs with at least one box, per class name, from the label files."""
    names = (folder / "retinal.names").read_text().split()
    counts = dict.fromkeys(names, 0)
    for label in folder.glob("*.txt"):
        if (folder / f"{label.stem}.jpg").is_file():
            for class_id in {int(line.split()[0]) for line in label.read_text().splitlines() if line.strip()}:
                counts[names[class_id]] += 1
    return counts


@pytest.mark.parametrize("baseline", ["center"])
def test_baseline_on_real_idrid_boxes(tmp_path, baseline, capsys):
    folder = idrid_dir()
    out = tmp_path / baseline
    argv = ["--baseline", baseline, "--dataset", "yolo", "--images", str(folder), "--out", str(out)]
    assert evaluate_main([*argv, "--workers", "0", "--quiet", "--n-resamples", "200"]) == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    expected = expected_samples(folder)
    assert set(CLASSES) <= set(expected) and min(expected[c] for c in CLASSES) >= 10
    localization = summary["localization"]
    for metric in ("pointing_game", "iou_mean", "cnr"):
        per_class = localization[metric]["per_category"]
        for name in CLASSES:
            cell = per_class[name]
            assert cell["n"] == expected[name] if metric == "pointing_game" else 0 < cell["n"] <= expected[name]
            low, high = cell["ci"]
            assert low <= cell["mean"] <= high, (metric, name, cell)
    assert summary["meta"]["dataset"] == "yolo" and summary["meta"]["n_samples"] == sum(expected.values())


def test_absent_folder_is_a_clear_error(tmp_path, capsys):
    argv = ["--baseline", "center", "--dataset", "yolo", "--images", str(tmp_path / "missing"), "--out", str(tmp_path)]
    assert evaluate_main(argv) == 2
    assert "not found" in capsys.readouterr().err
