"""``benchmarks/colour_confound.py``: a colour shortcut planted in the training photographs is found (AUC 0, the
planted gap), and local contrast removes it (a gap ten times smaller)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

confound = pytest.importorskip("benchmarks.colour_confound")


def test_a_planted_tint_is_found_and_local_contrast_removes_it(tmp_path):
    (tmp_path / "images").mkdir()
    rows = ["image,report,split,labels"]
    y, x = np.mgrid[:80, :80] / 80
    retina = (x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.4**2
    rng = np.random.default_rng(0)
    for index in range(12):
        lesion = index % 2 == 0
        blue = 0.10 + (0.0 if lesion else 0.08) + 0.005 * index  # photographs with the lesion are less blue
        image = np.stack([0.6 + 0 * x, 0.3 + 0.1 * y, blue + 0 * x], axis=2)
        image = np.clip(image + rng.normal(0, 0.04, image.shape), 0, 1) * retina[..., None]  # texture
        Image.fromarray((image * 255).astype(np.uint8)).save(tmp_path / f"images/{index}.png")
        rows.append(f"images/{index}.png,text,train,{'hard_exudates' if lesion else ''}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert confound.main(["--corpus", str(tmp_path), "--split", "train", "--out", str(out)]) == 0
    raw = json.loads((out / "colour_confound.json").read_text())["splits"]["train"]["hard_exudates"]
    assert raw["auc"]["blue_mean"] == 0.0  # every lesion photograph is less blue than every other
    assert raw["gap"]["blue_mean"] == pytest.approx(-0.08, abs=0.01)
    assert confound.main(["--corpus", str(tmp_path), "--split", "train", "--contrast", "local", "--image-size",
                          "64", "--out", str(out)]) == 0  # fmt: skip
    local = json.loads((out / "colour_confound.json").read_text())["splits"]["train"]["hard_exudates"]
    assert abs(local["gap"]["blue_mean"]) < abs(raw["gap"]["blue_mean"]) / 10  # the tint is (almost all) gone


def test_a_missing_corpus_is_named_without_a_traceback(tmp_path, capsys):
    assert confound.main(["--corpus", str(tmp_path / "nowhere")]) == 2
    assert "nowhere" in capsys.readouterr().err
