"""Benchmark: how far trivial, prompt-blind heatmaps get on PhantomFundus lesion localization (difficulty check).

The same baselines and metrics as ``benchmarks/phantom_baselines.py`` (PhantomCXR), on ``--n`` generated test
photographs: uniform ``random``; ``centre prior`` (Gaussian, sigma = size / 6); ``brightest region`` and ``darkest
region`` (the luminance blurred at lesion scale, sigma = size / 32); ``kind oracle`` (the mean mask of each
lesion kind's boxes over ``--n`` train photographs, region ignored). Every heatmap is min-maxed to ``[-1, 1]`` first.
Scores are per lesion against its boxes (the union of the lesion's box masks: what ``training evaluate`` scores,
since a cluster of exudates or microaneurysms is boxed as a group): pointing game, IoU averaged over thresholds
0.1-0.5, signed CNR. The pointing game against the exact lesion pixels is reported too (much lower: the pixels
of a cluster are sparse).

Also scored, separately (anatomy, not a lesion): the optic disc against its box, which the brightest region finds
by design. Also reports the generation speed (sample + render, one thread) of PhantomFundus and, measured in the
same run for comparison, of PhantomCXR.

Usage::

    python benchmarks/phantom_fundus_baselines.py [--n 1000] [--size 256] [--seed 0] [--out results.md|.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from afloc.localization import scale_to_unit_range  # noqa: E402
from afloc.metrics import macro_average, pointing_game  # noqa: E402
from benchmarks.phantom_baselines import BASELINES, METRICS, centre_prior, score  # noqa: E402
from training.phantoms.fundus.render import render_fundus_case  # noqa: E402
from training.phantoms.fundus.schema import LESION_KINDS, sample_fundus_case  # noqa: E402


def generate(n: int, size: int, seed: int, split: str, desc: str):
    """``(index, case, image, cpu seconds of sample + render)`` for ``n`` photographs of ``split``."""
    for index in tqdm(range(n), desc=desc, leave=False):
        start = time.process_time()
        rng = np.random.default_rng([seed, index])
        case = sample_fundus_case(rng, f"{split}_{index:06d}", split)
        image = render_fundus_case(case, size, rng)
        yield index, case, image, time.process_time() - start


def cxr_speed(n: int, size: int, seed: int) -> float:
    """PhantomCXR images per CPU second (sample_case + render_case), measured now for a like-for-like comparison."""
    from training.phantoms.render import render_case
    from training.phantoms.schema import sample_case

    start = time.process_time()
    for index in range(n):
        rng = np.random.default_rng([seed, index])
        render_case(sample_case(rng, f"c{index}", "test"), size, rng)
    return n / (time.process_time() - start)


def box_mask(boxes: list[list[float]], size: int) -> np.ndarray:
    """Union of ``[x, y, w, h]`` pixel boxes as a boolean ``[size, size]`` mask."""
    mask = np.zeros((size, size), bool)
    for x, y, w, h in boxes:
        mask[int(round(y)) : int(round(y + h)), int(round(x)) : int(round(x + w))] = True
    return mask


def evaluate(n: int, size: int, seed: int) -> dict:
    sums = {kind: np.zeros((size, size)) for kind in LESION_KINDS}
    counts = dict.fromkeys(LESION_KINDS, 0)
    seconds = 0.0
    for _, case, _, cpu in generate(n, size, seed + 1_000_003, "train", "train photographs (oracle)"):
        seconds += cpu
        for lesion in case.findings:
            sums[lesion.kind] += box_mask(lesion.boxes, size)
            counts[lesion.kind] += 1
    stacked = np.stack([sums[k] / max(counts[k], 1) for k in LESION_KINDS])
    oracle = dict(zip(LESION_KINDS, scale_to_unit_range(stacked), strict=True))
    centre = scale_to_unit_range(centre_prior(size)[None])[0]
    kinds, regions = [], []
    values = {b: {m: [] for m in METRICS} for b in BASELINES}
    pixel_hits = {b: [] for b in BASELINES}
    disc = {b: {m: [] for m in METRICS} for b in BASELINES[:4]}
    for index, case, image, cpu in generate(n, size, seed, "test", "test photographs"):
        seconds += cpu
        noise = np.random.default_rng([seed, index, 7]).random((size, size))
        luminance = image @ np.array([0.299, 0.587, 0.114], np.float32)
        blurred = cv2.GaussianBlur(luminance, (0, 0), size / 32)
        maps = dict(zip(BASELINES[:4], scale_to_unit_range(np.stack([noise, centre, blurred, -blurred])), strict=True))
        disc_mask = box_mask([case.disc_box], size)
        for baseline in BASELINES[:4]:
            for metric, value in score(maps[baseline], disc_mask).items():
                disc[baseline][metric].append(value)
        for lesion in case.findings:
            kinds.append(lesion.kind)
            regions.append(lesion.region)
            for baseline in BASELINES:
                heatmap = oracle[lesion.kind] if baseline == "kind oracle" else maps[baseline]
                for metric, value in score(heatmap, box_mask(lesion.boxes, size)).items():
                    values[baseline][metric].append(value)
                pixel_hits[baseline].append(pointing_game(heatmap, lesion.mask))
    results = {"n_cases": n, "size": size, "seed": seed, "n_findings": len(kinds)}
    results["findings_per_kind"] = {k: kinds.count(k) for k in LESION_KINDS}
    results["images_per_second_per_core"] = 2 * n / seconds
    results["cxr_images_per_second_per_core"] = cxr_speed(min(n, 200), size, seed)
    results["baselines"], results["optic_disc"] = {}, {}
    for baseline in BASELINES:
        entry = {}
        for metric in METRICS:
            per_kind, macro = macro_average(np.array(values[baseline][metric]), kinds)
            entry[metric] = {"mean": float(np.nanmean(values[baseline][metric])), "macro": macro, "per_kind": per_kind}
        entry["pointing_game_on_lesion_pixels"] = float(np.nanmean(pixel_hits[baseline]))
        results["baselines"][baseline] = entry
    for baseline in BASELINES[:4]:
        results["optic_disc"][baseline] = {m: float(np.nanmean(disc[baseline][m])) for m in METRICS}
    return results


def markdown(results: dict) -> str:
    lines = [
        f"PhantomFundus prompt-blind baselines: {results['n_cases']} test photographs ({results['n_findings']} "
        f"lesion findings), size {results['size']}, seed {results['seed']}; oracle from {results['n_cases']} train "
        "photographs.",
        f"Generation (sample + render, 1 thread): PhantomFundus {results['images_per_second_per_core']:.1f} images/s, "
        f"PhantomCXR {results['cxr_images_per_second_per_core']:.1f} images/s (same run).",
        "",
        "| baseline | pointing game | PG macro | IoU mean | IoU macro | CNR | CNR macro | PG on lesion pixels |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for baseline, entry in results["baselines"].items():
        cells = [f"{entry[m]['mean']:.3f} | {entry[m]['macro']:.3f}" for m in METRICS]
        cells.append(f"{entry['pointing_game_on_lesion_pixels']:.3f}")
        lines.append(f"| {baseline} | " + " | ".join(cells) + " |")
    kinds = [k for k in LESION_KINDS if results["findings_per_kind"][k]]
    lines += ["", "Pointing game per kind:", "", "| baseline | " + " | ".join(kinds) + " |"]
    lines.append("|---" * (len(kinds) + 1) + "|")
    lines.append("| findings | " + " | ".join(str(results["findings_per_kind"][k]) for k in kinds) + " |")
    for baseline, entry in results["baselines"].items():
        per_kind = entry["pointing_game"]["per_kind"]
        lines.append(f"| {baseline} | " + " | ".join(f"{per_kind[k]:.3f}" for k in kinds) + " |")
    lines += ["", "Optic disc (anatomy, its box; not a lesion):", "", "| baseline | pointing game | IoU mean | CNR |"]
    lines.append("|---|---|---|---|")
    for baseline, entry in results["optic_disc"].items():
        lines.append(f"| {baseline} | " + " | ".join(f"{entry[m]:.3f}" for m in METRICS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="test photographs (and train photographs for the oracle)")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="also write the results: .json (all numbers) or Markdown")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error(f"--n must be >= 1, got {args.n}")
    cv2.setNumThreads(1)  # speed is reported per core
    results = evaluate(args.n, args.size, args.seed)
    text = markdown(results)
    print(text)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) if args.out.suffix == ".json" else text + "\n")
    return results


if __name__ == "__main__":
    main()
