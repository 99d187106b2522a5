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
    return c.predict(server["key"], text, [], None, 0.3, 0.5, api_name="/localize")


def test_the_prompt_shown_after_a_run_is_the_first_new_one(server, tmp_path):
    c = _client(server, tmp_path)
    assert c.predict(gradio_client.handle_file(str(EXAMPLE)), server["key"], api_name="/load_image")[-1].startswith(
        "Loaded"
    )
    _, shown, *_, status = _localize(c, server, "cardiomegaly")
    assert shown["value"] == "cardiomegaly"
    _, shown, *_, status = _localize(c, server, "cardiomegaly, left pleural effusion")
    assert status.startswith("Localized 2") and shown["value"] == "left pleural effusion"


def test_a_refused_upload_leaves_no_film_and_says_what_to_do(server, tmp_path):
    c = _client(server, tmp_path)
    c.predict(gradio_client.handle_file(str(EXAMPLE)), server["key"], api_name="/load_image")
    assert _localize(c, server, "mass")[-1].startswith("Localized")
    pdf = tmp_path / "scan.png"
    pdf.write_bytes(b"%PDF-1.7\n" + bytes(2000))
    outputs = c.predict(gradio_client.handle_file(str(pdf)), server["key"], api_name="/load_image")
    figure, status = outputs[4], outputs[-1]
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
    assert matched and [b.label for b in scored] == ["ObsoletePulmonaryTuberculosis"]
    assert boxes_for_prompt(boxes, "cardiomegaly") == ([], False)  # labelled, none matches: nothing scored
    unlabelled = cb.parse_boxes_text("1, 2, 3, 4")
    assert boxes_for_prompt(unlabelled, "anything") == (unlabelled, False)  # nothing to match: all scored
