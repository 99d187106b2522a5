"""Demo logic without a server: ``demo.callbacks`` and ``demo.models`` with the tiny model from conftest."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import huge_png, truncated_png
from PIL import Image
from pydicom.encaps import encapsulate
from test_io import RAMP_12BIT, _undecodable_syntax, make_dicom

import afloc
from afloc.hub.bundle import ModelMetadata
from afloc.hub.cards import render_model_card
from afloc.imaging.boxes import boxes_to_mask
from afloc.imaging.io import load_image
from afloc.localization.metrics import iou, localization_metrics
from afloc.localization.overlay import to_rgb_uint8
from afloc.text.prompts import CXR_FINDINGS
from demo import callbacks as cb
from demo.export import export
from demo.messages import zero_shot_text
from demo.models import UNTRAINED_KEY, LoadedModel, ModelStore, find_model_dirs, model_banner

SYNTHETIC = ModelMetadata(synthetic_data=True)  # the demo warns about synthetic-data models

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "assets" / "examples"
MASS_PNG = EXAMPLES / "phantom_mass.png"
MASS_PROMPT = "44 mm lung mass in the right upper lung"

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest


@pytest.fixture
def model(tiny_predictor):
    return LoadedModel(
        "tiny", "tiny test model", tiny_predictor, "# tiny\n\nTrained on synthetic images only.", synthetic=True
    )


@pytest.fixture
def session(tmp_path):
    return cb.Session(export_dir=tmp_path / "exports")


def loaded(session, path=MASS_PNG):
    display, status = cb.load_image(session, path, Path(path).name)
    assert not status.error, status.message
    return display


def localized(session, model, text=MASS_PROMPT, presets=()):
    loaded(session)
    status = cb.localize(session, model, text, presets)
    assert not status.error, status.message
    return status


# ------------------------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize("name", ["phantom_mass.png", "phantom_dicom_monochrome1.dcm", "phantom_dicom_monochrome2.dcm"])
def test_upload_examples_gives_state_and_display(session, name):
    display = loaded(session, EXAMPLES / name)
    expected = load_image(EXAMPLES / name)
    np.testing.assert_array_equal(display, to_rgb_uint8(expected))  # DICOMs windowed by afloc.imaging.io
    assert display.dtype == np.uint8 and display.shape == (256, 256, 3)
    assert session.image_name == name and session.modality == "cxr" and session.boxes == []


def test_rgb_image_is_guessed_fundus(session, tmp_path):
    rgb = np.zeros((40, 50, 3), np.uint8)
    rgb[..., 0] = 200
    path = tmp_path / "fundus.jpg.png"
    Image.fromarray(rgb).save(path)
    loaded(session, path)
    assert session.modality == "fundus"


def test_prompt_gives_overlay_of_input_size_with_colour_bar(session, model, tiny_predictor):
    localized(session, model)
    view = cb.render(session, None, 0.3, 0.5)
    assert view.overlay.shape == (256, 256, 3)
    assert view.figure.shape[0] > 256 and view.figure.shape[1] > 256  # legend below, colour bar right
    reference = tiny_predictor.localize(MASS_PROMPT, image=tiny_predictor.encode_image(load_image(MASS_PNG)))
    np.testing.assert_allclose(view.heatmap, reference, atol=1e-6)
    # no calibration.json: no probabilities are shown, every finding is listed as an uncalibrated score instead
    assert session.probabilities == {} and set(session.zero_shot) == set(CXR_FINDINGS)
    notes = zero_shot_text(session)
    assert "no calibration" in notes and "not probabilities" in notes and "pneumonia 0." in notes


def test_redraw_never_runs_the_model(session, model, tiny_predictor, monkeypatch):
    calls = {"image": 0, "text": 0}
    for name, key in (("encode_image", "image"), ("encode_text", "text")):
        original = getattr(tiny_predictor.model, name)

        def counted(*args, _original=original, _key=key, **kwargs):
            calls[_key] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(tiny_predictor.model, name, counted)
    localized(session, model, "mass, pleural effusion")
    after_localize = dict(calls)
    assert after_localize["image"] == 1 and after_localize["text"] >= 1
    for threshold in (-0.5, 0.0, 0.3, 0.9):
        for selected in ("mass", "pleural effusion", "unknown"):
            cb.render(session, selected, threshold, 0.2)
    cb.set_boxes_text(session, "10, 10, 50, 50, mass")
    export(session, "mass", 0.1, 0.5)
    assert cb.localize(session, model, "mass, pleural effusion").error is False  # cached per session
    assert calls == after_localize


def test_several_prompts_give_one_heatmap_each(session, model):
    localized(session, model, "mass,\npleural effusion ,, mass", presets=["edema"])
    assert session.prompts == ["mass", "pleural effusion", "edema"]
    maps = [cb.render(session, p, 0.3, 0.5).heatmap for p in session.prompts]
    assert not np.allclose(maps[0], maps[1], equal_nan=True)
    assert cb.render(session, "not a prompt", 0.3, 0.5).prompt == "mass"


def test_non_ascii_letters_are_dropped_with_a_note(session, model):
    status = localized(session, model, "épanchement pleural")
    assert "Non-ASCII" in status.message


# ------------------------------------------------------------------------------------------------ ground truth
def test_example_ground_truth_and_metrics(session, model):
    examples = [e for e in cb.list_examples(EXAMPLES) if e.modality == "cxr"]
    assert len(examples) == 10
    mass = next(e for e in examples if e.name == "phantom_mass")
    display, status = cb.load_example(session, mass)
    assert not status.error and display.shape == (256, 256, 3) and len(session.boxes) == 2
    cb.localize(session, model, f"{MASS_PROMPT}, pneumothorax")
    for prompt, expected in ((MASS_PROMPT, [53, 69, 34, 29]), ("pneumothorax", [136, 33, 57, 33])):
        view = cb.render(session, prompt, 0.2, 0.5)
        assert [list(b[:4]) for b in view.scored_boxes] == [expected]  # only the box labelled like the prompt
        mask = boxes_to_mask(view.scored_boxes, 256, 256)
        single = localization_metrics(view.heatmap, mask, 0.2)
        sweep = [iou(view.heatmap, mask, t) for t in (0.1, 0.2, 0.3, 0.4, 0.5)]
        expected_mean = np.nanmean(sweep) if not np.isnan(sweep).all() else np.nan
        assert view.metrics == pytest.approx(single | {"iou_mean": expected_mean}, nan_ok=True)
        # the reference: a Gaussian on the image's centre, sigma a quarter of its side, min-max scaled to [-1, 1]
        axis = np.arange(256) - 127.5
        prior = np.exp(-(axis[:, None] ** 2 + axis[None, :] ** 2) / (2 * 64.0**2))
        prior = 2 * (prior - prior.min()) / (prior.max() - prior.min()) - 1
        prior_sweep = [iou(prior, mask, t) for t in (0.1, 0.2, 0.3, 0.4, 0.5)]
        expected_prior = localization_metrics(prior, mask, 0.2) | {"iou_mean": np.nanmean(prior_sweep)}
        assert view.reference == pytest.approx(expected_prior, nan_ok=True, abs=1e-4)
        for line in ("Pointing game", "IoU at 0.2", "Mean IoU 0.1-0.5", "Dice at 0.2", "CNR", "centre prior:"):
            assert line in view.metrics_text


def test_boxes_to_mask_follows_the_reader_rounding_rule():
    from training.evaluation.datasets import LocalizationSample

    rng = np.random.default_rng(0)
    boxes = [cb.Box(*rng.uniform(-5, 40, 2), *rng.uniform(0.1, 20, 2)) for _ in range(30)] + [cb.Box(10, 20, 5, 4)]
    for box in boxes:
        sample = LocalizationSample(Path("x.png"), "p", "c", boxes=[box[:4]])
        np.testing.assert_array_equal(boxes_to_mask([box], 37, 41), sample.gt_mask(37, 41))
    assert boxes_to_mask([cb.Box(10, 20, 5, 4)], 40, 40).sum() == 20


def test_metrics_follow_the_threshold(session, model):
    localized(session, model, "mass")
    cb.set_boxes_text(session, "40, 40, 100, 120, mass")
    values = {}
    for threshold in (-0.9, 0.0, 0.6):
        view = cb.render(session, "mass", threshold, 0.5)
        mask = boxes_to_mask(view.scored_boxes, 256, 256)
        single = {k: v for k, v in view.metrics.items() if k != "iou_mean"}  # iou_mean: over 0.1-0.5, not t
        assert single == pytest.approx(localization_metrics(view.heatmap, mask, threshold), nan_ok=True)
        values[threshold] = view.metrics["iou"]
    assert len({round(v, 6) for v in values.values() if not np.isnan(v)}) >= 2


def _annotation_files():
    coco = {
        "images": [{"id": 1, "file_name": "other.png"}, {"id": 7, "file_name": "dir/phantom_mass.png"}],
        "annotations": [
            {"image_id": 7, "bbox": [53, 69, 34, 29], "category_id": 2, "label_text": "right upper mass"},
            {"image_id": 1, "bbox": [0, 0, 5, 5], "category_id": 2},
        ],
        "categories": [{"id": 2, "name": "mass"}],
    }
    ms_cxr = (
        "dicom_id,category_name,label_text,x,y,w,h,image_width,image_height,path\n"
        "phantom_mass,Mass,right upper mass,106,138,68,58,512,512,files/phantom_mass.jpg\n"
        "other,Pneumonia,left opacity,1,1,5,5,512,512,files/other.jpg\n"
    )
    yolo = "3 0.2734375 0.326171875 0.1328125 0.11328125\n"
    return {
        "coco.json": (json.dumps(coco), [53, 69, 34, 29], "mass: right upper mass"),
        "ms_cxr.csv": (ms_cxr, [53, 69, 34, 29], "Mass: right upper mass"),
        "boxes.txt": (yolo, [53, 69, 34, 29], "class 3"),
        "names.txt": (yolo.replace("3", "mass", 1), [53, 69, 34, 29], "mass"),
        "simple.csv": ("x,y,w,h,label\n53,69,34,29,mass\n", [53, 69, 34, 29], "mass"),
        "plain.csv": ("53, 69, 34, 29, mass, right upper\n", [53, 69, 34, 29], "mass, right upper"),
        "example.json": ((EXAMPLES / "phantom_mass.json").read_text(), [53, 69, 34, 29], "mass: " + MASS_PROMPT),
    }


@pytest.mark.parametrize("name", sorted(_annotation_files()))
def test_annotation_formats(session, tmp_path, name):
    text, box, label = _annotation_files()[name]
    loaded(session)
    (tmp_path / name).write_text(text)
    boxes_text, status = cb.load_annotations(session, tmp_path / name)
    assert not status.error, status.message
    assert [round(v, 6) for v in session.boxes[0][:4]] == box and session.boxes[0].label == label
    assert cb.parse_boxes_text(boxes_text) == session.boxes  # the editor shows what is used


def test_typed_boxes(session, model):
    localized(session, model, "mass")
    status = cb.set_boxes_text(session, "# x, y, w, h, label\n53, 69, 34, 29, mass\n\n136.5,33,57,33")
    assert not status.error and session.boxes == [cb.Box(53, 69, 34, 29, "mass"), cb.Box(136.5, 33, 57, 33)]
    assert cb.render(session, "mass", 0.3, 0.5).scored_boxes == [cb.Box(53, 69, 34, 29, "mass")]
    assert cb.set_boxes_text(session, "").message == "Ground truth cleared." and session.boxes == []
    assert "No ground truth" in cb.render(session, "mass", 0.3, 0.5).metrics_text


# ------------------------------------------------------------------------------------------------ export
def test_exports_are_written_and_readable(session, model):
    localized(session, model, "mass, edema")
    cb.set_boxes_text(session, "53, 69, 34, 29, edema")
    files, status = export(session, "edema", 0.25, 0.4)
    assert not status.error and [f.suffix for f in files] == [".png", ".npy", ".json"]
    assert all(f.parent == session.export_dir for f in files)
    view = cb.render(session, "edema", 0.25, 0.4)
    figure = np.asarray(Image.open(files[0]).convert("RGB"))  # what was shown, with a provenance footer below
    np.testing.assert_array_equal(figure[: view.figure.shape[0]], view.figure)
    np.testing.assert_array_equal(np.load(files[1]), view.heatmap)
    record = json.loads(files[2].read_text())
    assert record["prompt"] == "edema" and record["threshold"] == 0.25 and record["model"]["name"] == "tiny test model"
    assert set(record["metrics"]) == {"iou", "iou_mean", "dice", "cnr", "pointing_game"}
    assert set(record["centre_prior_metrics"]) == set(record["metrics"])
    assert "not a medical device" in record["notice"].lower()
    session.close()
    assert not session.export_dir.exists()


# ------------------------------------------------------------------------------------------------ bad input
BAD_IMAGES = {
    "random.png": (lambda: np.random.default_rng(1).bytes(5000), "not an image this demo reads: upload a PNG"),
    "truncated.png": (truncated_png, "truncated"),
    "empty.dcm": (lambda: b"", "empty"),
    "multiframe.dcm": (lambda: make_dicom(np.zeros((8, 4), np.uint8), NumberOfFrames=2), "multi-frame"),
    "rgb.dcm": (
        lambda: make_dicom(
            np.zeros((4, 4, 3), np.uint8), SamplesPerPixel=3, PhotometricInterpretation="RGB", PlanarConfiguration=0
        ),
        "colour DICOM",
    ),
    "huge.png": (huge_png, r"is 3000 x 2000 \(6 MP\), over the 1 MP limit: downscale it to at most 1200 px"),
    "document.png": (lambda: b"%PDF-1.7\n" + bytes(300), "is a PDF document, not an image: export the film as PNG"),
    "notes.png": (lambda: b"Patient notes, not a film\n" * 20, "is a text file, not an image"),
}


@pytest.mark.parametrize("name", sorted(BAD_IMAGES))
def test_bad_images_give_a_plain_message_and_leave_no_film(session, tmp_path, name):
    """Issue #35: the message says what the file is and what to do; the previous film, its heatmaps and boxes go
    (Localize must never run on the film before a refused upload)."""
    make, pattern = BAD_IMAGES[name]
    loaded(session)
    (tmp_path / name).write_bytes(make())
    display, status = cb.load_image(session, tmp_path / name, name, max_pixels=1_000_000)
    assert display is None and status.error and name in status.message
    assert re.search(pattern, status.message), status.message
    assert session.image is None and session.encoded is None and session.boxes == [] and not session.prompts
    assert cb.localize(session, None, "mass").error  # nothing left to localize
    assert "Doe" not in status.message and "PID" not in status.message


def test_compressed_dicom_without_decoder(session, tmp_path):
    syntax = _undecodable_syntax()
    data = make_dicom(RAMP_12BIT, bits_stored=12, transfer_syntax=syntax, pixel_data=encapsulate([b"\xff\xd8\xff\xd9"]))
    display, status = cb.load_image(session, data, "compressed.dcm")
    assert display is None and status.error and "no decoder is installed" in status.message


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("", "Type a finding"),
        (" ,\n , ", "Type a finding"),
        ("a" * 1001, "1001 characters long; the limit is 1000"),
        ("肺炎, 胸水", "Nothing is left"),
        (",".join(f"finding {k}" for k in range(12)), "at most 8"),
    ],
)
def test_bad_prompts(session, model, text, pattern):
    loaded(session)
    status = cb.localize(session, model, text)
    assert status.error and re.search(pattern, status.message), status.message
    assert session.prompts == [] and not session.has_results


def test_actions_before_an_image_give_messages(session, model, tmp_path):
    assert cb.localize(session, model, "mass").error
    assert cb.set_boxes_text(session, "1,2,3,4").error
    assert cb.load_annotations(session, tmp_path / "nothing.csv")[1].error
    assert export(session, None, 0.3, 0.5)[1].error
    assert cb.render(session, None, 0.3, 0.5).figure is None
    assert cb.load_image(session, None)[1].error


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"images": [{"id": 1, "file_name": "phantom_mass.png"}]}', "not COCO"),
        (b'{"images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}], "annotations": []}', "none"),
        (b"x,y,w,h\n1,2,three,4\n", "four numbers"),
        (b"x,y,w,h\n1,2,-3,4\n", "positive w, h"),
        (b"0 0.5 0.5 1.5 0.2\n", "normalised"),
        (b"\xff\xfe\x00\x81binary", "not UTF-8"),
        (b"999, 999, 10, 10\n", "outside the 256x256 image"),
        (b"just some words\n", "expected"),
        (b"", "no box"),
    ],
)
def test_malformed_annotations(session, tmp_path, content, pattern):
    loaded(session)
    cb.set_boxes_text(session, "1, 1, 10, 10, kept")
    (tmp_path / "gt.txt").write_bytes(content)
    text, status = cb.load_annotations(session, tmp_path / "gt.txt")
    assert text is None and status.error and re.search(pattern, status.message), status.message
    assert session.boxes == [cb.Box(1, 1, 10, 10, "kept")]
    typed = cb.set_boxes_text(session, "1, 2, 3")
    assert typed.error and "line 1" in typed.message


# ------------------------------------------------------------------------------------------------ models
def test_model_store_discovers_caches_and_reports_broken_models(tmp_path, tiny_model, tiny_tokenizer):
    user = tmp_path / "models"
    user.mkdir()
    store = ModelStore([tmp_path / "missing", user])
    assert store.discover() == [("untrained model (random weights)", UNTRAINED_KEY)]
    card = render_model_card("tiny", synthetic_data=True)
    afloc.save_pretrained(
        tiny_model, user / "b_tiny", tiny_tokenizer, afloc.Preprocessing(64), card=card, metadata=SYNTHETIC
    )
    (user / "a_broken").mkdir()
    (user / "a_broken" / "config.json").write_text("{not json")
    keys = [key for _, key in store.discover()]  # a model exported after start appears on refresh
    assert keys == ["user/a_broken", "user/b_tiny", UNTRAINED_KEY]  # opaque keys: never a server path
    assert (
        store.key_for(user / "b_tiny") == "user/b_tiny" and store.path_of("user/b_tiny") == (user / "b_tiny").resolve()
    )
    assert store.default_key() == UNTRAINED_KEY  # no bundled model: start on the flagged untrained one
    assert (
        ModelStore([user]).default_key() == "bundled/b_tiny"  # the first folder is the bundled one; a broken model
        # is not a start-up model, the first readable chest X-ray one is
        and UNTRAINED_KEY not in dict(ModelStore([user]).discover()).values()
    )
    assert find_model_dirs(user / "b_tiny") == [(user / "b_tiny").resolve()]
    with pytest.raises(ValueError, match="could not load the model in a_broken"):
        store.get(keys[0])
    first = store.get(keys[1])
    assert store.get(keys[1]) is first and first.synthetic and "Synthetic-data" in model_banner(first.synthetic, False)
    with pytest.raises(ValueError, match="unknown model"):
        store.get("/etc")


def test_untrained_fallback_is_flagged():
    from demo.models import build_untrained_model

    model = build_untrained_model(image_size=64)
    assert model.untrained and "UNTRAINED MODEL: heatmaps are meaningless" in model_banner(model.synthetic, True)
    heatmap = model.predictor.localize("mass", image=model.predictor.encode_image(load_image(MASS_PNG)))
    assert heatmap.shape == (256, 256)


def test_imports_start_nothing():
    code = (
        "import sys, app, demo, demo.callbacks, demo.models;"
        "assert 'gradio' not in sys.modules, 'gradio imported';"
        "args = app.parse_args([]);"
        "assert (args.host, args.port, args.share, args.auth) == ('127.0.0.1', 7860, False, None);"
        "assert app.parse_args(['--auth', 'ann:se:cret']).auth == ('ann', 'se:cret')"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_model_selector_shows_names_and_the_card_the_source(tmp_path, tiny_model, tiny_tokenizer):
    """No server paths in the selector's labels or the cards: names, and the source in words."""
    from demo.models import BUNDLED_MODELS_DIR

    user, other = tmp_path / "server" / "secret" / "models", tmp_path / "elsewhere"
    card = render_model_card("tiny")
    for folder, name in ((user, "tiny_a"), (user, "shared"), (other, "shared")):
        afloc.save_pretrained(
            tiny_model, folder / name, tiny_tokenizer, afloc.Preprocessing(64), card=card, metadata=SYNTHETIC
        )
    store = ModelStore([BUNDLED_MODELS_DIR, user, other / "shared"], device="cpu")
    choices = store.discover()
    labels = [label for label, _ in choices]
    bundled = [p.name for p in find_model_dirs(BUNDLED_MODELS_DIR)]
    assert labels == [*bundled, "shared (models)", "tiny_a", "shared (shared)"]  # sorted per folder
    for label, key in choices:
        assert "/" not in label and str(tmp_path) not in label
        assert str(tmp_path) not in key and not key.startswith("/") and str(BUNDLED_MODELS_DIR) not in key
    keys = dict((label, key) for label, key in choices)
    texts = {label: store.card(keys[label]) for label in labels}
    assert texts["tiny_a"].endswith("**Source**: the user models folder (`models/tiny_a`)\n")
    assert "the model directory given at start-up (`shared`)" in texts["shared (shared)"]
    for label in bundled:
        assert f"bundled with the demo (`assets/models/{label}`)" in texts[label]
    loaded = store.get(keys["tiny_a"])
    assert loaded.card == texts["tiny_a"] and loaded.name == "tiny_a"
    for text in [*texts.values(), loaded.card]:
        assert str(tmp_path) not in text and str(BUNDLED_MODELS_DIR) not in text


# ------------------------------------------------------------------ every control reaches what the user gets
def test_opacity_slider_changes_the_overlay_and_zero_shows_the_film(session, model):
    localized(session, model)
    image = to_rgb_uint8(load_image(MASS_PNG))
    faint, strong = (cb.render(session, None, -1.0, opacity).overlay.astype(int) for opacity in (0.2, 0.8))
    assert faint.shape == strong.shape == image.shape
    assert np.abs(faint - image).mean() < np.abs(strong - image).mean()  # more colour, further from the film
    zero = cb.render(session, None, -1.0, 0.0).overlay.astype(int)
    assert (zero == image).all(axis=2).mean() > 0.95  # the film itself, but for the threshold's contour line


def test_threshold_slider_reaches_the_metrics_and_the_export(session, model):
    localized(session, model)
    cb.set_boxes_text(session, "53, 69, 34, 29, mass")
    low, high = cb.render(session, None, -0.5, 0.5), cb.render(session, None, 0.5, 0.5)
    mask = boxes_to_mask(low.scored_boxes, *low.heatmap.shape)
    assert {k: v for k, v in low.metrics.items() if k != "iou_mean"} == localization_metrics(low.heatmap, mask, -0.5)
    assert {k: v for k, v in high.metrics.items() if k != "iou_mean"} == localization_metrics(high.heatmap, mask, 0.5)
    assert low.metrics["iou_mean"] == high.metrics["iou_mean"]  # over the fixed thresholds 0.1-0.5
    assert low.metrics["iou"] != high.metrics["iou"]
    files, _ = export(session, None, 0.5, 0.35)
    record = json.loads(files[2].read_text())
    assert (record["threshold"], record["opacity"]) == (0.5, 0.35)
    assert record["metrics"]["iou"] == pytest.approx(high.metrics["iou"])


def test_annotation_edges_found_by_mutation():
    """Survivors of the demo's mutation run (session 8): a COCO box whose category is not listed keeps its
    label text alone; messages count CSV lines from the header's next line and boxes from 1; comment and blank
    lines of a YOLO file are skipped."""
    from demo.annotations import check_boxes, read_annotations

    annotation = {"image_id": 1, "category_id": 9, "bbox": [1, 2, 3, 4], "label_text": "small nodule"}
    coco = {"images": [{"id": 1, "file_name": "film.png"}], "categories": [], "annotations": [annotation]}
    [box] = read_annotations(json.dumps(coco).encode(), "film.png", (100, 100))
    assert box.label == "small nodule"
    with pytest.raises(ValueError, match="CSV line 2"):
        read_annotations(b"x,y,w,h,label\n1,2,nan,4,mass\n", "film.png", (100, 100))
    with pytest.raises(ValueError, match=r"box 1 \["):
        check_boxes([cb.Box(500, 500, 5, 5)], (100, 100))
    yolo = b"# exported by a labelling tool\n\n0 0.5 0.5 0.2 0.2\n"
    [box] = read_annotations(yolo, "film.png", (100, 100))
    assert (box.x, box.y, box.w, box.h) == pytest.approx((40, 40, 20, 20))
