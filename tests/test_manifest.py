"""The manifest format shared by every corpus."""

from __future__ import annotations

import json

import pytest

from training.manifest import read_manifest


def test_csv_and_jsonl(tmp_path):
    (tmp_path / "m.csv").write_text(
        'image,report,split,labels\na.png,"FINDINGS: Left effusion, small.",train,effusion\n'
        "/abs/b.png,,validate,\nc.png,No acute process.,test,\n"
    )
    records = read_manifest(tmp_path / "m.csv")
    assert [r.split for r in records] == ["train", "val", "test"]
    assert records[0].image == tmp_path / "a.png" and records[0].report == "FINDINGS: Left effusion, small."
    assert str(records[1].image) == "/abs/b.png" and records[1].report == ""
    assert records[0].extra == {"labels": "effusion"}
    assert [r.image.name for r in read_manifest(tmp_path / "m.csv", split="val")] == ["b.png"]
    lines = [{"image": "x.jpg", "report": "r", "split": "train", "view": "PA"}, {}]
    (tmp_path / "m.jsonl").write_text(json.dumps(lines[0]) + "\n\n")
    (record,) = read_manifest(tmp_path / "m.jsonl")
    assert record.extra == {"view": "PA"}


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        read_manifest(tmp_path / "none.csv")
    (tmp_path / "cols.csv").write_text("path,text\na,b\n")
    with pytest.raises(ValueError, match=r"missing columns \['image', 'report', 'split'\]"):
        read_manifest(tmp_path / "cols.csv")
    (tmp_path / "split.csv").write_text("image,report,split\na.png,r,holdout\n")
    with pytest.raises(ValueError, match="line 2: unknown split 'holdout'"):
        read_manifest(tmp_path / "split.csv")
    (tmp_path / "bad.jsonl").write_text("{not json}\n")
    with pytest.raises(ValueError, match="line 1: invalid JSON"):
        read_manifest(tmp_path / "bad.jsonl")
    (tmp_path / "empty.csv").write_text("image,report,split\n,r,train\n")
    with pytest.raises(ValueError, match=r"empty or missing \['image'\]"):
        read_manifest(tmp_path / "empty.csv")


def test_labels_are_the_semicolon_separated_labels_column(tmp_path):
    from pathlib import Path

    from training.manifest import ManifestRecord

    record = ManifestRecord(Path("a.png"), "r", "train", {"labels": "covid_opacity; active_tb;"})
    assert record.labels == ("covid_opacity", "active_tb")
    assert ManifestRecord(Path("b.png"), "r", "train").labels == ()
