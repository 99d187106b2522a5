"""The landmark prior (benchmarks/landmark_prior.py): the disc found from the image alone
(training.zone_views.find_disc), the fovea placed from it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training.zone_views import find_disc

prior = pytest.importorskip("benchmarks.landmark_prior")


def _photo(disc_x: int, size: tuple[int, int] = (120, 160)) -> np.ndarray:
    """A dark-red retina disc on black with a brighter, larger red blob (the optic disc) and a small bright spot."""
    height, width = size
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 3), np.float32)
    retina = (xx - width / 2) ** 2 + (yy - height / 2) ** 2 < (0.48 * height) ** 2
    image[retina] = (0.45, 0.2, 0.08)
    image[(xx - disc_x) ** 2 + (yy - height / 2) ** 2 < 64] = (0.95, 0.7, 0.4)  # the disc, radius 8 px
    image[(xx - width / 2) ** 2 + (yy - 30) ** 2 < 2] = (1.0, 1.0, 0.6)  # an exudate-like speck: too small to win
    return image


def test_the_disc_is_the_bright_blob_not_the_speck():
    """Bug class: the maximum taken before the blur (a speck wins), or the dark surround pulling the rim down."""
    x, y = find_disc(_photo(disc_x=110))
    assert abs(x - 110) <= 3 and abs(y - 60) <= 3
    x, _ = find_disc(_photo(disc_x=50))
    assert abs(x - 50) <= 3
    with pytest.raises(ValueError, match="RGB"):
        find_disc(np.zeros((8, 8)))


def test_the_fovea_lies_temporal_to_the_disc_for_either_eye():
    """Bug class: the fovea placed on the disc's side (nasal) or not mirrored for a left eye."""
    size, dd = 256, 256 / 8
    right = prior.landmark_maps(size, (200.0, 128.0), ["hard exudates", "optic disc"], sigma=1.0)
    lesion_y, lesion_x = np.unravel_index(np.argmax(right[0]), right[0].shape)
    assert abs(lesion_x + 0.5 - (200 - 2.5 * dd)) <= 1 and abs(lesion_y + 0.5 - (128 + 0.3 * dd)) <= 1
    disc_y, disc_x = np.unravel_index(np.argmax(right[1]), right[1].shape)
    assert abs(disc_x + 0.5 - 200) <= 1 and abs(disc_y + 0.5 - 128) <= 1
    assert right.min() == pytest.approx(-1.0) and right.max() == pytest.approx(1.0)
    left = prior.landmark_maps(size, (56.0, 128.0), ["haemorrhage"], sigma=1.0)
    assert abs(np.unravel_index(np.argmax(left[0]), left[0].shape)[1] + 0.5 - (56 + 2.5 * dd)) <= 1


def test_scores_a_tiny_corpus_and_its_detector(tmp_path):
    import cv2

    from training.realdata import fundus

    for folder, stems in (("train", ("0200", "0201")), ("test", ("0001",))):
        (tmp_path / folder).mkdir()
        for stem in stems:
            photo = (_photo(disc_x=130)[..., ::-1] * 255).astype(np.uint8)  # BGR for cv2; the disc at x = 130 of 160
            cv2.imwrite(str(tmp_path / folder / f"{stem}.jpg"), photo)
            (tmp_path / folder / f"{stem}.txt").write_text("0 0.8125 0.5 0.1 0.133\n1 0.3 0.5 0.05 0.05\n")
    fundus.build_corpus(tmp_path / "train", tmp_path / "test", tmp_path / "corpus", val_fraction=0.0)
    out = tmp_path / "out"
    argv = ["--corpus", str(tmp_path / "corpus"), "--split", "test", "--sigma", "1", "2", "--image-size", "64",
            "--score-detector", "--out", str(out)]  # fmt: skip
    assert prior.main(argv) == 0
    result = json.loads((out / "summary.json").read_text())
    assert set(result["runs"]) == {"1.0", "2.0"} and result["detector"] == {"hits": 1, "discs": 1}
    assert result["runs"]["1.0"]["pointing_game"]["per_category"]["optic_disc"]["mean"] == 1.0
    with pytest.raises(SystemExit, match=r"the corpus's test annotations not found: .*nowhere"):
        prior.main(["--corpus", str(tmp_path / "nowhere"), "--split", "test"])
    with pytest.raises(SystemExit, match="no val targets"):
        prior.main(["--corpus", str(tmp_path / "corpus"), "--split", "val"])
