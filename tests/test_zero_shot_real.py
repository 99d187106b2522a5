"""``benchmarks/zero_shot_real.py``: who is a positive and who a negative of each comparison, per modality, and the
fundus mode end to end on a tiny model (AUCs with CIs from the manifest's lesion labels)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import afloc
from training.manifest import ManifestRecord

zero_shot = pytest.importorskip("benchmarks.zero_shot_real")


def _record(labels: str, source: str = "idrid") -> ManifestRecord:
    return ManifestRecord("x.png", "report", "val", {"labels": labels, "source": source})


def test_fundus_groups_read_each_lesion_from_the_labels():
    assert zero_shot.groups(_record("haemorrhage;hard_exudates"), "fundus") == {
        "hard_exudates_present_vs_absent": True,
        "haemorrhage_present_vs_absent": True,
    }
    assert zero_shot.groups(_record("hard_exudates"), "fundus") == {
        "hard_exudates_present_vs_absent": True,
        "haemorrhage_present_vs_absent": False,
    }
    assert set(zero_shot.groups(_record(""), "fundus").values()) == {False}


def test_chest_groups_pair_each_finding_with_the_normal_films():
    normal = zero_shot.groups(_record("", "covidqu_train"), "chest")
    assert normal == {name: False for name, _, _ in zero_shot.COMPARISONS}
    covid = zero_shot.groups(_record("covid_opacity", "covidqu_train"), "chest")
    assert covid == {"covid_vs_normal": True}  # a COVID-19 film is no negative of the other comparisons
    assert zero_shot.groups(_record("active_tb", "tbx11k_train"), "chest") == {"tb_vs_normal": True}


def test_fundus_mode_end_to_end(tmp_path, tiny_config, tiny_tokenizer):
    model_dir = tmp_path / "model"
    afloc.save_pretrained(afloc.AFLoc(tiny_config).eval(), model_dir, tiny_tokenizer, afloc.Preprocessing(64))
    corpus = tmp_path / "corpus"
    (corpus / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = ["image,report,split,labels"]
    labels = ["hard_exudates", "", "haemorrhage;hard_exudates", "", "haemorrhage", "", "other", ""]
    for index, label in enumerate(labels):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(corpus / "images" / f"{index}.png")
        rows.append(f'images/{index}.png,"FINDINGS: text.",val,{label}')
    rows.append('images/0.png,"FINDINGS: text.",train,hard_exudates')  # another split: not scored
    (corpus / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    argv = ["--modality", "fundus", "--model", str(model_dir), "--corpus", str(corpus), "--split", "val",
            "--out", str(out)]  # fmt: skip
    assert zero_shot.main(argv) == 0
    result = json.loads((out / "zero_shot.json").read_text())
    exudates, haemorrhage = result["hard_exudates_present_vs_absent"], result["haemorrhage_present_vs_absent"]
    assert (exudates["positives"], exudates["negatives"]) == (2, 6)
    assert (haemorrhage["positives"], haemorrhage["negatives"]) == (2, 6)
    for entry in (exudates, haemorrhage):
        assert 0.0 <= entry["auc"] <= 1.0
        assert entry["ci"][0] <= entry["auc"] <= entry["ci"][1]


def test_a_missing_model_is_named_without_a_traceback(tmp_path, capsys):
    assert zero_shot.main(["--model", str(tmp_path / "no_model"), "--corpus", str(tmp_path)]) == 2
    assert "no_model" in capsys.readouterr().err
