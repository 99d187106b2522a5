"""The localization monitor scores what ``training evaluate`` scores (issue #13)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

import afloc
from afloc.imaging.transforms import Preprocessing
from afloc.localization.heatmaps import LocalizationConfig
from training.__main__ import main as training_main
from training.callbacks import LocalizationMonitor
from training.phantoms.__main__ import main as phantoms_main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms") / "corpus"
    assert phantoms_main(["generate", "--out", str(out), "--n", "150", "--size", "128", "--dicom-samples", "0"]) == 0
    return out


def test_monitor_numbers_equal_training_evaluate(tmp_path, corpus, tiny_config, tiny_tokenizer):
    torch.manual_seed(0)
    model = afloc.AFLoc(tiny_config)
    monitor = LocalizationMonitor(corpus=str(corpus), samples=10, smoothing_sigma=0.6)
    trainer = SimpleNamespace(datamodule=SimpleNamespace(tokenizer=tiny_tokenizer))
    module = SimpleNamespace(model=model, device=torch.device("cpu"), hparams=SimpleNamespace())
    monitor.setup(trainer, module, "fit")
    scores = monitor.score(trainer, module)["val"]

    directory = tmp_path / "model"
    afloc.save_pretrained(
        model, directory, tiny_tokenizer, Preprocessing(image_size=64), LocalizationConfig(smoothing_sigma=0.6)
    )
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(directory), "--dataset", "phantom", "--images", str(corpus), "--split", "val"]
    args += ["--protocol", "native", "--limit", "10", "--out", str(out), "--workers", "0", "--quiet"]
    assert training_main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    localization = summary["localization"]
    assert localization["n_samples"] == 10
    assert scores["pointing_game"] == pytest.approx(localization["pointing_game"]["macro"], abs=1e-9)
    assert scores["iou"] == pytest.approx(localization["iou_mean"]["macro"], abs=1e-9)
    assert scores["cnr"] == pytest.approx(localization["cnr"]["macro"], abs=1e-9)
    assert scores["side_mass"] == pytest.approx(localization["side_mass"]["mean"], abs=1e-9)
    # a model that scores differently gives other numbers (the comparison above is not vacuous)
    with torch.no_grad():
        model.image_encoder.deep_projection.weight.neg_()
    assert monitor.score(trainer, module)["val"] != scores


def test_monitor_refuses_the_test_split_and_bad_settings():
    with pytest.raises(ValueError, match="test split"):
        LocalizationMonitor(split="test")
    with pytest.raises(ValueError, match="samples"):
        LocalizationMonitor(samples=0)
    with pytest.raises(ValueError, match="protocol"):
        LocalizationMonitor(protocol="pixels")


def test_kind_oracle_is_the_mean_training_mask_of_the_kind(corpus):
    """Independent derivation: average the pad-resized training masks of one category by hand."""
    import numpy as np

    from afloc.imaging.transforms import pad_resize_mapping
    from afloc.localization.heatmaps import scale_to_unit_range
    from training.evaluation.datasets import read_phantom
    from training.evaluation.oracle import KindOracleSource

    train = read_phantom(corpus, "train").samples
    test = read_phantom(corpus, "test").samples
    source = KindOracleSource(train, test, image_size=48)
    sample = test[0]
    same_kind = [s for s in train if s.category == sample.category]
    total = np.zeros((48, 48))
    for s in same_kind:
        h, w = s.image_size
        total += pad_resize_mapping(h, w, 48).mask_to_model(s.gt_mask(h, w))
    expected = scale_to_unit_range((total / len(same_kind))[None])[0]
    got = source.heatmaps(None, [sample.phrase, "anything else"], sample.sample_id, None)
    np.testing.assert_allclose(got[0], expected, atol=1e-6)
    np.testing.assert_array_equal(got[0], got[1])  # blind to the prompt


def test_plot_draws_localization_against_steps_and_wall_clock(tmp_path):
    from PIL import Image

    from training.plot import plot_run

    rows = ["step,train/total_step,val/total,val/pointing_game,train_loc/pointing_game,val/iou,val/elapsed_s"]
    rows += [f"{s},{20 - s / 100},{21 - s / 100},{s / 1000},{s / 1200},{s / 2000},{s * 1.5}" for s in (100, 200, 300)]
    (tmp_path / "with").mkdir()
    (tmp_path / "with" / "metrics.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "without").mkdir()
    (tmp_path / "without" / "metrics.csv").write_text("\n".join(",".join(r.split(",")[:3]) for r in rows) + "\n")
    with_loc = Image.open(plot_run(tmp_path / "with"))
    without = Image.open(plot_run(tmp_path / "without"))
    assert with_loc.height == 3 * without.height  # a row against steps and one against seconds
