"""Training subsystem: LightningCLI smoke fit, configs, export, plot, resume, data handling."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import yaml
from helpers import shared_data
from training_fixtures import write_tiny_bert, write_tiny_corpus

from afloc import AFLoc, load_pretrained
from afloc.text.tokenizer import sample_caption
from training.__main__ import main as training_main
from training.cli import cli_main

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, vocab_file, tiny_bert_config):
    return write_tiny_bert(tmp_path_factory.mktemp("bert"), vocab_file, tiny_bert_config)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


def _args(tmp_path, tiny_bert, manifest, *extra):
    return [
        "--config", str(CONFIGS / "smoke.yaml"),
        "--model.text_model", str(tiny_bert),
        "--data.manifest", str(manifest),
        "--trainer.default_root_dir", str(tmp_path),
        "--trainer.logger.init_args.save_dir", str(tmp_path),
        *extra,
    ]  # fmt: skip


def test_smoke_fit_export_plot(tmp_path, tiny_bert, corpus):
    cli = cli_main(["fit", *_args(tmp_path, tiny_bert, corpus)])
    trainer = cli.trainer
    assert trainer.global_step == 2
    log_dir = Path(trainer.log_dir)
    assert (log_dir / "config.yaml").is_file()  # the resolved config is saved with the run
    saved = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert saved["model"]["text_model"] == str(tiny_bert) and saved["data"]["manifest"] == str(corpus)
    assert cli.datamodule.hparams.text_model == str(tiny_bert) and cli.datamodule.hparams.image_size == 64
    metrics = (log_dir / "metrics.csv").read_text()
    for name in ("train/report", "train/sentence", "train/word", "train/total", "val/total"):
        assert name in metrics
    last = Path(trainer.checkpoint_callback.last_model_path)
    assert last.is_file()
    bundle = load_pretrained(last)  # our safe loader reads the Lightning checkpoint
    for key, value in cli.model.model.state_dict().items():
        assert torch.equal(bundle.model.state_dict()[key], value.cpu()), key

    out = tmp_path / "exported"
    assert training_main(["export", "--ckpt", str(last), "--out", str(out), "--storage-dtype", "float16"]) == 0
    card = (out / "README.md").read_text()
    assert "train/total" in card and str(corpus) in card and "not a medical device" in card
    assert load_pretrained(out).model.config == bundle.model.config
    assert training_main(["plot", str(log_dir)]) == 0
    assert (log_dir / "curves.png").stat().st_size > 1000


def test_centred_frozen_text_fit_and_compact_export(tmp_path, tiny_bert, corpus, capsys):
    """center_words: the centre is computed from training captions at fit start, saved, and survives an export
    that leaves the (frozen) text weights out."""
    frozen = ["--model.freeze_text", "true", "--model.center_words", "true", "--model.center_captions", "6"]
    cli = cli_main(["fit", *_args(tmp_path, tiny_bert, corpus, *frozen)])
    model = cli.model.model
    assert model.word_center is not None and model.word_center.norm() > 0
    dataset = cli.datamodule.datasets["train"]
    captions = [sample_caption(dataset.sentences[i], random.Random(f"center:{i}")) for i in range(6)]
    expected = AFLoc(model.config)
    expected.load_state_dict({**model.state_dict(), "word_center": torch.zeros_like(model.word_center)})
    torch.testing.assert_close(expected.eval().set_word_center([cli.datamodule.tokenizer(captions)]), model.word_center)

    last = cli.trainer.checkpoint_callback.last_model_path
    out = tmp_path / "compact"
    sections = tmp_path / "sections.md"
    sections.write_text("## Limitations\n\nSees only toy films.\n\n## Reproduce\n\n```\npython -m training fit\n```\n")
    args = ["export", "--ckpt", last, "--out", str(out), "--external-text", "--card-sections", str(sections)]
    args += ["--smoothing-sigma", "0.6", "--similarity", "cosine", "--shallow-weight", "0.5"]
    assert training_main(args) == 0
    card = (out / "README.md").read_text()
    assert "## Limitations\n\nSees only toy films." in card and "python -m training fit" in card
    fov = [*args[:4], str(tmp_path / "fov"), *args[5:], "--field-of-view"]
    assert training_main(fov) == 2 and "for fundus photographs" in capsys.readouterr().err  # a chest model: refused
    assert not (tmp_path / "fov").exists()
    sections.write_text("## Results\n\nmade up\n")
    assert training_main([*args[:4], str(tmp_path / "other"), *args[5:]]) == 2
    bundle = load_pretrained(out)
    assert bundle.localization.smoothing_sigma == 0.6
    assert (bundle.localization.similarity, bundle.localization.shallow_weight) == ("cosine", 0.5)
    assert not bundle.localization.field_of_view
    loaded = bundle.model
    assert torch.equal(loaded.word_center, model.word_center.cpu())
    text = cli.datamodule.tokenizer(captions[:3])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_text(text).report_embedding, model.eval().encode_text(text).report_embedding
        )


def test_every_config_parses(tmp_path, tiny_bert, corpus):
    for config in sorted(CONFIGS.glob("*.yaml")):
        cli = cli_main(
            ["--config", str(config), "--data.manifest", str(corpus), "--model.text_model", str(tiny_bert),
             "--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.accelerator", "cpu",
             "--trainer.devices", "1", "--trainer.precision", "32-true"],
            run=False,
        )  # fmt: skip
        assert cli.model.hparams.text_model == str(tiny_bert), config.name


def test_ablation_configs_set_loss_weights(tmp_path, tiny_bert, corpus):
    expected = {"convirt_like.yaml": (1.0, 0.0, 0.0, "shallow"), "gloria_like.yaml": (1.0, 0.0, 1.0, "deep")}
    for name, (report, sentence, word, level) in expected.items():
        hp = yaml.safe_load((CONFIGS / name).read_text())["model"]
        assert (hp.get("report_weight", 1.0), hp.get("sentence_weight", 1.0), hp.get("word_weight", 1.0)) == (
            report,
            sentence,
            word,
        ), name
        assert hp.get("word_level", "shallow") == level, name


def test_clear_errors(tmp_path, tiny_bert, corpus, capsys):
    missing = tmp_path / "nowhere" / "manifest.csv"
    assert training_main(["fit", *_args(tmp_path, tiny_bert, missing)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert training_main(["fit", *_args(tmp_path, tiny_bert, corpus, "--model.learning_rate", "-1")]) == 2
    assert "learning_rate" in capsys.readouterr().err
    assert training_main(["fit", *_args(tmp_path, tiny_bert, corpus, "--data.batch_size", "1")]) == 2
    assert "batch_size" in capsys.readouterr().err
    assert training_main(["fit", *_args(tmp_path, tiny_bert, corpus, "--model.center_words", "true")]) == 2
    assert "center_words needs freeze_text" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # jsonargparse rejects a value of the wrong kind before anything runs
        cli_main(["fit", *_args(tmp_path, tiny_bert, corpus, "--model.backbone", "vgg16")])
    assert training_main(["nonsense"]) == 2


def test_corrupt_images_are_skipped_and_counted(tmp_path, tiny_bert):
    manifest = write_tiny_corpus(tmp_path / "bad", n=24, corrupt=3)
    extra = ("--trainer.limit_train_batches", "4", "--data.max_bad_fraction", "0.5")
    cli = cli_main(["fit", *_args(tmp_path, tiny_bert, manifest, *extra)])
    skipped = cli.trainer.logged_metrics.get("train/skipped")
    assert skipped is not None and float(skipped) >= 1
    assert cli.datamodule.images_skipped >= 3  # every corrupt training image was met and counted


def test_too_many_bad_images_stop_the_run(tmp_path, tiny_bert, capsys):
    manifest = write_tiny_corpus(tmp_path / "bad", n=24, corrupt=8)
    extra = ("--trainer.limit_train_batches", "4", "--data.min_seen_for_bad_check", "4")
    assert training_main(["fit", *_args(tmp_path, tiny_bert, manifest, *extra)]) == 2
    assert "could not be read" in capsys.readouterr().err


def _final_state(cli) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in cli.model.model.state_dict().items()}


def test_resume_continues_exactly(tmp_path, tiny_bert, corpus):
    common = ["--trainer.deterministic", "true", "--trainer.limit_train_batches", "3"]
    straight = cli_main(["fit", *_args(tmp_path / "a", tiny_bert, corpus, *common, "--trainer.max_epochs", "2")])
    first = cli_main(["fit", *_args(tmp_path / "b", tiny_bert, corpus, *common, "--trainer.max_epochs", "1")])
    last = first.trainer.checkpoint_callback.last_model_path
    resumed = cli_main(
        ["fit", *_args(tmp_path / "b", tiny_bert, corpus, *common, "--trainer.max_epochs", "2"), "--ckpt_path", last]
    )
    assert resumed.trainer.global_step == straight.trainer.global_step == 6
    a, b = _final_state(straight), _final_state(resumed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    # and training did change the weights (the comparison above is not between two untouched models)
    untouched = _final_state(first)
    assert not all(torch.equal(a[k], untouched[k]) for k in a)


def test_data_module_on_real_covid_cases_with_notes(tmp_path, tiny_bert):
    """Real radiographs with free-text clinical notes, turned into a manifest, load through the data module."""
    import csv

    from training.data import ImageReportDataModule

    source = shared_data("cxr/covid_notes/manifest.csv")
    with source.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:40]
    manifest = tmp_path / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["image", "report", "split"])
        writer.writeheader()
        for k, row in enumerate(rows):
            split = "train" if k < 30 else "val"
            writer.writerow(
                {"image": str(source.parent / row["image"]), "report": row["clinical_notes"], "split": split}
            )
    data = ImageReportDataModule(str(manifest), text_model=str(tiny_bert), image_size=64, batch_size=8, num_workers=0)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert batch["images"].shape == (8, 3, 64, 64) and batch["skipped"] == 0
    assert batch["images"].min() >= -1 and batch["images"].max() <= 1
    assert batch["text"].input_ids.shape[0] == 8 and batch["text"].input_ids.shape[1] <= 97
    assert (batch["text"].word_ids[:, 0] == 0).all()


def test_batchnorm_recalibration_averages_batches_and_keeps_rng():
    from training.system import recalibrate_batchnorm

    torch.manual_seed(0)
    encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    batches = [{"images": torch.randn(5, 3, 8, 8) * (k + 1) + k} for k in range(3)]
    features = [encoder[0](b["images"]) for b in batches]
    rng = torch.get_rng_state()
    assert recalibrate_batchnorm(encoder, [{"skipped": 1}, *batches, batches[0]], batches=3) == 3
    assert torch.equal(torch.get_rng_state(), rng) and not encoder.training
    bn = encoder[1]
    expected_mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in features]).mean(dim=0)
    expected_var = torch.stack([f.var(dim=(0, 2, 3), unbiased=True) for f in features]).mean(dim=0)
    torch.testing.assert_close(bn.running_mean, expected_mean)
    torch.testing.assert_close(bn.running_var, expected_var)
    assert bn.momentum == 0.1  # restored


def test_fit_with_batchnorm_recalibration(tmp_path, tiny_bert, corpus):
    cli = cli_main(["fit", *_args(tmp_path, tiny_bert, corpus, "--model.recalibrate_bn_batches", "2")])
    assert cli.trainer.global_step == 2 and cli.model.hparams.recalibrate_bn_batches == 2
    assert int(cli.model.model.image_encoder.backbone.bn1.num_batches_tracked) == 2  # reset, then 2 batches


def test_the_monitors_smoothing_reaches_the_checkpoint_the_export_and_the_heatmaps(tmp_path, tiny_bert):
    """The heatmap settings the localization monitor scores with are written into the checkpoint; loading it,
    exporting it without --smoothing-sigma and localizing with either use them (issue #31)."""
    import json

    import numpy as np

    from afloc import AFLocPredictor, load_image
    from training.phantoms.__main__ import main as phantoms_main

    corpus = tmp_path / "phantoms"
    assert phantoms_main(["generate", "--out", str(corpus), "--n", "40", "--size", "128", "--dicom-samples", "0"]) == 0
    overlay = tmp_path / "monitor.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [
                        {"class_path": "pytorch_lightning.callbacks.ModelCheckpoint", "init_args": {"save_last": True}},
                        {
                            "class_path": "training.callbacks.LocalizationMonitor",
                            "init_args": {"samples": 4, "smoothing_sigma": 0.9},
                        },
                    ]
                }
            }  # fmt: skip
        )
    )
    extra = ["--config", str(overlay), "--model.max_length", "64"]  # the tiny BERT has 64 positions
    cli = cli_main(["fit", *_args(tmp_path, tiny_bert, corpus / "manifest.csv", *extra)])
    last = Path(cli.trainer.checkpoint_callback.last_model_path)
    assert load_pretrained(last).localization.smoothing_sigma == 0.9

    out = tmp_path / "exported"
    assert training_main(["export", "--ckpt", str(last), "--out", str(out)]) == 0
    assert json.loads((out / "preprocessing.json").read_text())["localization"]["smoothing_sigma"] == 0.9
    # the findings of the training manifest's train rows are recorded in the model's metadata
    from afloc.hub.format import read_model_info
    from training.manifest import read_manifest

    seen = {label for r in read_manifest(corpus / "manifest.csv", split="train") for label in r.labels}
    assert set(read_model_info(out)[1].findings) == seen - {"normal"} and seen - {"normal"}
    film = load_image(next((corpus / "images" / "val").glob("*.png")))
    exported, from_ckpt = AFLocPredictor.from_pretrained(out), AFLocPredictor.from_pretrained(last)
    heatmap = exported.localize("left pleural effusion", image=exported.encode_image(film))
    np.testing.assert_allclose(heatmap, from_ckpt.localize("left pleural effusion", image=from_ckpt.encode_image(film)))
    default = exported.with_localization(smoothing_sigma=1.5)
    assert exported.localization.smoothing_sigma == 0.9  # with_localization leaves the shared predictor as it was
    assert not np.allclose(heatmap, default.localize("left pleural effusion", image=default.encode_image(film)))


def test_same_label_batches_hold_one_label_and_cover_each_sample_once():
    """--data.same_label_batches: that fraction of batches is drawn within one label; no sample repeats in an
    epoch; the epoch is encoded in the indices like the plain sampler's; a new epoch gives a new order."""
    from training.data import EpochSampler

    groups = ["covid"] * 50 + ["tb"] * 23 + ["normal"] * 31
    sampler = EpochSampler(len(groups), seed=3, groups=groups, batch_size=8, same_group_fraction=0.5)
    order = list(sampler)
    assert len(order) == len(sampler) == (len(groups) // 8) * 8 and len(set(order)) == len(order)
    batches = [order[k : k + 8] for k in range(0, len(order), 8)]
    pure = [b for b in batches if len({groups[i] for i in b}) == 1]
    assert len(pure) >= round(0.5 * len(batches))  # random batches can be pure by chance too
    sampler.set_epoch(1)
    second = list(sampler)
    assert all(i >= len(groups) for i in second)  # epoch 1 offset
    assert [i - len(groups) for i in second] != order
    with pytest.raises(ValueError, match="one group per sample"):
        EpochSampler(10, groups=["a"] * 9, batch_size=2, same_group_fraction=0.5)
