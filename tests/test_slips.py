"""Cases where a realistic slip changes the answer (issue #30): non-square geometry, sides, converter inference.

Each case is built so that the convention that is wrong gives a different result from the right one (a wide
image and a tall one, a box in one corner, a disc between the two halves that a swapped axis would misplace, a
BERT whose head count is not the 64-wide convention).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from afloc.convert.layouts import ConversionError, infer_bert_config
from afloc.imaging.boxes import Box
from training.evaluation.datasets import LocalizationSample
from training.realdata import cxr_reports, fundus

# ------------------------------------------------------------------------------------------ ground-truth masks


@pytest.mark.parametrize(("height", "width"), [(500, 300), (300, 500)])
def test_a_box_in_the_far_corner_of_a_non_square_image(height, width):
    box = [width - 40.0, height - 30.0, 40.0, 30.0]  # bottom-right corner
    truth = LocalizationSample(Path("x.png"), "p", "c", boxes=[box]).gt_mask(height, width)
    rows, cols = np.nonzero(truth)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (height - 30, height - 1, width - 40, width - 1)


# ----------------------------------------------------------------------------------- demo annotation uploads


def test_demo_yolo_upload_on_a_wide_image():
    from demo.annotations import read_annotations

    [box] = read_annotations(b"0 0.1 0.8 0.1 0.2\n", "wide.png", (300, 500))  # (H, W)
    assert [round(v, 6) for v in box[:4]] == [25.0, 210.0, 50.0, 60.0]


def test_demo_coco_boxes_of_a_differently_sized_image_are_rescaled_per_axis():
    from demo.annotations import read_annotations

    coco = {"images": [{"id": 1, "file_name": "wide.png", "width": 1000, "height": 300}],
            "annotations": [{"image_id": 1, "bbox": [900, 200, 100, 100], "category_id": 1}],
            "categories": [{"id": 1, "name": "mass"}]}  # fmt: skip
    [box] = read_annotations(json.dumps(coco).encode(), "wide.png", (150, 250))  # loaded at (H, W) = (150, 250)
    assert [round(v, 6) for v in box[:4]] == [225.0, 100.0, 25.0, 50.0]  # x by 0.25, y by 0.5


# ------------------------------------------------------------------------------ sides and eyes on real images


def test_the_eye_is_read_against_the_width_not_the_height():
    # a 1000 x 700 photo whose disc is at x = 400: left of the middle (500), right of half the height (350)
    photo = fundus.describe_photo([Box(350, 300, 100, 100, "optic_disc")], 1000, 700)
    assert photo.eye == "left"


def test_a_tb_box_low_on_the_image_left_is_the_patients_right():
    assert cxr_reports.box_place([60.0, 400.0, 50.0, 50.0], 512, 512) == ("right", "lower")
    assert cxr_reports.box_place([400.0, 60.0, 50.0, 50.0], 512, 512) == ("left", "upper")


def test_split_lungs_on_a_wide_film():
    lung = np.zeros((200, 400), bool)
    lung[20:180, 30:150] = True
    lung[20:180, 250:370] = True
    lungs = cxr_reports.split_lungs(lung)
    assert lungs["right"][:, :200].sum() == lung[:, :200].sum() and not lungs["right"][:, 200:].any()
    assert lungs["left"][:, 200:].sum() == lung[:, 200:].sum()


# ------------------------------------------------------------------------------------ converter inference


def _bert_state(hidden: int, layers: int = 4, intermediate: int = 37, vocab: int = 50) -> dict:
    shape = {"embeddings.word_embeddings.weight": (vocab, hidden),
             "embeddings.position_embeddings.weight": (64, hidden),
             "embeddings.token_type_embeddings.weight": (2, hidden)}  # fmt: skip
    for k in range(layers):
        shape[f"encoder.layer.{k}.intermediate.dense.weight"] = (intermediate, hidden)
    return {f"text_encoder.bert.{k}": SimpleNamespace(shape=v) for k, v in shape.items()}


def test_head_count_of_a_foreign_bert_is_read_from_its_config_or_given_never_guessed():
    state = _bert_state(hidden=192)  # not a published BERT size: refused without a config, 6 in it, 4 when asked
    with pytest.raises(ConversionError, match="192-wide"):
        infer_bert_config(state, Path("ckpt"), None, None)
    config = infer_bert_config(state, Path("ckpt"), {"num_attention_heads": 6}, None)
    assert config["num_attention_heads"] == 6 and config["intermediate_size"] == 37 and config["num_hidden_layers"] == 4
    assert infer_bert_config(state, Path("ckpt"), {"num_attention_heads": 6}, 4)["num_attention_heads"] == 4


# ---------------------------------------------------------------------------------- DICOM values by hand


def _dicom(tmp_path, pixels, name="x.dcm", **attributes) -> Path:
    from test_io import make_dicom

    path = tmp_path / name
    path.write_bytes(make_dicom(np.asarray(pixels), **attributes))
    return path


def test_dicom_rows_and_columns(tmp_path):
    from afloc.imaging.io import load_image
    from training.evaluation.datasets import read_image_size

    path = _dicom(tmp_path, np.zeros((20, 30), np.uint16), bits_stored=12)
    assert read_image_size(path) == (20, 30) and load_image(path).shape == (20, 30)


def test_dicom_signed_storage_uses_the_signed_range(tmp_path):
    from afloc.imaging.io import load_image

    pixels = np.array([[-1000, 0, 1000]] * 2, np.int16)
    image = load_image(_dicom(tmp_path, pixels, bits_stored=12))
    np.testing.assert_allclose(image[0], (pixels[0] + 2048) / 4095, atol=1e-6)  # by hand: [-2048, 2047] -> [0, 1]


def test_dicom_rescale_slope_and_intercept_set_the_range(tmp_path):
    from afloc.imaging.io import load_image

    pixels = np.array([[100, 1000, 2000]] * 2, np.uint16)
    image = load_image(_dicom(tmp_path, pixels, bits_stored=12, RescaleSlope=2, RescaleIntercept=-1000))
    values = pixels[0] * 2.0 - 1000  # the modality LUT; its range is [0, 4095] * 2 - 1000 = [-1000, 7190]
    np.testing.assert_allclose(image[0], (values + 1000) / 8190, atol=1e-6)


def test_dicom_monochrome1_is_inverted(tmp_path):
    from afloc.imaging.io import load_image

    pixels = np.array([[0, 4095, 1000]] * 2, np.uint16)
    image = load_image(_dicom(tmp_path, pixels, bits_stored=12, PhotometricInterpretation="MONOCHROME1"))
    np.testing.assert_allclose(image[0], 1 - pixels[0] / 4095, atol=1e-6)


# ----------------------------------------------------------------------------------------------- overlays


def test_a_box_label_stays_beside_its_box_on_a_wide_image():
    from afloc.localization.overlay import render_overlay

    image = np.full((100, 400), 0.5, np.float32)
    heatmap = np.zeros((100, 400), np.float32)
    box = [[300.0, 50.0, 60.0, 30.0]]
    plain = render_overlay(image, heatmap, boxes=box).astype(int)
    labelled = render_overlay(image, heatmap, boxes=box, box_labels=["mass"]).astype(int)
    rows, cols = np.nonzero(np.abs(labelled - plain).sum(axis=2))
    assert cols.size and cols.min() >= 290 and cols.max() <= 399 and rows.max() < 50  # the tag above the box
