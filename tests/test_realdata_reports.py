"""Reports written from real images' annotations (training.realdata): hand-written expectations, side rules."""

from __future__ import annotations

import json

import numpy as np
import pytest

from afloc.imaging.boxes import Box
from training.realdata import cxr, cxr_reports, fundus
from training.realdata.common import mask_to_rle

# ------------------------------------------------------------------------------------------------------ fundus

W, H = 1000, 700


def _right_eye(*lesions: fundus.Box) -> list[fundus.Box]:
    """A right eye: the disc (100 px across) on the image's right, at (800, 300); fovea 250 px to its left."""
    return [Box(750, 250, 100, 100, "optic_disc"), *lesions]


def _mirror(boxes: list[fundus.Box]) -> list[fundus.Box]:
    return [Box(W - b.x - b.w, b.y, b.w, b.h, b.label) for b in boxes]


def test_eye_and_landmarks_from_the_disc():
    photo = fundus.describe_photo(_right_eye(), W, H)
    assert photo.eye == "right" and photo.disc == (800, 300) and photo.disc_diameter == 100
    assert photo.fovea == pytest.approx((550, 330))  # 2.5 disc diameters temporal (image left), 0.3 below


def test_regions_a_grader_names():
    photo = fundus.describe_photo(_right_eye(), W, H)
    assert fundus.region_of((550, 330), photo) == "macula"
    assert fundus.region_of((400, 330), photo) == "temporal_to_macula"  # 1.5 DD further from the disc
    assert fundus.region_of((880, 300), photo) == "peripapillary"
    assert fundus.region_of((920, 300), photo) == "nasal_to_disc"
    assert fundus.region_of((920, 150), photo) == "superonasal"
    assert fundus.region_of((680, 320), photo) == "papillomacular"
    assert fundus.region_of((600, 120), photo) == "superotemporal_arcade"  # above: smaller y is superior
    assert fundus.region_of((600, 520), photo) == "inferotemporal_arcade"


def test_a_box_temporal_to_the_macula_is_written_so_and_absent_classes_are_negated():
    exudates = Box(380, 310, 40, 40, "hard_exudates")  # centre (400, 330)
    photo = fundus.describe_photo(_right_eye(exudates), W, H)
    assert photo.lesions["hard_exudates"] == {"temporal_to_macula": [exudates]}
    for seed in range(20):
        report, targets = fundus.write_report(photo, np.random.default_rng(seed))
        assert [t.phrase for t in targets] and all("temporal to the macula" in t.phrase for t in targets)
        assert targets[0].boxes == [[380, 310, 40, 40]] and targets[0].category == "hard_exudates"
        assert targets[0].phrase.lower() in report.lower()
        assert "Right eye" in report or "OD" in report
        assert "no hard exudates" not in report.lower() and "no exudates" not in report.lower()  # present
        assert "haemorrhage" not in report.lower() or "no " in report.lower()  # absent: negated or not named
    negated = [fundus.write_report(photo, np.random.default_rng(s))[0] for s in range(20)]
    assert sum("No haemorrhages." in r or "No retinal haemorrhages are seen." in r or
               "There are no haemorrhages." in r for r in negated) >= 10  # fmt: skip


def test_a_mirrored_photo_is_the_other_eye_with_the_same_regions():
    lesions = [Box(380, 310, 40, 40, "hard_exudates"), Box(900, 120, 30, 30, "haemorrhage")]
    photo = fundus.describe_photo(_right_eye(*lesions), W, H)
    mirrored = fundus.describe_photo(_mirror(_right_eye(*lesions)), W, H)
    assert (photo.eye, mirrored.eye) == ("right", "left")
    assert photo.fovea[0] == pytest.approx(W - mirrored.fovea[0]) and photo.fovea[1] == mirrored.fovea[1]
    regions = {k: sorted(v) for k, v in photo.lesions.items()}
    assert regions == {k: sorted(v) for k, v in mirrored.lesions.items()}
    assert regions == {"hard_exudates": ["temporal_to_macula"], "haemorrhage": ["superonasal"]}
    report, _ = fundus.write_report(mirrored, np.random.default_rng(0))
    assert "Left eye" in report or "OS" in report


def test_held_out_phrasing_only_in_the_test_split():
    photo = fundus.describe_photo(_right_eye(Box(380, 310, 40, 40, "haemorrhage")), W, H)
    held_out = fundus.held_out_terms()
    for seed in range(30):
        train, _ = fundus.write_report(photo, np.random.default_rng(seed), held_out=False)
        test, targets = fundus.write_report(photo, np.random.default_rng(seed), held_out=True)
        assert not any(term in train for term in held_out)
        assert all(any(term in t.phrase for term in held_out) for t in targets)


def test_fine_places_follow_the_etdrs_grid_around_the_fovea():
    """Bug class: rings measured from the disc instead of the fovea, nasal and temporal swapped, or a fine place's
    phrase carrying a held-out coarse term ("temporal to the fovea" inside "just temporal to the fovea")."""
    photo = fundus.describe_photo(_right_eye(), W, H)  # fovea (550, 330), disc diameter 100
    expected = {(550, 330): "centre", (550, 230): "inner_superior", (550, 430): "inner_inferior",
                (450, 330): "inner_temporal", (650, 330): "inner_nasal", (550, 130): "outer_superior",
                (350, 330): "outer_temporal", (800, 300): "peripapillary",
                (150, 330): "temporal_to_macula"}  # fmt: skip
    assert {p: fundus.fine_region(p, photo) for p in expected} == expected
    lesions = [Box(430, 310, 40, 40, "hard_exudates"), Box(540, 320, 20, 20, "hard_exudates")]
    fine = fundus.describe_photo(_right_eye(*lesions), W, H, places="fine")
    assert fine.lesions["hard_exudates"] == {"inner_temporal": [lesions[0]], "centre": [lesions[1]]}
    mirrored = fundus.describe_photo(_mirror(_right_eye(*lesions)), W, H, places="fine")
    assert sorted(mirrored.lesions["hard_exudates"]) == ["centre", "inner_temporal"]  # the left eye's temporal side
    held_out = fundus.held_out_terms()
    for seed in range(30):
        train, targets = fundus.write_report(fine, np.random.default_rng(seed))
        assert not any(term in train for term in held_out), train
        words = {t.phrase: t.boxes for t in targets}
        assert any(p in phrase for phrase in words for p in fundus.FINE_TRAIN_PLACES["inner_temporal"])
        _, test_targets = fundus.write_report(fine, np.random.default_rng(seed), held_out=True)
        assert all(any(term in t.phrase for term in held_out) for t in test_targets)
    with pytest.raises(ValueError, match="places must be one of"):
        fundus.describe_photo(_right_eye(), W, H, places="etdrs")


def test_yolo_boxes_on_a_non_square_photo(tmp_path):
    label = tmp_path / "a.txt"
    label.write_text("0 0.8 0.25 0.1 0.2\n1 0.1 0.9 0.02 0.04\n")
    boxes = fundus.read_yolo_boxes(label, 1000, 500)
    assert boxes[0] == Box(750, 75, 100, 100, "optic_disc")
    assert boxes[1].label == "hard_exudates"
    assert (boxes[1].x, boxes[1].y, boxes[1].w, boxes[1].h) == pytest.approx((90, 440, 20, 20))
    label.write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValueError, match="a.txt, line 1"):
        fundus.read_yolo_boxes(label, 1000, 500)


# ---------------------------------------------------------------------------------------------------- chest


def _lungs(height: int = 300, width: int = 240) -> np.ndarray:
    """Two lungs: the image's left one (the patient's right) at columns 20-100, the other at 140-220."""
    lung = np.zeros((height, width), dtype=bool)
    lung[30:270, 20:100] = True
    lung[30:270, 140:220] = True
    return lung


def test_a_mask_in_the_image_left_lower_lung_is_the_patients_right_lower_zone():
    lung = _lungs()
    infection = np.zeros_like(lung)
    infection[200:260, 40:90] = True  # the image's left lung, its lowest third
    findings = cxr_reports.describe_infection(infection, lung)
    assert [(f.side, f.zones) for f in findings] == [("right", ("lower",))]
    for seed in range(10):
        report, targets = cxr_reports.covid_report(findings, np.random.default_rng(seed), cxr_reports.Vocabulary())
        assert len(targets) == 1 and "right" in targets[0].phrase and "left" not in targets[0].phrase
        assert any(w in targets[0].phrase for w in ("right lower zone", "right lung base", "right lower lung"))
        assert np.array_equal(targets[0].mask, infection)


def test_bilateral_upper_and_extent():
    lung = _lungs()
    infection = np.zeros_like(lung)
    infection[30:110, 20:100] = True  # all of the patient's right upper third: a third of that lung
    infection[40:70, 150:170] = True  # a little (3%) in the patient's left upper zone
    findings = cxr_reports.describe_infection(infection, lung)
    assert [(f.side, f.zones, f.extent) for f in findings] == [("right", ("upper",), "patchy"),
                                                               ("left", ("upper",), "focal")]  # fmt: skip


def test_normal_film_has_negative_sentences_and_no_target():
    vocabulary = cxr_reports.Vocabulary(normal_lungs=("The lungs are clear.",), context=("No pleural effusion.",))
    report = cxr_reports.normal_report(np.random.default_rng(0), vocabulary)
    assert "The lungs are clear." in report and "No pleural effusion." in report


def test_tb_box_sides_follow_the_patient():
    vocabulary = cxr_reports.Vocabulary()
    boxes = [("active_tb", [60.0, 80.0, 80.0, 60.0])]  # the image's left, high: the patient's right upper zone
    report, targets = cxr_reports.tb_report(boxes, 512, 512, np.random.default_rng(0), vocabulary)
    assert cxr_reports.box_place(boxes[0][1], 512, 512) == ("right", "upper")
    assert "right" in targets[0].phrase and targets[0].boxes == [boxes[0][1]]
    assert cxr_reports.box_place([400, 400, 50, 50], 512, 512) == ("left", "lower")


def test_mined_sentences_from_a_tiny_archive(tmp_path):
    import io
    import tarfile

    xml = ('<AbstractText Label="FINDINGS">The lungs are clear. Heart size is normal. Low lung volumes.'
           "</AbstractText>")  # fmt: skip
    path = tmp_path / "reports.tgz"
    with tarfile.open(path, "w:gz") as tar:
        for k in range(3):
            data = xml.encode()
            info = tarfile.TarInfo(f"ecgen-radiology/{k}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    vocabulary = cxr_reports.mine_iu_sentences(path, min_count=3)
    assert vocabulary.normal_lungs == ("The lungs are clear.",)  # "Low lung volumes." is a finding, left out
    assert vocabulary.context == ("Heart size is normal.",)


def test_rle_round_trip_through_the_coco_reader(tmp_path):
    from training.evaluation.datasets import read_phantom
    from training.realdata.common import Target, write_coco

    mask = np.zeros((30, 50), dtype=bool)  # non-square, one corner
    mask[2:6, 40:47] = True
    images = [{"id": 0, "file_name": "images/a.png", "height": 30, "width": 50}]
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    write_coco(tmp_path / "annotations" / "test.json", images,
               [(0, Target("covid_opacity", "opacity", mask=mask)), (0, Target("x", "box", boxes=[[1, 2, 3, 4]]))],
               "test")  # fmt: skip
    data = json.loads((tmp_path / "annotations" / "test.json").read_text())
    assert data["annotations"][0]["segmentation"] == mask_to_rle(mask)
    samples = {s.phrase: s for s in read_phantom(tmp_path, "test").samples}
    assert np.array_equal(samples["opacity"].gt_mask(30, 50), mask)
    box = samples["box"].gt_mask(30, 50)
    assert box.sum() == 12 and box[2:6, 1:4].all()


# ----------------------------------------------------------------------------------- readers for these layouts


def test_mask_folder_reader_on_non_square_class_folders(tmp_path):
    import cv2

    from training.evaluation.datasets import read_mask_folders

    for klass, shape in (("covid", (300, 500)), ("normal", (500, 300))):
        (tmp_path / klass / "images").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / klass / "images" / "a b (1).png"), np.full(shape, 90, np.uint8))
    masks = tmp_path / "covid" / "infection_masks"
    masks.mkdir()
    mask = np.zeros((300, 500), np.uint8)
    mask[250:290, 10:60] = 255  # bottom-left corner of a wide film
    cv2.imwrite(str(masks / "a b (1).png"), mask)
    result = read_mask_folders(tmp_path)
    assert len(result.samples) == 1  # the normal film has no mask folder: not a sample
    sample = result.samples[0]
    assert (sample.category, sample.phrase, sample.image_size) == ("covid", "covid", (300, 500))
    truth = sample.gt_mask(300, 500)
    assert truth.sum() == 40 * 50 and truth[250:290, 10:60].all()
    one = read_mask_folders(tmp_path / "covid" / "images", masks, "ground-glass opacities")
    assert [s.phrase for s in one.samples] == ["ground-glass opacities"]
    with pytest.raises(ValueError, match="no class folder"):
        read_mask_folders(tmp_path / "normal")


def test_yolo_reader_takes_an_ultralytics_classes_file(tmp_path):
    import cv2

    from training.evaluation.datasets import read_yolo

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    cv2.imwrite(str(tmp_path / "images" / "tb1.jpg"), np.zeros((200, 400), np.uint8))
    (tmp_path / "labels" / "tb1.txt").write_text("1 0.125 0.75 0.05 0.1\n")
    (tmp_path / "classes.txt").write_text("ActiveTuberculosis\nObsoletePulmonaryTuberculosis\n")
    [sample] = read_yolo(tmp_path / "images", tmp_path / "labels").samples
    assert sample.category == "ObsoletePulmonaryTuberculosis" and sample.image_size == (200, 400)
    np.testing.assert_allclose(sample.boxes, [[40, 140, 20, 20]])  # x = (0.125 - 0.025) * 400, y = (0.75 - 0.05) * 200


def test_phrase_sensitivity_swaps_sides_and_keeps_only_one_sided_phrases():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from phrase_sensitivity import swap_sides, unilateral

    swapped = swap_sides("opacities in the right lower zone and left apex")
    assert swapped == "opacities in the left lower zone and right apex"
    assert unilateral("patchy consolidation in the left mid zone")
    assert not unilateral("bilateral opacities in the right and left lower zones")
    assert not unilateral("bilateral patchy opacities") and not unilateral("consolidation")


def test_class_only_text_names_the_finding_without_where():
    lung = _lungs()
    infection = np.zeros_like(lung)
    infection[200:260, 40:90] = True
    infection[40:100, 150:200] = True
    findings = cxr_reports.describe_infection(infection, lung)
    for seed in range(10):
        report, targets = cxr_reports.covid_report(
            findings, np.random.default_rng(seed), cxr_reports.Vocabulary(), class_only=True
        )
        assert len(targets) == 1 and np.array_equal(targets[0].mask, infection)
        assert not cxr_reports.LOCATION_WORDS.search(report.split("IMPRESSION")[0]), report
    boxes = [("active_tb", [60.0, 80.0, 80.0, 60.0]), ("active_tb", [400.0, 400.0, 50.0, 50.0])]
    report, targets = cxr_reports.tb_report(
        boxes, 512, 512, np.random.default_rng(0), cxr_reports.Vocabulary(), class_only=True
    )
    assert len(targets) == 1 and len(targets[0].boxes) == 2 and not cxr_reports.LOCATION_WORDS.search(targets[0].phrase)
    assert cxr_reports.strip_location_words("Patchy opacities in the right lower zone.") == "opacities in the ."


# --------------------------------------------------------------------------------- whole corpora, end to end


def _tiny_shared(root):
    """A miniature of ../shared/data/cxr: 3 COVID-QU-Ex classes, 2 TBX11K films, 2 notes, 2 IU reports."""
    import csv
    import io
    import tarfile

    import cv2

    lung = np.zeros((64, 64), np.uint8)
    lung[8:56, 6:28] = 255
    lung[8:56, 36:58] = 255
    rows = []
    for klass, n in (("covid", 4), ("normal", 2), ("non_covid", 2)):
        for k in range(n):
            name = f"{klass} ({k}).png"
            for folder in ("images", "lung_masks"):
                (root / "covidqu_train" / klass / folder).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / "covidqu_train" / klass / "images" / name), np.full((64, 64), 90, np.uint8))
            cv2.imwrite(str(root / "covidqu_train" / klass / "lung_masks" / name), lung)
            infection = ""
            if klass == "covid":
                (root / "covidqu_train" / klass / "infection_masks").mkdir(exist_ok=True)
                mask = np.zeros((64, 64), np.uint8)
                mask[40:54, 8:26] = 255  # the image's left lower lung: the patient's right lower zone
                cv2.imwrite(str(root / "covidqu_train" / klass / "infection_masks" / name), mask)
                infection = f"{klass}/infection_masks/{name}"
            rows.append({"image": f"{klass}/images/{name}", "class": klass, "infection_mask": infection,
                         "lung_mask": f"{klass}/lung_masks/{name}"})  # fmt: skip
    with (root / "covidqu_train" / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tb = root / "tbx11k_train"
    (tb / "images").mkdir(parents=True)
    (tb / "labels").mkdir()
    for k in range(2):
        cv2.imwrite(str(tb / "images" / f"tb{k}.jpg"), np.full((512, 512), 80, np.uint8))
        (tb / "labels" / f"tb{k}.txt").write_text("0 0.2 0.3 0.1 0.1\n")
    (tb / "manifest.csv").write_text("image,labels\nimages/tb0.jpg,labels/tb0.txt\nimages/tb1.jpg,labels/tb1.txt\n")
    notes = root / "covid_notes"
    notes.mkdir()
    for name in ("a.jpg", cxr.DEMO_EXAMPLES[0]):
        cv2.imwrite(str(notes / name), np.full((40, 50), 100, np.uint8))
    (notes / "manifest.csv").write_text(
        "image,finding,clinical_notes\na.jpg,COVID-19,Patchy opacities in the right lower zone.\n"
        f"{cxr.DEMO_EXAMPLES[0]},COVID-19,kept back as a demo example\n"
    )
    (root / "iu_reports").mkdir()
    with tarfile.open(root / "iu_reports" / "NLMCXR_reports.tgz", "w:gz") as tar:
        data = b'<AbstractText Label="FINDINGS">The lungs are clear. Heart size is normal.</AbstractText>'
        for k in range(2):
            info = tarfile.TarInfo(f"ecgen-radiology/{k}.xml")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_prepare_cxr_writes_a_corpus_the_trainer_and_evaluator_read(tmp_path):
    from training.evaluation.datasets import read_phantom
    from training.manifest import read_manifest

    _tiny_shared(tmp_path / "shared")
    counts = cxr.build_corpus(tmp_path / "shared", tmp_path / "out")
    records = read_manifest(tmp_path / "out" / "manifest.csv")
    assert len(records) == 8 + 2 + 1 and sum(sum(c.values()) for c in counts.values()) == 11
    assert all(r.image.is_file() for r in records)
    assert not any(cxr.DEMO_EXAMPLES[0].split(".")[0] in str(r.image) for r in records)  # kept back
    covid = [r for r in records if r.extra["labels"] == "covid_opacity"]
    assert covid and all("right" in r.report and "left " not in r.report.split("IMPRESSION")[0] for r in covid)
    normal = [r for r in records if r.extra["source"].startswith("covidqu") and not r.extra["labels"]]
    # a 2-report archive has no sentence frequent enough to mine: the fallback normal sentences are used
    assert normal and all(any(s in r.report for s in cxr_reports.NORMAL_LUNG_FALLBACK) for r in normal)
    samples = [s for split in ("train", "val", "test") for s in read_phantom(tmp_path / "out", split).samples]
    masks = [s for s in samples if s.category == "covid_opacity"]
    assert len(masks) == 4 and all(s.gt_mask(64, 64)[40:54, 8:26].all() and s.gt_mask(64, 64).sum() == 14 * 18
                                   for s in masks)  # fmt: skip
    assert {s.category for s in samples} == {"covid_opacity", "active_tb"}
    cxr.build_corpus(tmp_path / "shared", tmp_path / "classonly", class_only=True)
    for record in read_manifest(tmp_path / "classonly" / "manifest.csv"):
        assert not cxr_reports.LOCATION_WORDS.search(record.report.split("IMPRESSION")[0]), record.report


def test_prepare_fundus_splits_by_photo_and_keeps_the_test_folder_apart(tmp_path):
    import cv2

    from training.evaluation.datasets import read_phantom

    for folder, stems in (("train", ("0200", "0201", "0202")), ("test", ("0001",))):
        (tmp_path / folder).mkdir()
        for stem in stems:
            cv2.imwrite(str(tmp_path / folder / f"{stem}.jpg"), np.full((68, 102, 3), 60, np.uint8))
            (tmp_path / folder / f"{stem}.txt").write_text("0 0.8 0.5 0.1 0.15\n1 0.3 0.5 0.05 0.05\n")
    counts = fundus.build_corpus(tmp_path / "train", tmp_path / "test", tmp_path / "out", val_fraction=0.5)
    assert counts["test"] == 1 and counts["train"] + counts["val"] == 3
    [disc] = [s for s in read_phantom(tmp_path / "out", "test").samples if s.category == "optic_disc"]
    np.testing.assert_allclose(disc.boxes, [[0.75 * 102, 0.425 * 68, 0.1 * 102, 0.15 * 68]])
    (tmp_path / "test" / "0200.jpg").write_bytes((tmp_path / "train" / "0200.jpg").read_bytes())
    (tmp_path / "test" / "0200.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValueError, match="both the training pool and the test set"):
        fundus.build_corpus(tmp_path / "train", tmp_path / "test", tmp_path / "again")
