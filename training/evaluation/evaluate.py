"""``python -m training evaluate``: the paper's localization (and zero-shot classification) protocol on a dataset.

Examples::

    python -m training evaluate --model assets/models/X --dataset phantom --images data/phantom20k --out results/x
    python -m training evaluate --baseline center --dataset ms-cxr --annotations MS_CXR_Local_Alignment_v1.1.json \\
        --images /data/mimic-cxr-jpg --out results/center --preset paper
    python -m training evaluate --model M --dataset chexlocalize --annotations gt_segmentations_val.json \\
        --images /data/CheXpert-v1.0 --split valid --out results/val
    python -m training evaluate --model M --dataset chexlocalize --annotations gt_segmentations_test.json \\
        --images /data/CheXpert-v1.0 --split test --out results/test --tuned-thresholds-from results/val

CheXlocalize images are looked up in the CheXpert layout, ``<images>/<split>/patient64541/study1/view1_frontal.jpg``
with ``<split>`` = ``valid`` (CheXpert-v1.0; ``val`` as in the CheXlocalize download is found too) or ``test``.
Without ``--split`` the split is read off the annotation file's name (``gt_segmentations_val.json`` -> valid).
Datasets without splits (all but ``phantom`` and ``chexlocalize``) refuse ``--split``.

``--preset paper`` applies every rule of the authors' released evaluation (docs/evaluation_protocol.md).

Outputs in ``--out``: ``samples.csv``, ``summary.csv``, ``summary.json`` (per category + macro, mean and 95%
bootstrap CI; IoU and Dice by the paper's rule, our per-sample means as ``iou_sample_mean``/``dice_sample_mean``),
``per_category.png``, ``threshold_curves.png`` and ``best_worst.png`` (overlays with ground truth).
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import sys
from pathlib import Path

import numpy as np

from afloc.commands import command
from afloc.localization.heatmaps import SIMILARITIES
from afloc.localization.overlay import render_overlay

from .api import evaluate_dataset
from .datasets import registry
from .datasets.registry import DATASETS
from .protocol import (
    BASELINES,
    PRESETS,
    HeatmapSource,
    ProtocolConfig,
    tune_thresholds,
)


def read_dataset(args: argparse.Namespace):
    """The dataset the command line names (see :mod:`.datasets.registry`)."""
    return registry.read_dataset(args.dataset, args.annotations, args.images, args.masks, args.phrase, args.split)


def best_worst_grid(examples: list[tuple[dict, np.ndarray, np.ndarray]], k: int = 4) -> np.ndarray | None:
    """The k best and k worst samples by IoU mean: overlays with the ground-truth outline, one row each."""
    import cv2

    scored = [e for e in examples if np.isfinite(e[0]["iou_mean"])]
    if not scored:
        return None
    scored.sort(key=lambda e: e[0]["iou_mean"])
    rows = []
    for row in (scored[::-1][:k], scored[:k]):
        tiles = []
        for record, image, heatmap, truth in row:
            tile = render_overlay(image, heatmap, threshold=0.3)
            contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(tile, contours, -1, (0, 255, 0), 2)
            tile = cv2.resize(tile, (224, 224))
            label = f"IoU {record['iou_mean']:.2f} {record['phrase'][:26]}"
            cv2.putText(tile, label, (3, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1, cv2.LINE_AA)
            tiles.append(tile)
        tiles += [np.zeros_like(tiles[0])] * (k - len(tiles))
        rows.append(np.hstack(tiles))
    return np.vstack(rows)


class _Keeper:
    """Keeps the k best and k worst (image, heatmap, truth) triples seen, without holding every heatmap."""

    def __init__(self, k: int = 4) -> None:
        self.k, self.items = k, []

    def __call__(self, sample, record, heatmap, truth) -> None:
        if not np.isfinite(record["iou_mean"]):
            return
        self.items.append((record, sample, heatmap, truth))
        if len(self.items) > 4 * self.k:
            self.items.sort(key=lambda e: e[0]["iou_mean"])
            self.items = self.items[: self.k] + self.items[-self.k :]

    def examples(self, space: str, preprocessing=None):
        """The kept samples' images in the heatmaps' space (model space: pad-resized, and cropped when the
        ``preprocessing`` crops, as the model saw them)."""
        from afloc.imaging.io import load_image
        from afloc.imaging.transforms import pad_resize

        out = []
        for record, sample, heatmap, truth in self.items:
            image = load_image(sample.image_path)
            if space == "model":
                side = preprocessing.image_size if preprocessing is not None else heatmap.shape[0]
                image, mapping = pad_resize(image, side)
                image = mapping.cropped(getattr(preprocessing, "crop_size", None)).crop(image)
            out.append((record, image, heatmap, truth))
        return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training evaluate", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--model",
        nargs="+",
        help="model directory (save_pretrained) or our .ckpt; several: a map-level ensemble (the mean of their "
        "[-1, 1] maps), each with the heatmap flags below",
    )
    source.add_argument(
        "--baseline",
        choices=[*BASELINES, "kind-oracle", "lung-field"],
        help="a no-training heatmap scored by the same protocol; kind-oracle (phantom only): each finding kind's "
        "mean training mask, blind to the prompt's side and zone and to the image; lung-field: the film's lung "
        "field alone (needs --lung-field)",
    )
    parser.add_argument(
        "--lung-field",
        help="a lung-field folder (python -m training lung-field): gates every model's maps by the film's lung "
        "probabilities, or is the lung-field baseline itself",
    )
    parser.add_argument(
        "--lung-field-threshold",
        type=float,
        default=None,
        help="gate with the lung field thresholded at this probability (1 inside, 0 outside) instead of the "
        "field's own rule (soft unless its lung_field.json sets a threshold)",
    )
    parser.add_argument("--oracle-train", type=int, default=2000, help="training samples the kind oracle averages")
    parser.add_argument("--dataset", required=True, choices=list(DATASETS))
    parser.add_argument("--annotations", help="annotation file (or YOLO label folder)")
    parser.add_argument("--images", help="image folder (PhantomCXR: the corpus folder)")
    parser.add_argument(
        "--masks", help="mask folder (covid-rural, idrid; mask-folder: optional, else class folders under --images)"
    )
    parser.add_argument("--phrase", help="mask-folder: the prompt (default: the class folder's name)")
    parser.add_argument(
        "--split",
        default=None,
        help="phantom: train/val/test (default test); chexlocalize: valid/test (default: from the annotation file "
        "name); other datasets have no splits",
    )
    parser.add_argument("--out", required=True)
    parser.add_argument(
        "--preset",
        choices=["paper"],
        default=None,
        help="paper: every rule of the authors' released evaluation (margin 14, their box rule, CNR regions and "
        "flat-map rule, lower-cased phrase grouping, their aggregation and, beside ours, their interval); "
        "docs/evaluation_protocol.md. Use it to put numbers next to the paper's",
    )
    parser.add_argument(
        "--protocol",
        choices=["reference", "native"],
        default=None,
        help="reference (default): S x S model-space maps; native: original pixels",
    )
    parser.add_argument(
        "--margin",
        type=int,
        default=None,
        help="NaN border in model pixels (reference: 14); default: the model's own (14 for converted authors' "
        "models), 0 for baselines",
    )
    parser.add_argument(
        "--box-rule",
        choices=["centre", "reference"],
        default=None,
        help="boxes -> masks: centre = pixel centres in original pixels, mapped like the image (default); "
        "reference = the authors' flooring rule on the model-space grid (part of --preset paper)",
    )
    parser.add_argument("--prompt", choices=["phrase", "template"], default="phrase")
    parser.add_argument("--template", action="append", help="prompt template with {category} (repeatable)")
    parser.add_argument("--ensemble", action="store_true", help="average heatmaps of phrase + templates")
    parser.add_argument(
        "--prompts-file",
        help='JSON {"category": ["prompt", ...]}: these categories are prompted with their own prompts (averaged)',
    )
    parser.add_argument("--tuned-thresholds-from", help="a val result folder: CheXlocalize per-category thresholds")
    parser.add_argument("--classification", action="store_true", help="also zero-shot AUC (phantom labels)")
    parser.add_argument("--limit", type=int, default=None, help="first N samples only, for a quick look")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default=None)
    parser.add_argument("--image-size", type=int, default=224, help="model-space size for baselines")
    parser.add_argument(
        "--smoothing-sigma",
        type=float,
        default=None,
        help="heatmap smoothing in deep-grid cells instead of the model's own (preprocessing.json); for choosing it "
        "on a validation split",
    )
    parser.add_argument(
        "--similarity",
        choices=SIMILARITIES,
        default=None,
        help="region-prompt similarity instead of the model's own (gloria = GLoRIA's own word-attention map, for "
        "scoring a converted GLoRIA model as published); for choosing it on a validation split",
    )
    parser.add_argument(
        "--zero-shot-similarity",
        choices=SIMILARITIES,
        default=None,
        help="with --classification: zero-shot scores instead of the model's own (gloria = GLoRIA's own "
        "(global + local) / 2 score)",
    )
    parser.add_argument(
        "--shallow-weight",
        type=float,
        default=None,
        help="weight in [0, 1] of the shallow (word-level) map fused with the deep map, instead of the model's own",
    )
    parser.add_argument(
        "--field-of-view",
        action="store_true",
        help="fundus: gate every map by the photograph's field of view (the retina, from its brightness), a model's "
        "or the centre / uniform / random baseline's; for choosing it on a validation split",
    )
    parser.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def _tuned_thresholds(folder: str | None) -> dict[str, float] | None:
    if not folder:
        return None
    path = Path(folder) / "samples.csv"
    if not path.is_file():
        raise ValueError(f"--tuned-thresholds-from: {path} does not exist")
    with path.open(newline="") as handle:
        val = [
            {k: (float(v) if k.startswith("tune_iou@") else v) for k, v in row.items()}
            for row in csv.DictReader(handle)
        ]
    return tune_thresholds(val)


def _category_prompts(path: str | None) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if not path:
        return ()
    try:
        table = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--prompts-file {path}: not a readable JSON file ({error})") from error
    if not isinstance(table, dict) or not all(isinstance(v, list) for v in table.values()):
        raise ValueError(f'--prompts-file {path}: expected {{"category": ["prompt", ...]}}')
    return tuple((str(category), tuple(prompts)) for category, prompts in table.items())


def protocol_config(args: argparse.Namespace) -> ProtocolConfig:
    """The protocol the command line asks for; ``--preset paper`` refuses a flag that contradicts one of its rules."""
    prompts = {
        "prompt_mode": args.prompt,
        "templates": tuple(args.template or ProtocolConfig().templates),
        "ensemble": args.ensemble,
        "category_prompts": _category_prompts(args.prompts_file),
    }
    if args.preset == "paper":
        contradicting = {
            "--protocol native": args.protocol == "native",
            f"--margin {args.margin}": args.margin is not None and args.margin != PRESETS["paper"]["margin"],
            "--box-rule centre": args.box_rule == "centre",
        }
        given = [flag for flag, bad in contradicting.items() if bad]
        if given:
            raise ValueError(f"--preset paper applies the authors' rules; {', '.join(given)} contradicts them: drop it")
        return ProtocolConfig.paper(**prompts)
    return ProtocolConfig(
        space="model" if args.protocol in (None, "reference") else "native",
        margin=args.margin,
        box_rule=args.box_rule or "centre",
        **prompts,
    )


def run(args: argparse.Namespace) -> dict:
    from .report import write_outputs

    config = protocol_config(args)
    overrides = {
        "smoothing_sigma": args.smoothing_sigma,
        "similarity": args.similarity,
        "shallow_weight": args.shallow_weight,
        "field_of_view": True if args.field_of_view and args.model else None,  # a baseline's gate: evaluate_dataset
    }
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if args.zero_shot_similarity and not (args.model and args.classification):
        raise ValueError(
            "--zero-shot-similarity changes a model's zero-shot scores; it needs --model and --classification"
        )
    if overrides and not args.model:
        flags = ", ".join("--" + key.replace("_", "-") for key in overrides)
        raise ValueError(f"{flags} changes a model's heatmaps; it needs --model, not --baseline")
    source = args.baseline
    if args.lung_field_threshold is not None and not args.lung_field:
        raise ValueError("--lung-field-threshold needs --lung-field DIR")
    if args.baseline == "lung-field" and not args.lung_field:
        raise ValueError("--baseline lung-field needs --lung-field DIR")
    if args.lung_field and args.baseline not in (None, "lung-field"):
        raise ValueError(
            f"--lung-field gates a model's maps or is the lung-field baseline, not --baseline {args.baseline}"
        )
    lung_field = None
    if args.lung_field:
        from afloc.localization.lung_field import LungField

        lung_field = LungField.load(args.lung_field)
        if args.lung_field_threshold is not None:
            lung_field = lung_field.with_threshold(args.lung_field_threshold)
    if args.model:
        registry.check_arguments(args.dataset, args.annotations, args.images, args.masks, args.split)  # before loading
        from afloc import AFLocPredictor

        if len(args.model) > 1 and args.classification:
            raise ValueError("--classification scores one model; give a single --model")
        predictors = []
        for path in args.model:
            predictor = AFLocPredictor.from_pretrained(path, device=args.device)
            if overrides:
                # LocalizationConfig validates the values (e.g. a shallow weight outside [0, 1])
                predictor = predictor.with_localization(**overrides)
            if args.zero_shot_similarity:
                predictor = predictor.with_zero_shot(similarity=args.zero_shot_similarity)
            if lung_field is not None:
                predictor = predictor.with_lung_field(lung_field)
            predictors.append(predictor)
        source = predictors[0] if len(predictors) == 1 else predictors
    keeper = _Keeper()
    evaluation = evaluate_dataset(
        source,
        args.dataset,
        annotations=args.annotations,
        images=args.images,
        masks=args.masks,
        phrase=args.phrase,
        split=args.split,
        protocol=config,
        limit=args.limit,
        batch_size=args.batch_size,
        workers=args.workers,
        n_resamples=args.n_resamples,
        seed=args.seed,
        tuned_thresholds=_tuned_thresholds(args.tuned_thresholds_from),
        oracle_train=args.oracle_train,
        image_size=args.image_size,
        progress=not args.quiet,
        on_heatmap=keeper,
        lung_field=lung_field,
        field_of_view=bool(args.field_of_view and not args.model),
    )
    records, summary, samples, source = evaluation.records, evaluation.summary, evaluation.samples, evaluation.source
    if args.classification:
        summary["classification"] = classification_summary(args, source, samples)
    meta = {
        "model": " + ".join(Path(path).name for path in args.model) if args.model else f"baseline:{args.baseline}",
        "model_path": (args.model[0] if len(args.model) == 1 else args.model) if args.model else None,
        "dataset": args.dataset,
        "preset": config.preset,
        "protocol": "reference" if config.space == "model" else "native",
        "margin": config.margin if config.margin is not None else _model_margin(source),
        "smoothing_sigma": source.predictor.localization.smoothing_sigma if args.model else None,
        "similarity": source.predictor.localization.similarity if args.model else None,
        "shallow_weight": source.predictor.localization.shallow_weight if args.model else None,
        "field_of_view": source.predictor.localization.field_of_view if args.model else bool(args.field_of_view),
        "zero_shot_similarity": source.predictor.zero_shot.similarity if args.model and args.classification else None,
        "lung_field": args.lung_field,
        "lung_field_threshold": args.lung_field_threshold,
        "box_rule": config.box_rule,
        "cnr_regions": config.cnr_regions,
        "flat_cnr": config.flat_cnr,
        "phrase_case": config.phrase_case,
        "aggregation": config.aggregation,
        "prompt": "ensemble" if args.ensemble else args.prompt,
        "category_prompts": {category: list(prompts) for category, prompts in config.category_prompts} or None,
        "n_samples": len(records),
        "missing_images": len(evaluation.missing),
        "unreadable_images": len(evaluation.unreadable),
        "skipped": evaluation.skipped,
        "date": datetime.date.today().isoformat(),
        "command": "python -m training evaluate " + " ".join(sys.argv[2:] if sys.argv[1:2] == ["evaluate"] else []),
    }
    out = Path(args.out)
    write_outputs(out, records, summary, meta)
    grid = best_worst_grid(keeper.examples(config.space, getattr(source, "preprocessing", None)))
    if grid is not None:
        from afloc.localization.overlay import save_png

        save_png(out / "best_worst.png", grid)
    return {"meta": meta, "summary": summary}


def _model_margin(source: HeatmapSource) -> int:
    return source.predictor.localization.margin if source.predictor is not None else 0


def classification_summary(args: argparse.Namespace, source: HeatmapSource, samples) -> dict:
    """Zero-shot AUC per finding on PhantomCXR labels (manifest ``labels`` of the split's images)."""
    from afloc.imaging.io import load_image
    from training.manifest import read_manifest
    from training.phantoms.schema import FINDING_KINDS

    from .report import summarize_classification

    if args.dataset != "phantom" or source.predictor is None:
        raise ValueError("--classification needs --dataset phantom and a --model")
    records = read_manifest(Path(args.images) / "manifest.csv", split=args.split or "test")
    records = records[: args.limit] if args.limit else records
    findings = {kind: kind.replace("_", " ") for kind in FINDING_KINDS}
    labels = {k: [] for k in findings}
    scores = {k: [] for k in findings}
    for record in records:
        encoded = source.predictor.encode_image(load_image(record.image))
        probabilities = source.predictor.classify(list(findings.values()), image=encoded)
        present = set(record.extra.get("labels", "").split(";"))
        for kind, text in findings.items():
            labels[kind].append(kind in present)
            scores[kind].append(probabilities[text])
    return summarize_classification(
        {k: np.array(v) for k, v in labels.items()}, {k: np.array(v) for k, v in scores.items()}
    )


@command
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    print(headline_text(result["summary"], result["meta"]))
    print(f"wrote {args.out}")
    return 0


def headline_text(localization: dict, meta: dict) -> str:
    """The printout: the headline numbers, named (IoU and Dice by the paper's rule; our per-sample means apart)."""
    from .report import headline

    protocol = "--preset paper (the authors' evaluation rules)" if meta.get("preset") else "ours"
    lines = [f"protocol: {protocol}"]
    for metric, label in (("iou", "IoU"), ("dice", "Dice"), ("cnr", "CNR"), ("pointing_game", "pointing game")):
        cell = headline(localization, metric)
        text = f"{label}: {_number(cell['mean'])} [{_number(cell['ci'][0])}, {_number(cell['ci'][1])}] (ours)"
        if "authors_ci" in cell:
            text += f", [{_number(cell['authors_ci'][0])}, {_number(cell['authors_ci'][1])}] (the authors' interval)"
        lines.append(text)
    for metric, label in (("iou_mean", "IoU"), ("dice_mean", "Dice")):
        lines.append(f"{label}, mean of per-sample means over t (ours): {_number(localization[metric]['macro'])}")
    return "\n".join(lines)


def _number(value) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"
