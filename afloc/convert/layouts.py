"""Key layouts of the released AFLoc and GLoRIA Lightning checkpoints, and reading them onto our model.

Both reference implementations wrap the network in a LightningModule attribute (``afloc`` / ``gloria``) whose
``img_encoder`` holds a torchvision ResNet-50 (``model``, ``fc`` removed) with linear heads, and whose
``text_encoder.model`` is a Hugging Face ``BertModel``. :func:`read_state_dict` checks a checkpoint against a
layout (listing expected and found key groups when it does not fit) and maps the keys to :class:`afloc.AFLoc`'s
without reading any tensor data; :func:`infer_bert_config` recovers the BERT architecture from the shapes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .safe_pickle import Checkpoint, LazyTensor, load_checkpoint

LAST_N_LAYERS = 4  # both methods sum the last four BERT layers

# BERT keys the reference checkpoints may hold but the model never reads: old transformers saved the position
# ids buffer, and AutoModel adds a pooler whose output neither method uses.
UNUSED_TEXT_KEYS = re.compile(r"^(embeddings\.position_ids|pooler\..*)$")
UNUSED_IMAGE_KEYS = re.compile(r"^fc\..*$")  # the reference replaces fc by an identity; tolerate a stray one


class ConversionError(ValueError):
    """The checkpoint or the tokenizer cannot be converted; the message says what was expected and found."""


@dataclass(frozen=True)
class Layout:
    """Key layout of a released Lightning checkpoint.

    Attributes:
        name: CLI name.
        title: who released it.
        prefix: the LightningModule attribute holding the network (``afloc.`` / ``gloria.``).
        shallow_head: the image encoder has a layer2 projection (AFLoc's ``local2_embedder``).
        licence: what the model card says about the licence.
        heatmaps: what the model card says about how heatmaps relate to the original method.
        resize_to, crop_to: the method's test-time geometry: pad-resize to ``resize_to``, then a centre crop to
            ``crop_to`` (GLoRIA: 256, 224); ``crop_to`` None = no crop (AFLoc's inference: 224).
        margin: the default NaN border of its heatmaps (AFLoc's inference emulates a crop with 14 px; a model that
            is really cropped needs none).
    """

    name: str
    title: str
    prefix: str
    shallow_head: bool
    licence: str
    heatmaps: str
    resize_to: int = 224
    crop_to: int | None = None
    margin: int = 14

    def groups(self) -> dict[str, str]:
        """``{checkpoint key or key prefix ending in '.': our key or prefix}``."""
        p = self.prefix
        groups = {
            f"{p}text_encoder.model.": "text_encoder.bert.",
            f"{p}img_encoder.model.": "image_encoder.backbone.",
            f"{p}img_encoder.global_embedder.weight": "image_encoder.global_projection.weight",
            f"{p}img_encoder.global_embedder.bias": "image_encoder.global_projection.bias",
            f"{p}img_encoder.local_embedder.weight": "image_encoder.deep_projection.weight",
        }
        if self.shallow_head:
            groups[f"{p}img_encoder.local2_embedder.weight"] = "image_encoder.shallow_projection.weight"
        return groups


LAYOUTS = {
    "authors": Layout(
        "authors",
        "AFLoc (Yang et al., arXiv 2401.02044), the authors' released weights",
        "afloc.",
        True,
        "Code: Apache-2.0 (the authors' reference implementation and this converter). Weights: distributed by the "
        "authors under their own terms; check their release page before sharing or using them.",
        "Heatmaps follow the reference implementation's inference path.",
    ),
    "gloria": Layout(
        "gloria",
        "GLoRIA (Huang et al., ICCV 2021; github.com/marshuang80/gloria), its authors' released weights",
        "gloria.",
        False,
        "Code: this converter is Apache-2.0; GLoRIA's code is under the licence of its repository. Weights: "
        "distributed by the GLoRIA authors under their own terms; check their release before sharing them.",
        "Two ways to score it. Through the AFLoc path (the default): heatmaps from GLoRIA's deep map and the "
        "prompt's report vector, zero-shot from the global vectors, scored by the same protocol as our models. As "
        "published (`--similarity gloria` here, or `training evaluate --similarity gloria --zero-shot-similarity "
        "gloria`): GLoRIA's own word-attention map (the maximum over the prompt's words) and its zero-shot score "
        "((global cosine + local similarity) / 2). The image goes "
        "through GLoRIA's test transform: pad-resized to 256 and centre-cropped to 224, so a heatmap covers the "
        "crop and the cropped-away border of the film is undefined.",
        resize_to=256,
        crop_to=224,
        margin=0,
    ),
}


def _group_summary(keys: list[str], known: list[str]) -> list[str]:
    """Readable key groups: a known prefix (``afloc.img_encoder.model.*``) or the first two name parts."""
    counts: Counter[str] = Counter()
    for key in keys:
        prefix = next((k for k in known if k.endswith(".") and key.startswith(k)), None)
        if prefix is None and key not in known:
            parts = key.split(".")
            prefix = ".".join(parts[:2]) + "." if len(parts) > 2 else None
        counts[f"{prefix}*" if prefix else key] += 1
    groups = [f"{_short(group)} ({n} keys)" if n > 1 else _short(group) for group, n in sorted(counts.items())]
    return groups if len(groups) <= 30 else groups[:30] + [f"... {len(groups) - 30} more groups"]


def _short(key: str, limit: int = 80) -> str:
    """A key of an untrusted file, shortened for a message."""
    return key if len(key) <= limit else key[: limit - 3] + "..."


def _layout_error(path: Path, layout: Layout, keys: list[str], problem: str) -> ConversionError:
    expected = [f"{k}*" if k.endswith(".") else k for k in layout.groups()]
    known = [k for other in LAYOUTS.values() for k in other.groups()]
    hints = [
        f"it looks like a {other.name} checkpoint: use `python -m afloc.convert {other.name}`"
        for other in LAYOUTS.values()
        if other is not layout and all(any(key.startswith(g) for key in keys) for g in other.groups())
    ]
    if any(key.startswith("model.image_encoder.") for key in keys):
        hints.append("it looks like a checkpoint of this project's training: load it directly (afloc.load_pretrained)")
    return ConversionError(
        f"{path} is not a {layout.name} checkpoint ({problem}).\n  expected key groups: {expected}\n"
        f"  found key groups: {_group_summary(keys, known)}" + "".join(f"\n  hint: {h}" for h in hints)
    )


def read_state_dict(path: Path, layout: Layout) -> tuple[dict[str, LazyTensor], list[str], Checkpoint]:
    """Unpickle ``path`` safely and map its keys to ours (data not read yet).

    Returns:
        ``(state, dropped_keys, checkpoint)``: our keys -> lazy tensors, the unused keys, and the open
        :class:`afloc.convert.safe_pickle.Checkpoint` to materialize the tensors from.
    """
    checkpoint = load_checkpoint(path)
    try:
        state, dropped = _map_keys(path, layout, checkpoint.data)
    except BaseException:
        checkpoint.close()
        raise
    return state, dropped, checkpoint


def _map_keys(path: Path, layout: Layout, data: Any) -> tuple[dict[str, LazyTensor], list[str]]:
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        raw = data["state_dict"]
    elif isinstance(data, dict) and data and all(isinstance(v, LazyTensor) for v in data.values()):
        raw = data  # a bare state dict
    else:
        found = sorted(_short(str(k)) for k in data)[:20] if isinstance(data, dict) else type(data).__name__
        raise ConversionError(f"{path} is not a Lightning checkpoint: expected a 'state_dict' entry, found {found}")
    for key in raw:
        if not isinstance(key, str):
            raise ConversionError(
                f"{path}: the state_dict has a key of type {type(key).__name__}; parameter names are strings"
            )
    keys = list(raw)
    groups = layout.groups()
    state: dict[str, LazyTensor] = {}
    dropped, unexpected = [], []
    for key, value in raw.items():
        source = next((g for g in groups if (key.startswith(g) if g.endswith(".") else key == g)), None)
        if source is None:
            unexpected.append(key)
            continue
        rest = key[len(source) :]
        unused = UNUSED_TEXT_KEYS if groups[source] == "text_encoder.bert." else UNUSED_IMAGE_KEYS
        if source.endswith(".") and unused.match(rest):
            dropped.append(key)
            continue
        if not isinstance(value, LazyTensor):
            raise ConversionError(f"{path}: state_dict[{_short(key)!r}] is a {type(value).__name__}, not a tensor")
        state[groups[source] + rest] = value
    missing = [g for g in groups if not any(k.startswith(g) if g.endswith(".") else k == g for k in keys)]
    if missing or unexpected:
        problem = f"missing {[f'{g}*' if g.endswith('.') else g for g in missing]}" if missing else ""
        if unexpected:
            examples = [_short(k) for k in unexpected[:3]]
            problem += ("; " if problem else "") + f"{len(unexpected)} unexpected keys, e.g. {examples}"
        raise _layout_error(path, layout, keys, problem)
    return state, dropped


def infer_backbone(state: dict[str, LazyTensor], path: Path) -> str:
    """``resnet18``, ``resnet34`` or ``resnet50`` from the backbone's keys (GLoRIA also released a ResNet-18)."""
    prefix = "image_encoder.backbone."
    blocks = {k.split(".")[3] for k in state if k.startswith(f"{prefix}layer3.") and k.count(".") > 3}
    bottleneck = f"{prefix}layer1.0.conv3.weight" in state
    backbone = {(True, 6): "resnet50", (False, 6): "resnet34", (False, 2): "resnet18"}.get((bottleneck, len(blocks)))
    if backbone is None:
        kind = "bottleneck" if bottleneck else "basic"
        raise ConversionError(
            f"{path}: the image backbone ({kind} blocks, {len(blocks)} in layer3) is not a ResNet-18, -34 or -50"
        )
    return backbone


def _shape(state: dict[str, LazyTensor], key: str, path: Path) -> tuple[int, int]:
    """Shape of a 2-D BERT weight, with an error naming the key when it is missing or not a matrix."""
    name = key.removeprefix("text_encoder.bert.")
    if key not in state:
        raise ConversionError(f"{path}: the BERT weights have no {name!r}")
    shape = state[key].shape
    if len(shape) != 2:
        raise ConversionError(f"{path}: BERT weight {name!r} has shape {shape}; expected a matrix")
    return shape


STANDARD_BERT_HEADS = {128: 2, 256: 4, 512: 8, 768: 12, 1024: 16}
"""Head counts of the published BERT sizes (tiny, mini, small/medium, base, large: 64-wide heads), the only hidden
sizes whose head count is taken from convention when no config says it."""


def infer_bert_config(
    state: dict[str, LazyTensor], path: Path, hints: dict[str, Any] | None, num_attention_heads: int | None
) -> dict[str, Any]:
    """The ``transformers.BertConfig`` of the checkpoint's text encoder, from its tensor shapes.

    The head count is not visible in the shapes and is never guessed silently: it comes from
    ``num_attention_heads``, else from the ``config.json`` next to the tokenizer (``hints``), else, for the hidden
    sizes of the published BERT family (:data:`STANDARD_BERT_HEADS`: 12 heads for Bio_ClinicalBERT's 768), from that
    family's convention, which the returned config records in ``"_heads_from"`` for the model card. Any other
    hidden size without a config or the argument is refused.
    """
    t = "text_encoder.bert."
    vocab_size, hidden = _shape(state, f"{t}embeddings.word_embeddings.weight", path)
    layers = {int(m.group(1)) for k in state if (m := re.match(rf"{re.escape(t)}encoder\.layer\.(\d+)\.", k))}
    if not layers or layers != set(range(len(layers))):
        raise ConversionError(f"{path}: BERT encoder layers found {sorted(layers)}; expected 0..N-1")
    config: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": hidden,
        "num_hidden_layers": len(layers),
        "intermediate_size": _shape(state, f"{t}encoder.layer.0.intermediate.dense.weight", path)[0],
        "max_position_embeddings": _shape(state, f"{t}embeddings.position_embeddings.weight", path)[0],
        "type_vocab_size": _shape(state, f"{t}embeddings.token_type_embeddings.weight", path)[0],
    }
    hints = hints or {}
    clashes = [
        f"{k}: {hints[k]} there, {v} in the checkpoint" for k, v in config.items() if k in hints and hints[k] != v
    ]
    if clashes:
        raise ConversionError(
            f"the config.json next to the tokenizer describes a different BERT than {path} ({'; '.join(clashes)})"
        )
    heads, source = num_attention_heads, "given with --num-attention-heads"
    if heads is None and hints.get("num_attention_heads") is not None:
        heads, source = hints["num_attention_heads"], "read from the config.json next to the tokenizer"
    if heads is None:
        if hidden not in STANDARD_BERT_HEADS:
            raise ConversionError(
                f"cannot tell the attention head count of a {hidden}-wide BERT (not a size of the published BERT "
                f"family {sorted(STANDARD_BERT_HEADS)}): pass --num-attention-heads, or a tokenizer directory that "
                "holds the BERT's config.json"
            )
        heads = STANDARD_BERT_HEADS[hidden]
        source = (f"assumed: the published BERT family's {heads} heads for a {hidden}-wide BERT (no config.json "
                  "next to the tokenizer, no --num-attention-heads)")  # fmt: skip
    if hidden % int(heads):
        raise ConversionError(f"hidden size {hidden} is not divisible by {heads} attention heads")
    config["num_attention_heads"] = int(heads)
    config["_heads_from"] = source
    for name in ("hidden_act", "layer_norm_eps", "pad_token_id"):
        if name in hints:
            config[name] = hints[name]
    if config["num_hidden_layers"] < LAST_N_LAYERS:
        raise ConversionError(f"{path}: the BERT has {len(layers)} layers; the method sums the last {LAST_N_LAYERS}")
    return config
