"""The demo examples in assets/examples: readable, with consistent ground truth, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from afloc.io import load_image, load_image_with_info

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
TRUTHS = sorted(EXAMPLES.glob("*.json"))
README = EXAMPLES / "README.md"


def test_there_are_examples_for_every_finding_and_two_dicoms():
    from training.phantoms.examples import FUNDUS_EXAMPLE_KINDS
    from training.phantoms.schema import FINDING_KINDS

    categories = {json.loads(p.read_text())["findings"][0]["category"] for p in TRUTHS}
    assert set(FINDING_KINDS) <= categories and set(FUNDUS_EXAMPLE_KINDS) <= categories
    assert len(list(EXAMPLES.glob("*.dcm"))) == 2
    assert all(p.stat().st_size < 200_000 for p in EXAMPLES.iterdir())  # small files only


@pytest.mark.parametrize("truth_path", TRUTHS, ids=[p.stem for p in TRUTHS])
def test_example_ground_truth(truth_path):
    truth = json.loads(truth_path.read_text())
    image, info = load_image_with_info(EXAMPLES / truth["image"])
    height, width = image.shape[:2]
    assert truth["suggested_prompt"] and truth["modality"] in ("cxr", "fundus")
    assert (image.ndim == 3) == (truth["modality"] == "fundus")  # fundus photos stay in colour
    if not truth["synthetic"]:  # a real photograph says where it comes from and under which licence
        assert truth["source"] and "CC BY" in truth["licence"] and truth_path.stem in README.read_text()
    for finding in truth["findings"]:
        assert not truth["synthetic"] or finding["phrase"].lower() in truth["report"].lower()
        for x, y, w, h in finding["boxes"]:
            assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= width + 1e-6 and y + h <= height + 1e-6
    if info.format == "dicom":
        assert info.photometric_interpretation in ("MONOCHROME1", "MONOCHROME2")


def test_examples_are_reproducible(tmp_path):
    from training.phantoms.examples import write_examples, write_fundus_examples

    write_examples(tmp_path)
    write_fundus_examples(tmp_path)
    for path in sorted(EXAMPLES.glob("phantom_*")):
        fresh = tmp_path / path.name
        assert fresh.exists(), path.name
        if path.suffix == ".dcm":  # UIDs differ per write; the pixels may not
            assert np.array_equal(load_image(path), load_image(fresh))
        else:
            assert path.read_bytes() == fresh.read_bytes(), path.name
