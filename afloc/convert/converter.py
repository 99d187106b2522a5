"""Convert the authors' released AFLoc checkpoints (and GLoRIA's) into model directories, safely.

    python -m afloc.convert authors Pretrained_CXR.ckpt --tokenizer Bio_ClinicalBERT/ --out models/afloc_cxr
    python -m afloc.convert gloria chexpert_resnet50.ckpt --tokenizer Bio_ClinicalBERT/ --out models/gloria

The checkpoint is read by :mod:`afloc.convert.safe_pickle` (no pickled code runs; the pickled OmegaConf config
becomes inert data, of which only its plain text settings are read), its keys are mapped onto :class:`afloc.AFLoc`,
the BERT architecture is inferred from the tensor shapes, and a :func:`afloc.save_pretrained` directory is written
with the reference preset (``docs/method.md`` sections 7 and 9): the 8-bit image pad-resized to 224 with the
authors' size rule (GLoRIA: to 256, then centre-cropped to 224, its test transform), internal resize to 299, mean =
std = 0.5, prompts joined as the reference inference joins them, heatmaps from the raw dot product of the deep map
with the report vector (sum of word vectors / 97), Gaussian sigma 1.5, the 14-pixel NaN margin of the authors'
inference (GLoRIA: none, its crop is real). The text settings and the BERT head count are checked against the
checkpoint's saved config (:mod:`afloc.convert.saved_config`): a checkpoint trained with other settings is refused,
assumed ones are said. The directory then works in the demo (``python app.py --model DIR``), the evaluation toolkit
(``python -m training evaluate --model DIR``) and :func:`afloc.load_pretrained`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..hub.cards import render_model_card
from ..hub.format import load_pretrained, save_pretrained
from ..hub.state_dict import load_state_dict_strict
from ..imaging.transforms import Preprocessing
from ..localization.heatmaps import SIMILARITIES, LocalizationConfig
from ..localization.zero_shot import ZeroShotConfig
from ..modeling.config import AFLocConfig, ImageEncoderConfig, LossConfig, TextEncoderConfig
from ..modeling.network import AFLoc
from ..text.tokenizer import ReportTokenizer, load_tokenizer
from .layouts import (
    LAST_N_LAYERS,
    LAYOUTS,
    ConversionError,
    Layout,
    infer_backbone,
    infer_bert_config,
    read_state_dict,
)
from .saved_config import text_settings

logger = logging.getLogger(__name__)

MAX_LENGTH = 97  # word pieces per report in both reference implementations
IMAGE_SIZE, INTERNAL_SIZE = 224, 299
REFERENCE_MARGIN = 14
_BACKBONE_NAMES = {"resnet18": "ResNet-18", "resnet34": "ResNet-34", "resnet50": "ResNet-50"}


@dataclass
class ConversionResult:
    """What :func:`convert_checkpoint` wrote.

    Attributes:
        directory: the model directory.
        layout: ``authors`` or ``gloria``.
        backbone: the inferred ResNet (``resnet50`` in the AFLoc release).
        bert_config: the inferred BERT architecture.
        dropped_keys: checkpoint keys not used by the model (position ids, pooler).
        placeholders: classes of the pickled config that were replaced by inert placeholders.
        sha256: digest of the checkpoint file.
        text_settings: each text setting and the head count, read from the checkpoint's config (or the tokenizer's
            config.json, or the command line) or assumed, in words (also in the model card).
    """

    directory: Path
    layout: str
    backbone: str
    bert_config: dict[str, Any]
    dropped_keys: list[str] = field(default_factory=list)
    placeholders: list[str] = field(default_factory=list)
    sha256: str = ""
    text_settings: list[str] = field(default_factory=list)


def _is_hub_id(text: str) -> bool:
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", text) is not None


def load_reference_tokenizer(source: str) -> tuple[ReportTokenizer, dict[str, Any] | None]:
    """The tokenizer from a local directory (offline) or a hub id (downloaded once when online).

    Returns:
        ``(tokenizer, bert_hints)``: the wrapped tokenizer (``max_length`` 97) and the BERT config found next
        to it (``config.json`` in the directory or on the hub), or ``None``.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        try:
            tokenizer = load_tokenizer(str(path), max_length=MAX_LENGTH)
        except ValueError as error:
            raise ConversionError(
                f"no usable tokenizer in {path} (expected Bio_ClinicalBERT's vocab.txt, or tokenizer.json): {error}"
            ) from error
        hints = None
        if (path / "config.json").is_file():
            try:
                hints = json.loads((path / "config.json").read_text())
            except json.JSONDecodeError as error:
                raise ConversionError(f"{path / 'config.json'} is not valid JSON: {error}") from error
        return tokenizer, hints if isinstance(hints, dict) and hints.get("model_type", "bert") == "bert" else None
    if path.exists() or not _is_hub_id(source):
        raise ConversionError(f"tokenizer {source!r}: no such directory (give the folder holding vocab.txt)")
    logger.info("no local directory %r: fetching the tokenizer from the Hugging Face hub", source)
    from transformers import AutoConfig, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ConversionError(
            f"tokenizer {source!r} is not a local directory and could not be fetched from the Hugging Face hub "
            f"(offline, or no such repository?): "
            f"{error}. Download it once (e.g. `huggingface-cli download {source}`) or pass a local directory"
        ) from error
    try:
        hints = AutoConfig.from_pretrained(source).to_dict()
    except (OSError, ValueError):
        hints = None
    return ReportTokenizer(tokenizer, max_length=MAX_LENGTH), hints


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _card(name: str, layout: Layout, path: Path, result: ConversionResult, localization: LocalizationConfig) -> str:
    bert = result.bert_config
    similarity = {"dot": "raw dot product", "cosine": "cosine similarity", "gloria": "GLoRIA's own score"}[
        localization.similarity
    ]
    levels = "shallow (layer2), deep (layer3) and global" if layout.shallow_head else "deep (layer3) and global"
    return render_model_card(
        name=name,
        summary=f"{layout.title}, converted to this library's format by `python -m afloc.convert {layout.name}`. "
        + layout.heatmaps,
        training_data="Not recorded in the checkpoint; see the authors' paper and release notes.",
        recipe=(
            f"{_BACKBONE_NAMES[result.backbone]} image encoder ({levels} levels, input pad-resized to "
            f"{layout.resize_to}"
            + (f" and centre-cropped to {layout.crop_to}" if layout.crop_to else "")
            + f", resized to {INTERNAL_SIZE} inside the network, mean = std = 0.5); BERT text encoder inferred from "
            "the weights "
            f"({bert['num_hidden_layers']} layers, hidden {bert['hidden_size']}, {bert['num_attention_heads']} "
            f"heads, vocabulary {bert['vocab_size']}), sum of the last {LAST_N_LAYERS} layers, word pieces summed "
            f"into words, report vector = sum of word vectors / {MAX_LENGTH}.\n\n"
            "Text settings:\n\n"
            + "\n".join(f"- {line}" for line in result.text_settings)
            + "\n\n"
            + (
                "Heatmaps: GLoRIA's own word-attention map (per region, the maximum over [CLS] and the prompt's "
                f"words of their attention), Gaussian sigma {localization.smoothing_sigma:g} on the grid, margin "
                f"{localization.margin} px; zero-shot scores are GLoRIA's own (global cosine + local word-context "
                "similarity) / 2, a prompt set scoring its best prompt."
                if localization.similarity == "gloria"
                else f"Heatmaps: {similarity} of the deep map with each prompt's report vector, Gaussian sigma "
                f"{localization.smoothing_sigma:g} on the grid, margin {localization.margin} px; zero-shot scores "
                f"use the same {similarity} with the global image vector."
            )
        ),
        metrics="Not measured here. Compare with the numbers the authors report in their paper.",
        limitations=(
            "One-word prompts are kept (the reference drops them, which makes their heatmap prompt-independent)."
            + (
                " Raw dot products are the reference behaviour; convert with `--similarity cosine` for cosine "
                "similarity, the documented better option."
                if localization.similarity == "dot"
                else " GLoRIA's own scores were chosen at conversion (as published); `--similarity dot` scores it "
                "through the AFLoc path like our models."
                if localization.similarity == "gloria"
                else " Cosine similarity was chosen at conversion; the reference uses raw dot products."
            )
        ),
        provenance=(
            f"Converted from `{path.name}` (SHA-256 `{result.sha256}`), {layout.name} layout. Unused keys dropped: "
            f"{', '.join(result.dropped_keys) or 'none'}. The checkpoint's pickled configuration was read as inert "
            f"data (no code run); its text settings were checked (Recipe), nothing else of it is used"
            + (f" (classes: {', '.join(result.placeholders)})" if result.placeholders else "")
            + f".\n\n{layout.licence}"
        ),
        reproduce=f"`python -m afloc.convert {layout.name} {path.name} --tokenizer TOKENIZER --out {name} "
        f"--margin {localization.margin} --similarity {localization.similarity}`",
    )


def convert_checkpoint(
    checkpoint: str | Path,
    tokenizer: str,
    out: str | Path,
    layout: str = "authors",
    *,
    margin: int | None = None,
    similarity: str = "dot",
    num_attention_heads: int | None = None,
    overwrite: bool = False,
) -> ConversionResult:
    """Convert a released Lightning checkpoint into a model directory with the reference preset.

    Args:
        checkpoint: the ``.ckpt`` file (zip or legacy ``torch.save`` format); never unpickled unsafely.
        tokenizer: local directory holding the BERT vocabulary (Bio_ClinicalBERT's), or a hub id (needs a
            connection the first time).
        out: the model directory to write.
        layout: ``"authors"`` (AFLoc) or ``"gloria"``.
        margin: NaN border in model pixels; default: the layout's (14 for AFLoc, as the authors' inference always
            applies; 0 for GLoRIA, whose input is really cropped).
        similarity: ``"dot"`` (reference) or ``"cosine"`` for heatmaps and zero-shot scores through the AFLoc path;
            ``"gloria"`` (GLoRIA layout only): GLoRIA's own word-attention maps and zero-shot scores, as published.
        num_attention_heads: BERT head count; needed when no ``config.json`` is next to the tokenizer and the hidden
            size is not one of the published BERT family's (``layouts.STANDARD_BERT_HEADS``).
        overwrite: allow writing into a non-empty ``out``.

    Raises:
        ConversionError: wrong layout, missing / mismatching tokenizer, inconsistent shapes.
        afloc.convert.safe_pickle.UnsafeCheckpointError: the pickle would run code.
        afloc.convert.safe_pickle.CorruptCheckpointError: truncated or corrupt file.
    """
    if layout not in LAYOUTS:
        raise ConversionError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    spec = LAYOUTS[layout]
    path, out = Path(checkpoint).expanduser(), Path(out).expanduser()
    if not path.is_file():
        raise ConversionError(f"checkpoint {str(path)!r} does not exist")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not overwrite)):
        raise ConversionError(f"output {out} exists and is not an empty directory (pass overwrite / --overwrite)")
    if similarity == "gloria" and layout != "gloria":
        raise ConversionError("similarity 'gloria' is GLoRIA's own scoring: it needs the gloria layout")
    margin = spec.margin if margin is None else margin
    localization = LocalizationConfig(
        similarity=similarity, smoothing_sigma=1.5, margin=margin, prompt_rule="reference"
    )
    zero_shot = ZeroShotConfig(similarity=similarity)
    report_tokenizer, hints = load_reference_tokenizer(tokenizer)
    lazy, dropped, source = read_state_dict(path, spec)
    with source:
        embeddings = lazy.get("text_encoder.bert.embeddings.word_embeddings.weight")
        if embeddings is not None and len(report_tokenizer.tokenizer) != embeddings.shape[0]:
            raise ConversionError(
                f"the tokenizer {tokenizer!r} has {len(report_tokenizer.tokenizer)} tokens but the checkpoint's "
                f"word-embedding matrix has {embeddings.shape[0]} rows: it is not the tokenizer this model was "
                "trained with (both methods use Bio_ClinicalBERT's 28996-entry vocabulary)"
            )
        bert = infer_bert_config(lazy, path, hints, num_attention_heads)
        heads_from = bert.pop("_heads_from")
        if heads_from.startswith("assumed"):
            logger.warning("attention heads %s", heads_from)
        try:
            settings = text_settings(getattr(source, "data", {}).get("hyper_parameters")
                                     if isinstance(getattr(source, "data", None), dict) else None,
                                     bert["hidden_size"])  # fmt: skip
        except ValueError as error:
            raise ConversionError(f"{path}: {error}") from None
        for line in settings:
            if "assumed" in line:
                logger.warning("text setting %s", line)
        backbone = infer_backbone(lazy, path)
        width = lazy["image_encoder.global_projection.weight"].shape[0]
        if width != bert["hidden_size"]:
            raise ConversionError(
                f"{path}: the image heads project to {width} but the BERT is {bert['hidden_size']} wide; the joint "
                "space must be the BERT's hidden size"
            )
        state = source.materialize(lazy)
    config = AFLocConfig(
        image=ImageEncoderConfig(
            backbone=backbone, image_size=IMAGE_SIZE, internal_size=INTERNAL_SIZE, shallow_head=spec.shallow_head
        ),
        text=TextEncoderConfig(
            name_or_path=tokenizer, last_n_layers=LAST_N_LAYERS, max_length=MAX_LENGTH, bert_config=bert
        ),
        loss=LossConfig() if spec.shallow_head else LossConfig(sentence_weight=0.0, word_level="deep"),
    )
    model = AFLoc(config).eval()
    try:
        load_state_dict_strict(model, state)
    except ValueError as error:
        raise ConversionError(f"{path}: the weights do not fit the {layout} architecture: {error}") from error
    result = ConversionResult(out, layout, backbone, bert, dropped, sorted(source.placeholders), _sha256(path))
    result.text_settings = [*settings, f"num_attention_heads = {bert['num_attention_heads']} ({heads_from})"]
    card = _card(out.name, spec, path, result, localization)
    # the pixels the authors' inference feeds the network: their 8-bit resize and their short-side rule
    preprocessing = Preprocessing(
        image_size=spec.resize_to,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        resize_8bit=True,
        size_rule="reference",
        crop_size=spec.crop_to,
    )
    save_pretrained(model, out, report_tokenizer, preprocessing, localization, card, zero_shot=zero_shot)
    load_pretrained(out)  # the directory must load back before we report success
    logger.info("wrote %s (%s layout, dropped %d unused keys)", out, layout, len(dropped))
    return result


def _one_line(error: Exception, limit: int = 2000) -> str:
    """A failure as one line: our ValueErrors as they are (lines joined), anything else by type and a short text."""
    if isinstance(error, ValueError):
        text = "; ".join(line.strip() for line in str(error).splitlines() if line.strip())
    else:
        detail = " ".join(str(error).split())[:200]
        text = f"could not convert the checkpoint: unexpected {type(error).__name__}"
        text += f" ({detail})" if detail else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m afloc.convert",
        description="Convert a released AFLoc or GLoRIA Lightning checkpoint into a model directory (reference "
        "preset). The checkpoint's pickle is read without running any of its code.",
        epilog="example:\n  python -m afloc.convert authors Pretrained_CXR.ckpt --tokenizer Bio_ClinicalBERT/ "
        "--out models/afloc_cxr\n  python app.py --model models/afloc_cxr",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="layout", required=True, metavar="{authors,gloria}")
    for name, help_text in (
        ("authors", "the AFLoc authors' Pretrained_CXR.ckpt / Pretrained_Fundus.ckpt"),
        ("gloria", "a GLoRIA checkpoint (baseline: deep and global levels only)"),
    ):
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("checkpoint", type=Path, help="the .ckpt file")
        sub.add_argument(
            "--tokenizer",
            required=True,
            help="directory holding Bio_ClinicalBERT's vocab.txt (and ideally its config.json), or the hub id "
            "emilyalsentzer/Bio_ClinicalBERT (downloaded when online)",
        )
        sub.add_argument("--out", type=Path, required=True, help="model directory to write")
        sub.add_argument(
            "--margin",
            type=int,
            default=None,
            help=f"NaN border in model pixels (default: {LAYOUTS[name].margin}; AFLoc's inference applies "
            f"{REFERENCE_MARGIN}, GLoRIA's input is really cropped)",
        )
        sub.add_argument(
            "--similarity",
            choices=SIMILARITIES,
            default="dot",
            help="heatmap / zero-shot similarity: dot = reference (default), cosine = the documented better option, "
            "gloria = GLoRIA's own word-attention maps and zero-shot scores (gloria layout)",
        )
        sub.add_argument(
            "--num-attention-heads",
            type=int,
            help="BERT heads (default: the config.json next to the vocabulary, else the published BERT sizes only)",
        )
        sub.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = convert_checkpoint(
            args.checkpoint,
            args.tokenizer,
            args.out,
            args.layout,
            margin=args.margin,
            similarity=args.similarity,
            num_attention_heads=args.num_attention_heads,
            overwrite=args.overwrite,
        )
    except Exception as error:  # untrusted input: one readable line and exit code 1, never a traceback
        logger.debug("conversion failed", exc_info=True)
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 1
    print(
        f"Converted {args.checkpoint} -> {result.directory}\n"
        f"  demo:       python app.py --model {result.directory}\n"
        f"  evaluation: python -m training evaluate --model {result.directory} --dataset ms-cxr "
        "--annotations MS_CXR_Local_Alignment_v1.1.json --images /data/mimic-cxr-jpg --out results/converted "
        "--box-rule reference"
    )
    return 0
