"""The CPU recipe's options (issue #13): off by default, and exact where they claim to be."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

import afloc
from afloc import AFLocLoss, LossConfig

CAPTIONS = [
    "right lower lobe consolidation. no pleural effusion",
    "small left pleural effusion",
    "left upper lobe nodule measuring 1 cm. heart size is normal. no pneumothorax",
    "the lungs are clear",
]

# Loss terms of the seeded tiny model below, computed by the code as it was before the recipe options existed
# (commit d79b151, torch 2.14.1, CPU, one thread). With every new option off they must come out the same, within
# GOLDEN_REL: float32 sums of a few hundred terms differ in their last bits between library builds (measured: 8
# parts in 10^8 on the report term with transformers 5.25 / numpy 2.4 against the versions of d79b151), while any
# change of the loss itself (a term, a weight, a temperature) moves it by far more than one part in 10^6.
GOLDEN_REL = 1e-6
GOLDEN = {
    "report": 3.196483612060547,
    "sentence": 8.318290710449219,
    "word": 10.413551330566406,
    "total": 21.928325653076172,
}


def _reference_inputs(tiny_config, tiny_tokenizer):
    torch.manual_seed(0)
    model = afloc.AFLoc(tiny_config).train()
    images = torch.randn(len(CAPTIONS), 3, 64, 64, generator=torch.Generator().manual_seed(1))
    return model, images, tiny_tokenizer(CAPTIONS)


def _terms(model, images, text):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(2)  # dropout in the (trainable) text encoder
        image_out, text_out = model(images, text)
        return {k: float(v.detach()) for k, v in AFLocLoss(LossConfig())(image_out, text_out).items()}
    finally:
        torch.set_num_threads(threads)


def test_options_off_reproduce_the_previous_loss_exactly(tiny_config, tiny_tokenizer):
    model, images, text = _reference_inputs(tiny_config, tiny_tokenizer)
    terms = _terms(model, images, text)
    assert terms == pytest.approx(GOLDEN, rel=GOLDEN_REL, abs=0)


def test_golden_tolerance_catches_a_change_of_one_part_in_a_thousand():
    planted = {name: value * (1 + 1e-3) for name, value in GOLDEN.items()}
    for name in GOLDEN:
        assert {**GOLDEN, name: planted[name]} != pytest.approx(GOLDEN, rel=GOLDEN_REL, abs=0)


def _frozen(tiny_config, **text_options):
    import dataclasses

    config = dataclasses.replace(tiny_config, text=dataclasses.replace(tiny_config.text, **text_options))
    torch.manual_seed(0)
    model = afloc.AFLoc(config).eval()
    model.text_encoder.requires_grad_(False)
    return model


def test_sentence_context_equals_caption_context_for_one_sentence(tiny_config, tiny_tokenizer):
    caption = _frozen(tiny_config)
    sentence = _frozen(tiny_config, context="sentence")
    text = tiny_tokenizer(["small left pleural effusion", "the lungs are clear"])
    with torch.no_grad():
        a, b = caption.encode_text(text), sentence.encode_text(text)
    torch.testing.assert_close(a.word_embeddings, b.word_embeddings)
    torch.testing.assert_close(a.report_embedding, b.report_embedding)


def test_sentence_context_encodes_each_sentence_alone(tiny_config, tiny_tokenizer):
    """A two-sentence caption gets, word for word, the vectors of its sentences encoded on their own; [CLS] is
    their mean [CLS] and the "." takes the first sentence's [SEP] (independent derivation with two BERT calls)."""
    model = _frozen(tiny_config, context="sentence")
    first, second = "right lower lobe consolidation", "no pleural effusion"
    with torch.no_grad():
        both = model.encode_text(tiny_tokenizer([f"{first}. {second}"]))
        alone = [model.encode_text(tiny_tokenizer([s])) for s in (first, second)]
    n1 = int(alone[0].word_mask.sum()) - 1  # words of the first sentence ([CLS] excluded)
    n2 = int(alone[1].word_mask.sum()) - 1
    words = both.word_embeddings[0]
    torch.testing.assert_close(words[0], (alone[0].word_embeddings[0, 0] + alone[1].word_embeddings[0, 0]) / 2)
    torch.testing.assert_close(words[1 : 1 + n1], alone[0].word_embeddings[0, 1 : 1 + n1])
    torch.testing.assert_close(words[1 + n1], alone[0].word_embeddings[0, 1 + n1])  # "." <- [SEP] of sentence 1
    torch.testing.assert_close(words[2 + n1 : 2 + n1 + n2], alone[1].word_embeddings[0, 1 : 1 + n2])
    torch.testing.assert_close(words[2 + n1 + n2], alone[1].word_embeddings[0, 1 + n2])  # final [SEP]
    # the sentence vectors are each sentence's own mean word vector
    torch.testing.assert_close(both.sentence_embeddings[0, 1], alone[0].sentence_embeddings[0, 1])
    torch.testing.assert_close(both.sentence_embeddings[0, 2], alone[1].sentence_embeddings[0, 1])


def test_cached_text_gives_the_same_loss_as_uncached(tiny_config, tiny_tokenizer):
    uncached = _frozen(tiny_config, context="sentence", adapter="linear")
    cached = _frozen(tiny_config, context="sentence", adapter="linear")
    cached.text_encoder.enable_cache()
    images = torch.randn(len(CAPTIONS), 3, 64, 64, generator=torch.Generator().manual_seed(1))
    loss = AFLocLoss(LossConfig())
    for round_ in range(2):  # the first call fills the cache, the second reads only from it
        texts = tiny_tokenizer(CAPTIONS if round_ == 0 else CAPTIONS[::-1])
        picture = images if round_ == 0 else images.flip(0)
        expected = loss(*uncached(picture, texts))
        got = loss(*cached(picture, texts))
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], rtol=1e-6, atol=1e-6)
    assert len(cached.text_encoder._sentence_cache) == 7  # distinct sentences of CAPTIONS
    cached.text_encoder.train()
    with pytest.raises(RuntimeError, match="eval mode"):
        cached.encode_text(tiny_tokenizer(CAPTIONS))


def test_cache_needs_sentence_context(tiny_config):
    with pytest.raises(ValueError, match="context='sentence'"):
        _frozen(tiny_config).text_encoder.enable_cache()


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_adapter_starts_as_the_identity_and_learns(tiny_config, tiny_tokenizer, kind):
    plain = _frozen(tiny_config)
    adapted = _frozen(tiny_config, adapter=kind)
    adapted.load_state_dict(plain.state_dict(), strict=False)
    text = tiny_tokenizer(CAPTIONS)
    with torch.no_grad():
        a, b = plain.encode_text(text), adapted.encode_text(text)
    for name in ("word_embeddings", "sentence_embeddings", "report_embedding"):
        torch.testing.assert_close(getattr(b, name), getattr(a, name), rtol=1e-5, atol=1e-5)
    # gradients reach the adapter (not the frozen BERT), and a step changes the report vectors
    out = adapted.encode_text(text)
    out.report_embedding.square().sum().backward()
    grads = [p.grad for p in adapted.text_adapter.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0  # (the MLP's hidden layer waits for its output)
    assert all(p.grad is None for p in adapted.text_encoder.parameters())


def test_bad_text_options_are_refused():
    from afloc.modeling.config import TextEncoderConfig

    with pytest.raises(ValueError, match="context"):
        TextEncoderConfig(context="report")
    with pytest.raises(ValueError, match="adapter"):
        TextEncoderConfig(adapter="lora")


def test_position_embeddings_start_at_zero_and_fix_the_grid():
    from afloc.modeling.config import ImageEncoderConfig
    from afloc.modeling.image_encoder import ImageEncoder

    torch.manual_seed(0)
    plain = ImageEncoder(ImageEncoderConfig("resnet18", 64), 16).eval()
    torch.manual_seed(0)
    placed = ImageEncoder(ImageEncoderConfig("resnet18", 64, position_embeddings=True), 16).eval()
    assert tuple(placed.deep_position.shape) == (16, 4, 4) and tuple(placed.shallow_position.shape) == (16, 8, 8)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = plain(images), placed(images)
        torch.testing.assert_close(a.patch_embeddings, b.patch_embeddings)
        placed.deep_position[:, 0, 3] = 1.0  # one cell: the top-right region moves, no other
        c = placed(images)
    moved = (c.patch_embeddings - a.patch_embeddings).abs().sum(dim=(0, 1))
    assert moved[0, 3] > 0 and moved.sum() == moved[0, 3]
    with pytest.raises(ValueError, match="64 px"):
        placed(torch.randn(1, 3, 96, 96))


def test_fit_with_the_cpu_recipe_options_and_export_only_the_trained_text_part(tmp_path, vocab_file, tiny_bert_config):
    """Frozen BERT + sentence cache + adapter + position embeddings: the exported directory holds the adapter but
    no BERT weight, and loads back to the same embeddings."""
    from safetensors import safe_open
    from training_fixtures import write_tiny_bert, write_tiny_corpus

    from afloc import load_pretrained
    from training.__main__ import main as training_main
    from training.cli import cli_main

    bert = write_tiny_bert(tmp_path / "bert", vocab_file, tiny_bert_config)
    manifest = write_tiny_corpus(tmp_path / "corpus")
    configs = Path(__file__).resolve().parents[1] / "training" / "configs"
    options = ["--model.freeze_text", "true", "--model.text_context", "sentence", "--model.cache_text", "true"]
    options += ["--model.text_adapter", "linear", "--model.position_embeddings", "true", "--model.warmup_steps", "2"]
    cli = cli_main(
        ["fit", "--config", str(configs / "smoke.yaml"), "--model.text_model", str(bert), "--data.manifest",
         str(manifest), "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
         str(tmp_path), *options]
    )  # fmt: skip
    model = cli.model.model
    assert len(model.text_encoder._sentence_cache) > 0  # filled at fit start
    adapter = model.text_adapter.linear.weight.detach()
    assert not torch.equal(adapter, torch.eye(adapter.shape[0]))  # the adapter was trained
    out = tmp_path / "compact"
    last = cli.trainer.checkpoint_callback.last_model_path
    assert training_main(["export", "--ckpt", last, "--out", str(out), "--external-text"]) == 0
    keys = set()
    for path in out.glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            keys |= set(handle.keys())
    assert "text_adapter.linear.weight" in keys and "image_encoder.deep_position" in keys
    assert not any(k.startswith("text_encoder.") for k in keys)
    loaded = load_pretrained(out).model
    text = cli.datamodule.tokenizer(CAPTIONS)
    with torch.no_grad():
        expected = model.eval().encode_text(text)
        got = loaded.encode_text(text)
    torch.testing.assert_close(got.report_embedding, expected.report_embedding)
    torch.testing.assert_close(got.sentence_embeddings, expected.sentence_embeddings)


class _LearningRates(pl.Callback):
    def __init__(self) -> None:
        self.seen: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_index) -> None:
        self.seen.append(trainer.optimizers[0].param_groups[0]["lr"])


def _annealed_fit(tmp_path, vocab_file, tiny_bert_config, *options):
    from training_fixtures import write_tiny_bert, write_tiny_corpus

    from training.cli import cli_main

    bert = write_tiny_bert(tmp_path / "bert", vocab_file, tiny_bert_config)
    manifest = write_tiny_corpus(tmp_path / "corpus")
    configs = Path(__file__).resolve().parents[1] / "training" / "configs"
    cli = cli_main(
        ["--config", str(configs / "smoke.yaml"), "--model.text_model", str(bert), "--data.manifest",
         str(manifest), "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
         str(tmp_path), "--model.lr_gamma", "1.0", "--trainer.limit_val_batches", "0", *options],
        run=False,
    )  # fmt: skip
    rates = _LearningRates()
    cli.trainer.callbacks.extend([rates, *getattr(rates, "extra", [])])
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return rates.seen, cli.model.hparams.learning_rate


def test_anneal_falls_linearly_to_zero_over_the_last_share_of_the_step_budget(tmp_path, vocab_file, tiny_bert_config):
    seen, base = _annealed_fit(
        tmp_path, vocab_file, tiny_bert_config, "--model.anneal_fraction", "0.5", "--trainer.max_steps", "4",
        "--trainer.max_epochs", "4", "--trainer.limit_train_batches", "2",
    )  # fmt: skip
    assert seen == pytest.approx([base, base, base, base * 0.5])


def test_anneal_follows_the_wall_clock_budget(tmp_path, vocab_file, tiny_bert_config, monkeypatch):
    """Under ``max_time`` the fall follows the Timer's clock: a fake clock that advances a quarter of the 100 s
    budget per batch gives the same rates as the step budget above."""
    from pytorch_lightning.callbacks import Timer

    batches = {"started": 0}

    class Clock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_index) -> None:
            batches["started"] += 1

    monkeypatch.setattr(Timer, "time_elapsed", lambda self, stage="train": 25.0 * batches["started"])
    monkeypatch.setattr(Timer, "_check_time_remaining", lambda self, trainer: None)
    monkeypatch.setattr(_LearningRates, "extra", [Clock()], raising=False)
    seen, base = _annealed_fit(
        tmp_path, vocab_file, tiny_bert_config, "--model.anneal_fraction", "0.5", "--trainer.max_time",
        "00:00:01:40", "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "2",
    )  # fmt: skip
    assert seen == pytest.approx([base, base, base, base * 0.5])


def test_anneal_without_a_budget_is_refused(tmp_path, vocab_file, tiny_bert_config):
    with pytest.raises(ValueError, match="anneal_fraction needs a training budget"):
        _annealed_fit(tmp_path, vocab_file, tiny_bert_config, "--model.anneal_fraction", "0.3")
    from training.system import AFLocPretraining

    with pytest.raises(ValueError, match="anneal_fraction must be in"):
        AFLocPretraining(anneal_fraction=1.5)


def test_frozen_image_stages_keep_their_weights_and_statistics(tmp_path, vocab_file, tiny_bert_config, monkeypatch):
    """``freeze_image_stages 2``: the stem and layer1 (weights and BatchNorm running statistics) come out of a fit
    as they went in, also through the recalibration of the statistics before each validation; layer2 learns."""
    from training.system import AFLocPretraining

    before: dict[str, torch.Tensor] = {}

    class Snapshot(pl.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            before.update({k: v.detach().clone() for k, v in pl_module.model.image_encoder.state_dict().items()})

    import training.system

    calls = []
    recalibrate = training.system.recalibrate_batchnorm
    monkeypatch.setattr(training.system, "recalibrate_batchnorm", lambda *a: calls.append(recalibrate(*a)) or calls[-1])
    monkeypatch.setattr(_LearningRates, "extra", [Snapshot()], raising=False)
    _, _ = _annealed_fit(
        tmp_path, vocab_file, tiny_bert_config, "--model.freeze_image_stages", "2", "--model.learning_rate", "0.01",
        "--model.recalibrate_bn_batches", "1", "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "1",
        "--trainer.max_steps", "3", "--trainer.max_epochs", "3", "--trainer.limit_train_batches", "1",
    )  # fmt: skip
    assert calls and all(used == 1 for used in calls)  # the statistics were recalibrated (on the later stages)
    after = torch.load(next(tmp_path.rglob("last.ckpt")), weights_only=True)["state_dict"]
    prefix = "model.image_encoder."
    after = {k.removeprefix(prefix): v for k, v in after.items() if k.startswith(prefix)}
    frozen = [k for k in before if k.startswith(("backbone.conv1", "backbone.bn1", "backbone.layer1."))]
    assert any("running_mean" in k for k in frozen)
    for key in frozen:
        assert torch.equal(after[key], before[key]), key
    assert not torch.equal(after["backbone.layer2.0.conv1.weight"], before["backbone.layer2.0.conv1.weight"])
    assert not torch.equal(after["backbone.layer2.0.bn1.running_mean"], before["backbone.layer2.0.bn1.running_mean"])
    with pytest.raises(ValueError, match="freeze_image_stages must be in 0..5"):
        AFLocPretraining(freeze_image_stages=6)
