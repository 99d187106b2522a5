"""Model directories: bit-exact round trip, strict loading, compact storage, sharding, safety."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
import torch

import afloc
from afloc import AFLoc, LocalizationConfig, Preprocessing, load_pretrained, save_pretrained
from afloc.hub.format import read_state_dict


def _state_equal(a: AFLoc, b: AFLoc) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def saved(tmp_path, tiny_model, tiny_tokenizer):
    directory = tmp_path / "model"
    save_pretrained(
        tiny_model,
        directory,
        tiny_tokenizer,
        preprocessing=Preprocessing(image_size=64),
        localization=LocalizationConfig(margin=4, similarity="cosine"),
    )
    return directory


def test_round_trip_is_bit_exact(saved, tiny_model, tiny_tokenizer):
    names = {p.name for p in saved.iterdir()}
    assert {"config.json", "model.safetensors", "preprocessing.json", "README.md"} <= names
    assert names & {"tokenizer.json", "vocab.txt"}
    bundle = load_pretrained(saved)
    assert _state_equal(bundle.model, tiny_model)
    assert bundle.model.config == tiny_model.config
    assert bundle.preprocessing == Preprocessing(image_size=64)
    assert bundle.localization == LocalizationConfig(margin=4, similarity="cosine")
    assert "not a medical device" in bundle.card
    text = "right lower lobe consolidation. no effusion"
    assert torch.equal(bundle.tokenizer([text]).input_ids, tiny_tokenizer([text]).input_ids)
    assert _state_equal(load_pretrained(saved).model, tiny_model)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a = bundle.model.encode_image(images).patch_embeddings
        b = tiny_model.encode_image(images).patch_embeddings
    assert torch.equal(a, b)


def test_float16_storage_and_sharding(tmp_path, tiny_model, tiny_tokenizer):
    directory = tmp_path / "compact"
    save_pretrained(tiny_model, directory, tiny_tokenizer, storage_dtype="float16", max_shard_bytes=6_000_000)
    shards = sorted(directory.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (directory / "model.safetensors.index.json").is_file()
    assert all(p.stat().st_size <= 6_000_000 + 100_000 for p in shards)  # + safetensors header
    assert not (directory / "model.safetensors").exists()
    loaded = load_pretrained(directory).model
    for key, value in tiny_model.state_dict().items():
        other = loaded.state_dict()[key]
        assert other.dtype == value.dtype
        if value.is_floating_point():
            assert torch.allclose(other, value, rtol=1e-3, atol=1e-4), key
        else:
            assert torch.equal(other, value)
    # saving again unsharded removes the stale shards
    save_pretrained(tiny_model, directory, tiny_tokenizer)
    assert not list(directory.glob("model-*.safetensors")) and (directory / "model.safetensors").is_file()


def test_strict_mismatch_lists_keys(saved, tiny_config, tiny_bert_config):
    from safetensors.torch import save_file

    state = read_state_dict(saved)
    state["extra.weight"] = torch.zeros(1)
    del state["image_encoder.global_projection.bias"]
    save_file(state, str(saved / "model.safetensors"))
    with pytest.raises(ValueError, match=r"missing keys \['image_encoder.global_projection.bias'\]") as info:
        load_pretrained(saved)
    assert "extra.weight" in str(info.value)


def test_shape_mismatch_is_reported(saved, tiny_config):
    config = json.loads((saved / "config.json").read_text())
    config["text"]["bert_config"]["intermediate_size"] = 48
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="shape mismatches"):
        load_pretrained(saved)


def test_bad_directories(tmp_path, saved):
    with pytest.raises(ValueError, match="does not exist"):
        load_pretrained(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_pretrained(broken)
    os.remove(broken / "config.json")
    with pytest.raises(ValueError, match="missing config.json"):
        load_pretrained(broken)
    truncated = tmp_path / "truncated"
    shutil.copytree(saved, truncated)
    data = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cannot read weights"):
        load_pretrained(truncated)


def _lightning_checkpoint(model, vocab_dir):
    config = dataclasses.replace(model.config, text=dataclasses.replace(model.config.text, name_or_path=str(vocab_dir)))
    return {
        "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
        "hyper_parameters": {"learning_rate": 1e-4},
        "afloc": {"model_config": config.to_dict(), "preprocessing": {"image_size": 64}},
        "epoch": 1,
    }


def test_lightning_checkpoint_of_our_training_loads(tmp_path, tiny_model, vocab_file):
    vocab_dir = tmp_path / "vocab"
    vocab_dir.mkdir()
    shutil.copy(vocab_file, vocab_dir / "vocab.txt")
    path = tmp_path / "last.ckpt"
    torch.save(_lightning_checkpoint(tiny_model, vocab_dir), path)
    bundle = load_pretrained(path)
    assert _state_equal(bundle.model, tiny_model)
    assert bundle.preprocessing.image_size == 64
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_pretrained(path)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch should_never_exist",))


def test_checkpoint_with_code_is_refused(tmp_path, tiny_model, vocab_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    checkpoint = _lightning_checkpoint(tiny_model, tmp_path)
    checkpoint["afloc"]["evil"] = _Payload()
    torch.save(checkpoint, tmp_path / "evil.ckpt")
    with pytest.raises(ValueError, match="will not be unpickled"):
        load_pretrained(tmp_path / "evil.ckpt")
    assert not (tmp_path / "should_never_exist").exists()


def test_foreign_checkpoint_is_named(tmp_path):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {}}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="model_config"):
        load_pretrained(tmp_path / "other.ckpt")
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(ValueError, match="not a Lightning checkpoint"):
        load_pretrained(tmp_path / "list.ckpt")


def test_storage_dtype_validated(tmp_path, tiny_model, tiny_tokenizer):
    with pytest.raises(ValueError, match="storage_dtype"):
        afloc.save_pretrained(tiny_model, tmp_path / "x", tiny_tokenizer, storage_dtype="int4")


def test_external_text_weights(tmp_path, vocab_file, tiny_bert_config, tiny_tokenizer):
    """A frozen text encoder can be left out of the directory and reloaded, checked, from its source."""
    from training_fixtures import write_tiny_bert

    from afloc import AFLocConfig, ImageEncoderConfig, TextEncoderConfig, build_model

    bert = write_tiny_bert(tmp_path / "bert", vocab_file, tiny_bert_config)
    config = AFLocConfig(
        image=ImageEncoderConfig(backbone="resnet18", image_size=64),
        text=TextEncoderConfig(name_or_path=str(bert), max_length=32, frozen=True),
    )
    torch.manual_seed(0)
    model = build_model(config)
    out = save_pretrained(model, tmp_path / "small", tiny_tokenizer, external_text=True)
    saved = read_state_dict(out)
    assert saved and not any(k.startswith("text_encoder.") for k in saved)
    loaded = load_pretrained(out).model
    assert _state_equal(loaded, model)
    assert loaded.config.text.external_weights_sha256
    # a fine-tuned text encoder cannot be left out
    with torch.no_grad():
        model.text_encoder.bert.embeddings.word_embeddings.weight[0] += 1.0
    with pytest.raises(ValueError, match="fine-tuned"):
        save_pretrained(model, tmp_path / "bad", tiny_tokenizer, external_text=True)
    # a different source than the one the model was trained with is refused at load time
    torch.manual_seed(5)
    write_tiny_bert(bert, vocab_file, {**tiny_bert_config, "initializer_range": 0.5})
    with pytest.raises(ValueError, match="digest mismatch"):
        load_pretrained(out)


def _files(directory) -> dict[str, bytes]:
    """Weights, config and preprocessing files of a model directory (the tokenizer and card are compared apart)."""
    names = [p.name for p in directory.iterdir() if p.suffix == ".safetensors" or p.name.endswith(".json")]
    return {n: (directory / n).read_bytes() for n in names if not n.startswith(("tokenizer", "special_tokens"))}


BUNDLED = Path(__file__).resolve().parents[1] / "assets" / "models" / "afloc_phantomcxr_r10"
KINDS = {
    "full text": {},
    "float16": {"storage_dtype": "float16"},
    "sharded": {"max_shard_bytes": 6_000_000},
    "external text": {"external_text": True},
    "external text, float16, sharded": {
        "external_text": True,
        "storage_dtype": "float16",
        "max_shard_bytes": 9_000_000,
    },
}


@pytest.mark.parametrize("kind", KINDS)
def test_saving_a_loaded_model_round_trips_exactly(kind, tmp_path, vocab_file, tiny_bert_config, tiny_tokenizer):
    """Load a directory, save it with the issue's call, load again: same weights bit for bit, same settings, a
    directory of the same kind; with the same storage options the files are byte-identical."""
    from training_fixtures import write_tiny_bert

    from afloc import AFLocConfig, ImageEncoderConfig, TextEncoderConfig, build_model

    options = dict(KINDS[kind])
    external = options.pop("external_text", False)
    bert = write_tiny_bert(tmp_path / "bert", vocab_file, tiny_bert_config)
    config = AFLocConfig(
        image=ImageEncoderConfig(backbone="resnet18", image_size=64),
        text=TextEncoderConfig(name_or_path=str(bert), max_length=32, frozen=True),
    )
    torch.manual_seed(0)
    model = build_model(config).eval()
    preprocessing = Preprocessing(image_size=64, resize_8bit=True, size_rule="reference")
    localization = LocalizationConfig(margin=4, prompt_rule="reference")
    first = afloc.save_pretrained(
        model, tmp_path / "first", tiny_tokenizer, preprocessing, localization, external_text=external, **options
    )
    bundle = load_pretrained(first)
    # the call from the issue: no storage options, no external-text flag
    second = afloc.save_pretrained(
        bundle.model, tmp_path / "second", bundle.tokenizer, bundle.preprocessing, bundle.localization
    )
    again = load_pretrained(second)
    assert _state_equal(again.model, bundle.model)
    assert again.model.config == bundle.model.config
    assert (again.preprocessing, again.localization) == (preprocessing, localization)
    assert bool(again.model.config.text.external_weights_sha256) == external
    assert any(k.startswith("text_encoder.") for k in read_state_dict(second)) != external
    text = "small left pleural effusion"
    assert torch.equal(again.tokenizer([text]).input_ids, tiny_tokenizer([text]).input_ids)
    # the same storage options give the same files, byte for byte
    third = afloc.save_pretrained(
        bundle.model, tmp_path / "third", bundle.tokenizer, bundle.preprocessing, bundle.localization, **options
    )
    assert _files(third) == _files(first)
    # an explicit external_text=False writes the text weights and drops the digest
    full = afloc.save_pretrained(bundle.model, tmp_path / "full", bundle.tokenizer, external_text=False)
    assert not load_pretrained(full).model.config.text.external_weights_sha256
    assert _state_equal(load_pretrained(full).model, bundle.model)


def test_bundled_model_saves_and_loads_back(tmp_path):
    """The bundled chest model (float16, external MiniLM text) with the issue's exact call."""
    bundle = load_pretrained(BUNDLED)
    out = afloc.save_pretrained(
        bundle.model, tmp_path / "copy", bundle.tokenizer, bundle.preprocessing, bundle.localization
    )
    copy = load_pretrained(out)
    assert _state_equal(copy.model, bundle.model) and copy.model.config == bundle.model.config
    assert (copy.preprocessing, copy.localization) == (bundle.preprocessing, bundle.localization)
    assert not any(k.startswith("text_encoder.") for k in read_state_dict(out))


def test_loading_prints_no_transformers_load_report(capfd, caplog):
    """BERT is loaded without its pooler and without the pooler's weights being reported as UNEXPECTED."""
    from afloc import AFLocPredictor

    with caplog.at_level("INFO"):
        AFLocPredictor.from_pretrained(BUNDLED, device="cpu")
        afloc.build_model(afloc.AFLocConfig(image=afloc.ImageEncoderConfig(backbone="resnet18")))
    captured = capfd.readouterr()
    printed = captured.out + captured.err + caplog.text
    for alarming in ("LOAD REPORT", "UNEXPECTED", "MISSING", "Loading weights"):
        assert alarming not in printed


def test_tokenizer_file_is_written_compactly_and_reads_back(tmp_path, tiny_model, tiny_tokenizer):
    import afloc
    from afloc import Preprocessing

    directory = afloc.save_pretrained(tiny_model, tmp_path / "m", tiny_tokenizer, Preprocessing(image_size=64))
    text = (directory / "tokenizer.json").read_text(encoding="utf-8")
    assert "\n" not in text and ": " not in text[:200]
    loaded = afloc.load_pretrained(directory).tokenizer
    captions = ["small left pleural effusion. no pneumothorax", "cardiomegaly"]
    assert torch.equal(loaded(captions).input_ids, tiny_tokenizer(captions).input_ids)


def test_format_1_directories_keep_loading_with_their_zero_shot_settings(tmp_path, tiny_model, tiny_tokenizer):
    """Format 1 kept the zero-shot keys inside "localization"; such a directory (the bundled models, converted
    ones users have) loads with those settings moved to ``zero_shot``; a new save writes format 2."""
    import json

    from afloc.localization.zero_shot import ZeroShotConfig

    directory = save_pretrained(tiny_model, tmp_path / "m", tiny_tokenizer, Preprocessing(image_size=64))
    assert json.loads((directory / "config.json").read_text())["afloc_format_version"] == 2
    extras = json.loads((directory / "preprocessing.json").read_text())
    extras.pop("zero_shot")
    extras["localization"].update(classification_similarity="dot", logit_scale=3.0)
    (directory / "preprocessing.json").write_text(json.dumps(extras))
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "afloc_format_version": 1}))
    bundle = load_pretrained(directory)
    assert bundle.zero_shot == ZeroShotConfig(similarity="dot", logit_scale=3.0)
    assert bundle.localization == LocalizationConfig()
    assert afloc.AFLocPredictor.from_bundle(bundle).zero_shot.logit_scale == 3.0
    assert load_pretrained(BUNDLED.parent / "afloc_phantomcxr_r10").zero_shot == ZeroShotConfig()  # format 1
