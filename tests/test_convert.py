"""Converting the authors' AFLoc and GLoRIA checkpoints (issue #9): safe reading, key layouts, reference preset.

Checkpoints are built here in the exact released layouts (ResNet-50 image part at real shapes, a tiny BERT)
with a pickled non-builtin config in ``hyper_parameters``; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import afloc
from afloc.convert import ConversionError, convert_checkpoint, main
from afloc.convert.safe_pickle import CorruptCheckpointError, Inert, UnsafeCheckpointError, load_checkpoint
from afloc.imaging.transforms import Preprocessing
from afloc.localization.heatmaps import LocalizationConfig
from afloc.localization.zero_shot import ZeroShotConfig
from afloc.modeling.config import AFLocConfig, ImageEncoderConfig, LossConfig, TextEncoderConfig
from afloc.predictor import AFLocPredictor

PROMPTS = ["findings suggesting pneumonia", "left lower lobe opacity", "edema"]
PREFIXES = {"authors": "afloc", "gloria": "gloria"}


class DictConfig:
    """Stands in for OmegaConf's DictConfig: pickled under a module that does not exist when loading."""

    def __init__(self, content: dict) -> None:
        self._content = content
        self._flags = {"readonly": False}


def _leave_marker(path: str) -> None:
    Path(path).write_text("this ran")


class RunsAFunction:
    """Unpickling this calls a function of this test module (not a known-dangerous one)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return _leave_marker, (str(self.marker),)


class RunsACommand:
    """The classic malicious checkpoint: unpickling it runs a shell command."""

    def __init__(self, marker: Path, via: str) -> None:
        self.marker, self.via = marker, via

    def __reduce__(self):
        if self.via == "os.system":
            return os.system, (f"touch {self.marker}",)
        return eval, (f"__import__('os').system('touch {self.marker}')",)


def _save(obj, path: Path, legacy: bool = False) -> Path:
    """``torch.save`` with ``DictConfig`` importable as ``omegaconf.dictconfig.DictConfig`` only while saving."""
    module = types.ModuleType("omegaconf.dictconfig")
    module.DictConfig = DictConfig
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DictConfig, "__module__", "omegaconf.dictconfig")
        patch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
        patch.setitem(sys.modules, "omegaconf.dictconfig", module)
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def torch_save(obj, path: Path, legacy: bool = False) -> Path:
    """Plain ``torch.save`` in the zip (default) or legacy format."""
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def released_state_dict(model: afloc.AFLoc, prefix: str) -> OrderedDict:
    """Our weights under the reference implementation's key names (written out independently of afloc.convert)."""
    ours = model.state_dict()
    out = OrderedDict()
    for key, value in ours.items():
        if key.startswith("text_encoder.bert."):
            out[f"{prefix}.text_encoder.model.{key.removeprefix('text_encoder.bert.')}"] = value
        elif key.startswith("image_encoder.backbone."):
            out[f"{prefix}.img_encoder.model.{key.removeprefix('image_encoder.backbone.')}"] = value
    out[f"{prefix}.img_encoder.global_embedder.weight"] = ours["image_encoder.global_projection.weight"]
    out[f"{prefix}.img_encoder.global_embedder.bias"] = ours["image_encoder.global_projection.bias"]
    out[f"{prefix}.img_encoder.local_embedder.weight"] = ours["image_encoder.deep_projection.weight"]
    if "image_encoder.shallow_projection.weight" in ours:
        out[f"{prefix}.img_encoder.local2_embedder.weight"] = ours["image_encoder.shallow_projection.weight"]
    # what old transformers and AutoModel add to a BertModel state dict
    positions = ours["text_encoder.bert.embeddings.position_embeddings.weight"].shape[0]
    out[f"{prefix}.text_encoder.model.embeddings.position_ids"] = torch.arange(positions).unsqueeze(0)
    hidden = model.embedding_dim
    out[f"{prefix}.text_encoder.model.pooler.dense.weight"] = torch.randn(hidden, hidden)
    out[f"{prefix}.text_encoder.model.pooler.dense.bias"] = torch.randn(hidden)
    return out


def lightning_checkpoint(state: dict, hyper_parameters) -> dict:
    return {
        "epoch": 49,
        "global_step": 12345,
        "pytorch-lightning_version": "1.5.10",
        "state_dict": state,
        "hyper_parameters": hyper_parameters,
    }


@pytest.fixture(scope="module")
def bert_config(tiny_bert_config) -> dict:
    return {**tiny_bert_config, "max_position_embeddings": 128}  # room for the 97 word pieces


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory, vocab_file) -> Path:
    """A bare vocab.txt directory, the way a user copies Bio_ClinicalBERT's vocabulary."""
    directory = tmp_path_factory.mktemp("tokenizer")
    shutil.copy(vocab_file, directory / "vocab.txt")
    return directory


def _reference_model(bert_config: dict, shallow_head: bool, seed: int) -> afloc.AFLoc:
    """Our model with the reference architecture: what the converter should rebuild."""
    config = AFLocConfig(
        image=ImageEncoderConfig(backbone="resnet50", image_size=224, internal_size=299, shallow_head=shallow_head),
        text=TextEncoderConfig(bert_config=bert_config, max_length=97, last_n_layers=4),
        loss=LossConfig() if shallow_head else LossConfig(sentence_weight=0.0, word_level="deep"),
    )
    torch.manual_seed(seed)
    return afloc.AFLoc(config).eval()


@pytest.fixture(scope="module")
def tokenizer_with_config(tmp_path_factory, vocab_file, bert_config) -> Path:
    """vocab.txt plus the BERT's config.json, as in a Bio_ClinicalBERT download (gives the head count)."""
    from transformers import BertConfig

    directory = tmp_path_factory.mktemp("tokenizer_with_config")
    shutil.copy(vocab_file, directory / "vocab.txt")
    BertConfig(**bert_config).to_json_file(directory / "config.json")
    return directory


@pytest.fixture(scope="module")
def released(tmp_path_factory, bert_config, tokenizer_dir, tokenizer_with_config):
    """Per layout: (our reference model, its released-layout checkpoint, the converted directory).

    The authors' one goes through the CLI (head count given as an option), GLoRIA's through the library
    function (head count from the config.json next to the vocabulary); ``torch.load`` is disabled throughout,
    so nothing can fall back to unpickling arbitrary code.
    """
    root = tmp_path_factory.mktemp("released")
    hyper = DictConfig({"model": {"text": {"bert_type": "emilyalsentzer/Bio_ClinicalBERT"}}, "lr": 5e-5})
    result = {}

    def forbidden(*args, **kwargs):
        raise AssertionError("torch.load must not be used on a released checkpoint")

    with pytest.MonkeyPatch.context() as patch:
        for layout, seed in (("authors", 0), ("gloria", 1)):
            model = _reference_model(bert_config, shallow_head=layout == "authors", seed=seed)
            path = _save(
                lightning_checkpoint(released_state_dict(model, PREFIXES[layout]), hyper), root / f"{layout}.ckpt"
            )
            out = root / "models" / f"{layout}_converted"
            patch.setattr(torch, "load", forbidden)
            if layout == "authors":
                argv = [layout, str(path), "--tokenizer", str(tokenizer_dir), "--out", str(out)]
                assert main([*argv, "--num-attention-heads", "2"]) == 0
            else:
                convert_checkpoint(path, str(tokenizer_with_config), out, layout)
            patch.undo()
            result[layout] = (model, path, out)
    return result


@pytest.mark.parametrize("layout", ["authors", "gloria"])
def test_converted_model_matches_ours_with_the_same_tensors(released, layout, tokenizer_dir):
    reference, _, out = released[layout]
    bundle = afloc.load_pretrained(out)

    # the reference preset: the 8-bit resize and short-side rule, the prompt joining; AFLoc's inference pads to 224
    # and emulates a crop with a 14 px margin, GLoRIA's test transform pads to 256 and really crops 224 (no margin)
    gloria = layout == "gloria"
    assert bundle.preprocessing == Preprocessing(
        image_size=256 if gloria else 224, mean=(0.5,) * 3, std=(0.5,) * 3, resize_8bit=True, size_rule="reference",
        crop_size=224 if gloria else None,
    )  # fmt: skip
    assert bundle.preprocessing.input_size == 224
    assert bundle.localization == LocalizationConfig(
        similarity="dot",
        smoothing_sigma=1.5,
        margin=0 if gloria else 14,
        shallow_weight=0.0,
        prompt_rule="reference",
    )
    assert bundle.zero_shot == ZeroShotConfig(similarity="dot")
    assert bundle.model.config.image.internal_size == 299 and bundle.model.config.text.max_length == 97
    assert bundle.model.config.text.bert_config["num_attention_heads"] == 2

    # text: same tokens, same embeddings at every granularity
    tokenizer = afloc.load_tokenizer(str(tokenizer_dir), max_length=97)
    tokens = tokenizer(PROMPTS)
    assert torch.equal(bundle.tokenizer(PROMPTS).input_ids, tokens.input_ids)
    with torch.inference_mode():
        got, expected = bundle.model.encode_text(tokens), reference.encode_text(tokens)
    for name in ("word_embeddings", "sentence_embeddings", "report_embedding"):
        assert torch.equal(getattr(got, name), getattr(expected, name)), name
    # report vector = sum of the word vectors / 97 (the reference scaling)
    assert torch.allclose(got.report_embedding, got.word_embeddings.sum(dim=1) / 97, atol=1e-6)

    # image embeddings and heatmaps through the predictor: identical to ours with the same preset
    image = np.random.default_rng(0).random((180, 150), dtype=np.float32)
    ours = AFLocPredictor(reference, tokenizer, bundle.preprocessing, bundle.localization, device="cpu")
    theirs = AFLocPredictor.from_bundle(bundle, device="cpu")
    mine, converted = ours.encode_image(image), theirs.encode_image(image)
    for name in ("shallow_patch_embeddings", "patch_embeddings", "image_embedding"):
        assert torch.equal(getattr(converted, name), getattr(mine, name)), name
    assert converted.patch_embeddings.shape[-2:] == (19, 19)  # 224 resized to 299 inside the network
    if layout == "gloria":  # no shallow level: the deep map stands in for it
        assert torch.equal(converted.shallow_patch_embeddings, converted.patch_embeddings)
    heatmaps = theirs.localize(PROMPTS, converted)
    assert heatmaps.shape == (3, 180, 150)
    assert np.array_equal(heatmaps, ours.localize(PROMPTS, mine), equal_nan=True)


def test_authors_checkpoint_keeps_all_three_levels(released):
    _, path, out = released["authors"]
    bundle = afloc.load_pretrained(out)
    assert bundle.model.image_encoder.shallow_projection is not None
    assert bundle.model.config.loss == LossConfig()
    card = bundle.card
    assert "AFLoc" in card and "ResNet-50" in card and "Apache-2.0" in card and "their own terms" in card
    assert "SHA-256" in card and "embeddings.position_ids" in card and "pooler.dense.weight" in card
    assert "omegaconf.dictconfig.DictConfig" in card  # the config was read as inert data
    assert "synthetic" not in card.lower()  # the demo would flag the model as trained on synthetic data


def test_gloria_has_no_shallow_level(released):
    _, _, out = released["gloria"]
    bundle = afloc.load_pretrained(out)
    model = bundle.model
    assert model.image_encoder.shallow_projection is None
    assert not any("shallow" in key for key in model.state_dict())
    assert model.config.image.shallow_head is False
    assert model.config.loss.word_level == "deep" and model.config.loss.sentence_weight == 0
    assert "GLoRIA" in bundle.card and "deep (layer3) and global" in bundle.card


def test_converted_directories_work_in_the_demo_and_the_evaluation(released, tmp_path):
    from demo.models import ModelStore
    from training.__main__ import main as training_main
    from training.phantoms.generate import CorpusSpec, generate_corpus

    models_dir = released["gloria"][2].parent
    store = ModelStore([models_dir], device="cpu")
    keys = [key for _, key in store.discover()]
    assert {store.key_for(released[layout][2]) for layout in ("authors", "gloria")} <= set(keys)
    loaded = store.get(store.key_for(released["authors"][2]))
    assert not loaded.untrained and not loaded.synthetic
    heatmap = loaded.predictor.localize("pneumonia", loaded.predictor.encode_image(np.zeros((64, 80))))
    assert heatmap.shape == (64, 80)

    phantom = tmp_path / "phantom"
    generate_corpus(phantom, CorpusSpec(n=6, size=128, seed=3), workers=1, dicom_samples=0)
    result = tmp_path / "result"
    argv = ["evaluate", "--model", str(released["gloria"][2]), "--dataset", "phantom", "--images", str(phantom)]
    argv += ["--split", "train", "--out", str(result), "--limit", "2", "--workers", "0", "--quiet"]
    assert training_main([*argv, "--n-resamples", "20", "--box-rule", "reference"]) == 0
    meta = json.loads((result / "summary.json").read_text())["meta"]
    # the converted model's own margin (D5): none for GLoRIA, whose input is really centre-cropped
    assert (meta["margin"], meta["box_rule"]) == (0, "reference")


def test_converted_model_applies_the_reference_margin_by_default(released, tokenizer_dir, tmp_path):
    """D5: the authors' inference always blanks a 14-pixel border; a converted model does so without options."""
    predictor = AFLocPredictor.from_pretrained(released["authors"][2], device="cpu")
    encoded = predictor.encode_image(np.random.default_rng(2).random((250, 210), dtype=np.float32))
    heatmap = predictor.localize("pleural effusion", encoded, space="model")
    border = np.ones((224, 224), bool)
    border[14:-14, 14:-14] = False
    assert np.isnan(heatmap[border]).all() and not np.isnan(heatmap[~border]).any()
    assert np.nanmin(heatmap) == -1.0 and np.nanmax(heatmap) == 1.0  # min-max over the kept pixels only
    # --margin 0 opts out
    _, path, _ = released["authors"]
    out = tmp_path / "no_margin"
    argv = ["authors", str(path), "--tokenizer", str(tokenizer_dir), "--out", str(out)]
    assert main([*argv, "--num-attention-heads", "2", "--margin", "0"]) == 0
    assert afloc.load_pretrained(out).localization.margin == 0


def test_cli_options_and_help(released, tokenizer_with_config, tmp_path, capsys):
    tokenizer_dir = tokenizer_with_config
    _, path, _ = released["gloria"]
    out = tmp_path / "cosine"
    code = main(["gloria", str(path), "--tokenizer", str(tokenizer_dir), "--out", str(out)]
                + ["--margin", "14", "--similarity", "cosine"])  # fmt: skip
    assert code == 0
    localization = afloc.load_pretrained(out).localization
    assert (localization.margin, localization.similarity) == (14, "cosine")
    assert afloc.load_pretrained(out).zero_shot.similarity == "cosine"
    # a non-empty output directory is not overwritten by accident
    assert main(["gloria", str(path), "--tokenizer", str(tokenizer_dir), "--out", str(out)]) == 1
    assert "not an empty directory" in capsys.readouterr().err
    # ... and is with "--overwrite": the second conversion's settings replace the first's
    assert main(["gloria", str(path), "--tokenizer", str(tokenizer_dir), "--out", str(out), "--overwrite"]) == 0
    assert afloc.load_pretrained(out).localization.similarity == "dot"
    with pytest.raises(SystemExit) as exit_info:
        main(["authors", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--tokenizer" in text and "--margin" in text and "--similarity" in text


# ---------------------------------------------------------------- safety


@pytest.mark.parametrize("via", ["os.system", "builtins.eval"])
def test_a_pickle_that_runs_a_command_is_refused(tmp_path, tokenizer_dir, via):
    marker = tmp_path / "pwned"
    state = {"afloc.img_encoder.global_embedder.bias": torch.zeros(3)}
    path = torch_save(lightning_checkpoint(state, {"cfg": RunsACommand(marker, via)}), tmp_path / "evil.ckpt")
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        convert_checkpoint(path, str(tokenizer_dir), tmp_path / "out")
    assert not marker.exists()
    assert main(["authors", str(path), "--tokenizer", str(tokenizer_dir), "--out", str(tmp_path / "o")]) == 1
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_unknown_globals_become_inert_placeholders(tmp_path):
    marker = tmp_path / "ran"
    data = {"state_dict": {"w": torch.ones(2)}, "hyper_parameters": [RunsAFunction(marker), DictConfig({"a": 1})]}
    path = _save(data, tmp_path / "ckpt.pt")
    with load_checkpoint(path) as checkpoint:
        hyper = checkpoint.data["hyper_parameters"]
        assert not marker.exists()
        assert all(isinstance(item, Inert) for item in hyper)
        assert hyper[1].state == {"_content": {"a": 1}, "_flags": {"readonly": False}}
        assert "omegaconf.dictconfig.DictConfig" in checkpoint.placeholders
        assert torch.equal(checkpoint.materialize(checkpoint.data["state_dict"])["w"], torch.ones(2))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_safe_reader_rebuilds_tensors_exactly(tmp_path, legacy):
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    tensors = {
        "float": torch.randn(3, 5),
        "half": torch.randn(7).half(),
        "bfloat16": torch.randn(2, 2).bfloat16(),
        "long": torch.arange(5),
        "bool": torch.tensor([True, False, True]),
        "view": base[1:, 2:5],  # shares storage with "base", non-contiguous
        "transposed": base.t(),
        "base": base,
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(3.5),
        "parameter": torch.nn.Parameter(torch.randn(2, 3)),
    }
    tensors["with_attribute"] = torch.ones(4)
    tensors["with_attribute"].note = "pickled through torch._tensor._rebuild_from_type_v2"
    meta = {"bytes": b"\x00\xff", "set": {1, 2}, "tuple": (1.5, "a", None)}
    path = torch_save({"state_dict": OrderedDict(tensors), "meta": meta}, tmp_path / "t.ckpt", legacy)
    with load_checkpoint(path) as checkpoint:
        assert checkpoint.format == ("legacy" if legacy else "zip")
        state = checkpoint.materialize(checkpoint.data["state_dict"])
        assert checkpoint.data["meta"] == meta and not checkpoint.placeholders
    assert list(state) == list(tensors)
    for name, tensor in tensors.items():
        assert state[name].dtype == tensor.dtype and torch.equal(state[name], tensor), name


# ---------------------------------------------------------------- errors


def _layout_checkpoint(tmp_path: Path, prefix: str, local2: bool) -> Path:
    """Keys of a released layout with placeholder tensors: enough for the layout checks."""
    p = prefix
    keys = [f"{p}.text_encoder.model.embeddings.word_embeddings.weight", f"{p}.img_encoder.model.conv1.weight"]
    keys += [f"{p}.img_encoder.global_embedder.weight", f"{p}.img_encoder.global_embedder.bias"]
    keys += [f"{p}.img_encoder.local_embedder.weight"]
    keys += [f"{p}.img_encoder.local2_embedder.weight"] if local2 else []
    state = {key: torch.zeros(1) for key in keys}
    return _save(lightning_checkpoint(state, DictConfig({})), tmp_path / f"{prefix}_{local2}.ckpt")


def test_wrong_layout_lists_expected_and_found_key_groups(tmp_path, tokenizer_dir):
    out = tmp_path / "out"
    path = _layout_checkpoint(tmp_path, "afloc", local2=True)
    with pytest.raises(ConversionError) as error:
        convert_checkpoint(path, str(tokenizer_dir), out, "gloria")
    message = str(error.value)
    assert str(path) in message and "not a gloria checkpoint" in message
    assert "expected key groups: ['gloria.text_encoder.model.*', 'gloria.img_encoder.model.*'" in message
    assert "found key groups: ['afloc.img_encoder.global_embedder.bias'" in message
    assert "'afloc.img_encoder.model.*'" in message and "afloc.img_encoder.local2_embedder.weight" in message
    assert "python -m afloc.convert authors" in message

    gloria = _layout_checkpoint(tmp_path, "gloria", local2=False)
    with pytest.raises(ConversionError, match="python -m afloc.convert gloria"):
        convert_checkpoint(gloria, str(tokenizer_dir), out, "authors")
    no_shallow = _layout_checkpoint(tmp_path, "afloc", local2=False)
    with pytest.raises(ConversionError, match=r"missing \['afloc.img_encoder.local2_embedder.weight'\]"):
        convert_checkpoint(no_shallow, str(tokenizer_dir), out, "authors")

    ours = _save({"state_dict": {"model.image_encoder.backbone.conv1.weight": torch.zeros(1)}}, tmp_path / "ours.ckpt")
    with pytest.raises(ConversionError, match=r"model.image_encoder.\*.*\n.*this project's training"):
        convert_checkpoint(ours, str(tokenizer_dir), out)
    not_lightning = _save([torch.zeros(1)], tmp_path / "list.ckpt")
    with pytest.raises(ConversionError, match="not a Lightning checkpoint"):
        convert_checkpoint(not_lightning, str(tokenizer_dir), out)
    assert not out.exists()


def test_vocabulary_must_match_the_embedding_matrix(released, tmp_path, vocab_file):
    _, path, _ = released["authors"]
    bigger = tmp_path / "other_tokenizer"
    bigger.mkdir()
    (bigger / "vocab.txt").write_text(vocab_file.read_text() + "".join(f"extra{i}\n" for i in range(5)))
    with pytest.raises(ConversionError, match="405 tokens but the checkpoint's word-embedding matrix has 400 rows"):
        convert_checkpoint(path, str(bigger), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_tokenizer(released, tmp_path, monkeypatch):
    _, path, _ = released["authors"]
    with pytest.raises(ConversionError, match="no such directory"):
        convert_checkpoint(path, str(tmp_path / "nowhere" / "Bio_ClinicalBERT"), tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConversionError, match="no usable tokenizer"):
        convert_checkpoint(path, str(tmp_path / "empty"), tmp_path / "out")

    import transformers

    calls = []

    def offline(name, *args, **kwargs):
        calls.append(name)
        raise OSError("we are offline")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(ConversionError, match="could not be fetched from the Hugging Face hub"):
        convert_checkpoint(path, "emilyalsentzer/Bio_ClinicalBERT", tmp_path / "out")
    assert calls == ["emilyalsentzer/Bio_ClinicalBERT"]


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_truncated_checkpoint(tmp_path, tokenizer_dir, legacy):
    full = _save(lightning_checkpoint({"afloc.x": torch.randn(1000)}, DictConfig({})), tmp_path / "full.ckpt", legacy)
    cut = tmp_path / "Pretrained_CXR.ckpt"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(CorruptCheckpointError, match="truncated or corrupt checkpoint .*Pretrained_CXR.ckpt"):
        convert_checkpoint(cut, str(tokenizer_dir), tmp_path / "out")
    garbage = tmp_path / "notes.ckpt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(CorruptCheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint(garbage)


def test_config_switch_is_backward_compatible():
    old = AFLocConfig().to_dict()
    del old["image"]["shallow_head"]
    assert AFLocConfig.from_dict(old).image.shallow_head is True
    with pytest.raises(ValueError, match="word_level='deep'"):
        AFLocConfig(image=ImageEncoderConfig(shallow_head=False))


def test_backbone_is_inferred_from_the_keys():
    import torchvision

    from afloc.convert.layouts import infer_backbone

    for name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        with torch.device("meta"):
            keys = getattr(torchvision.models, name)().state_dict()
        state = {f"image_encoder.backbone.{key}": value for key, value in keys.items()}
        if name == "resnet101":
            with pytest.raises(ConversionError, match="not a ResNet-18, -34 or -50"):
                infer_backbone(state, Path("x.ckpt"))
        else:
            assert infer_backbone(state, Path("x.ckpt")) == name
