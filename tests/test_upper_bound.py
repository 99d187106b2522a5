"""The supervised upper bound scores every split it is given (train: the fit), each with bootstrap CIs per finding,
and caps each split at ``--test`` targets."""

from __future__ import annotations

import json
import math

import pytest

from training.evaluation.datasets import read_phantom
from training.phantoms.generate import CorpusSpec, generate_corpus

bound = pytest.importorskip("benchmarks.supervised_upper_bound")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("bound") / "corpus"
    generate_corpus(out, CorpusSpec(n=40, size=128, seed=5), workers=1, dicom_samples=0)
    return out


def test_several_splits_each_with_cis(corpus, tmp_path):
    out = tmp_path / "out"
    argv = ["--corpus", str(corpus), "--classes", "category", "--image-size", "64", "--minutes", "0.01",
            "--batch", "4", "--threads", "1", "--split", "train", "test", "--test", "6", "--out", str(out)]  # fmt: skip
    assert bound.main(argv) == 0
    result = json.loads((out / "summary.json").read_text())
    assert set(result["splits"]) == {"train", "test"} and result["steps"] >= 1
    for split, scores in result["splits"].items():
        available = len(read_phantom(corpus, split).samples)
        assert scores["samples"] == min(6, available)
        summary = scores["summary"]
        assert summary["n_samples"] == scores["samples"]
        for category, entry in summary["pointing_game"]["per_category"].items():
            low, high = entry["ci"]
            assert low <= entry["mean"] <= high, (split, category)


def test_categories_train_and_score_only_those_findings(corpus, tmp_path):
    chosen = sorted({s.category for s in read_phantom(corpus, "test").samples})[:2]
    out = tmp_path / "out"
    argv = ["--corpus", str(corpus), "--classes", "category", "--image-size", "64", "--minutes", "0.01",
            "--batch", "4", "--threads", "1", "--split", "test", "--out", str(out)]  # fmt: skip
    assert bound.main([*argv, "--categories", *chosen]) == 0
    result = json.loads((out / "summary.json").read_text())
    assert result["splits"]["test"]["summary"]["categories"] == chosen
    for wrong in (["--categories", "haemorrhage"], ["--categories", chosen[0], "--classes", "kind-side"]):
        with pytest.raises(SystemExit) as stop:
            bound.main([*argv, *wrong])
        assert stop.value.code == 2


def test_pooling_runs_from_the_mean_to_the_maximum_of_the_cells():
    import torch

    cells = torch.tensor([[[[0.0, 1.0], [2.0, 5.0]]]])
    assert float(bound.pooled_logits(cells, 1e-4)) == pytest.approx(2.0, abs=1e-3)  # the mean
    assert float(bound.pooled_logits(cells, 200.0)) == pytest.approx(5.0 - math.log(4) / 200, abs=1e-4)  # ~ the max
    assert 2.0 < float(bound.pooled_logits(cells, 5.0)) < 5.0


def test_presence_supervision_learns_from_image_labels_and_is_scored_like_the_boxes(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--corpus", str(corpus), "--classes", "category", "--image-size", "64", "--minutes", "0.01",
            "--batch", "4", "--threads", "1", "--split", "test", "--test", "6", "--supervision", "presence",
            "--out", str(out)]  # fmt: skip
    assert bound.main(argv) == 0
    printed = capsys.readouterr().out
    assert "presence labels:" in printed
    labels = printed.split("presence labels: ")[1].split(" positives")[0]
    counts = json.loads(labels)
    train = read_phantom(corpus, "train").samples
    categories = sorted({s.category for s in train})
    expected = [len({str(s.image_path) for s in train if s.category == c}) for c in categories]
    assert counts == expected  # one label per image and class, however many boxes it has
    result = json.loads((out / "summary.json").read_text())
    assert result["supervision"] == "presence" and result["splits"]["test"]["samples"] == min(
        6, len(read_phantom(corpus, "test").samples)
    )


def test_presence_negatives_are_the_training_images_with_no_finding(tmp_path):
    import numpy as np
    from PIL import Image

    from afloc.imaging.transforms import Preprocessing

    (tmp_path / "images").mkdir()
    rows = ["image,report,split,labels"]
    for index, (split, labels) in enumerate([("train", ""), ("train", "covid_opacity"), ("train", ""),
                                            ("val", ""), ("train", "")]):  # fmt: skip
        Image.fromarray(np.full((40, 30), 60 * index, np.uint8)).save(tmp_path / f"images/{index}.png")
        rows.append(f"images/{index}.png,text,{split},{labels}")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    taken = {str(tmp_path / "images/4.png")}  # already loaded as an image with findings
    clear = bound.normal_images(tmp_path, taken, limit=5, preprocessing=Preprocessing(32))
    assert clear.shape == (2, 3, 32, 32)  # images 0 and 2: train, no label, not taken
    assert bound.normal_images(tmp_path, taken, limit=1, preprocessing=Preprocessing(32)).shape[0] == 1
    assert bound.normal_images(tmp_path / "nowhere", taken, 5, Preprocessing(32)).shape == (0, 3, 32, 32)
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    (unlabelled / "manifest.csv").write_text("image,report,split\n../images/0.png,text,train\n", encoding="utf-8")
    assert bound.normal_images(unlabelled, set(), 5, Preprocessing(32)).shape[0] == 0  # findings unknown


def test_zone_targets_hold_what_the_report_says_and_nothing_more():
    """Bug class: a negated sentence taken as a finding, the eye ignored (the temporal side is the image's left on a
    right eye), or cells ruled out for a finding the report places nowhere."""
    import torch

    categories = ["haemorrhage", "hard_exudates", "optic_disc"]
    report = ("EYE: Right eye (OD).\nFINDINGS: The disc margins are sharp. Numerous exudates temporal to the macula. "
              "Some haemorrhages are seen. No cotton wool spots.")  # fmt: skip
    bags, bag_class, negative = bound.zone_targets([report], categories, grid=8)
    assert bag_class[0].tolist()[:3] == [2, 1, -1]  # the disc, then the exudates; the unplaced haemorrhages: no bag
    exudates = bags[0, 1]
    assert exudates[2:6, 0:4].all() and exudates.sum() == 16  # image-left half, middle rows, on a right eye
    assert bags[0, 0][2:6, 4:8].all() and bags[0, 0].sum() == 16  # the disc's place: the image's right
    assert torch.equal(negative[0, 1], ~exudates)  # every exudate sentence is placed: the rest is ruled out
    assert not negative[0, 0].any()  # haemorrhages somewhere unsaid: nothing ruled out
    left = report.replace("Right eye (OD)", "Left eye (OS)")
    assert bound.zone_targets([left], categories, grid=8)[0][0, 1][2:6, 4:8].all()  # mirrored for a left eye
    clear = "EYE: OD.\nFINDINGS: The disc margins are sharp. No hard exudates. No haemorrhages."
    _, classes, ruled_out = bound.zone_targets([clear], categories, grid=8)
    assert classes[0].tolist()[:2] == [2, -1] and ruled_out[0, :2].all()  # denied lesions: every cell negative


def test_zone_loss_rewards_heat_inside_the_named_place_and_none_where_ruled_out():
    import torch

    report = "EYE: OD.\nFINDINGS: The disc margins are sharp. Numerous exudates temporal to the macula."
    bags, bag_class, negative = bound.zone_targets([report], ["hard_exudates", "optic_disc"], grid=8)
    inside = torch.full((1, 2, 8, 8), -4.0)
    inside[0, 0, 3, 1] = inside[0, 1, 3, 6] = 4.0  # one exudate cell in the place, the disc in its own
    outside = torch.full((1, 2, 8, 8), -4.0)
    outside[0, 0, 0, 7] = outside[0, 1, 0, 0] = 4.0  # the same heat where the report rules it out
    assert bound.place_loss(inside, bags, bag_class, negative, 5.0) < bound.place_loss(
        outside, bags, bag_class, negative, 5.0
    )


def test_zone_supervision_is_refused_outside_fundus_reports(corpus, tmp_path):
    with pytest.raises(SystemExit):
        bound.main(["--corpus", str(corpus), "--supervision", "zones", "--minutes", "0"])


def test_anchored_targets_put_each_bag_where_its_boxes_place_it():
    """Bug class: the place read off a fixed frame instead of this photograph's disc, a bag for an absent finding,
    or cells of the named place ruled out."""
    import torch

    from afloc.imaging.boxes import Box

    disc = Box(280, 80, 40, 40, label="optic_disc")
    exudate = Box(195, 107, 10, 10, label="hard_exudates")  # on the fovea (200, 112)
    categories = ["haemorrhage", "hard_exudates", "optic_disc"]
    bags, bag_class, negative = bound.anchored_targets([(400, 300, [disc, exudate])], categories, grid=20)
    assert bag_class[0].tolist()[:3] == [1, 2, -1]  # the exudates' place, then the disc; no haemorrhage bag
    centre = bags[0, 0]
    rows, cols = torch.nonzero(centre, as_tuple=True)  # 20-px cells; the fovea at (200, 162) of the padded square
    assert centre.any() and set(cols.tolist()) <= {9, 10} and set(rows.tolist()) <= {7, 8}
    assert torch.equal(negative[0, 1], ~centre) and negative[0, 0].all()  # outside the place / an absent finding
    assert bags[0, 1][7, 15]  # the disc's own cell (300, 100 + 50)
    moved = Box(80, 80, 40, 40, label="optic_disc")  # the same exudate on a left eye with its disc on the left
    shifted, _, _ = bound.anchored_targets([(400, 300, [moved, exudate])], categories, grid=20)
    assert torch.equal(shifted[0, 0], centre)  # the fovea is still at (200, 112): the same cells
    nothing = bound.anchored_targets([(400, 300, [exudate])], categories, grid=20)
    assert (nothing[1] == -1).all() and not nothing[2].any()  # no disc: nothing placed, nothing ruled out


def test_anchored_supervision_trains_and_scores(tmp_path):
    """End to end on a tiny IDRiD-like corpus (photographs with disc and exudate boxes); refused outside fundus."""
    import cv2
    import numpy as np

    from training.realdata import fundus

    for folder, stems in (("train", ("0200", "0201", "0202", "0203")), ("test", ("0001",))):
        (tmp_path / folder).mkdir()
        for stem in stems:
            cv2.imwrite(str(tmp_path / folder / f"{stem}.jpg"), np.full((68, 102, 3), 60, np.uint8))
            (tmp_path / folder / f"{stem}.txt").write_text("0 0.8 0.5 0.1 0.15\n1 0.3 0.5 0.05 0.05\n")
    fundus.build_corpus(tmp_path / "train", tmp_path / "test", tmp_path / "corpus", val_fraction=0.25)
    argv = ["--corpus", str(tmp_path / "corpus"), "--classes", "category", "--image-size", "64", "--minutes", "0.01",
            "--batch", "2", "--threads", "1", "--split", "train", "--test", "4", "--modality", "fundus",
            "--supervision", "anchored", "--places", "coarse", "--out", str(tmp_path / "out")]  # fmt: skip
    assert bound.main(argv) == 0
    result = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert result["places"] == "coarse" and math.isfinite(result["splits"]["train"]["summary"]["cnr"]["macro"])
    with pytest.raises(SystemExit):
        bound.main(["--corpus", str(tmp_path / "corpus"), "--supervision", "anchored", "--minutes", "0"])
