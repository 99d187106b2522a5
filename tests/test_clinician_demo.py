"""A demo a clinician can use (issue #35): what is asked is what is shown, a refused upload leaves no film, plain
messages, exports that keep their context and validate against their schema, nothing left in the browser."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port, save_synthetic_tiny
from PIL import Image

from demo import callbacks as cb
from demo.export import export
from demo.messages import notice_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "assets" / "examples" / "phantom_mass.png"
gradio_client = pytest.importorskip("gradio_client")


def test_prompts_are_deduplicated_whatever_their_case_and_presets_are_inserted_as_text():
    prompts, _ = cb.parse_prompts("Pneumonia, pneumonia,\n PNEUMONIA , left  effusion, Left effusion")
    assert prompts == ["Pneumonia", "left  effusion"]
    assert cb.insert_presets("left pleural effusion", ["cardiomegaly", "LEFT PLEURAL EFFUSION"]) == (
        "left pleural effusion, cardiomegaly"
    )
    assert cb.insert_presets("", ["mass"]) == "mass" and cb.insert_presets(None, None) == ""


def test_a_negated_prompt_gets_a_notice(tmp_path):
    session = cb.Session(export_dir=tmp_path)
    for prompt in ("no right pneumothorax", "Without effusion", "negative for mass"):
        assert "This prompt is negated" in notice_text(session, prompt)
    assert notice_text(session, "right pneumothorax") == "" and notice_text(session, "nodule not excluded") == ""


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_config, tiny_tokenizer):
    import app

    models = tmp_path_factory.mktemp("models")
    save_synthetic_tiny(models, "tiny", tiny_config, tiny_tokenizer)
    port = free_port()
    blocks, launch_kwargs, _, key = app.create(["--models-dir", str(models), "--model", str(models / "tiny"),
                                                "--port", str(port)])  # fmt: skip
    assert launch_kwargs["run_history"] is False  # nothing of a session is kept in the browser
    blocks.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "key": key}
    finally:
        blocks.close()


def _client(server, tmp_path):
    return gradio_client.Client(server["url"], verbose=False, analytics_enabled=False, download_files=str(tmp_path))


def _localize(c, server, text):
    return c.predict(server["key"], text, [], None, 0.3, 0.5, "file", api_name="/localize")


def test_the_prompt_shown_after_a_run_is_the_first_new_one(server, tmp_path):
    c = _client(server, tmp_path)
    assert c.predict(gradio_client.handle_file(str(EXAMPLE)), server["key"], api_name="/load_image")[-1].startswith(
        "Loaded"
    )
    _, _, shown, *_, status = _localize(c, server, "cardiomegaly")  # outputs: figure, key, shown prompt, ...
    assert shown["value"] == "cardiomegaly"
    _, _, shown, *_, status = _localize(c, server, "cardiomegaly, left pleural effusion")
    assert status.startswith("Localized 2") and shown["value"] == "left pleural effusion"


def test_a_refused_upload_leaves_no_film_and_says_what_to_do(server, tmp_path):
    c = _client(server, tmp_path)
    c.predict(gradio_client.handle_file(str(EXAMPLE)), server["key"], api_name="/load_image")
    assert _localize(c, server, "mass")[-1].startswith("Localized")
    pdf = tmp_path / "scan.png"
    pdf.write_bytes(b"%PDF-1.7\n" + bytes(2000))
    outputs = c.predict(gradio_client.handle_file(str(pdf)), server["key"], api_name="/load_image")
    figure, status = outputs[5], outputs[-1]  # modality, presets, findings, boxes, invert, figure, ...
    assert figure is None and "scan.png is a PDF document, not an image: export the film as PNG" in status
    assert status.count("PDF") == 1  # said once
    assert "Upload an image" in _localize(c, server, "mass")[-1]  # never the film before the refused upload
    c.predict(gradio_client.handle_file(str(EXAMPLE)), server["key"], api_name="/load_image")
    assert c.predict(api_name="/clear_image")[-1] == "Image cleared."
    assert "Upload an image" in _localize(c, server, "mass")[-1]


def test_the_page_config_holds_no_python_repr(server):
    import httpx

    text = httpx.get(f"{server['url']}config", timeout=30).text
    assert "<function" not in text and "<bound method" not in text and " at 0x" not in text
    assert '"share"' not in text  # no Share button on any image


def test_an_export_keeps_its_context_and_validates_against_its_schema(tmp_path, tiny_model, tiny_tokenizer):
    jsonschema = pytest.importorskip("jsonschema")
    import afloc
    from demo.models import ModelStore

    save_synthetic_tiny(tmp_path / "models", "tiny", tiny_model.config, tiny_tokenizer)
    store = ModelStore([tmp_path / "none", tmp_path / "models"], device="cpu")
    loaded = store.get("user/tiny")
    session = cb.Session(export_dir=tmp_path / "s")
    cb.load_image(session, str(EXAMPLE))
    cb.set_boxes_text(session, "10, 20, 30, 40, mass")
    assert not cb.localize(session, loaded, "mass, pneumonia").error
    schema = json.loads((ROOT / "demo" / "export_schema.json").read_text())
    for prompt, matched in (("mass", "label"), ("pneumonia", None)):  # pneumonia: no box of its label, no metrics
        files, status = export(session, prompt, 0.3, 0.5)
        record = json.loads(files[2].read_text())
        jsonschema.validate(record, schema)
        assert record["boxes"]["matched_by"] == matched and record["model"]["weights_sha256_16"] == loaded.digest
        assert (record["metrics"] is None) == (matched is None)
        assert record["model"]["trained_on_synthetic_images_only"] is True and record["image"]["name"] == EXAMPLE.name
        assert record["app"]["version"] == afloc.__version__ and record["schema_version"] == 1
        figure = np.asarray(Image.open(files[0]))
        shown = cb.render(session, prompt, 0.3, 0.5).figure
        assert figure.shape[0] > shown.shape[0] and figure.shape[1] == shown.shape[1]  # a footer below
        footer = figure[shown.shape[0] :]
        assert (footer.min(axis=2) < 128).mean() > 0.005  # it holds text
    broken = dict(record, schema_version=2)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_the_launcher_says_at_once_that_it_is_starting(monkeypatch, capsys):
    """Importing Gradio and torch takes tens of seconds: the first line comes before any of it."""
    import app

    def slow_start(argv):
        assert capsys.readouterr().out.startswith("Starting the AFLoc demo")  # already printed
        raise RuntimeError("stop here")

    monkeypatch.setattr(app, "create", slow_start)
    with pytest.raises(RuntimeError, match="stop here"):
        app.main([])


def test_boxes_are_matched_by_label_and_never_scored_for_another_finding():
    """Issue #35: "cardiomegaly" was scored against TB boxes; CamelCase COCO names never matched."""
    from demo.annotations import boxes_for_prompt

    boxes = cb.parse_boxes_text("10, 10, 20, 20, ObsoletePulmonaryTuberculosis\n50, 50, 10, 10, active_tb")
    scored, matched = boxes_for_prompt(boxes, "pulmonary tuberculosis")
    assert matched == "label" and [b.label for b in scored] == ["ObsoletePulmonaryTuberculosis"]
    assert boxes_for_prompt(boxes, "cardiomegaly") == ([], None)  # labelled, none matches: nothing scored
    unlabelled = cb.parse_boxes_text("1, 2, 3, 4")
    assert boxes_for_prompt(unlabelled, "anything") == (
        unlabelled,
        "all boxes (unlabelled)",
    )  # nothing to match: all scored


# ------------------------------------------------------------------------------ ground truth by label (problem 3)
YOLO = "1 0.30 0.30 0.20 0.20\n2 0.70 0.30 0.20 0.20\n0 0.5 0.5 0.1 0.1\n"


def _loaded(tmp_path, shape=(100, 200)):
    session = cb.Session(export_dir=tmp_path / "exports")
    film = tmp_path / "0001.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)).save(film)
    assert not cb.load_image(session, film, "0001.png")[1].error
    return session


def test_a_yolo_file_is_named_by_its_names_file_uploaded_with_it_or_after_it(tmp_path):
    session = _loaded(tmp_path)
    (tmp_path / "0001.txt").write_text(YOLO)
    (tmp_path / "retinal.names").write_text("optic_disc\nhard_exudates\nhaemorrhage\n")
    text, status = cb.load_annotations(session, [tmp_path / "0001.txt", tmp_path / "retinal.names"])
    assert not status.error and [b.label for b in session.boxes] == ["hard exudates", "haemorrhage", "optic disc"]
    assert "hard exudates" in text and "class 1" not in text
    # the box file alone: classes by number, and a hint; the names file afterwards relabels them
    other = cb.Session(export_dir=tmp_path / "other")
    other.image, other.image_name = session.image, "0001.png"
    _, status = cb.load_annotations(other, tmp_path / "0001.txt")
    assert [b.label for b in other.boxes] == ["class 1", "class 2", "class 0"] and "have no names" in status.message
    text, status = cb.load_annotations(other, tmp_path / "retinal.names")
    assert not status.error and [b.label for b in other.boxes] == ["hard exudates", "haemorrhage", "optic disc"]
    # or a known dataset's names (IDRiD's for fundus photos), then another dataset's: relabelled again
    third = cb.Session(export_dir=tmp_path / "third")
    third.image, third.image_name = session.image, "0001.png"
    cb.load_annotations(third, tmp_path / "0001.txt")
    assert cb.set_known_class_names(third, "idrid")[1].message.startswith("YOLO class names: 0 optic disc")
    assert [b.label for b in third.boxes] == ["hard exudates", "haemorrhage", "optic disc"]
    cb.set_known_class_names(third, "tbx11k")
    assert [b.label for b in third.boxes][:2] == ["ObsoletePulmonaryTuberculosis", "PulmonaryTuberculosis"]
    assert cb.set_known_class_names(third, "nope")[1].error


def test_a_names_file_is_known_by_its_name_or_its_company_never_a_broken_box_file(tmp_path):
    from demo.annotations import read_class_names

    assert read_class_names("optic_disc\nhard_exudates\n") == ["optic disc", "hard exudates"]
    assert read_class_names("ActiveTuberculosis\nObsoletePulmonaryTuberculosis\n") is not None
    for text in ("{not json", "1 0.5 0.5 0.1 0.1\n", "mass 0.27 0.32 0.13 0.11\n", "x,y,w,h\n", ""):
        assert read_class_names(text) is None, text
    # line index = class id: a blank line inside would shift every later id, so it is no names file; trailing ones are
    assert read_class_names("optic_disc\n\nhaemorrhage\n") is None
    assert read_class_names("optic_disc\nhaemorrhage\n\n\n") == ["optic disc", "haemorrhage"]
    session = _loaded(tmp_path)
    (tmp_path / "notes.txt").write_text("just some words\n")  # one file, not named like a names file: refused
    assert cb.load_annotations(session, tmp_path / "notes.txt")[1].error


def test_haemorrhages_match_a_haemorrhage_label_and_a_chosen_label_scores_any_prompt(tmp_path, tiny_model):
    from demo.annotations import boxes_for_prompt

    boxes = [cb.Box(1, 1, 5, 5, "haemorrhage"), cb.Box(10, 10, 5, 5, "optic disc")]
    assert boxes_for_prompt(boxes, "Haemorrhages")[1] == "label"  # plural and British spelling folded
    assert boxes_for_prompt(boxes, "hemorrhage")[0] == boxes[:1]
    assert boxes_for_prompt(boxes, "drusen") == ([], None)
    assert boxes_for_prompt(boxes, "drusen", chosen="optic disc") == (boxes[1:], "chosen label")


def test_the_label_picker_gives_metrics_to_a_prompt_that_matches_no_label(tmp_path, model_and_session):
    session, model = model_and_session
    cb.set_boxes_text(session, "40, 40, 100, 120, ObsoletePulmonaryTuberculosis")
    assert not cb.localize(session, model, "cardiomegaly").error
    view = cb.render(session, "cardiomegaly", 0.3, 0.5)
    assert view.metrics is None and "Choose the label to score against" in view.metrics_text
    assert session.box_labels() == ["ObsoletePulmonaryTuberculosis"]
    assert cb.choose_label(session, "cardiomegaly", "nope").error
    assert not cb.choose_label(session, "cardiomegaly", "ObsoletePulmonaryTuberculosis").error
    view = cb.render(session, "cardiomegaly", 0.3, 0.5)
    assert view.matched_by == "chosen label" and view.metrics is not None and "the label you chose" in view.metrics_text
    cb.choose_label(session, "cardiomegaly", "")  # back to matching by label
    assert cb.render(session, "cardiomegaly", 0.3, 0.5).metrics is None
    cb.set_boxes_text(session, "1, 1, 10, 10, mass")  # new ground truth: old choices no longer apply
    assert session.chosen_labels == {}


@pytest.fixture
def model_and_session(tmp_path, tiny_model, tiny_tokenizer):
    import afloc
    from demo.models import LoadedModel

    predictor = afloc.AFLocPredictor(tiny_model, tiny_tokenizer, afloc.Preprocessing(64))
    session = cb.Session(export_dir=tmp_path / "exports")
    assert not cb.load_image(session, EXAMPLE, EXAMPLE.name)[1].error
    return session, LoadedModel("tiny", "tiny", predictor, "# tiny")


# ------------------------------------------------------------------------------ DICOM display (problem 8)
def test_the_status_names_a_dicoms_photometric_interpretation_and_window(tmp_path):
    session = cb.Session(export_dir=tmp_path)
    dicom = ROOT / "assets" / "examples" / "phantom_dicom_monochrome1.dcm"
    _, status = cb.load_image(session, dicom, dicom.name)
    assert "MONOCHROME1" in status.message and "inverted so that air is dark" in status.message
    assert "window" in status.message and "tick Invert" in status.message
    png = cb.load_image(session, EXAMPLE, EXAMPLE.name)[1].message
    assert "MONOCHROME" not in png and "window" not in png


def test_invert_changes_the_model_input_and_window_presets_only_the_display(tmp_path, model_and_session):
    session, model = model_and_session
    original = session.image.astype(np.float32).copy()
    cb.localize(session, model, "mass")
    before = session.predictor.localize("mass", image=session.encoded, space="model").copy()
    display, status = cb.set_inverted(session, True)
    assert not status.error and "the model sees the inverted film" in status.message and session.encoded is None
    np.testing.assert_allclose(session.image.astype(np.float32), original.max() + original.min() - original, atol=1e-6)
    cb.localize(session, model, "mass")
    after = session.predictor.localize("mass", image=session.encoded, space="model")
    assert not np.allclose(before, after)  # the model saw the inverted film
    cb.set_inverted(session, False)
    # and back, to float32 rounding (1e-6 of the [0, 1] range; 1/255 would be one grey level)
    np.testing.assert_allclose(session.image.astype(np.float32), original, atol=1e-6)
    # a display window stretches the film's grey levels but leaves the model's input alone
    cb.localize(session, model, "mass")
    encoded = session.encoded
    plain, bone = cb.render(session, "mass", 0.3, 0.0), cb.render(session, "mass", 0.3, 0.0, "bone")
    assert session.encoded is encoded and not np.array_equal(plain.overlay, bone.overlay)
    np.testing.assert_array_equal(plain.heatmap, bone.heatmap)
    assert cb.display_image(np.zeros((5, 5, 3)), "bone").shape == (5, 5, 3)  # colour photos are left alone
    colour = cb.Session(export_dir=tmp_path / "colour")
    colour.image = np.zeros((4, 4, 3), np.uint8)
    assert cb.set_inverted(colour, True)[1].error


# ------------------------------------------------------------------------------ accessibility (problem 9)
def test_each_heatmap_has_a_one_line_description():
    from demo.view import heatmap_summary

    heatmap = np.full((90, 120), -1.0)
    heatmap[70:80, 10:20] = 1.0  # lower left of the image: the patient's right on a frontal film
    text = heatmap_summary(heatmap, "right lower lobe pneumonia", 0.3, "cxr", [cb.Box(5, 65, 20, 20)])
    assert "highest at the image's lower left (the patient's right on a frontal film)" in text
    assert "1% of the image is above the threshold 0.3" in text and "The peak is inside" in text
    fundus = heatmap_summary(heatmap, "drusen", 0.3, "fundus", [])
    assert "patient" not in fundus and "ground-truth" not in fundus
    assert heatmap_summary(np.full((4, 4), np.nan), "x", 0.3, "cxr", []).startswith("No heatmap")


# ------------------------------------------------------------------------------ the model card (problem 10)
def test_the_card_opens_with_five_lines_for_clinicians(tmp_path, tiny_config, tiny_tokenizer):
    from afloc.hub.cards import CLINICIAN_SECTION
    from demo.models import BUNDLED_MODELS_DIR, ModelStore

    store = ModelStore([BUNDLED_MODELS_DIR])
    for name, warning in (("afloc_phantomcxr_r10", "Not for real"), ("afloc_idrid_fundus_r10", "not real reports")):
        key = store.key_for(BUNDLED_MODELS_DIR / name)
        summary = store.card_summary(key)
        lines = [line for line in summary.splitlines() if line.strip()]
        assert len(lines) == 5 and "Research use only" in summary, summary
        assert warning in summary  # the synthetic-data model says so; the real-photo one, that its reports are made
        card = (BUNDLED_MODELS_DIR / name / "README.md").read_text()
        assert card.index(f"## {CLINICIAN_SECTION}") < card.index("## Summary")
    # a card written without the section (an older export) gets five lines made from the model's metadata
    directory = save_synthetic_tiny(tmp_path, "old", tiny_config, tiny_tokenizer)
    (directory / "README.md").write_text("# old\n\nA card from before the clinician summary.\n")
    store = ModelStore([tmp_path])
    summary = store.card_summary(store.key_for(directory))
    assert len(summary.splitlines()) == 5 and "Trained on synthetic images only" in summary
