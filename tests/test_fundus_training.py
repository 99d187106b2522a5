"""Training on colour photographs: the data module's modality, mean and std reach the batches, the checkpoint,
the export and the demo's model list."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_fixtures import write_tiny_bert, write_tiny_corpus

from afloc.imaging.io import load_image
from afloc.imaging.transforms import Preprocessing

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
MEAN, STD = [0.4, 0.3, 0.2], [0.25, 0.2, 0.15]


def test_colour_batches_keep_their_channels_and_the_given_statistics(tmp_path):
    from training.data import ImageReportDataModule

    manifest = write_tiny_corpus(tmp_path / "corpus", colour=True)
    data = ImageReportDataModule(str(manifest), image_size=32, batch_size=4, num_workers=0, modality="fundus",
                                 mean=MEAN, std=STD)  # fmt: skip
    data.setup("fit")
    item = data.datasets["train"][0]
    image = load_image(data.datasets["train"].records[0].image)
    expected, _ = Preprocessing(image_size=32, mean=tuple(MEAN), std=tuple(STD), modality="fundus")(image)
    torch.testing.assert_close(item["image"], expected)
    assert not torch.allclose(item["image"][0], item["image"][1])  # RGB kept, not turned grey


@pytest.mark.parametrize(
    "options, message",
    [({"modality": "xray"}, "modality must be one of"), ({"std": [0.2, 0.0, 0.2]}, "std > 0"),
     ({"mean": [0.5, 0.5]}, "3 values each")],
)  # fmt: skip
def test_bad_preprocessing_options_stop_before_any_data_is_read(tmp_path, options, message):
    from training.data import ImageReportDataModule

    with pytest.raises(ValueError, match=message):
        ImageReportDataModule(str(tmp_path / "missing.csv"), **options)


def test_fit_export_and_demo_know_a_fundus_model(tmp_path, vocab_file, tiny_bert_config):
    from afloc import load_pretrained
    from demo.modality import model_choices
    from demo.models import ModelStore
    from training.__main__ import main as training_main
    from training.cli import cli_main

    bert = write_tiny_bert(tmp_path / "bert", vocab_file, tiny_bert_config)
    manifest = write_tiny_corpus(tmp_path / "corpus", colour=True)
    cli = cli_main(
        ["fit", "--config", str(CONFIGS / "smoke.yaml"), "--model.text_model", str(bert), "--data.manifest",
         str(manifest), "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
         str(tmp_path), "--data.modality", "fundus", "--data.mean", str(MEAN), "--data.std", str(STD)]
    )  # fmt: skip
    last = cli.trainer.checkpoint_callback.last_model_path
    saved = torch.load(last, map_location="cpu", weights_only=True)["afloc"]["preprocessing"]
    assert saved["modality"] == "fundus" and saved["mean"] == pytest.approx(MEAN) and saved["image_size"] == 64
    out = tmp_path / "models" / "tiny_fundus"
    assert training_main(["export", "--ckpt", last, "--out", str(out), "--field-of-view"]) == 0
    bundle = load_pretrained(out)
    assert bundle.preprocessing.modality == "fundus" and bundle.preprocessing.std == pytest.approx(tuple(STD))
    assert bundle.localization.field_of_view  # saved, and so the demo's predictor gates by the retina
    store = ModelStore([tmp_path / "models"])
    assert [key for _, key in model_choices(store, "fundus")] == [store.key_for(out)]
    assert store.key_for(out) not in [key for _, key in model_choices(store, "cxr")]


def test_channel_stats_prints_the_training_images_statistics(tmp_path, capsys):
    import numpy as np
    import yaml

    from training.__main__ import main as training_main

    manifest = write_tiny_corpus(tmp_path / "corpus", colour=True)
    assert training_main(["channel-stats", "--manifest", str(manifest), "--n", "1000"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["data"]
    from training.manifest import read_manifest

    pixels = np.concatenate([load_image(r.image).reshape(-1, 3) for r in read_manifest(manifest, split="train")])
    assert printed["mean"] == pytest.approx(pixels.mean(axis=0), abs=1e-4)
    assert printed["std"] == pytest.approx(pixels.std(axis=0), abs=1e-4)
    assert training_main(["channel-stats", "--manifest", str(tmp_path / "none.csv")]) == 2
