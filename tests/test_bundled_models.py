"""Bundled models in assets/models: load offline on CPU, reproduce their stored reference heatmap, and their
model card's evaluation table is the one generated from the evaluation files kept beside it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from afloc import AFLocPredictor
from training.card import evaluation_table, per_category_table

MODELS = sorted(p.parent for p in (Path(__file__).resolve().parents[1] / "assets" / "models").glob("*/config.json"))
EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
TOLERANCE = 0.02  # on the [-1, 1] scale: CPU kernels may differ slightly between processors


@pytest.mark.parametrize("model_dir", MODELS, ids=[p.name for p in MODELS])
def test_reproduces_reference_heatmap(model_dir):
    reference = np.load(model_dir / "reference_heatmap.npz")
    predictor = AFLocPredictor.from_pretrained(model_dir, device="cpu")
    heatmap = predictor.localize(
        str(reference["prompt"]), image=predictor.encode_image(EXAMPLES / str(reference["image"]))
    )
    assert heatmap.shape == reference["heatmap"].shape
    assert np.nanmax(np.abs(heatmap - reference["heatmap"])) <= TOLERANCE


@pytest.mark.parametrize("model_dir", MODELS, ids=[p.name for p in MODELS])
def test_card_matches_evaluation_files(model_dir):
    results = sorted(p.parent for p in (model_dir / "evaluation").glob("*/summary.json"))
    assert results, "a bundled model ships its evaluation results"
    card = (model_dir / "README.md").read_text()
    assert evaluation_table(results) in card
    for extra in sorted(model_dir.glob("evaluation_*/")):  # e.g. real photographs: a per-category section
        assert per_category_table(sorted(p.parent for p in extra.glob("*/summary.json"))) in card
    assert "synthetic" in card.lower() and "not a medical device" in card.lower()
    assert json.loads((model_dir / "config.json").read_text())["storage_dtype"] in ("float16", "float32")


def write_reference(model_dir: Path, image: str, prompt: str) -> None:
    """Store the reference heatmap of a bundled model (run once when the model is exported).

    float16 keeps the file small; its rounding (under 5e-4 on the [-1, 1] scale) is far inside TOLERANCE."""
    predictor = AFLocPredictor.from_pretrained(model_dir, device="cpu")
    heatmap = predictor.localize(prompt, image=predictor.encode_image(EXAMPLES / image))
    np.savez_compressed(
        model_dir / "reference_heatmap.npz", heatmap=heatmap.astype(np.float16), image=image, prompt=prompt
    )
