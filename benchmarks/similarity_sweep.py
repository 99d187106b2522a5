"""Heatmap similarity (dot / cosine) x smoothing sigma on PhantomCXR validation studies, scored like training.

    python benchmarks/similarity_sweep.py --model RUN/checkpoints/last.ckpt \\
        --corpus data/phantom20k --split val --n 300
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc import AFLocPredictor, load_pretrained  # noqa: E402
from afloc.localization.heatmaps import LocalizationConfig  # noqa: E402
from training.callbacks import summarize_scores  # noqa: E402
from training.evaluation.datasets import read_phantom  # noqa: E402
from training.evaluation.protocol import HeatmapSource, ProtocolConfig, evaluate_localization  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory or our .ckpt")
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.0, 0.6, 1.0])
    args = parser.parse_args(argv)
    bundle = load_pretrained(args.model)
    samples = read_phantom(args.corpus, args.split).samples[: args.n]
    print("| similarity | sigma | pointing game | IoU | CNR | side mass |\n|---|---|---|---|---|---|")
    for similarity in ("dot", "cosine"):
        for sigma in args.sigmas:
            config = LocalizationConfig(similarity=similarity, smoothing_sigma=sigma)
            predictor = AFLocPredictor(bundle.model, bundle.tokenizer, bundle.preprocessing, config, device="cpu")
            records, _ = evaluate_localization(
                samples, HeatmapSource(predictor=predictor), ProtocolConfig(space="native"), workers=0, progress=False
            )
            s = summarize_scores(records)
            print(
                f"| {similarity} | {sigma:g} | {s['pointing_game']:.3f} | {s['iou']:.3f} | {s['cnr']:.2f} | "
                f"{s['side_mass']:.3f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
