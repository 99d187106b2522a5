"""PhantomCXR corpus files: determinism, manifest, COCO annotations, DICOM samples, CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from afloc.imaging.io import load_image
from afloc.text.tokenizer import split_sentences
from training.manifest import read_manifest
from training.phantoms.__main__ import main
from training.phantoms.generate import CorpusSpec, generate_case, generate_corpus

SPEC = CorpusSpec(n=30, size=128, seed=7)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom")
    counts = generate_corpus(out, SPEC, workers=1, dicom_samples=2)
    return out, counts


def _digest(folder):
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".png", ".csv", ".json") and path.name != "generation.json":
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_files_and_manifest(corpus):
    out, counts = corpus
    assert sum(counts.values()) == SPEC.n and counts["train"] > counts["test"]
    records = read_manifest(out / "manifest.csv")
    assert len(records) == SPEC.n
    for record in records:
        assert record.image.is_file()
        image = load_image(record.image)
        assert image.shape == (128, 128)
        assert "FINDINGS:" in record.report and split_sentences(record.report)
    assert len(read_manifest(out / "manifest.csv", split="test")) == counts["test"]
    provenance = json.loads((out / "generation.json").read_text())
    assert provenance["n"] == SPEC.n and provenance["counts"] == counts


def test_coco_annotations_match_reports(corpus):
    from pycocotools.coco import COCO

    out, counts = corpus
    reports = {r.image.relative_to(out).as_posix(): r.report.lower() for r in read_manifest(out / "manifest.csv")}
    total = 0
    for split in ("train", "val", "test"):
        coco = COCO(str(out / "annotations" / f"{split}.json"))
        assert len(coco.getImgIds()) == counts[split]
        for ann in coco.loadAnns(coco.getAnnIds()):
            image = coco.loadImgs(ann["image_id"])[0]
            x, y, w, h = ann["bbox"]
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= 128 + 1e-6 and y + h <= 128 + 1e-6
            assert ann["label_text"] and ann["label_text"].lower() in reports[image["file_name"]]
            total += 1
    assert total > 0


def test_deterministic_and_independent_of_workers(tmp_path, corpus):
    out, _ = corpus
    spec = CorpusSpec(n=SPEC.n, size=SPEC.size, seed=SPEC.seed)
    generate_corpus(tmp_path / "again", spec, workers=2, dicom_samples=0)
    assert _digest(tmp_path / "again") == _digest(out)
    other = CorpusSpec(n=SPEC.n, size=SPEC.size, seed=SPEC.seed + 1)
    _, image_a, _ = generate_case(3, spec)
    _, image_b, _ = generate_case(3, other)
    assert not np.array_equal(image_a, image_b)


def test_dicom_samples(corpus):
    out, _ = corpus
    files = sorted((out / "dicom").glob("*.dcm"))
    assert len(files) == 2
    first, second = (load_image(f) for f in files)
    assert first.shape == (128, 128)
    # the second is MONOCHROME1: after inversion by the reader it looks like its PNG
    case_id = files[1].stem
    png = load_image(next((out / "images" / "test").glob(f"{case_id}.png")))
    assert np.abs(second - png).mean() < 0.01


def test_cli(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path / "c"), "--n", "3", "--size", "128", "--dicom-samples", "0"]) == 0
    assert "wrote 3 studies" in capsys.readouterr().out
    assert main(["generate", "--out", str(tmp_path / "c"), "--n", "3", "--size", "128"]) == 2
    assert "already holds a corpus" in capsys.readouterr().err
    assert main(["generate", "--out", str(tmp_path / "d"), "--n", "3", "--size", "64"]) == 2
    sheet = tmp_path / "sheet.png"
    assert main(["contact-sheet", "--out", str(sheet), "--count", "4", "--size", "128"]) == 0
    assert load_image(sheet).ndim == 3


def test_same_seed_writes_byte_identical_files_dicoms_included(tmp_path, capsys):
    """``python -m training.phantoms generate`` twice with one seed: every file identical, DICOM UIDs included;
    another seed gives other UIDs."""
    import pydicom

    def generate(name: str, seed: int) -> dict[str, bytes]:
        out = tmp_path / name
        argv = ["generate", "--out", str(out), "--n", "30", "--size", "128", "--seed", str(seed)]
        assert main([*argv, "--dicom-samples", "2", "--workers", "1"]) == 0
        return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    first, second = generate("a", SPEC.seed), generate("b", SPEC.seed)
    assert sum(name.endswith(".dcm") for name in first) == 2 and "generation.json" in first
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    dicom = next(name for name in first if name.endswith(".dcm"))
    uids = pydicom.dcmread(tmp_path / "a" / dicom)
    other = generate("c", SPEC.seed + 1)
    other_uids = pydicom.dcmread(tmp_path / "c" / next(name for name in other if name.endswith(".dcm")))
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert pydicom.uid.UID(uids[key].value).is_valid and uids[key].value != other_uids[key].value
    assert len({uids[k].value for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")}) == 3
