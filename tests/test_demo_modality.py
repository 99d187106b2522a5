"""The demo's modality switch: models chosen by the modality in their preprocessing.json, presets, examples, and a
clear message while no fundus model is installed; then through the real app with ``gradio_client``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import free_port, without_bundled_models

import afloc
from afloc.text.prompts import CXR_FINDINGS, FUNDUS_FINDINGS
from demo import callbacks as cb
from demo import modality as md
from demo.models import UNTRAINED_KEY, LoadedModel, ModelStore

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


def _save(folder: Path, name: str, modality: str, tiny_config, tiny_tokenizer) -> Path:
    torch.manual_seed(0)
    preprocessing = afloc.Preprocessing(64, (0.5, 0.3, 0.1), (0.3, 0.2, 0.1), modality=modality)
    return afloc.save_pretrained(afloc.AFLoc(tiny_config).eval(), folder / name, tiny_tokenizer, preprocessing)


def test_models_presets_and_examples_follow_the_modality(tmp_path, tiny_config, tiny_tokenizer, monkeypatch):
    bundled, user = tmp_path / "bundled", tmp_path / "user"
    chest = _save(bundled, "chest", "cxr", tiny_config, tiny_tokenizer).resolve()
    (bundled / "old").mkdir()  # a directory written before the modality field: chest X-ray
    (bundled / "old" / "config.json").write_text("{}")
    (bundled / "old" / "preprocessing.json").write_text(json.dumps({"preprocessing": {"image_size": 64}}))
    store = ModelStore([bundled, user], device="cpu")

    assert [key for _, key in md.model_choices(store, "cxr")] == ["bundled/chest", "bundled/old"]
    assert store.path_of("bundled/chest") == chest
    assert md.model_choices(store, "fundus") == [md.UNTRAINED_CHOICE]  # no fundus model yet
    message = md.missing_model_message(store, "fundus")
    assert "No fundus photo model is installed" in message and '"modality": "fundus"' in message
    assert message in md.banner(store, "fundus", UNTRAINED_KEY) and "UNTRAINED" in md.banner(
        store, "fundus", UNTRAINED_KEY
    )
    assert md.missing_model_message(store, "cxr") == ""
    assert md.default_model(store, "fundus", "bundled/chest") == UNTRAINED_KEY
    # the untrained stand-in loads although the bundled folder holds a (chest) model
    stand_in = LoadedModel(UNTRAINED_KEY, "untrained", object(), "card", True)
    monkeypatch.setattr("demo.models.build_untrained_model", lambda: stand_in)
    assert store.get(UNTRAINED_KEY) is stand_in

    _save(user, "eye", "fundus", tiny_config, tiny_tokenizer)  # exported after start-up
    fundus, chest = "user/eye", "bundled/chest"
    assert md.model_choices(store, "fundus") == [("eye", fundus)]
    assert md.default_model(store, "fundus", chest) == fundus
    assert md.missing_model_message(store, "fundus") == ""
    assert fundus not in [key for _, key in md.model_choices(store, "cxr")]
    assert md.default_model(store, "cxr", chest) == chest
    assert md.model_modality(store, fundus) == "fundus" and md.model_modality(store, UNTRAINED_KEY) is None

    assert md.presets("fundus") == list(FUNDUS_FINDINGS) and md.presets("anything") == list(CXR_FINDINGS)
    assert {"optic disc", "hard exudates", "haemorrhages"} <= set(FUNDUS_FINDINGS)
    examples = cb.list_examples(EXAMPLES)
    fundus_examples, chest_examples = md.examples_for(examples, "fundus"), md.examples_for(examples, "cxr")
    assert len(fundus_examples) >= 3 and len(chest_examples) >= 8
    assert len(fundus_examples) + len(chest_examples) == len(examples)


def test_fundus_examples_are_shown_in_colour(tmp_path):
    from demo.session import Session

    for example in md.examples_for(cb.list_examples(EXAMPLES), "fundus"):
        session = Session(export_dir=tmp_path / example.name)
        display, status = cb.load_example(session, example)
        assert not status.error and session.modality == "fundus" and "colour" in status.message
        assert display.shape[2] == 3 and display.dtype.name == "uint8"
        red, green = display[..., 0].astype(int), display[..., 1].astype(int)
        assert (red - green).mean() > 20  # orange-red, not grey
        assert example.boxes


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_config, tiny_tokenizer):
    import app

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    models = tmp_path_factory.mktemp("models")
    _save(models, "tiny", "cxr", tiny_config, tiny_tokenizer)
    patch = without_bundled_models(tmp_path_factory.mktemp("no_bundled_models"))  # no fundus model at start
    port = free_port()
    blocks, launch_kwargs, _, _ = app.create(["--models-dir", str(models), "--port", str(port)])
    blocks.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
    try:
        yield {"url": f"http://127.0.0.1:{port}/", "models": models}
    finally:
        blocks.close()
        patch.undo()
        torch.set_num_threads(threads)


def test_the_app_switches_modality(server, tmp_path, tiny_config, tiny_tokenizer):
    gradio_client = pytest.importorskip("gradio_client")
    client = gradio_client.Client(server["url"], verbose=False, analytics_enabled=False, download_files=str(tmp_path))
    outputs = client.predict("fundus", None, api_name="/set_modality")
    text = json.dumps(outputs)
    assert "No fundus photo model is installed" in text and UNTRAINED_KEY in text and "hard exudates" in text
    assert "phantom_fundus_" in text and "phantom_mass" not in text  # the examples of the modality

    _save(server["models"], "tiny_fundus", "fundus", tiny_config, tiny_tokenizer)
    fundus = "user/tiny_fundus"
    refreshed = client.predict(None, "fundus", api_name="/refresh_models")
    assert fundus in json.dumps(refreshed) and str(server["models"]) not in json.dumps(refreshed)  # picked at once
    outputs = json.dumps(client.predict("fundus", None, api_name="/set_modality"))
    assert fundus in outputs and "No fundus photo model" not in outputs
    back = json.dumps(client.predict("cxr", fundus, api_name="/set_modality"))
    assert "tiny_fundus" not in back and "pleural effusion" in back and "phantom_mass" in back


def test_the_bundled_models_serve_both_modalities():
    store = ModelStore([EXAMPLES.parent / "models"])  # the real folder (a server fixture may patch the constant)
    fundus = [store.path_of(key).name for _, key in md.model_choices(store, "fundus")]
    chest = [store.path_of(key).name for _, key in md.model_choices(store, "cxr")]
    assert fundus == ["afloc_idrid_fundus_r10"] and chest == ["afloc_phantomcxr_r10"]
    assert store.path_of(store.default_key()).name == "afloc_phantomcxr_r10"  # the demo opens on the chest model
    assert md.missing_model_message(store, "fundus") == "" == md.missing_model_message(store, "cxr")
