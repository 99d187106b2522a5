"""The demo examples in assets/examples: readable, with consistent ground truth, reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from afloc.imaging.io import load_image_with_info

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


# Regenerated example pixels may differ from the committed ones by one stored level (8-bit PNG, 12-bit DICOM), on
# at most this share of the pixels: the films are rendered in float and rounded, and a value at x.5 can round
# either way across numpy/OpenCV releases (measured with opencv 5.1 / numpy 2.4 against the committed files: 1 PNG
# pixel of 65,536 and 3 and 7 DICOM pixels, each by 1 level). A PNG
# encoder's bytes are not compared (zlib/libpng versions change them); box files are compared exactly.
PIXEL_TOLERANCE_LEVELS = 1
PIXEL_TOLERANCE_SHARE = 1e-3


def _stored_values(path: Path) -> np.ndarray | None:
    if path.suffix == ".dcm":  # the stored integers (12-bit), before any LUT
        import pydicom

        return pydicom.dcmread(path).pixel_array
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


def assert_same_pixels(committed: Path, fresh: Path) -> None:
    """Decoded stored values (8-bit PNG, 12-bit DICOM) equal within :data:`PIXEL_TOLERANCE_LEVELS`, on all but
    :data:`PIXEL_TOLERANCE_SHARE` of the pixels exactly (the DICOMs' 12-bit values round the same float film)."""
    a, b = _stored_values(committed), _stored_values(fresh)
    assert a is not None and b is not None, committed.name
    assert a.shape == b.shape and a.dtype == b.dtype, committed.name
    difference = np.abs(a.astype(np.int16) - b.astype(np.int16))
    assert difference.max() <= PIXEL_TOLERANCE_LEVELS, f"{committed.name}: a pixel differs by {difference.max()}"
    assert (difference > 0).mean() <= PIXEL_TOLERANCE_SHARE, f"{committed.name}: {(difference > 0).sum()} differ"


def test_examples_are_reproducible(tmp_path):
    from training.phantoms.examples import write_examples, write_fundus_examples

    write_examples(tmp_path)
    write_fundus_examples(tmp_path)
    for path in sorted(EXAMPLES.glob("phantom_*")):
        fresh = tmp_path / path.name
        assert fresh.exists(), path.name
        if path.suffix in (".dcm", ".png"):  # DICOM UIDs differ per write, PNG bytes per encoder: pixels compared
            assert_same_pixels(path, fresh)
        else:  # the box files: exact
            assert path.read_bytes() == fresh.read_bytes(), path.name


def test_pixel_comparison_fails_on_a_planted_change(tmp_path):
    """The tolerance above still catches a changed pixel (2 levels) and a changed image."""
    image = np.full((40, 60), 100, dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    changed = image.copy()
    changed[3, 5] += 1 + PIXEL_TOLERANCE_LEVELS
    cv2.imwrite(str(tmp_path / "b.png"), changed)
    with pytest.raises(AssertionError, match="differs by 2"):
        assert_same_pixels(tmp_path / "a.png", tmp_path / "b.png")
    shifted = image.copy()
    shifted[:10] += 1  # within one level, but on a sixth of the pixels
    cv2.imwrite(str(tmp_path / "c.png"), shifted)
    with pytest.raises(AssertionError, match="differ"):
        assert_same_pixels(tmp_path / "a.png", tmp_path / "c.png")


SHARED_IDRID = Path(__file__).resolve().parents[2] / "shared" / "data" / "fundus" / "idrid"


@pytest.mark.skipif(not SHARED_IDRID.is_dir(), reason="../shared/data/fundus/idrid is not on this machine")
def test_the_real_examples_are_the_test_photographs_their_licence_names(tmp_path):
    """The three IDRiD examples regenerate from the shared test folder: the same boxes exactly, the same pixels
    within the JPEG codec's rounding (a re-encode with another libjpeg may differ by a level or two)."""
    from training.realdata.fundus_examples import NAMES, write_idrid_examples

    written = write_idrid_examples(SHARED_IDRID, tmp_path)
    assert [p.name for p in written] == [f"idrid_{n}.json" for n in NAMES]
    for path in written:
        committed = EXAMPLES / path.name
        assert committed.read_bytes() == path.read_bytes(), path.name
        truth = json.loads(path.read_text())
        assert truth["findings"][0]["category"] == "hard_exudates" and not truth["synthetic"]
        fresh, stored = (cv2.imread(str(folder / truth["image"])) for folder in (tmp_path, EXAMPLES))
        assert fresh.shape == stored.shape and max(fresh.shape[:2]) == 768
        assert np.abs(fresh.astype(int) - stored.astype(int)).mean() < 1.0
