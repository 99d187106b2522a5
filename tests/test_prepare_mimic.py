"""MIMIC-CXR preparation on a fake tree in the real PhysioNet layout (JPGs, metadata/split CSVs, reports)."""

from __future__ import annotations

import csv
import gzip
import json
import os

import cv2
import numpy as np
import pytest

from afloc.imaging.transforms import pad_resize
from training.manifest import read_manifest
from training.mimic_images import is_valid_png
from training.mimic_reports import build_report, extract_sections
from training.prepare_mimic import main, prepare_mimic

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""
IMPRESSION_ONLY = """                                 FINAL REPORT
 INDICATION:  Intubated patient, assess tube position.

 Impression:  Endotracheal tube terminates 4 cm above the carina.
 Small left pleural effusion.

 NOTIFICATION:  The findings were discussed with Dr. ___ at 10:30.
"""
EMPTY = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)

 INDICATION:  ___ year old man with fever.

 FINDINGS:
 ___.

 IMPRESSION:
"""
NO_SECTIONS = """                                 FINAL REPORT
 INDICATION:  Chest pain.

 COMPARISON:  ___.

 PA and lateral views of the chest were obtained and show clear lungs.
"""

REPORTS = {"full": REPORT, "impression": IMPRESSION_ONLY, "empty": EMPTY, "no_sections": NO_SECTIONS, "missing": None}
# One metadata row per line: dicom_id, subject_id, study_id, ViewPosition ("-" = empty), height x width, split
# ("-" = absent from the split CSV), JPG content (garbage/truncated bytes, "absent" = no file), report.
TABLE = """
02aa804e-bde0afdd-112c0b34-7bc16630-4e384014 10000032 50414267 PA      300x251 train    white     full
174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962 10000032 50414267 LATERAL 300x250 train    grad      full
2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab 10000032 53189527 AP      250x300 train    white     full
68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714 10000764 57375967 PA      320x280 validate grad      full
096052b7-d256dc40-453a102b-fa7d01c6-1b22c6b4 10000764 57375967 AP      260x290 validate noise     full
8959e402-2175d68d-edba5a6c-520e7ef4-5ce0eb2a 10000898 50771383 PA      310x240 test     noise     full
ea030e7a-2e3b1346-bc518786-7a8fd698-f673b44c 10000935 51178377 PA      300x300 train    garbage   full
b31b4b8a-1b0e8a4d-3c7a6cbe-3bb2e6d1-7f2d7b5e 10000935 55697293 PA      300x260 train    truncated full
c1f2a3b4-5d6e7f80-91a2b3c4-d5e6f708-192a3b4c 10000980 50985099 AP      280x300 train    grad      empty
d2e3f4a5-6b7c8d9e-0f1a2b3c-4d5e6f70-8192a3b4 10000980 51967283 PA      290x270 train    grad      missing
e3f4a5b6-7c8d9e0f-1a2b3c4d-5e6f7081-92a3b4c5 10001038 58224503 PA      300x250 train    absent    full
f4a5b6c7-8d9e0f1a-2b3c4d5e-6f708192-a3b4c5d6 10001122 56145113 PA      300x250 train    grad      no_sections
0a1b2c3d-4e5f6071-8293a4b5-c6d7e8f9-0a1b2c3d 11000011 59000001 AP      270x230 test     grad      impression
1b2c3d4e-5f607182-93a4b5c6-d7e8f90a-1b2c3d4e 11000011 59000001 -       300x250 test     grad      impression
2c3d4e5f-60718293-a4b5c6d7-e8f90a1b-2c3d4e5f 11000011 59000002 PA      300x250 -        grad      impression
"""
STUDIES = [
    (dicom_id, subject, study, view.strip("-"), tuple(map(int, hw.split("x"))), split.strip("-"), kind, report)
    for dicom_id, subject, study, view, hw, split, kind, report in (line.split() for line in TABLE.strip().splitlines())
]
KEPT = {  # frontal, in the split CSV, a decodable JPG and a report with a non-empty section
    row[0]: row
    for row in STUDIES
    if row[3] in ("PA", "AP") and row[5] and row[6] in ("white", "grad", "noise") and row[7] in ("full", "impression")
}


def _content(kind: str, height: int, width: int, seed: int) -> np.ndarray:
    if kind == "white":
        return np.full((height, width), 255, np.uint8)
    if kind == "noise":
        return np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    ramp = np.add.outer(np.linspace(0, 120, height), np.linspace(0, 120, width))
    return ramp.astype(np.uint8)


@pytest.fixture
def mimic(tmp_path):
    """``(jpg_root, reports_root)`` of a 15-image fake MIMIC-CXR-JPG / MIMIC-CXR tree."""
    jpg_root, reports_root = tmp_path / "mimic-cxr-jpg" / "2.1.0", tmp_path / "mimic-cxr-reports"
    metadata, splits = [], []
    for seed, (dicom_id, subject, study, view, (height, width), split, kind, report) in enumerate(STUDIES):
        study_dir = jpg_root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"
        study_dir.mkdir(parents=True, exist_ok=True)
        jpg = study_dir / f"{dicom_id}.jpg"
        if kind == "garbage":
            jpg.write_bytes(b"this is not a JPEG" * 40)
        elif kind != "absent":
            ok, data = cv2.imencode(".jpg", _content(kind, height, width, seed), [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert ok
            jpg.write_bytes(data.tobytes()[: len(data) // 2] if kind == "truncated" else data.tobytes())
        report_path = reports_root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}.txt"
        report_path.parent.mkdir(parents=True, exist_ok=True)
        if REPORTS[report] is not None:
            report_path.write_text(REPORTS[report])
        procedure = "CHEST (PA AND LAT)" if view != "AP" else "CHEST (PORTABLE AP)"
        metadata.append([dicom_id, subject, study, procedure, view, height, width, "21800506", "213014.531"])
        if split:
            splits.append([dicom_id, study, subject, split])
    with (jpg_root / "mimic-cxr-2.0.0-metadata.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows"]
            + ["Columns", "StudyDate", "StudyTime"]
        )
        writer.writerows(metadata)
    with gzip.open(jpg_root / "mimic-cxr-2.0.0-split.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["dicom_id", "study_id", "subject_id", "split"])
        writer.writerows(splits)
    return jpg_root, reports_root


def _read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_end_to_end_manifest_images_and_summary(mimic, tmp_path, capsys):
    jpg_root, reports_root = mimic
    out = tmp_path / "prepared"
    assert main(["--jpg-root", str(jpg_root), "--reports-root", str(reports_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "kept 6 images (train 2, val 2, test 2)" in printed and "missing report file" in printed

    rows = _read_rows(out / "manifest.csv")
    assert list(rows[0]) == ["image", "report", "split", "dicom_id", "study_id", "subject_id", "view"]
    assert [row["dicom_id"] for row in rows] == sorted(KEPT)
    for row in rows:
        dicom_id, subject, study, view, _, split, _, _ = KEPT[row["dicom_id"]]
        assert row["split"] == {"validate": "val"}.get(split, split)
        assert (row["subject_id"], row["study_id"], row["view"]) == (subject, study, view)
        assert row["image"] == f"images/p{subject[:2]}/p{subject}/s{study}/{dicom_id}.png"
        png = cv2.imread(str(out / row["image"]), cv2.IMREAD_UNCHANGED)
        assert png.shape == (224, 224) and png.dtype == np.uint8
        # pixel parity with the reference pad-resize of the cv2 greyscale JPG
        jpg = cv2.imread(str(jpg_root / "files" / row["image"][len("images/") : -4]) + ".jpg", cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(png, pad_resize(jpg, 224)[0])

    by_id = {row["dicom_id"]: row for row in rows}
    # 300 x 251 (h x w) white: width int(251 * 224 / 300) = 187, pad 37 -> 18 zero columns left, 19 right
    portrait = cv2.imread(str(out / by_id[STUDIES[0][0]]["image"]), cv2.IMREAD_GRAYSCALE)
    assert (portrait[:, :18] == 0).all() and (portrait[:, 205:] == 0).all()
    assert (portrait[:, 18:205] >= 250).all()
    # 250 x 300 white: height int(250 * 224 / 300) = 186, pad 38 -> 19 zero rows on top and bottom
    landscape = cv2.imread(str(out / by_id[STUDIES[2][0]]["image"]), cv2.IMREAD_GRAYSCALE)
    assert (landscape[:19] == 0).all() and (landscape[205:] == 0).all() and (landscape[19:205] >= 250).all()

    report = by_id[STUDIES[0][0]]["report"]
    assert report.startswith("FINDINGS: There is no focal consolidation, pleural effusion or pneumothorax.")
    assert report.endswith("IMPRESSION: No acute cardiopulmonary process.")
    assert "ascites" not in report and "INDICATION" not in report and "\n" not in report
    assert by_id[STUDIES[12][0]]["report"] == (
        "IMPRESSION: Endotracheal tube terminates 4 cm above the carina. Small left pleural effusion."
    )

    summary = json.loads((out / "prepare_summary.json").read_text())
    counts = {reason: entry["count"] for reason, entry in summary["skipped"].items()}
    assert counts == {
        "not_frontal": 2,
        "not_in_split": 1,
        "missing_report": 1,
        "no_findings_impression": 1,
        "empty_report": 1,
        "missing_image": 1,
        "corrupt_image": 2,
    }
    assert summary["kept"] == 6 and summary["splits"] == {"train": 2, "val": 2, "test": 2}
    assert summary["images_written"] == 6 and summary["images_reused"] == 0
    assert summary["skipped"]["missing_image"]["examples"] == [f"p10/p10001038/s58224503/{STUDIES[10][0]}"]
    assert summary["skipped"]["not_frontal"]["examples"][0].endswith(STUDIES[1][0])

    records = read_manifest(out / "manifest.csv")
    assert len(records) == 6 and all(record.image.is_file() for record in records)
    assert {record.split for record in records} == {"train", "val", "test"}
    assert records[0].extra["view"] in ("PA", "AP")


def test_resume_recomputes_nothing_and_repairs_bad_pngs(mimic, tmp_path):
    jpg_root, reports_root = mimic
    out = tmp_path / "prepared"
    first = prepare_mimic(jpg_root, reports_root, out, progress=False)
    manifest = (out / "manifest.csv").read_bytes()
    pngs = sorted((out / "images").rglob("*.png"))
    assert len(pngs) == first.written == 6
    old = 1_000_000_000  # set mtimes in the past: a rewrite would show as a new mtime
    for png in pngs:
        os.utime(png, (old, old))
    second = prepare_mimic(jpg_root, reports_root, out, progress=False)
    assert (second.written, second.reused, second.kept) == (0, 6, 6)
    assert all(png.stat().st_mtime == old for png in pngs)
    assert (out / "manifest.csv").read_bytes() == manifest

    # a truncated PNG (interrupted copy) and one of the wrong size are recomputed, the others are kept
    pngs[0].write_bytes(pngs[0].read_bytes()[:200])
    cv2.imwrite(str(pngs[1]), np.zeros((100, 100), np.uint8))
    assert not is_valid_png(pngs[0], 224) and not is_valid_png(pngs[1], 224) and is_valid_png(pngs[2], 224)
    third = prepare_mimic(jpg_root, reports_root, out, progress=False)
    assert (third.written, third.reused) == (2, 4)
    assert is_valid_png(pngs[0], 224) and is_valid_png(pngs[1], 224)
    assert sum(png.stat().st_mtime == old for png in pngs) == 4
    assert (out / "manifest.csv").read_bytes() == manifest
    assert not list(out.rglob("*.tmp"))


def test_two_workers_give_the_same_output(mimic, tmp_path):
    jpg_root, reports_root = mimic
    one = prepare_mimic(jpg_root, reports_root, tmp_path / "one", progress=False)
    two = prepare_mimic(jpg_root, reports_root, tmp_path / "two", workers=2, progress=False)
    assert (tmp_path / "one" / "manifest.csv").read_bytes() == (tmp_path / "two" / "manifest.csv").read_bytes()
    assert one.skipped == two.skipped and one.splits == two.splits
    for png in (tmp_path / "one" / "images").rglob("*.png"):
        assert png.read_bytes() == (tmp_path / "two" / png.relative_to(tmp_path / "one")).read_bytes()


def test_limit_views_size_and_bare_reports_root(mimic, tmp_path):
    jpg_root, reports_root = mimic
    out = tmp_path / "quick"
    args = ["--jpg-root", str(jpg_root), "--reports-root", str(reports_root / "files"), "--out", str(out)]
    assert main([*args, "--limit", "3", "--views", "pa", "--size", "64"]) == 0
    rows = _read_rows(out / "manifest.csv")
    # the first 3 PA images of the metadata with a split (rows 1, 4 and 6, all usable); --views is case-insensitive
    assert {row["view"] for row in rows} == {"PA"} and len(rows) == 3
    assert all(cv2.imread(str(out / row["image"]), cv2.IMREAD_UNCHANGED).shape == (64, 64) for row in rows)
    summary = json.loads((out / "prepare_summary.json").read_text())
    assert summary["skipped"]["not_frontal"]["count"] == 6 and summary["limit"] == 3


def test_bad_inputs_exit_2_naming_the_path(mimic, tmp_path, capsys):
    jpg_root, reports_root = mimic
    base = ["--out", str(tmp_path / "out")]

    def error(*args: str) -> str:
        assert main([*args, *base]) == 2
        return capsys.readouterr().err

    missing = tmp_path / "nowhere"
    assert str(missing) in error("--jpg-root", str(missing), "--reports-root", str(reports_root))
    message = error("--jpg-root", str(jpg_root), "--reports-root", str(missing))
    assert "--reports-root" in message and str(missing) in message
    message = error("--jpg-root", str(jpg_root), "--reports-root", str(jpg_root.parent))
    assert "neither a 'files' folder nor pXX folders" in message and str(jpg_root.parent) in message
    message = error("--jpg-root", str(jpg_root), "--reports-root", str(reports_root), "--metadata", str(missing))
    assert "--metadata" in message and str(missing) in message

    no_view = tmp_path / "metadata.csv"
    no_view.write_text("dicom_id,subject_id,study_id,Rows\nabc,10000032,50414267,300\n")
    message = error("--jpg-root", str(jpg_root), "--reports-root", str(reports_root), "--metadata", str(no_view))
    assert str(no_view) in message and "missing columns ['ViewPosition']" in message

    bad_split = tmp_path / "split.csv"
    bad_split.write_text("dicom_id,study_id,subject_id\nabc,50414267,10000032\n")
    message = error("--jpg-root", str(jpg_root), "--reports-root", str(reports_root), "--split-csv", str(bad_split))
    assert str(bad_split) in message and "missing columns ['split']" in message

    (jpg_root / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    message = error("--jpg-root", str(jpg_root), "--reports-root", str(reports_root))
    assert "mimic-cxr-2.0.0-split.csv" in message and str(jpg_root) in message
    assert not (tmp_path / "out").exists()


def test_report_sections():
    assert extract_sections(REPORT) == {
        "FINDINGS": "There is no focal consolidation, pleural effusion or pneumothorax. Bilateral nodular "
        "opacities that most likely represent nipple shadows. The cardiomediastinal silhouette is normal.",
        "IMPRESSION": "No acute cardiopulmonary process.",
    }
    # a mixed-case non-header line stays in the section; the next ALL-CAPS header ends it
    text = "FINDINGS: Lungs are clear.\nHeart size: normal.\nRECOMMENDATION(S): follow-up.\nimpression: none acute"
    assert extract_sections(text) == {"FINDINGS": "Lungs are clear. Heart size: normal.", "IMPRESSION": "none acute"}
    assert build_report(EMPTY) == ("", "empty_report")
    assert build_report(NO_SECTIONS) == ("", "no_findings_impression")
    # an empty section is left out, not written as a bare header
    assert build_report("FINDINGS: ___.\nIMPRESSION: Mild cardiomegaly.") == ("IMPRESSION: Mild cardiomegaly.", None)
