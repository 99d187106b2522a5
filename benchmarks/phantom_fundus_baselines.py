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

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from afloc.localization.heatmaps import scale_to_unit_range  # noqa: E402
from afloc.localization.metrics import pointing_game  # noqa: E402
from benchmarks.phantom_baselines import (  # noqa: E402
    BASELINES,
    METRICS,
    blind_maps,
    centre_prior,
    generate,
    kind_oracle,
    kind_table,
    metric_cells,
    run,
    score,
    summarize,
)
from training.phantoms.fundus.render import render_fundus_case  # noqa: E402
from training.phantoms.fundus.schema import LESION_KINDS, sample_fundus_case  # noqa: E402

FUNDUS = {"sample": sample_fundus_case, "render": render_fundus_case}  # generate() PhantomFundus photographs


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
    oracle, seconds = kind_oracle(
        n,
        size,
        seed,
        LESION_KINDS,
        lambda lesion: box_mask(lesion.boxes, size),
        "train photographs (oracle)",
        **FUNDUS,
    )
    centre = scale_to_unit_range(centre_prior(size)[None])[0]
    kinds, regions = [], []
    values = {b: {m: [] for m in METRICS} for b in BASELINES}
    pixel_hits = {b: [] for b in BASELINES}
    disc = {b: {m: [] for m in METRICS} for b in BASELINES[:4]}
    for index, case, image, cpu in generate(n, size, seed, "test", "test photographs", **FUNDUS):
        seconds += cpu
        luminance = image @ np.array([0.299, 0.587, 0.114], np.float32)
        maps = blind_maps(luminance, centre, seed, index)
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
    results["baselines"], results["optic_disc"] = summarize(values, kinds), {}
    for baseline, entry in results["baselines"].items():
        entry["pointing_game_on_lesion_pixels"] = float(np.nanmean(pixel_hits[baseline]))
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
        cells = [*metric_cells(entry), f"{entry['pointing_game_on_lesion_pixels']:.3f}"]
        lines.append(f"| {baseline} | " + " | ".join(cells) + " |")
    lines += kind_table(results, LESION_KINDS)
    lines += ["", "Optic disc (anatomy, its box; not a lesion):", "", "| baseline | pointing game | IoU mean | CNR |"]
    lines.append("|---|---|---|---|")
    for baseline, entry in results["optic_disc"].items():
        lines.append(f"| {baseline} | " + " | ".join(f"{entry[m]:.3f}" for m in METRICS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    n_help = "test photographs (and train photographs for the oracle)"
    return run(argv, __doc__.split("\n\n")[0], evaluate, markdown, n_help)


if __name__ == "__main__":
    main()
