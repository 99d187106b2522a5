"""PhantomFundus: determinism, ground truth consistent with the pixels, reports, file formats read unchanged."""

from __future__ import annotations

import hashlib
import json
import re

import cv2
import numpy as np
import pytest

from afloc.imaging.io import load_image
from afloc.text.tokenizer import split_sentences
from training.manifest import read_manifest
from training.phantoms.__main__ import main
from training.phantoms.fundus.generate import generate_fundus_case, generate_fundus_corpus
from training.phantoms.fundus.render import render_fundus_case
from training.phantoms.fundus.reports import held_out_terms, write_fundus_report
from training.phantoms.fundus.schema import LESION_KINDS, REGIONS, FundusCase, Lesion, sample_fundus_case
from training.phantoms.generate import CorpusSpec

SPEC = CorpusSpec(n=24, size=128, seed=5)
# Words that name each kind, positively or in a negation (written here, independently of the writer's tables).
KIND_KEYWORDS = {
    "hard_exudates": ("hard exudate", "exudates are seen", "no exudates", "lipid", "waxy", "exudative"),
    "haemorrhage": ("haemorrhage", "hemorrhage", "bleed"),
    "microaneurysms": ("microaneurysm", "micro aneurysm", "red dots"),
    "cotton_wool_spots": ("cotton wool", "soft exudate", "infarct"),
    "drusen": ("drusen", "colloid"),
}
DR_KINDS = {"hard_exudates", "haemorrhage", "microaneurysms", "cotton_wool_spots"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("fundus")
    return out, generate_fundus_corpus(out, SPEC, workers=1)


def _digest(folder) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_corpus_is_byte_identical_per_seed_whatever_the_workers(tmp_path, corpus):
    out, _ = corpus
    generate_fundus_corpus(tmp_path / "again", SPEC, workers=2)
    assert _digest(tmp_path / "again") == _digest(out)
    _, image_a, _ = generate_fundus_case(3, SPEC)
    _, image_b, _ = generate_fundus_case(3, CorpusSpec(n=SPEC.n, size=SPEC.size, seed=SPEC.seed + 1))
    assert not np.array_equal(image_a, image_b)


def test_manifest_images_and_coco_files_read_unchanged(corpus):
    from training.evaluation.datasets import read_coco, read_phantom

    out, counts = corpus
    records = read_manifest(out / "manifest.csv")
    assert len(records) == SPEC.n and sum(counts.values()) == SPEC.n
    for record in records:
        image = load_image(record.image)
        assert image.shape == (128, 128, 3)  # colour is kept
        assert record.extra["view"] in ("OD", "OS") and "FINDINGS:" in record.report
    provenance = json.loads((out / "generation.json").read_text())
    assert provenance["modality"] == "fundus" and provenance["counts"] == counts
    assert len(provenance["train_channel_mean"]) == 3 and provenance["train_channel_mean"][0] > 0.2
    reports = {r.image.relative_to(out).as_posix(): r.report.lower() for r in records}
    lesions = 0
    for split in ("train", "val", "test"):
        result = read_phantom(out, split=split)
        for sample in result.samples:
            assert sample.phrase.lower() in reports[sample.image_path.relative_to(out).as_posix()]
            assert sample.category in LESION_KINDS
            lesions += 1
        discs = read_coco(out / "annotations" / f"{split}_disc.json", out)
        assert len(discs.samples) == counts[split] and all(s.category == "optic_disc" for s in discs.samples)
    assert lesions > 0


def _ring_mean(image: np.ndarray, mask: np.ndarray, width: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    ring = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool) & ~mask
    return image[ring].mean(axis=0)


def test_ground_truth_is_consistent_with_the_pixels():
    """Boxes cover the lesion pixels, lie in the image, and the pixels look like the lesion kind (yellow / white
    lesions brighter in green than around them, red lesions darker); the disc box holds the brightest spot."""
    checked = dict.fromkeys(LESION_KINDS, 0)
    for index in range(60):
        rng = np.random.default_rng([11, index])
        case = sample_fundus_case(rng, f"c{index}", "train")
        image = render_fundus_case(case, 256, rng)
        assert image.shape == (256, 256, 3) and image.dtype == np.float32 and 0 <= image.min() <= image.max() <= 1
        luminance = cv2.GaussianBlur(image @ np.array([0.299, 0.587, 0.114], np.float32), (0, 0), 6)
        x, y, w, h = case.disc_box
        row, col = np.unravel_index(int(np.argmax(luminance)), luminance.shape)
        assert x - 2 <= col <= x + w + 2 and y - 2 <= row <= y + h + 2, (index, case.disc_box, (col, row))
        for lesion in case.findings:
            assert lesion.mask.any() and lesion.boxes
            covered = np.zeros_like(lesion.mask)
            for bx, by, bw, bh in lesion.boxes:
                assert 0 <= bx and 0 <= by and bw > 0 and bh > 0 and bx + bw <= 256 and by + bh <= 256
                covered[int(by) : int(by + bh), int(bx) : int(bx + bw)] = True
                assert lesion.mask[int(by) : int(by + bh), int(bx) : int(bx + bw)].any()
            assert not (lesion.mask & ~covered).any()
            inside, around = image[lesion.mask].mean(axis=0), _ring_mean(image, lesion.mask, 3)
            if lesion.kind in ("haemorrhage", "microaneurysms"):
                assert inside[1] < around[1] and inside[0] < around[0] + 0.02, (lesion.kind, inside, around)
            else:
                assert inside[1] > around[1], (lesion.kind, inside, around)
            checked[lesion.kind] += 1
    assert min(checked.values()) >= 3, checked


def test_left_and_right_eyes_are_mirrored():
    """On a right eye (OD) the disc is nasal = on the image's right of the fovea; on a left eye, on its left."""
    from training.phantoms.fundus.anatomy import sample_anatomy

    found = dict.fromkeys(REGIONS, 0)
    for index in range(20):
        rng = np.random.default_rng(index)
        right, left = sample_anatomy(256, "right", 0.3, rng), sample_anatomy(256, "left", 0.3, rng)
        assert right.disc[0] > right.fovea[0] + right.dd and left.disc[0] < left.fovea[0] - left.dd
        for anatomy in (right, left):
            assert anatomy.disc[1] < anatomy.fovea[1]  # the fovea lies slightly below the disc
            for region in REGIONS:  # None: the region is cut off on this photograph (the renderer picks another)
                point = anatomy.sample_point(region, rng)
                assert point is None or np.hypot(*(point - anatomy.centre)) < 0.85 * anatomy.radius
                found[region] += point is not None
            nasal = anatomy.sample_point("nasal_to_disc", rng)
            assert nasal is None or (nasal[0] - anatomy.disc[0]) * anatomy.nasal > 0
    assert found["macula"] == found["peripapillary"] == 40 and min(found.values()) >= 10, found


def _reports(split: str, count: int, seed: int) -> list[tuple[FundusCase, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        case = sample_fundus_case(rng, f"{split}{index}", split)
        out.append((case, write_fundus_report(case, rng)))
    return out


@pytest.fixture(scope="module")
def reports():
    return {"train": _reports("train", 1500, 0), "val": _reports("val", 300, 1), "test": _reports("test", 800, 2)}


def test_phrases_are_in_one_cleaned_sentence_and_negations_are_true(reports):
    negations = 0
    for case, report in (item for split in reports.values() for item in split):
        sentences = split_sentences(report)
        for lesion in case.findings:
            assert lesion.phrase and "." not in lesion.phrase
            phrase = split_sentences(lesion.phrase, min_tokens=1)[0]
            assert any(f" {phrase} " in f" {s} " for s in sentences), (phrase, sentences)
        present = set(case.labels)
        for sentence in sentences:
            if sentence.split()[0] == "no" or " no " in f" {sentence} " or "free of" in sentence:
                negations += 1
                named = {k for k, keys in KIND_KEYWORDS.items() if any(key in sentence for key in keys)}
                assert not named & present, (sentence, present)
                if "diabetic retinopathy" in sentence:
                    assert not present & DR_KINDS, (sentence, present)
        if not case.findings:
            assert "retinopathy." not in report.split("IMPRESSION:")[1] or "No retinopathy." in report
    assert negations > 1000


def test_held_out_phrasing_never_occurs_in_train_or_val(reports):
    terms = [split_sentences(term, min_tokens=1)[0] for term in held_out_terms()]
    seen = " | ".join(sorted({s for split in ("train", "val") for _, r in reports[split] for s in split_sentences(r)}))
    leaked = re.findall(r"\b(?:" + "|".join(re.escape(term) for term in terms) + r")\b", seen)
    assert not leaked, sorted(set(leaked))
    test_phrases = {lesion.phrase for case, _ in reports["test"] for lesion in case.findings}
    assert len(test_phrases) > 200
    for phrase in test_phrases:
        cleaned = split_sentences(phrase, min_tokens=1)[0]
        assert f" {cleaned} " not in f" {seen} ", phrase
        assert any(f" {term} " in f" {cleaned} " for term in terms), f"{phrase!r} uses no held-out form"


def test_invalid_input_raises():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="split"):
        sample_fundus_case(rng, "x", "holdout")
    with pytest.raises(ValueError, match="region"):
        write_fundus_report(FundusCase("x", "train", "left", [Lesion("drusen", "the moon", 5, "hard")]), rng)
    with pytest.raises(ValueError, match="lesion kind"):
        render_fundus_case(FundusCase("x", "train", "left", [Lesion("glaucoma", "macula")]), 128, rng)
    with pytest.raises(ValueError, match="size"):
        render_fundus_case(FundusCase("x", "train", "left", []), 64, rng)


def test_cli(tmp_path, capsys):
    argv = ["generate-fundus", "--out", str(tmp_path / "f"), "--n", "3", "--size", "128"]
    assert main(argv) == 0 and "wrote 3 photographs" in capsys.readouterr().out
    assert main(argv) == 2 and "already holds a corpus" in capsys.readouterr().err
    sheet = tmp_path / "sheet.png"
    assert main(["contact-sheet", "--modality", "fundus", "--out", str(sheet), "--count", "2", "--size", "128"]) == 0
    assert load_image(sheet).ndim == 3
