"""The model directory's metadata (what a model was trained on) is written, read without the weights, and used
by the demo's warning: not found by searching the card's text (issue #31)."""

from __future__ import annotations

import afloc
from afloc.hub.bundle import ModelMetadata
from afloc.hub.format import is_model_dir, read_card, read_model_info
from demo.models import ModelStore, model_banner


def test_metadata_round_trip_and_the_demo_banner_follow_it(tmp_path, tiny_model, tiny_tokenizer):
    real = afloc.save_pretrained(
        tiny_model, tmp_path / "real", tiny_tokenizer, afloc.Preprocessing(64), card="# a model\n\nsynthetic word",
        metadata=ModelMetadata(findings=("covid_opacity", "active_tb")),
    )  # fmt: skip
    fake = afloc.save_pretrained(
        tiny_model, tmp_path / "fake", tiny_tokenizer, afloc.Preprocessing(64), card="# a model",
        metadata=ModelMetadata(synthetic_data=True),
    )  # fmt: skip
    assert is_model_dir(real) and not is_model_dir(tmp_path)
    preprocessing, metadata = read_model_info(real)
    assert preprocessing.image_size == 64 and metadata.findings == ("covid_opacity", "active_tb")
    assert not metadata.synthetic_data  # the card's word "synthetic" does not make it a synthetic-data model
    assert read_model_info(fake)[1].synthetic_data and afloc.load_pretrained(fake).metadata.synthetic_data
    assert read_card(real).startswith("# a model") and read_card(tmp_path / "nowhere") == ""
    # saving a loaded bundle keeps its metadata
    again = afloc.save_pretrained(afloc.load_pretrained(fake), tmp_path / "again")
    assert read_model_info(again)[1] == ModelMetadata(synthetic_data=True)

    store = ModelStore([tmp_path])
    assert store.synthetic(store.key_for(fake)) and not store.synthetic(store.key_for(real))
    assert "Synthetic-data model" in model_banner(True, False) and model_banner(False, False) == ""


def test_a_directory_without_metadata_reads_as_not_recorded(tmp_path, tiny_model, tiny_tokenizer):
    import json

    directory = afloc.save_pretrained(tiny_model, tmp_path / "old", tiny_tokenizer, afloc.Preprocessing(64))
    extras = json.loads((directory / "preprocessing.json").read_text())
    del extras["model"]  # as written before the metadata existed
    (directory / "preprocessing.json").write_text(json.dumps(extras))
    assert read_model_info(directory)[1] == ModelMetadata()


def test_the_bundled_models_are_marked_synthetic_with_their_findings():
    from demo.models import BUNDLED_MODELS_DIR

    chest = read_model_info(BUNDLED_MODELS_DIR / "afloc_phantomcxr_r10")[1]
    assert chest.synthetic_data and chest.findings
    fundus = read_model_info(BUNDLED_MODELS_DIR / "afloc_idrid_fundus_r10")[1]  # real photographs, generated reports
    assert not fundus.synthetic_data and "hard_exudates" in fundus.findings
