"""Benchmark: predictor latency on CPU with a ResNet-50 + MiniLM model (random image weights).

Measures, each as the median over repeats:

* ``set_image``: decode-free encoding of a 1024x1024 film (pad-resize, normalise, ResNet-50 forward);
* ``new prompt``: a prompt never seen before on the cached image (tokenise, MiniLM forward, similarity,
  smoothing, upsampling, back-projection to 1024x1024);
* ``new threshold``: a cached prompt on the cached image with a new threshold: cache lookup, thresholded mask,
  IoU / Dice / CNR / pointing game against a ground-truth box
  (``afloc.localization.metrics.localization_metrics``) (what the demo recomputes on a slider move);
* ``render``: the overlay with contour for that threshold (afloc.localization.overlay), for information.

Usage::

    python benchmarks/inference_latency.py [--internal-size 299] [--repeats 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc import AFLocConfig, AFLocPredictor, ImageEncoderConfig, build_model, load_tokenizer  # noqa: E402
from afloc.localization.metrics import localization_metrics  # noqa: E402
from afloc.localization.overlay import render_overlay  # noqa: E402

PROMPT_WORDS = [
    "left",
    "right",
    "lower",
    "upper",
    "lobe",
    "pleural",
    "effusion",
    "consolidation",
    "opacity",
    "nodule",
    "mass",
    "apical",
    "pneumothorax",
    "basal",
    "atelectasis",
    "edema",
    "mild",
    "large",
]


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--internal-size", type=int, default=None, help="299 = reference internal resize")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--size", type=int, default=1024, help="side of the test film")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = AFLocConfig(image=ImageEncoderConfig(backbone="resnet50", internal_size=args.internal_size))
    model = build_model(config)
    predictor = AFLocPredictor(model, load_tokenizer(), device="cpu")
    rng = np.random.default_rng(0)
    film = rng.random((args.size, args.size), dtype=np.float32)
    truth = np.zeros(film.shape, bool)
    truth[args.size // 2 : args.size // 2 + args.size // 4, args.size // 8 : args.size // 3] = True

    for _ in range(2):  # warm-up: allocator, thread pools, first-call overheads
        encoded = predictor.set_image(film)
        predictor.localize("warm up prompt")

    set_image = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        encoded = predictor.set_image(film)
        set_image.append(time.perf_counter() - start)

    new_prompt = []
    for k in range(args.repeats):
        words = rng.choice(PROMPT_WORDS, size=4, replace=False)
        prompt = f"{' '.join(words)} number {k}"
        start = time.perf_counter()
        predictor.localize(prompt, image=encoded)
        new_prompt.append(time.perf_counter() - start)

    cached = "left lower lobe consolidation"
    predictor.localize(cached, image=encoded)
    new_threshold, render = [], []
    for k in range(args.repeats):
        threshold = 0.1 + 0.4 * k / max(1, args.repeats - 1)
        start = time.perf_counter()
        heatmap = predictor.localize(cached, image=encoded)
        localization_metrics(heatmap, truth, threshold)
        new_threshold.append(time.perf_counter() - start)
        start = time.perf_counter()
        render_overlay(film, heatmap, threshold=threshold)
        render.append(time.perf_counter() - start)

    rows = [
        ("set_image", set_image, 300),
        ("new prompt", new_prompt, 50),
        ("new threshold", new_threshold, 10),
        ("render overlay", render, None),
    ]
    print(
        f"{datetime.date.today()} {platform.platform()} CPUs={os.cpu_count()} torch={torch.__version__} "
        f"threads={torch.get_num_threads()} ResNet-50 internal_size={args.internal_size} + MiniLM, "
        f"{args.size}x{args.size} film, median of {args.repeats}"
    )
    print("| step | median ms | min ms | target ms |")
    print("|---|---|---|---|")
    for name, samples, target in rows:
        verdict = (
            ""
            if target is None
            else (f"<= {target} (met)" if _median_ms(samples) <= target else f"<= {target} (missed)")
        )
        print(f"| {name} | {_median_ms(samples):.1f} | {1e3 * min(samples):.1f} | {verdict} |")


if __name__ == "__main__":
    main()
