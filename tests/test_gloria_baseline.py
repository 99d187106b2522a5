"""Issue #27 (part): a converted GLoRIA (or AFLoc) checkpoint's text settings come from its saved config, the BERT
head count is never guessed silently, and GLoRIA's prompts are joined as GLoRIA joins them."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_convert import (  # noqa: F401 (fixtures)
    PREFIXES,
    _reference_model,
    bert_config,
    lightning_checkpoint,
    released_state_dict,
    tokenizer_dir,
)

from afloc.convert import convert_checkpoint
from afloc.convert.layouts import ConversionError, infer_bert_config
from afloc.convert.saved_config import plain_values
from afloc.text.tokenizer import normalize_prompt


# ------------------------------------------------------------------------------ OmegaConf as it pickles
class AnyNode:
    """Stands in for an OmegaConf value node (``omegaconf.nodes.AnyNode``): its pickled state holds ``_val``."""

    def __init__(self, value) -> None:
        self._val, self._metadata, self._parent, self._flags_cache = value, None, None, None


class DictConfig:
    """Stands in for ``omegaconf.DictConfig`` / ``ListConfig``: the pickled state holds ``_content`` (nodes)."""

    def __init__(self, content) -> None:
        self._content, self._metadata, self._parent, self._flags_cache = content, None, None, None


def omegaconf_like(value):
    """A config built the way OmegaConf stores it: containers of containers and value nodes."""
    if isinstance(value, dict):
        return DictConfig({k: omegaconf_like(v) for k, v in value.items()})
    if isinstance(value, list):
        return DictConfig([omegaconf_like(v) for v in value])
    return AnyNode(value)


def _save_with_omegaconf_names(obj, path: Path) -> Path:
    """``torch.save`` with the stand-ins importable under OmegaConf's module names only while saving."""
    dictconfig, nodes = types.ModuleType("omegaconf.dictconfig"), types.ModuleType("omegaconf.nodes")
    dictconfig.DictConfig, nodes.AnyNode = DictConfig, AnyNode
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DictConfig, "__module__", "omegaconf.dictconfig")
        patch.setattr(AnyNode, "__module__", "omegaconf.nodes")
        patch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
        patch.setitem(sys.modules, "omegaconf.dictconfig", dictconfig)
        patch.setitem(sys.modules, "omegaconf.nodes", nodes)
        torch.save(obj, path)
    return path


GLORIA_TEXT = {"bert_type": "emilyalsentzer/Bio_ClinicalBERT", "last_n_layers": 4, "aggregate_method": "sum",
               "norm": False, "agg_tokens": True}  # fmt: skip


def _gloria_config(hidden: int, **text) -> dict:
    return {
        "model": {"gloria": {"temp1": 4.0}, "text": {**GLORIA_TEXT, "embedding_dim": hidden, **text}},
        "data": {"text": {"word_num": 97, "captions_per_image": 5}, "image": {"imsize": 256}},
        "transforms": {"norm": "half", "random_crop": {"crop_size": 224}},
    }


@pytest.fixture(scope="module")
def gloria_model(bert_config):  # noqa: F811
    return _reference_model(bert_config, shallow_head=False, seed=3)


def _checkpoint(tmp_path: Path, model, hyper, name: str) -> Path:
    state = released_state_dict(model, PREFIXES["gloria"])
    return _save_with_omegaconf_names(lightning_checkpoint(state, hyper), tmp_path / f"{name}.ckpt")


def test_the_saved_config_is_read_as_plain_values(tmp_path, gloria_model, bert_config, tokenizer_dir):  # noqa: F811
    hidden = bert_config["hidden_size"]
    path = _checkpoint(tmp_path, gloria_model, omegaconf_like(_gloria_config(hidden)), "published")
    from afloc.convert.safe_pickle import load_checkpoint

    with load_checkpoint(path) as checkpoint:
        assert plain_values(checkpoint.data["hyper_parameters"]) == _gloria_config(hidden)
    out = tmp_path / "converted"
    result = convert_checkpoint(path, str(tokenizer_dir), out, "gloria", num_attention_heads=2)
    assert "model.text.last_n_layers = 4 (read from the checkpoint's config)" in result.text_settings
    assert f"model.text.embedding_dim = {hidden} (read from the checkpoint's config)" in result.text_settings
    assert "num_attention_heads = 2 (given with --num-attention-heads)" in result.text_settings
    assert "read from the checkpoint's config" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    ("setting", "value"),
    [("last_n_layers", 1), ("aggregate_method", "mean"), ("norm", True), ("agg_tokens", False)],
)
def test_a_config_with_other_text_settings_is_refused_naming_the_setting(
    tmp_path,
    gloria_model,
    bert_config,  # noqa: F811
    tokenizer_dir,  # noqa: F811
    setting,
    value,
):
    hyper = omegaconf_like(_gloria_config(bert_config["hidden_size"], **{setting: value}))
    path = _checkpoint(tmp_path, gloria_model, hyper, setting)
    with pytest.raises(ConversionError, match=rf"model\.text\.{setting} = {re.escape(repr(value))}"):
        convert_checkpoint(path, str(tokenizer_dir), tmp_path / "out", "gloria", num_attention_heads=2)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_without_a_config_the_assumed_defaults_are_announced(tmp_path, gloria_model, tokenizer_dir, caplog):  # noqa: F811
    path = _checkpoint(tmp_path, gloria_model, {}, "no_config")
    with caplog.at_level("WARNING", logger="afloc.convert.converter"):
        result = convert_checkpoint(path, str(tokenizer_dir), tmp_path / "out", "gloria", num_attention_heads=2)
    assumed = [line for line in result.text_settings if "(assumed" in line]
    assert len(assumed) == 6 and any("data.text.word_num = 97" in line for line in assumed)
    assert "assumed: not in the checkpoint's config" in caplog.text
    assert "(assumed" in (tmp_path / "out" / "README.md").read_text()


# ------------------------------------------------------------------------------ heads
def _bert_shapes(hidden: int, layers: int = 4) -> dict:
    t = "text_encoder.bert."
    shapes = {
        f"{t}embeddings.word_embeddings.weight": (100, hidden),
        f"{t}embeddings.position_embeddings.weight": (128, hidden),
        f"{t}embeddings.token_type_embeddings.weight": (2, hidden),
    }
    for k in range(layers):
        shapes[f"{t}encoder.layer.{k}.intermediate.dense.weight"] = (4 * hidden, hidden)
    return {key: SimpleNamespace(shape=shape) for key, shape in shapes.items()}


def test_the_head_count_is_given_read_or_announced_never_guessed_silently():
    path = Path("x.ckpt")
    given = infer_bert_config(_bert_shapes(768), path, None, 4)  # a count given wins over the convention
    assert given["num_attention_heads"] == 4 and given["_heads_from"] == "given with --num-attention-heads"
    read = infer_bert_config(_bert_shapes(768), path, {"num_attention_heads": 6}, None)
    assert read["num_attention_heads"] == 6 and "config.json" in read["_heads_from"]
    assumed = infer_bert_config(_bert_shapes(768), path, None, None)
    assert assumed["num_attention_heads"] == 12 and assumed["_heads_from"].startswith("assumed")
    # MiniLM-like 384: 64-wide heads would say 6, the model has 12: a vocabulary-only folder is refused
    with pytest.raises(ConversionError, match="--num-attention-heads"):
        infer_bert_config(_bert_shapes(384), path, None, None)
    assert infer_bert_config(_bert_shapes(384), path, None, 12)["num_attention_heads"] == 12


# ------------------------------------------------------------------------------ prompts
def _gloria_joining(text: str) -> str:
    """GLoRIA's published text processing, from its description: newlines to spaces, split at numbered-list
    markers and at '.', each piece's \\w+ tokens lower-cased, pieces of one token or none dropped, non-ASCII
    characters dropped from the tokens, the pieces joined with a space."""
    pieces = [piece for chunk in re.split(r"[0-9]+\.", text.replace("\n", " ")) for piece in chunk.split(".")]
    kept = []
    for piece in pieces:
        tokens = re.findall(r"\w+", piece.lower())
        if len(tokens) <= 1:
            continue
        kept.append(" ".join(t for t in (w.encode("ascii", "ignore").decode("ascii") for w in tokens) if t))
    return " ".join(kept)


@pytest.mark.parametrize(
    "prompt",
    [
        "Heart size is normal. No pneumothorax or cardiomegaly.",
        "Small left pleural effusion",
        "1. Right lower lobe opacity. 2. Stable. Mild edema",
        "Opacity.\nLeft basal atelectasis is seen.",
        "Lesion 3.5 cm in the right upper lobe",
    ],
)
def test_gloria_prompts_are_joined_as_gloria_joins_them(prompt):
    assert normalize_prompt(prompt, "reference") == _gloria_joining(prompt)


# ------------------------------------------------------------------------------ preprocessing: pad-resize + crop
def _gloria_geometry(height: int, width: int, resize: int = 256, crop: int = 224):
    """GLoRIA's test transform as published: the longer side to ``resize`` (the shorter ``int(short * (resize /
    long))``), zero padding split floor/ceil, then torchvision's CenterCrop: the crop starts at
    ``int(round((resize - crop) / 2))``. Returns (resized h, w, pad top, pad left, crop start)."""
    if height >= width:
        new_h, new_w = resize, int(float(width) * (resize / float(height)))
    else:
        new_h, new_w = int(float(height) * (resize / float(width))), resize
    return new_h, new_w, (resize - new_h) // 2, (resize - new_w) // 2, int(round((resize - crop) / 2.0))


@pytest.mark.parametrize("height, width", [(2022, 1736), (1736, 2022), (512, 512), (301, 97)])
def test_the_crop_geometry_and_its_inverse_follow_gloria(height, width):
    import numpy as np

    from afloc.imaging.transforms import Preprocessing

    preprocessing = Preprocessing(image_size=256, crop_size=224, resize_8bit=True, size_rule="reference")
    image = np.random.default_rng(height).random((height, width)).astype(np.float32)
    tensor, mapping = preprocessing(image)
    assert tensor.shape == (3, 224, 224) and preprocessing.input_size == 224
    new_h, new_w, top, left, start = _gloria_geometry(height, width)
    assert (mapping.resized_height, mapping.resized_width, mapping.top, mapping.left) == (new_h, new_w, top, left)
    assert (mapping.crop_top, mapping.crop_left, mapping.input_size) == (start, start, 224)
    # the network sees the pad-resized square's centre: compare with the square cropped by hand
    import cv2

    grey = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    square = np.zeros((256, 256), np.uint8)
    square[top : top + new_h, left : left + new_w] = cv2.resize(grey, (new_w, new_h), interpolation=cv2.INTER_AREA)
    expected = (square[start : start + 224, start : start + 224].astype(np.float32) / 255 - 0.5) / 0.5
    np.testing.assert_allclose(tensor[0].numpy(), expected, atol=1e-6)
    # a box round trip, and its model-space position by hand
    box = np.array([[0.3 * width, 0.4 * height, 0.2 * width, 0.1 * height]])
    scale_x, scale_y = new_w / width, new_h / height
    np.testing.assert_allclose(
        mapping.boxes_to_model(box),
        [
            [
                box[0, 0] * scale_x + left - start,
                box[0, 1] * scale_y + top - start,
                box[0, 2] * scale_x,
                box[0, 3] * scale_y,
            ]
        ],
    )
    np.testing.assert_allclose(mapping.boxes_to_original(mapping.boxes_to_model(box)), box)
    # a heatmap maps back onto the original pixels with the cropped-away border undefined, not invented
    heatmap = np.zeros((224, 224), np.float32)
    back = mapping.heatmap_to_original(heatmap)
    assert back.shape == (height, width)
    rows, cols = np.nonzero(~np.isnan(back))
    # defined pixels lie inside the crop's footprint on the original image
    x0, y0 = (start - left) / scale_x, (start - top) / scale_y
    x1, y1 = (start + 224 - left) / scale_x, (start + 224 - top) / scale_y
    assert cols.min() >= np.floor(x0) - 1 and cols.max() <= np.ceil(x1) + 1
    assert rows.min() >= np.floor(y0) - 1 and rows.max() <= np.ceil(y1) + 1
    if min(x0, y0) > 2:  # the crop cuts into the film: its border is NaN
        assert np.isnan(back).any()
    mask = np.zeros((height, width), bool)
    mask[height * 2 // 5 : height * 3 // 5, width * 2 // 5 : width * 3 // 5] = True  # the centre: inside the crop
    assert mapping.mask_to_model(mask).shape == (224, 224) and mapping.mask_to_model(mask).any()
