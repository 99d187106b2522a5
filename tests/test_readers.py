"""Localization ground-truth readers: fixtures in each real format, and the real files of ../shared/data."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from helpers import shared_data
from PIL import Image

from afloc.imaging.transforms import pad_resize_mapping
from training.evaluation.datasets import (
    LocalizationSample,
    read_chexlocalize,
    read_coco,
    read_covid_rural,
    read_idrid_masks,
    read_ms_cxr,
    read_nih_bbox,
    read_phantom,
    read_rsna,
    read_yolo,
)


def _image(path: Path, height: int, width: int, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (width, height)).save(path)
    return path


def _by_id(result) -> dict[str, LocalizationSample]:
    return {sample.sample_id: sample for sample in result.samples}


def _real(relative: str) -> Path:
    return shared_data(relative)


# ------------------------------------------------------------------------------------------- data model


def test_gt_mask_covers_pixels_whose_centres_lie_in_the_box():
    sample = LocalizationSample(Path("a.png"), "p", "c", boxes=[[10, 20, 5, 4]])
    mask = sample.gt_mask(40, 30)
    rows, cols = np.nonzero(mask)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (20, 23, 10, 14) and mask.sum() == 20
    # centres at i + 0.5: [2.5, 4.5) holds the centres of pixels 2 and 3; [2.6, 4.6) those of 3 and 4
    assert np.flatnonzero(LocalizationSample("a", "p", "c", [[2.5, 0, 2, 1]]).gt_mask(1, 8)[0]).tolist() == [2, 3]
    assert np.flatnonzero(LocalizationSample("a", "p", "c", [[2.6, 0, 2, 1]]).gt_mask(1, 8)[0]).tolist() == [3, 4]
    # too thin to hold a centre: the pixel holding the box centre; clipped at the borders; outside: nothing
    assert np.flatnonzero(LocalizationSample("a", "p", "c", [[3.6, 0, 0.2, 1]]).gt_mask(1, 8)[0]).tolist() == [3]
    assert LocalizationSample("a", "p", "c", [[-5, -5, 7, 7]]).gt_mask(4, 4).sum() == 4
    assert not LocalizationSample("a", "p", "c", [[-9, 0, 4, 2], [9, 0, 4, 2]]).gt_mask(4, 4).any()


def test_gt_mask_unions_boxes_and_mask_and_checks_sizes():
    extra = np.zeros((6, 8), dtype=bool)
    extra[5, 7] = True
    sample = LocalizationSample("a.png", "p", "c", [[0, 0, 2, 2], [1, 1, 2, 2]], mask=extra, image_size=(6, 8))
    expected = np.zeros((6, 8), dtype=bool)
    expected[0:2, 0:2] = expected[1:3, 1:3] = expected[5, 7] = True
    np.testing.assert_array_equal(sample.gt_mask(6, 8), expected)
    np.testing.assert_array_equal(sample.mask, extra)  # stored as RLE, decoded bit-exact
    assert sample.mask_shape == (6, 8) and sample.sample_id == "a|p" and sample.boxes.dtype == np.float64
    with pytest.raises(ValueError, match="6x8 image, got 7x8"):
        sample.gt_mask(7, 8)
    with pytest.raises(ValueError, match=r"mask of size \(6, 8\) differs from 7x8"):
        LocalizationSample("a.png", "p", "c", mask=extra).gt_mask(7, 8)
    with pytest.raises(ValueError, match="does not match image_size"):
        LocalizationSample("a.png", "p", "c", mask=extra, image_size=(8, 6))
    with pytest.raises(ValueError, match=r"\[K, 4\]"):
        LocalizationSample("a.png", "p", "c", boxes=[1, 2, 3])
    empty = LocalizationSample("a.png", "p", "c")
    assert empty.boxes.shape == (0, 4) and empty.mask is None and not empty.gt_mask(3, 3).any()


def test_gt_mask_maps_to_the_mapped_box_in_model_space():
    """``mask_to_model(gt_mask(box))`` is the rectangle ``boxes_to_model(box)`` within about one model pixel.

    ``mask_to_model`` samples pixel centres (``cv2.INTER_NEAREST_EXACT``); rounding each edge to whole pixels on
    both grids gives at most ~1.05 px when a small image is enlarged.
    """
    rng = np.random.default_rng(0)
    cases = [(200, 300, [30.0, 40.0, 50.0, 60.0]), (517, 333, [12.3, 201.7, 140.2, 88.9])]
    for _ in range(40):
        height, width = (int(v) for v in rng.integers(60, 1500, size=2))
        x, y = rng.uniform(0, 0.8) * width, rng.uniform(0, 0.8) * height
        cases.append((height, width, [x, y, rng.uniform(0.05, 1) * (width - x), rng.uniform(0.05, 1) * (height - y)]))
    for height, width, box in cases:
        mapping = pad_resize_mapping(height, width, 224)
        model_mask = mapping.mask_to_model(LocalizationSample("a", "p", "c", [box]).gt_mask(height, width))
        x, y, w, h = mapping.boxes_to_model(np.array([box]))[0]
        rows, cols = np.nonzero(model_mask)
        edges = [rows.min() - y, rows.max() + 1 - (y + h), cols.min() - x, cols.max() + 1 - (x + w)]
        assert max(abs(e) for e in edges) <= 1.1, (height, width, box, edges)
        assert model_mask.sum() == (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)  # a rectangle


def test_the_datasets_package_is_one_face_over_its_readers():
    """Each reader is importable from ``training.evaluation.datasets`` and is the one its module defines."""
    code = (
        "import training.evaluation.datasets as d, training.evaluation.datasets.fundus as f, "
        "training.evaluation.datasets.cxr as c\n"
        "print(d.read_yolo is f.read_yolo and d.read_coco is c.read_coco)"
    )
    repo = Path(__file__).resolve().parents[1]
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert output.stdout.strip() == "True"


# --------------------------------------------------------------------------------------- MS-CXR and COCO


def _coco(path: Path, images, annotations, categories) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


MS_CXR_CATEGORIES = [{"id": 1, "name": "Pneumonia"}, {"id": 2, "name": "Pleural effusion"}]
MS_CXR_ROWS = [  # dicom_id, category, label_text, x, y, w, h, width, height
    ("d1", 1, "right lower lobe pneumonia", 10.0, 20.0, 30.0, 40.0, 100, 80),
    ("d1", 1, "right lower lobe pneumonia", 50.5, 5.0, 10.0, 10.0, 100, 80),
    ("d1", 2, "small left effusion", 60.0, 50.0, 20.0, 20.0, 100, 80),
    ("d2", 1, "patchy opacity", 1.0, 2.0, 3.0, 4.0, 64, 64),
]


def _ms_cxr_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    root = tmp_path / "mimic"
    _image(root / "files/p1/s1/d1.jpg", 80, 100)  # d2 is missing; d3 has no box
    paths = {"d1": "files/p1/s1/d1.jpg", "d2": "files/p2/s2/d2.jpg", "d3": "files/p3/s3/d3.jpg"}
    sizes = {"d1": (100, 80), "d2": (64, 64), "d3": (50, 50)}
    ids = {"d1": 0, "d2": 1, "d3": 2}
    images = [{"id": ids[d], "file_name": paths[d], "width": w, "height": h} for d, (w, h) in sizes.items()]
    annotations = [
        {"id": n, "image_id": ids[d], "category_id": c, "bbox": [x, y, w, h], "label_text": t}
        for n, (d, c, t, x, y, w, h, _, _) in enumerate(MS_CXR_ROWS)
    ]
    json_path = _coco(tmp_path / "MS_CXR_Local_Alignment_v1.0.0.json", images, annotations, MS_CXR_CATEGORIES)
    names = {1: "Pneumonia", 2: "Pleural effusion"}
    lines = ["dicom_id,category_name,label_text,x,y,w,h,image_width,image_height,path"]
    lines += [f"{d},{names[c]},{t},{x},{y},{w},{h},{iw},{ih},{paths[d]}" for d, c, t, x, y, w, h, iw, ih in MS_CXR_ROWS]
    csv_path = tmp_path / "MS_CXR_Local_Alignment_v1.0.0.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    return json_path, csv_path, root


def test_ms_cxr_json_groups_boxes_per_image_and_phrase(tmp_path):
    json_path, _, root = _ms_cxr_files(tmp_path)
    result = read_ms_cxr(json_path, root)
    samples = _by_id(result)
    assert list(samples) == ["d1|right lower lobe pneumonia", "d1|small left effusion"]
    pneumonia = samples["d1|right lower lobe pneumonia"]
    np.testing.assert_array_equal(pneumonia.boxes, [[10, 20, 30, 40], [50.5, 5, 10, 10]])
    assert pneumonia.category == "Pneumonia" and pneumonia.image_size == (80, 100) and pneumonia.mask is None
    assert pneumonia.image_path == root / "files/p1/s1/d1.jpg"
    assert samples["d1|small left effusion"].category == "Pleural effusion"
    assert result.missing == [str(root / "files/p2/s2/d2.jpg")] and result.skipped == {"no box": 1}
    kept = read_ms_cxr(json_path, root, keep_missing=True)
    assert len(kept.samples) == 3 and kept.num_boxes == 4 and kept.missing == result.missing


def test_ms_cxr_csv_twin_gives_the_same_samples(tmp_path):
    json_path, csv_path, root = _ms_cxr_files(tmp_path)
    from_json, from_csv = (
        read_ms_cxr(json_path, root, keep_missing=True),
        read_ms_cxr(csv_path, root, keep_missing=True),
    )
    assert _by_id(from_json).keys() == _by_id(from_csv).keys() and from_csv.missing == from_json.missing
    for sample_id, sample in _by_id(from_csv).items():
        twin = _by_id(from_json)[sample_id]
        np.testing.assert_array_equal(sample.boxes, twin.boxes)
        for name in ("phrase", "category", "image_size", "image_path"):
            assert getattr(sample, name) == getattr(twin, name)


def test_phantom_layout(tmp_path):
    _image(tmp_path / "images/test/phantom_0_000012.png", 64, 64)
    _image(tmp_path / "images/test/phantom_0_000013.png", 64, 64)
    images = [
        {"id": 12, "file_name": "images/test/phantom_0_000012.png", "width": 64, "height": 64},
        {"id": 13, "file_name": "images/test/phantom_0_000013.png", "width": 64, "height": 64},  # a normal study
    ]
    annotation = {"image_id": 12, "category_id": 3, "area": 100.0, "iscrowd": 0, "label_text": "left effusion"}
    annotations = [
        {"id": 1, "bbox": [4.0, 40.0, 20.0, 10.0], **annotation},
        {"id": 2, "bbox": [40, 40, 20, 10], **annotation},
    ]
    _coco(tmp_path / "annotations/test.json", images, annotations, [{"id": 3, "name": "pleural_effusion"}])
    result = read_phantom(tmp_path)
    (sample,) = result.samples
    assert sample.sample_id == "phantom_0_000012|left effusion" and sample.category == "pleural_effusion"
    assert sample.boxes.shape == (2, 4) and result.missing == [] and result.skipped == {"no box": 1}
    with pytest.raises(ValueError, match=r"annotations not found: .*val\.json"):
        read_phantom(tmp_path, split="val")


def test_coco_groups_by_category_and_counts_what_it_skips(tmp_path):
    _image(tmp_path / "imgs/tb/a.png", 32, 32)
    images = [{"id": 1, "file_name": "tb/a.png", "width": 32, "height": 32}, {"id": 2, "file_name": "h/b.png"}]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 4, 4]},
        {"id": 2, "image_id": 1, "category_id": 1, "bbox": [8, 8, 4, 4]},
        {"id": 3, "image_id": 1, "category_id": 9, "bbox": [1, 1, 4, 4]},
        {"id": 4, "image_id": 7, "category_id": 1, "bbox": [1, 1, 4, 4]},
        {"id": 5, "image_id": 1, "category_id": 2, "bbox": [1, 1, 0, 4]},
    ]
    categories = [{"id": 1, "name": "ActiveTuberculosis"}, {"id": 2, "name": "PulmonaryTuberculosis"}]
    result = read_coco(_coco(tmp_path / "coco.json", images, annotations, categories), tmp_path / "imgs")
    (sample,) = result.samples
    assert sample.sample_id == "tb/a|ActiveTuberculosis" and sample.phrase == sample.category == "ActiveTuberculosis"
    assert sample.boxes.shape == (2, 4) and sample.image_size == (32, 32)
    assert result.skipped == {"invalid box": 1, "no box": 2, "unknown category": 1, "unknown image": 1}


def test_annotation_file_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"COCO annotations not found: .*none\.json"):
        read_coco(tmp_path / "none.json", tmp_path)
    (tmp_path / "bad.json").write_text('{"images": [')
    with pytest.raises(ValueError, match=r"bad\.json: malformed JSON .*line 1"):
        read_ms_cxr(tmp_path / "bad.json", tmp_path)
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ValueError, match=r"list\.json: expected a COCO-style JSON object"):
        read_coco(tmp_path / "list.json", tmp_path)
    _coco(tmp_path / "nobox.json", [{"id": 1, "file_name": "a.png"}], [{"image_id": 1}], [])
    with pytest.raises(ValueError, match=r"annotation #0 needs 'image_id' and a 'bbox' or 'segmentation'"):
        read_coco(tmp_path / "nobox.json", tmp_path)
    (tmp_path / "ms.csv").write_text("dicom_id,label_text,x,y,w,h,path\n")
    with pytest.raises(ValueError, match=r"ms\.csv: missing column\(s\) \['category_name'\] in the MS-CXR annotations"):
        read_ms_cxr(tmp_path / "ms.csv", tmp_path)
    with pytest.raises(ValueError, match=r"ending in \.json or \.csv"):
        read_ms_cxr(tmp_path / "ms.txt", tmp_path)


# -------------------------------------------------------------------------------------------- RSNA, NIH

RSNA_CSV = """patientId,x,y,width,height,Target
p0,,,,,0
p1,264.0,152.0,213.0,379.0,1
p1,562.0,152.0,256.0,453.0,1
p2,10,20,30,40,1
p3,,,,,0
"""


def test_rsna_csv_and_zip(tmp_path):
    (tmp_path / "stage_2_train_labels.csv").write_text(RSNA_CSV)
    with zipfile.ZipFile(tmp_path / "labels.csv.zip", "w") as archive:
        archive.writestr("stage_2_train_labels.csv", RSNA_CSV)
    (tmp_path / "dicom").mkdir()
    (tmp_path / "dicom/p1.dcm").write_bytes(b"")  # the reader only checks that the file exists
    for source in ("stage_2_train_labels.csv", "labels.csv.zip"):
        result = read_rsna(tmp_path / source, tmp_path / "dicom", image_size=(1024, 1024))
        (sample,) = result.samples
        assert sample.sample_id == "p1|pneumonia" and sample.phrase == sample.category == "pneumonia"
        np.testing.assert_array_equal(sample.boxes, [[264, 152, 213, 379], [562, 152, 256, 453]])
        assert sample.image_size == (1024, 1024) and sample.image_path == tmp_path / "dicom/p1.dcm"
        assert result.missing == [str(tmp_path / "dicom/p2.dcm")] and result.skipped == {"no finding": 2}
    assert read_rsna(tmp_path / "labels.csv.zip", tmp_path, phrase="lung opacity").samples == []
    kept = read_rsna(tmp_path / "labels.csv.zip", tmp_path, phrase="lung opacity", keep_missing=True)
    assert [s.sample_id for s in kept.samples] == ["p1|lung opacity", "p2|lung opacity"]
    assert kept.samples[0].image_size is None


def test_rsna_errors(tmp_path):
    (tmp_path / "cols.csv").write_text("patientId,x,y,w,h,Target\n")
    with pytest.raises(ValueError, match=r"cols\.csv: missing column\(s\) \['width', 'height'\] in the RSNA labels"):
        read_rsna(tmp_path / "cols.csv", tmp_path)
    (tmp_path / "target.csv").write_text("patientId,x,y,width,height,Target\np,1,1,1,1,yes\n")
    with pytest.raises(ValueError, match="Target must be 0 or 1, found 'yes'"):
        read_rsna(tmp_path / "target.csv", tmp_path)
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as archive:
        archive.writestr("readme.txt", "nothing")
    with pytest.raises(ValueError, match=r"empty\.zip: expected a zip holding exactly one \.csv"):
        read_rsna(tmp_path / "empty.zip", tmp_path)


NIH_CSV = """Image Index,Finding Label,Bbox [x,y,w,h],,,
00013118_008.png,Atelectasis,225.08,547.01,86.77,79.18
00013118_008.png,Atelectasis,600,500,50,40
00013118_008.png,Infiltrate,100,100,200,300
00099999_000.png,Mass,1,2,3,4
"""


def test_nih_bbox_odd_header_and_gzip(tmp_path):
    (tmp_path / "BBox_List_2017.csv").write_text(NIH_CSV)
    with gzip.open(tmp_path / "BBox_List_2017.csv.gz", "wt") as handle:
        handle.write(NIH_CSV)
    _image(tmp_path / "images/00013118_008.png", 16, 16)
    for name in ("BBox_List_2017.csv", "BBox_List_2017.csv.gz"):
        result = read_nih_bbox(tmp_path / name, tmp_path / "images")
        samples = _by_id(result)
        assert list(samples) == ["00013118_008|atelectasis", "00013118_008|infiltrate"]
        np.testing.assert_allclose(
            samples["00013118_008|atelectasis"].boxes, [[225.08, 547.01, 86.77, 79.18], [600, 500, 50, 40]]
        )
        assert samples["00013118_008|infiltrate"].phrase == "infiltrate"
        assert samples["00013118_008|infiltrate"].category == "Infiltrate"
        assert result.missing == [str(tmp_path / "images/00099999_000.png")] and result.skipped == {}
    (tmp_path / "plain.csv").write_text("image,label,x,y,w,h\na.png,Mass,1,2,3,4\n")
    with pytest.raises(ValueError, match=r"plain\.csv: expected the NIH header"):
        read_nih_bbox(tmp_path / "plain.csv", tmp_path)
    (tmp_path / "short.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\na.png,Mass,1,2\n")
    with pytest.raises(ValueError, match=r"short\.csv, line 2: expected 6 fields"):
        read_nih_bbox(tmp_path / "short.csv", tmp_path)


# ------------------------------------------------------------------------------------------ CheXlocalize


def _rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}  # str counts, as in the real files


def test_chexlocalize_rle_segmentations(tmp_path):
    edema = np.zeros((20, 30), dtype=bool)
    edema[5:10, 3:20] = True
    data = {
        "patient64541_study1_view1_frontal": {"Edema": _rle(edema), "Atelectasis": _rle(np.zeros((20, 30)))},
        "patient64542_study2_view2_lateral": {"Enlarged Cardiomediastinum": _rle(edema), "Other Finding": _rle(edema)},
    }
    (tmp_path / "gt_segmentations_val.json").write_text(json.dumps(data))
    _image(tmp_path / "CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg", 20, 30)
    result = read_chexlocalize(
        tmp_path / "gt_segmentations_val.json", image_root=tmp_path / "CheXpert-v1.0", split_prefix="valid"
    )
    (sample,) = result.samples
    assert sample.sample_id == "patient64541_study1_view1_frontal|edema" and sample.category == "Edema"
    assert sample.image_path == tmp_path / "CheXpert-v1.0/valid/patient64541/study1/view1_frontal.jpg"
    np.testing.assert_array_equal(sample.mask, edema)
    assert sample.boxes.shape == (0, 4) and sample.image_size == (20, 30)
    np.testing.assert_array_equal(sample.gt_mask(20, 30), edema)
    assert result.missing == [str(tmp_path / "CheXpert-v1.0/valid/patient64542/study2/view2_lateral.jpg")]
    assert result.skipped == {"no finding": 9}  # 10 tasks, 1 positive; the missing image is not counted
    kept = read_chexlocalize(tmp_path / "gt_segmentations_val.json", image_root=tmp_path, keep_missing=True)
    assert [s.phrase for s in kept.samples] == ["edema", "enlarged cardiomediastinum"]
    assert kept.skipped == {"no finding": 18, "unknown category": 1}
    custom = read_chexlocalize(
        tmp_path / "gt_segmentations_val.json", image_root=tmp_path, image_path=lambda i: f"{i}.png"
    )
    assert custom.missing[0] == str(tmp_path / "patient64541_study1_view1_frontal.png")


def test_chexlocalize_polygons_are_filled_one_by_one(tmp_path):
    square = [[2, 2], [9, 2], [9, 9], [2, 9]]
    overlapping = [[5, 5], [14, 5], [14, 14], [5, 14]]
    data = {"patient1_study1_view1_frontal": {"img_size": [16, 20], "Lung Lesion": [square, overlapping], "Edema": []}}
    (tmp_path / "gt_annotations_val.json").write_text(json.dumps(data))
    _image(tmp_path / "patient1/study1/view1_frontal.jpg", 16, 20)
    result = read_chexlocalize(annotations_json=tmp_path / "gt_annotations_val.json", image_root=tmp_path)
    (sample,) = result.samples
    expected = np.zeros((16, 20), dtype=bool)
    expected[2:10, 2:10] = expected[5:15, 5:15] = True  # the overlap stays filled (no even-odd hole)
    np.testing.assert_array_equal(sample.mask, expected)
    assert sample.phrase == "lung lesion" and sample.image_size == (16, 20) and result.skipped == {"no finding": 9}


def test_chexlocalize_errors(tmp_path):
    with pytest.raises(ValueError, match="exactly one of segmentations_json"):
        read_chexlocalize(image_root=tmp_path)
    (tmp_path / "ids.json").write_text(json.dumps({"image7": {"Edema": _rle(np.ones((4, 4)))}}))
    with pytest.raises(ValueError, match="'image7' is not of the form patient<N>_study<N>"):
        read_chexlocalize(tmp_path / "ids.json", image_root=tmp_path)
    (tmp_path / "size.json").write_text(json.dumps({"patient1_study1_view1_frontal": {"Edema": []}}))
    with pytest.raises(ValueError, match=r"size\.json: image 'patient1_study1_view1_frontal' has no valid 'img_size'"):
        read_chexlocalize(annotations_json=tmp_path / "size.json", image_root=tmp_path, keep_missing=True)


# ------------------------------------------------------------------------------------------- COVID Rural


def test_covid_rural_masks(tmp_path):
    images, masks = tmp_path / "jpgs", tmp_path / "pngs_masks"
    for stem in ("a", "b", "c", "d", "e"):
        _image(images / f"{stem}.jpg", 12, 10)
    opacity = np.zeros((12, 10), dtype=np.uint8)
    opacity[2:6, 1:4] = 255
    masks.mkdir()
    Image.fromarray(opacity).save(masks / "a.png")
    Image.fromarray(opacity).save(masks / "b.jpg", quality=60)  # lossy: ringing must not leak
    Image.fromarray(np.zeros((12, 10), np.uint8)).save(masks / "c.png")  # negative
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(masks / "d.png")  # wrong size
    Image.fromarray(opacity).save(masks / "z.png")  # no image
    result = read_covid_rural(images, masks)
    samples = _by_id(result)
    assert list(samples) == ["a|pneumonia opacity", "b|pneumonia opacity"]
    np.testing.assert_array_equal(samples["a|pneumonia opacity"].mask, opacity > 0)
    np.testing.assert_array_equal(samples["b|pneumonia opacity"].mask, opacity > 0)
    assert (
        samples["a|pneumonia opacity"].image_size == (12, 10)
        and samples["a|pneumonia opacity"].category == "pneumonia opacity"
    )
    assert result.missing == [str(images / "z.*")]
    assert result.skipped == {"mask size mismatch": 1, "missing ground truth": 1, "no finding": 1}
    with pytest.raises(ValueError, match=r"COVID Rural mask directory not found: .*nowhere"):
        read_covid_rural(images, tmp_path / "nowhere")


# ----------------------------------------------------------------------------------------------- fundus


def test_yolo_boxes(tmp_path):
    _image(tmp_path / "0001.jpg", 100, 200, "RGB")
    _image(tmp_path / "0002.jpg", 100, 200, "RGB")  # no label file
    _image(tmp_path / "0003.png", 50, 50)  # empty label file
    (tmp_path / "retinal.names").write_text("optic_disc\nhard_exudates\nhaemorrhage\n")
    (tmp_path / "0001.txt").write_text(
        "0 0.5 0.5 0.1 0.2\n1 0.25 0.25 0.1 0.1\n1 0.75 0.75 0.1 0.1\n7 0.5 0.5 0.1 0.1\n\n"
    )
    (tmp_path / "0003.txt").write_text("")
    (tmp_path / "0004.txt").write_text("2 0.5 0.5 0.1 0.1\n")  # no image
    result = read_yolo(tmp_path)
    samples = _by_id(result)
    assert list(samples) == ["0001|optic disc", "0001|hard exudates"]
    np.testing.assert_allclose(samples["0001|optic disc"].boxes, [[90, 40, 20, 20]])
    np.testing.assert_allclose(samples["0001|hard exudates"].boxes, [[40, 20, 20, 10], [140, 70, 20, 10]])
    assert samples["0001|hard exudates"].category == "hard_exudates" and samples["0001|optic disc"].image_size == (
        100,
        200,
    )
    assert result.missing == [str(tmp_path / "0004.*")] and result.skipped == {"no box": 2, "unknown category": 1}
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "0001.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(ValueError, match=r"0001\.txt, line 1: expected 'class cx cy w h'"):
        read_yolo(tmp_path, labels, tmp_path / "retinal.names")
    with pytest.raises(ValueError, match=r"expected one \*\.names \(or classes\.txt\) file"):
        read_yolo(labels, labels)


def test_idrid_masks(tmp_path):
    images = tmp_path / "1. Original Images/a. Training Set"
    masks = tmp_path / "2. All Segmentation Groundtruths/a. Training Set"
    _image(images / "IDRiD_01.jpg", 20, 30, "RGB")
    _image(images / "IDRiD_02.jpg", 20, 30, "RGB")
    lesion = np.zeros((20, 30, 3), dtype=np.uint8)
    lesion[3:7, 4:9, 0] = 255  # IDRiD draws lesions in red
    for folder, name, array in [
        ("1. Microaneurysms", "IDRiD_01_MA.tif", lesion),
        ("3. Hard Exudates", "IDRiD_01_EX.tif", lesion),
        ("4. Soft Exudates", "IDRiD_02_SE.tif", np.zeros_like(lesion)),
        ("5. Optic Disc", "IDRiD_03_OD.tif", lesion),
    ]:
        (masks / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(masks / folder / name)
    result = read_idrid_masks(images, masks)
    samples = _by_id(result)
    assert list(samples) == ["IDRiD_01|microaneurysms", "IDRiD_01|hard exudates"]
    np.testing.assert_array_equal(samples["IDRiD_01|hard exudates"].mask, lesion[..., 0] > 0)
    assert samples["IDRiD_01|microaneurysms"].image_path == images / "IDRiD_01.jpg"
    assert result.missing == [str(images / "IDRiD_03.*")] and result.skipped == {"no finding": 8}
    only_ex = read_idrid_masks(images, masks, lesions=("EX",))
    assert [s.phrase for s in only_ex.samples] == ["hard exudates"] and only_ex.skipped == {"no finding": 1}
    with pytest.raises(ValueError, match=r"unknown IDRiD lesion code\(s\) \['XX'\]"):
        read_idrid_masks(images, masks, lesions=("XX",))


# -------------------------------------------------------------------------------------- real shared data


def test_real_tbx11k_coco():
    root = _real("cxr/tbx11k")
    result = read_coco(root / "annotations/json/TBX11K_train.json", root / "imgs")
    samples = _by_id(result)
    assert list(samples) == ["tb/tb0005|ActiveTuberculosis", "tb/tb0007|ObsoletePulmonaryTuberculosis"]
    assert [len(s.boxes) for s in samples.values()] == [1, 2]
    assert result.missing == [] and result.skipped == {"no box": 1}  # h0001
    for sample in result.samples:
        assert sample.image_size == (512, 512) and sample.image_path.is_file()
        assert 0 < sample.gt_mask(512, 512).sum() < 512 * 512 / 4


def test_real_nih_bbox_list(tmp_path):
    path = _real("cxr/iu_reports/BBox_List_2017.csv.gz")
    result = read_nih_bbox(path, tmp_path)  # no images here
    assert result.samples == [] and len(result.missing) == 880
    kept = read_nih_bbox(path, tmp_path, keep_missing=True)
    assert len(kept.samples) == 984 and kept.num_boxes == 984 and len(kept.missing) == 880
    labels = {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"}
    assert {s.category for s in kept.samples} == labels
    assert all(s.phrase == s.category.lower() for s in kept.samples)
    boxes = np.concatenate([s.boxes for s in kept.samples])
    assert (boxes[:, :2] >= 0).all() and (boxes[:, 0] + boxes[:, 2] <= 1024).all() and (boxes[:, 2:] > 0).all()


def test_real_rsna_zip(tmp_path):
    path = _real("cxr/iu_reports/kaggle_stage_2_train_labels.csv.zip")
    result = read_rsna(path, tmp_path, keep_missing=True)
    assert len(result.samples) == 6012 and result.num_boxes == 9555  # patients with Target=1, their boxes
    assert len(result.missing) == 6012 and result.skipped == {"no finding": 26684 - 6012}
    assert len({s.sample_id for s in result.samples}) == 6012


def test_real_fundus_yolo():
    root = _real("fundus/idrid")
    result = read_yolo(root, names_file=root / "retinal.names")
    assert len({s.image_path for s in result.samples}) == 120 and result.missing == [] and result.skipped == {}
    assert {s.category for s in result.samples} <= {"optic_disc", "hard_exudates", "haemorrhage"}
    assert {s.phrase for s in result.samples} == {"optic disc", "hard exudates", "haemorrhage"}
    for sample in result.samples:
        height, width = sample.image_size
        x, y, w, h = sample.boxes.T
        assert (x >= 0).all() and (y >= 0).all() and (x + w <= width + 1e-6).all() and (y + h <= height + 1e-6).all()


def test_yolo_reader_edges_found_by_mutation(tmp_path):
    """Survivors of the readers' mutation run (session 8): a class token that is not a number is an unknown
    category (not class 1); a .names file beside the images (labels elsewhere) is found; a blank line inside a
    names file is refused (class ids would shift)."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    _image(images / "0001.jpg", 100, 200, "RGB")
    (images / "retinal.names").write_text("optic_disc\nhard_exudates\n")
    (labels / "0001.txt").write_text("disc 0.5 0.5 0.1 0.2\n1 0.25 0.25 0.1 0.1\n")
    result = read_yolo(images, labels)
    assert [s.category for s in result.samples] == ["hard_exudates"] and result.skipped == {"unknown category": 1}
    (images / "retinal.names").write_text("optic_disc\n\nhard_exudates\n")
    with pytest.raises(ValueError, match="without blank lines"):
        read_yolo(images, labels)


def test_idrid_masks_of_another_size_and_missing_images_on_request(tmp_path):
    images = tmp_path / "images"
    masks = tmp_path / "masks"
    _image(images / "IDRiD_01.jpg", 20, 30, "RGB")
    lesion = np.zeros((10, 10, 3), dtype=np.uint8)  # not the image's 20 x 30
    lesion[2:4, 2:4, 0] = 255
    (masks / "3. Hard Exudates").mkdir(parents=True)
    Image.fromarray(lesion).save(masks / "3. Hard Exudates" / "IDRiD_01_EX.tif")
    Image.fromarray(lesion).save(masks / "3. Hard Exudates" / "IDRiD_02_EX.tif")  # an image not downloaded
    result = read_idrid_masks(images, masks, lesions=("EX",))
    assert result.samples == [] and result.skipped == {"mask size mismatch": 1}
    kept = read_idrid_masks(images, masks, lesions=("EX",), keep_missing=True)
    assert [s.sample_id for s in kept.samples] == ["IDRiD_02|hard exudates"]  # kept, to inspect before download
