"""Why IoU moves: the thresholded heatmap's area against the ground truth's, with precision and recall.

    python benchmarks/heatmap_area.py --model MODEL_DIR [--model OTHER ...] --corpus data/phantom20k \\
        --split val --n 300 [--smoothing-sigma S]

For each model, the same samples are scored by the evaluation protocol (native space, heatmaps on the original
pixels) and, at each IoU threshold t, the table gives the mean over samples of: the predicted area (pixels of
the unit-scaled heatmap above t) divided by the ground-truth area, precision (share of the predicted pixels
inside the ground truth) and recall (share of the ground truth predicted), and the mean IoU; all are means over
samples (not the macro over finding kinds of `training evaluate`). A model whose maps get peakier shows a smaller
area ratio and a higher precision at the same threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc import AFLocPredictor  # noqa: E402
from afloc.localization.metrics import THRESHOLDS  # noqa: E402
from training.evaluation.datasets import read_phantom  # noqa: E402
from training.evaluation.protocol import HeatmapSource, ProtocolConfig, evaluate_localization  # noqa: E402


def area_statistics(heatmap: np.ndarray, truth: np.ndarray, thresholds=THRESHOLDS) -> np.ndarray:
    """``[T, 3]``: predicted area / true area, precision, recall at each threshold (NaN where undefined)."""
    valid = ~np.isnan(heatmap)
    values, mask = heatmap[valid], truth[valid]
    n_true = mask.sum()
    out = np.full((len(thresholds), 3), np.nan)
    if n_true == 0:
        return out
    for k, t in enumerate(thresholds):
        predicted = values > t
        n_predicted = predicted.sum()
        hits = (predicted & mask).sum()
        out[k] = n_predicted / n_true, hits / n_predicted if n_predicted else np.nan, hits / n_true
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="model directory (repeatable)")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=300, help="first N samples of the split")
    parser.add_argument("--smoothing-sigma", type=float, default=None, help="override every model's sigma")
    args = parser.parse_args(argv)
    samples = read_phantom(args.corpus, args.split).samples[: args.n]
    print("| model | threshold | predicted / true area | precision | recall | IoU |")
    print("|---|---|---|---|---|---|")
    for model in args.model:
        predictor = AFLocPredictor.from_pretrained(model, device="cpu")
        if args.smoothing_sigma is not None:
            predictor.localization = dataclasses.replace(predictor.localization, smoothing_sigma=args.smoothing_sigma)
        rows: list[np.ndarray] = []
        records, _ = evaluate_localization(
            samples,
            HeatmapSource(predictor=predictor),
            ProtocolConfig(space="native"),
            workers=0,
            progress=False,
            on_heatmap=lambda sample, record, heatmap, truth, rows=rows: rows.append(area_statistics(heatmap, truth)),
        )
        stats = np.nanmean(np.stack(rows), axis=0)
        for k, t in enumerate(THRESHOLDS):
            iou = np.nanmean([r[f"iou@{t:g}"] for r in records])
            ratio, precision, recall = stats[k]
            print(f"| {Path(model).name} | {t:g} | {ratio:.2f} | {precision:.3f} | {recall:.3f} | {iou:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
