"""Benchmark: how much each rule of the paper preset moves the numbers (issue #26, docs/evaluation_protocol.md).

Evaluates one source (a model or a baseline) on one dataset under ``--preset paper`` (every rule of the authors'
released evaluation), then with one rule at a time set back to ours, then entirely ours, and prints each run's
headline numbers and its difference from the preset:

* ``margin``: 0 instead of 14 (ours for our own models; converted authors' models keep 14);
* ``box rule``: pixel centres in original pixels (ours) instead of the authors' flooring on the model grid (with the
  union as CNR region: box counts exist on the reference grid only);
* ``CNR regions``: the union of a phrase's boxes instead of pixels of exactly one box;
* ``flat-map CNR``: NaN instead of 0 when a map has no variance inside nor outside;
* ``phrase case``: phrases grouped as written instead of lower-cased;
* ``aggregation``: ``nanmean`` over thresholds instead of the plain mean.

Usage::

    python benchmarks/paper_preset.py --dataset yolo --images ../shared/data/cxr/tbx11k_train/images \\
        --annotations ../shared/data/cxr/tbx11k_train/labels \\
        [--model assets/models/afloc_phantomcxr_r10 | --baseline center]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from training.evaluation.api import evaluate_dataset  # noqa: E402
from training.evaluation.protocol import ProtocolConfig  # noqa: E402
from training.evaluation.report import headline  # noqa: E402

PRESET = ProtocolConfig.paper()
VARIANTS = {
    "paper preset": PRESET,
    "margin 0": dataclasses.replace(PRESET, margin=0),
    "box rule: centre": dataclasses.replace(PRESET, box_rule="centre", cnr_regions="union"),
    "CNR regions: union": dataclasses.replace(PRESET, cnr_regions="union"),
    "flat-map CNR: NaN": dataclasses.replace(PRESET, flat_cnr="nan"),
    "phrases as written": dataclasses.replace(PRESET, phrase_case="as-is"),
    "aggregation: nanmean": dataclasses.replace(PRESET, aggregation="nanmean"),
    "ours (all of the above)": ProtocolConfig(),
}
METRICS = (("iou", "IoU"), ("dice", "Dice"), ("cnr", "CNR"), ("pointing_game", "PG"))


def affected(args: argparse.Namespace) -> str:
    """How many samples each data-dependent rule can touch: boxes of one phrase that overlap (CNR regions), phrases of
    one image that differ only in case (grouping)."""

    from training.evaluation.datasets import registry
    from training.evaluation.datasets.base import group_phrases_lowercase, read_image_size
    from training.evaluation.protocol import reference_box_mask

    samples = registry.read_dataset(args.dataset, args.annotations, args.images, args.masks, None, args.split).samples
    samples = samples[: args.limit] if args.limit else samples
    overlapping = 0
    for sample in samples:
        if len(sample.boxes) > 1:
            height, width = sample.image_size or read_image_size(sample.image_path)
            overlapping += int((reference_box_mask(sample.boxes, height, width, 224, counts=True) > 1).any())
    merged = len(samples) - len(group_phrases_lowercase(samples))
    return (f"{len(samples)} samples: {overlapping} with overlapping boxes of one phrase (224 grid), {merged} merged "
            "by lower-cased phrase grouping")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model")
    source.add_argument("--baseline", choices=("center", "uniform", "random"))
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--images")
    parser.add_argument("--annotations")
    parser.add_argument("--masks")
    parser.add_argument("--split")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--n-resamples", type=int, default=200)
    args = parser.parse_args(argv)
    if args.model:
        from afloc import AFLocPredictor

        heatmaps = AFLocPredictor.from_pretrained(args.model)
    else:
        heatmaps = args.baseline
    rows, reference = [], None
    for name, config in VARIANTS.items():
        result = evaluate_dataset(heatmaps, args.dataset, annotations=args.annotations, images=args.images,
                                  masks=args.masks, split=args.split, protocol=config, limit=args.limit,
                                  n_resamples=args.n_resamples)  # fmt: skip
        values = {metric: headline(result.summary, metric)["mean"] for metric, _ in METRICS}
        values["iou_sample_mean"] = result.summary["iou_mean"]["macro"]
        values["n"] = len(result.records)
        reference = reference or values
        rows.append((name, values))

    def cell(value, base, digits=3):
        if value is None or not math.isfinite(value):
            return "n/a"
        delta = "" if base is None or not math.isfinite(base) or value is base else f" ({value - base:+.{digits}f})"
        return f"{value:.{digits}f}{delta}"

    print(affected(args))
    print()
    print("| rules | samples | IoU | Dice | CNR | PG | IoU, mean of per-sample means |")
    print("|---|---|---|---|---|---|---|")
    for name, values in rows:
        base = None if values is reference else reference
        cells = [cell(values[m], None if base is None else base[m], 2 if m == "cnr" else 3) for m, _ in METRICS]
        sample_mean = cell(values["iou_sample_mean"], None if base is None else base["iou_sample_mean"])
        print(f"| {name} | {values['n']} | {' | '.join(cells)} | {sample_mean} |")


if __name__ == "__main__":
    main()
