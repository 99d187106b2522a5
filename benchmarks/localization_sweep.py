"""Localization settings sweep on a PhantomCXR split: pointing game, IoU, CNR and side mass of one model's
heatmaps for each (similarity, smoothing sigma, shallow weight), images encoded once.

Used to choose the bundled model's heatmap smoothing on the validation split::

    python benchmarks/localization_sweep.py --model assets/models/afloc_phantomcxr_r10 --corpus data/phantom20k \\
        --split val --n 200
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc import AFLocPredictor  # noqa: E402
from afloc.localization.heatmaps import LocalizationConfig  # noqa: E402
from training.evaluation import datasets  # noqa: E402
from training.evaluation.protocol import (  # noqa: E402
    HeatmapSource,
    ProtocolConfig,
    iterate_encoded,
    sample_heatmap,
    score_heatmap,
    side_mass,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory or our .ckpt")
    parser.add_argument("--corpus", required=True, help="PhantomCXR corpus folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=200, help="first N samples of the split")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[1.5, 0.6, 0.0])
    parser.add_argument("--shallow-weights", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    args = parser.parse_args(argv)

    predictor = AFLocPredictor.from_pretrained(args.model, device="cpu")
    samples = datasets.read_phantom(args.corpus, split=args.split).samples[: args.n]
    source = HeatmapSource(predictor)
    encoded = [item for item in iterate_encoded(samples, source, 32, 0, False) if item[3] is None]
    protocol = ProtocolConfig()
    print(f"{args.model} on {len(encoded)} {args.split} samples")
    print("| similarity | sigma | shallow weight | pointing game | IoU | CNR | side mass |")
    print("|---|---|---|---|---|---|---|")
    for similarity, sigma, shallow in itertools.product(("dot", "cosine"), args.sigmas, args.shallow_weights):
        settings = {"similarity": similarity, "smoothing_sigma": sigma, "shallow_weight": shallow}
        predictor.localization = LocalizationConfig(**{**predictor.localization.to_dict(), **settings})
        records = []
        for sample, image, mapping, _ in encoded:
            heatmap, truth = sample_heatmap(source, image, sample, mapping, protocol)
            record = score_heatmap(heatmap, truth, protocol.thresholds)
            record["side"] = side_mass(heatmap, sample.phrase, mapping.left + mapping.resized_width / 2)
            records.append(record)

        def mean(key: str, records=records) -> float:
            return float(np.nanmean([r[key] for r in records]))

        print(
            f"| {similarity} | {sigma:g} | {shallow:g} | {mean('pointing_game'):.3f} | {mean('iou_mean'):.3f} | "
            f"{mean('cnr'):.2f} | {mean('side'):.2f} |"
        )


if __name__ == "__main__":
    main()
