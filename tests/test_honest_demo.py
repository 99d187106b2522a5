"""An honest demo (issue #34): calibrated zero-shot probabilities, an out-of-distribution flag, findings a model never
saw, and no server path in anything the browser receives."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import afloc
from afloc.localization.calibration import (
    ZeroShotCalibration,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
    roc_auc,
)
from afloc.localization.ood import OODSummary, ood_features
from afloc.text.prompts import covers, named_findings, unseen_findings
from demo import callbacks as cb
from demo.export import export
from demo.messages import zero_shot_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "assets" / "examples" / "phantom_mass.png"


# ------------------------------------------------------------------------------------------------ calibration maths
def test_platt_scaling_recovers_the_parameters_that_made_the_labels():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 40_000)
    labels = rng.random(z.size) < 1 / (1 + np.exp(-(0.7 * z - 1.2)))
    slope, bias = fit_platt(z, labels)
    assert abs(slope - 0.7) < 0.05 and abs(bias + 1.2) < 0.05  # sampling error at n = 40k is about 0.02
    with pytest.raises(ValueError, match="one positive and one negative"):
        fit_platt(z[:10], np.zeros(10))


def test_auc_matches_counting_pairs_with_ties_as_half():
    rng = np.random.default_rng(1)
    scores, labels = rng.integers(0, 5, 300).astype(float), rng.random(300) < 0.3  # many ties
    pos, neg = scores[labels], scores[~labels]
    pairs = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    assert roc_auc(scores, labels) == pytest.approx(pairs / (pos.size * neg.size), abs=1e-12)
    assert math.isnan(roc_auc(scores, np.zeros(300)))


def test_ece_of_a_constant_and_of_a_calibrated_predictor():
    labels = np.array([1] * 10 + [0] * 90)
    assert expected_calibration_error(np.full(100, 0.9), labels) == pytest.approx(0.8)
    rng = np.random.default_rng(2)
    p = rng.random(200_000)
    assert expected_calibration_error(p, rng.random(p.size) < p) < 0.01


def test_fitted_calibration_lowers_ece_keeps_auc_and_round_trips():
    rng = np.random.default_rng(3)
    z = {"mass": rng.normal(1.5, 1.0, 2000), "pneumonia": rng.normal(0, 1, 2000)}
    y = {"mass": rng.random(2000) < 1 / (1 + np.exp(-(z["mass"] - 3.0))), "pneumonia": np.zeros(2000, bool)}
    calibration = fit_calibration(z, y, split="test data")
    item = calibration.get("Mass")
    assert item is not None and calibration.get("pneumonia") is None  # one class only: left uncalibrated
    assert item.ece_after < 0.03 < item.ece_before and item.auc == pytest.approx(roc_auc(z["mass"], y["mass"]))
    assert ZeroShotCalibration.from_dict(json.loads(json.dumps(calibration.to_dict()))) == calibration
    for bad in ({"findings": [1, 2]}, {"findings": {"mass": {"slope": "x", "bias": 0}}}, {"method": "isotonic"}):
        with pytest.raises(ValueError):
            ZeroShotCalibration.from_dict(bad)


# ------------------------------------------------------------------------------------------------ OOD summary
def test_ood_summary_flags_about_one_percent_of_its_own_kind_and_all_of_another():
    rng = np.random.default_rng(4)
    basis = rng.normal(size=(8, 64))
    inside = rng.normal(size=(3000, 8)) @ basis + 0.05 * rng.normal(size=(3000, 64)) + 5.0
    summary = OODSummary.fit(inside[:1500])
    held_out = summary.scores(inside[1500:]) > summary.threshold
    assert 0.0 <= held_out.mean() < 0.03
    other = rng.normal(size=(200, 8)) @ rng.normal(size=(8, 64)) + 5.0
    assert (summary.scores(other) > summary.threshold).all()
    tensors, metadata = summary.to_tensors()
    again = OODSummary.from_tensors(tensors, metadata)
    # stored as float32: scores agree to float32 precision of the components (relative 1e-3 allowed)
    np.testing.assert_allclose(again.scores(inside[:50]), summary.scores(inside[:50]), rtol=1e-3)
    with pytest.raises(ValueError, match="incomplete or malformed"):
        OODSummary.from_tensors({"mean": tensors["mean"]}, metadata)
    with pytest.raises(ValueError, match="feature"):
        OODSummary.from_tensors(tensors, {**metadata, "feature": "something else"})
    assert ood_features(torch.ones(2, 5, 3, 3)).shape == (2, 5)


# ------------------------------------------------------------------------------------------------ findings a model saw
def test_prompts_that_name_findings_the_model_never_saw():
    phantom = ["atelectasis", "cardiomegaly", "consolidation", "edema", "mass", "nodule", "pleural_effusion"]
    assert named_findings("Small left pleural effusions and a nodule") == ["pleural effusion", "nodule"]
    assert unseen_findings("left lower lobe pneumonia", phantom) == ["pneumonia"]
    assert unseen_findings("small right pleural effusion", phantom) == []
    assert unseen_findings("right pneumothorax", phantom) == ["pneumothorax"]
    assert unseen_findings("cavitating TB in the apex", ["covid_opacity", "active_tb"]) == []
    assert unseen_findings("anything at all", []) == []  # not recorded: nothing is claimed
    assert covers(["haemorrhage", "hard_exudates"], "haemorrhages") and not covers(["drusen"], "optic disc")


# ------------------------------------------------------------------------------------------------ the predictor
@pytest.fixture
def calibrated_dir(tmp_path, tiny_model, tiny_tokenizer):
    """A tiny model directory with a calibration for "mass", an OOD summary fitted on noise films, and recorded
    findings (no pneumonia)."""
    from afloc.hub.bundle import ModelMetadata
    from afloc.localization.calibration import FindingCalibration

    predictor = afloc.AFLocPredictor(tiny_model, tiny_tokenizer, afloc.Preprocessing(64), device="cpu")
    rng = np.random.default_rng(5)
    films = [rng.random((64, 64)).astype(np.float32) * 0.2 + 0.4 for _ in range(40)]
    features = torch.stack([ood_features(predictor.encode_image(f).patch_embeddings) for f in films])
    calibration = ZeroShotCalibration({"mass": FindingCalibration(0.5, -1.0)}, split="made up")
    metadata = ModelMetadata(synthetic_data=True, findings=("mass", "nodule", "pleural_effusion"))
    return afloc.save_pretrained(
        tiny_model, tmp_path / "calibrated", tiny_tokenizer, afloc.Preprocessing(64), metadata=metadata,
        calibration=calibration, ood=OODSummary.fit(features, components=4),
    )  # fmt: skip


def test_the_predictor_gives_calibrated_probabilities_and_the_ood_flag(calibrated_dir):
    predictor = afloc.AFLocPredictor.from_pretrained(calibrated_dir, device="cpu")
    assert predictor.calibration.get("mass").slope == 0.5 and predictor.ood is not None
    rng = np.random.default_rng(6)
    like = predictor.encode_image(rng.random((64, 64)).astype(np.float32) * 0.2 + 0.4)
    unlike = predictor.encode_image(np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 1)))
    assert like.out_of_distribution is False and unlike.out_of_distribution is True
    assert unlike.ood_score > predictor.ood.threshold > like.ood_score
    z = predictor.zero_shot_logits(["mass", "pneumonia"], image=like)
    results = predictor.zero_shot_results(["mass", "pneumonia"], image=like)
    assert results["mass"].probability == pytest.approx(1 / (1 + math.exp(-(0.5 * z["mass"] - 1.0))))
    assert results["pneumonia"].probability is None  # no calibration for it: a score only
    assert results["pneumonia"].uncalibrated == pytest.approx(1 / (1 + math.exp(-z["pneumonia"])), rel=1e-5)
    assert results["mass"].seen_in_training is True and results["pneumonia"].seen_in_training is False
    assert predictor.classify(["mass"], image=like)["mass"] == pytest.approx(results["mass"].probability)
    assert predictor.unseen_findings("left lower lobe pneumonia") == ["pneumonia"]
    # saving the loaded model keeps both summaries; a save of other weights drops them
    again = afloc.save_pretrained(afloc.load_pretrained(calibrated_dir), calibrated_dir.parent / "again")
    assert (again / "calibration.json").is_file() and (again / "ood.safetensors").is_file()


def test_a_broken_ood_file_is_a_clear_error(calibrated_dir):
    (calibrated_dir / "ood.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="ood.safetensors"):
        afloc.load_pretrained(calibrated_dir)


# ------------------------------------------------------------------------------------------------ the demo
def test_the_demo_shows_calibrated_values_the_ood_notice_and_unseen_findings(calibrated_dir, tmp_path):
    from demo.models import ModelStore

    store = ModelStore([tmp_path / "none", calibrated_dir.parent], device="cpu")
    loaded = store.get(store.key_for(calibrated_dir))
    session = cb.Session(export_dir=tmp_path / "s")
    cb.load_image(session, str(EXAMPLE))  # a PhantomCXR film: unlike the noise the summary was fitted on
    assert not cb.localize(session, loaded, "mass, left lower lobe pneumonia").error
    assert set(session.probabilities) == {"mass"}  # only calibrated values are shown as probabilities
    notes = zero_shot_text(session)
    assert "Uncalibrated scores (not probabilities)" in notes and "pneumonia" in notes
    assert "Not trained on reports of" in notes and "mass 0." not in notes
    view = cb.render(session, "left lower lobe pneumonia", 0.3, 0.5)
    assert "unlike the images this model was trained on" in view.notice
    assert "not trained on reports of pneumonia" in view.notice
    assert "reports of" not in cb.render(session, "mass", 0.3, 0.5).notice
    files, status = export(session, "left lower lobe pneumonia", 0.3, 0.5)
    record = json.loads(files[2].read_text())
    assert record["out_of_distribution"] is True and record["ood_score"] > 0
    assert record["prompt_names_unseen_findings"] == ["pneumonia"]
    assert record["zero_shot"]["pneumonia"]["probability"] is None and record["zero_shot"]["mass"]["probability"]


def test_nothing_the_browser_receives_holds_a_server_path(tmp_path, tiny_config, tiny_tokenizer, monkeypatch):
    """The page config and every API response of a session, with the bundled models and examples of the checkout
    and a user models folder in the home folder: neither the checkout's path nor the home folder appears."""
    pytest.importorskip("gradio_client")
    from helpers import free_port, save_synthetic_tiny

    import app
    from benchmarks.demo_latency import BrowserProtocol

    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    models = home / ".afloc" / "models"
    save_synthetic_tiny(models, "mine", tiny_config, tiny_tokenizer)
    (models / "broken").mkdir()
    (models / "broken" / "config.json").write_text("{not json")
    port = free_port()
    blocks, launch_kwargs, _, _ = app.create(["--models-dir", str(models), "--port", str(port)])
    blocks.launch(**launch_kwargs, prevent_thread_lock=True, quiet=True)
    client = BrowserProtocol(f"http://127.0.0.1:{port}")
    secrets = (str(ROOT), str(home), str(Path("~").expanduser()))
    try:
        received = [client.http.get(f"{client.url}/config").text]
        received.append(json.dumps(client.predict("load_example", 0, "cxr")))
        received.append(
            json.dumps(client.predict("localize", "user/mine", "mass, pneumonia", [], None, 0.3, 0.5, "file"))
        )
        received.append(json.dumps(client.predict("redraw", "mass", 0.2, 0.5, "file")))
        received.append(json.dumps(client.predict("export", "mass", 0.2, 0.5, "file")))
        received.append(json.dumps(client.predict("select_model", "user/broken")))
        received.append(json.dumps(client.predict("refresh_models", "user/mine", "cxr")))
        received.append(json.dumps(client.predict("load_image", client.upload(ROOT / "README.md"), "user/mine")))
        received.append(json.dumps(client.predict("set_modality", "fundus", "user/mine")))
        assert "could not load the model in broken" in received[5] and "is a text file, not an image" in received[-2]
        for text in received:
            for secret in secrets:
                assert secret not in text, (secret, text[:300])
    finally:
        client.close()
        blocks.close()


# ------------------------------------------------------------------------------------------------ fitting at export
def test_calibrate_writes_both_summaries_the_plot_and_one_card_section(tmp_path, tiny_model, tiny_tokenizer):
    from training.__main__ import main as training_main
    from training.calibrate import SECTION_TITLE
    from training.phantoms.generate import CorpusSpec, generate_corpus

    corpus = tmp_path / "phantom"
    generate_corpus(corpus, CorpusSpec(n=40, size=128, seed=3), workers=1, dicom_samples=0)
    model = afloc.save_pretrained(tiny_model, tmp_path / "model", tiny_tokenizer, afloc.Preprocessing(64))
    args = ["calibrate", "--model", str(model), "--manifest", str(corpus / "manifest.csv"), "--split", "train"]
    for _ in range(2):  # a second run replaces the section
        assert training_main(args) == 0
    loaded = afloc.load_pretrained(model)
    assert loaded.ood is not None and loaded.ood.n >= 20 and loaded.calibration is not None
    assert loaded.calibration.findings and all(f.n >= 20 for f in loaded.calibration.findings.values())
    card = (model / "README.md").read_text()
    assert card.count(SECTION_TITLE) == 1 and "ECE before" in card and (model / "calibration.png").stat().st_size
    few = ["calibrate", "--model", str(model), "--manifest", str(corpus / "manifest.csv"), "--split", "val"]
    assert training_main(few) == 2  # 4 val images: refused with a message, the model keeps its summaries
    assert afloc.load_pretrained(model).ood is not None


def test_the_localize_command_records_the_ood_flag_and_unseen_findings(calibrated_dir, tmp_path, capsys):
    from afloc.__main__ import main

    out = tmp_path / "out"
    assert main([str(EXAMPLE), "--prompt", "mass", "--prompt", "pneumonia", "--model", str(calibrated_dir),
                 "--out", str(out), "--device", "cpu"]) == 0  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    image = results["images"][0]
    assert image["image"] == EXAMPLE.name and image["out_of_distribution"] is True and image["ood_score"] > 0
    assert image["prompts"]["pneumonia"]["unseen_findings"] == ["pneumonia"]
    assert image["prompts"]["mass"]["unseen_findings"] == [] and (out / image["prompts"]["mass"]["heatmap"]).is_file()
    err = capsys.readouterr().err
    assert "not trained on reports of pneumonia" in err and "unlike the images" in err
