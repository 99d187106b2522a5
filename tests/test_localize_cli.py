"""The localization CLI: folder in, overlay PNGs and heatmaps out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from afloc import Preprocessing, save_pretrained
from afloc.__main__ import main
from afloc.imaging.boxes import Box, read_box_file


@pytest.fixture
def model_dir(tmp_path, tiny_model, tiny_tokenizer):
    return save_pretrained(tiny_model, tmp_path / "model", tiny_tokenizer, preprocessing=Preprocessing(image_size=64))


def _write_png(path, height, width, seed=0):
    pixels = (np.random.default_rng(seed).random((height, width)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)


def test_folder_with_boxes(tmp_path, model_dir, capsys):
    images = tmp_path / "images"
    images.mkdir()
    _write_png(images / "a.png", 90, 70)
    _write_png(images / "b.jpg", 50, 80, seed=1)
    (images / "notes.txt").write_text("not an image")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("image,x,y,w,h,label\na.png,10,20,30,40,effusion\n")
    out = tmp_path / "out"
    code = main(
        [
            str(images),
            "--prompt",
            "left pleural effusion",
            "--prompt",
            "edema",
            "--model",
            str(model_dir),
            "--out",
            str(out),
            "--boxes",
            str(boxes),
            "--threshold",
            "0.3",
        ]
    )
    assert code == 0
    heatmap = np.load(out / "a__left_pleural_effusion.npy")
    assert heatmap.shape == (90, 70)
    assert np.load(out / "b__edema.npy").shape == (50, 80)
    png = np.asarray(Image.open(out / "a__left_pleural_effusion.png"))
    assert png.ndim == 3 and png.shape[0] >= 90 and png.shape[1] > 70  # colour bar and legend added
    assert len(list(out.glob("*.png"))) == 4
    captured = capsys.readouterr()
    assert "skipped notes.txt" in captured.err


def test_read_boxes_coco_and_errors(tmp_path):
    coco = {
        "images": [{"id": 7, "file_name": "imgs/tb/x.png", "width": 10, "height": 10}],
        "annotations": [{"image_id": 7, "bbox": [1, 2, 3, 4], "category_id": 1}],
        "categories": [{"id": 1, "name": "ActiveTuberculosis"}],
    }
    path = tmp_path / "coco.json"
    path.write_text(json.dumps(coco))
    assert read_box_file(path) == {"x.png": [Box(1.0, 2.0, 3.0, 4.0, "ActiveTuberculosis")]}
    path.write_text('{"images": []')
    with pytest.raises(ValueError, match="COCO"):
        read_box_file(path)
    bad = tmp_path / "bad.csv"
    bad.write_text("file,left,top\n")
    with pytest.raises(ValueError, match="columns"):
        read_box_file(bad)
    bad.write_text("image,x,y,w,h\na.png,1,2,three,4\n")
    with pytest.raises(ValueError, match="line 2"):
        read_box_file(bad)


def test_clear_errors(tmp_path, model_dir, capsys):
    assert (
        main([str(tmp_path / "missing.png"), "--prompt", "x", "--model", str(model_dir), "--out", str(tmp_path)]) == 2
    )
    assert "does not exist" in capsys.readouterr().err
    _write_png(tmp_path / "a.png", 20, 20)
    assert (
        main(
            [
                str(tmp_path / "a.png"),
                "--prompt",
                "x",
                "--model",
                str(tmp_path / "nomodel"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "does not exist" in capsys.readouterr().err


def test_opacity_and_threshold_flags_reach_the_overlay(tmp_path, model_dir):
    """Every drawing flag changes the PNG a user gets; the heatmap (.npy) does not depend on them."""
    _write_png(tmp_path / "a.png", 60, 100)  # wide, not square
    outputs = {}
    for name, flags in {"faint": ["--opacity", "0.1"], "strong": ["--opacity", "0.9"],
                        "contour": ["--opacity", "0.1", "--threshold", "0.2"]}.items():  # fmt: skip
        out = tmp_path / name
        assert main([str(tmp_path / "a.png"), "--prompt", "edema", "--model", str(model_dir), "--out", str(out),
                     *flags]) == 0  # fmt: skip
        outputs[name] = (np.asarray(Image.open(out / "a__edema.png").convert("RGB")).astype(int),
                         np.load(out / "a__edema.npy"))  # fmt: skip
    film = np.asarray(Image.open(tmp_path / "a.png").convert("RGB")).astype(int)
    faint, strong, contour = (outputs[k][0][:60, :100] for k in ("faint", "strong", "contour"))
    assert np.abs(faint - film).mean() < np.abs(strong - film).mean()
    assert not np.array_equal(faint, contour)  # the contour is drawn
    for _, heatmap in outputs.values():
        np.testing.assert_array_equal(heatmap, outputs["faint"][1])
