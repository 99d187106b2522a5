"""Benchmark: how far trivial, prompt-blind heatmaps get on PhantomCXR localization (difficulty check).

Generates ``--n`` test cases in memory (``sample_case(split="test")`` + ``render_case``) and scores, for every
finding, heatmaps that ignore the prompt, with the evaluation metrics of :mod:`afloc.localization.metrics`
(pointing game,
IoU averaged over the thresholds 0.1-0.5, signed CNR); each heatmap is min-maxed to ``[-1, 1]`` with
``afloc.localization.heatmaps.scale_to_unit_range`` first:

* ``random``: uniform noise (seeded per case);
* ``centre prior``: a Gaussian at the image centre (sigma = size / 6);
* ``brightest region``: the image blurred at lesion scale (sigma = size / 32);
* ``darkest region``: the same, negated;
* ``kind oracle``: the mean mask of each finding kind (side and zone ignored) over ``--n`` separately
  generated *train* cases, used for every test finding of that kind: the best a prompt-blind model that
  knows the kind's usual location can do.

A localizer must beat all of these to show that it reads the image *and* the prompt. Target for the data:
no baseline above 0.35 pointing game over all findings. Also reports the generation speed (sample_case +
render_case, one thread).

``benchmarks/phantom_fundus_baselines.py`` reuses this script's functions (case generation, oracle, scores,
tables, command line) with PhantomFundus's generator.

Usage::

    python benchmarks/phantom_baselines.py [--n 1000] [--size 256] [--seed 0] [--out baselines.md|.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from afloc.localization.heatmaps import scale_to_unit_range  # noqa: E402
from afloc.localization.metrics import cnr, macro_average, pointing_game, threshold_metrics  # noqa: E402
from training.phantoms.render import render_case  # noqa: E402
from training.phantoms.schema import FINDING_KINDS, Case, sample_case  # noqa: E402

BASELINES = ("random", "centre prior", "brightest region", "darkest region", "kind oracle")
METRICS = ("pointing_game", "iou_mean", "cnr")


def generate(
    n: int, size: int, seed: int, split: str, desc: str, sample=sample_case, render=render_case
) -> Iterator[tuple[int, Case, np.ndarray, float]]:
    """``(index, case, image, cpu seconds of sample + render)`` for ``n`` cases of ``split``.

    ``sample(rng, case_id, split)`` and ``render(case, size, rng)`` make a case and its image: PhantomCXR's
    ``sample_case`` and ``render_case`` by default (``phantom_fundus_baselines.py`` passes PhantomFundus's).
    """
    for index in tqdm(range(n), desc=desc, leave=False):
        start = time.process_time()
        rng = np.random.default_rng([seed, index])
        case = sample(rng, f"{split}_{index:06d}", split)
        image = render(case, size, rng)
        yield index, case, image, time.process_time() - start


def kind_oracle(
    n: int,
    size: int,
    seed: int,
    kinds: tuple[str, ...] = FINDING_KINDS,
    mask: Callable[[object], np.ndarray] = lambda finding: finding.mask,
    desc: str = "train cases (oracle)",
    **generator,
) -> tuple[dict[str, np.ndarray], float]:
    """The ``kind oracle`` heatmap of each kind and the generation CPU time.

    The heatmap is the mean ``mask(finding)`` (``[size, size]``) of the kind's findings over ``n`` train cases
    (``generator``: ``sample`` and ``render`` for :func:`generate`), min-maxed to ``[-1, 1]``.
    """
    sums = {kind: np.zeros((size, size)) for kind in kinds}
    counts = dict.fromkeys(kinds, 0)
    seconds = 0.0
    for _, case, _, cpu in generate(n, size, seed + 1_000_003, "train", desc, **generator):
        seconds += cpu
        for finding in case.findings:
            sums[finding.kind] += mask(finding)
            counts[finding.kind] += 1
    stacked = np.stack([sums[k] / max(counts[k], 1) for k in kinds])
    return dict(zip(kinds, scale_to_unit_range(stacked), strict=True)), seconds


def centre_prior(size: int) -> np.ndarray:
    coords = np.arange(size) - (size - 1) / 2
    return np.exp(-(coords[:, None] ** 2 + coords[None, :] ** 2) / (2 * (size / 6) ** 2))


def blind_maps(grey: np.ndarray, centre: np.ndarray, seed: int, index: int) -> dict[str, np.ndarray]:
    """The image-only baselines (all but ``kind oracle``) for a ``[size, size]`` greyscale image, in ``[-1, 1]``.

    ``centre`` is the centre prior already min-maxed; the noise is seeded by ``(seed, index)``.
    """
    size = grey.shape[0]
    noise = np.random.default_rng([seed, index, 7]).random((size, size))
    blurred = cv2.GaussianBlur(grey, (0, 0), size / 32)
    return dict(zip(BASELINES[:4], scale_to_unit_range(np.stack([noise, centre, blurred, -blurred])), strict=True))


def score(heatmap: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return {
        "pointing_game": pointing_game(heatmap, mask),
        "iou_mean": threshold_metrics(heatmap, mask)["iou_mean"],
        "cnr": cnr(heatmap, mask),
    }


def summarize(values: dict[str, dict[str, list[float]]], kinds: list[str]) -> dict[str, dict]:
    """Per baseline and metric: the mean over findings, the macro average over kinds and the per-kind means."""
    summary = {}
    for baseline in BASELINES:
        entry = {}
        for metric in METRICS:
            per_kind, macro = macro_average(np.array(values[baseline][metric]), kinds)
            entry[metric] = {"mean": float(np.nanmean(values[baseline][metric])), "macro": macro, "per_kind": per_kind}
        summary[baseline] = entry
    return summary


def evaluate(n: int, size: int, seed: int) -> dict:
    """Scores of every baseline on every finding of ``n`` test cases, and the generation speed."""
    oracle, train_seconds = kind_oracle(n, size, seed)
    centre = scale_to_unit_range(centre_prior(size)[None])[0]
    kinds: list[str] = []
    values = {b: {m: [] for m in METRICS} for b in BASELINES}
    test_seconds = 0.0
    for index, case, image, cpu in generate(n, size, seed, "test", "test cases"):
        test_seconds += cpu
        if not case.findings:
            continue
        maps = blind_maps(image, centre, seed, index)
        for finding in case.findings:
            kinds.append(finding.kind)
            for baseline in BASELINES:
                heatmap = oracle[finding.kind] if baseline == "kind oracle" else maps[baseline]
                for metric, value in score(heatmap, finding.mask).items():
                    values[baseline][metric].append(value)
    results = {"n_cases": n, "size": size, "seed": seed, "n_findings": len(kinds)}
    results["findings_per_kind"] = {k: kinds.count(k) for k in FINDING_KINDS}
    results["images_per_second_per_core"] = 2 * n / (train_seconds + test_seconds)
    results["baselines"] = summarize(values, kinds)
    return results


def metric_cells(entry: dict) -> list[str]:
    """``mean | macro`` table cells of a baseline's :data:`METRICS`."""
    return [f"{entry[m]['mean']:.3f} | {entry[m]['macro']:.3f}" for m in METRICS]


def kind_table(results: dict, all_kinds: Iterable[str]) -> list[str]:
    """Markdown lines: the pointing game of every baseline per kind (the kinds with findings)."""
    kinds = [k for k in all_kinds if results["findings_per_kind"][k]]
    lines = ["", "Pointing game per kind:", "", "| baseline | " + " | ".join(kinds) + " |"]
    lines.append("|---" * (len(kinds) + 1) + "|")
    lines.append("| findings | " + " | ".join(str(results["findings_per_kind"][k]) for k in kinds) + " |")
    for baseline, entry in results["baselines"].items():
        per_kind = entry["pointing_game"]["per_kind"]
        lines.append(f"| {baseline} | " + " | ".join(f"{per_kind[k]:.3f}" for k in kinds) + " |")
    return lines


def markdown(results: dict) -> str:
    lines = [
        f"PhantomCXR prompt-blind baselines: {results['n_cases']} test cases ({results['n_findings']} findings), "
        f"size {results['size']}, seed {results['seed']}; oracle from {results['n_cases']} train cases.",
        f"Generation (sample_case + render_case, 1 thread): {results['images_per_second_per_core']:.1f} images/s.",
        "",
        "| baseline | pointing game | PG macro | IoU mean | IoU macro | CNR | CNR macro |",
        "|---|---|---|---|---|---|---|",
    ]
    for baseline, entry in results["baselines"].items():
        lines.append(f"| {baseline} | " + " | ".join(metric_cells(entry)) + " |")
    lines += kind_table(results, FINDING_KINDS)
    return "\n".join(lines)


def run(
    argv: list[str] | None,
    description: str,
    evaluate: Callable[[int, int, int], dict],
    markdown: Callable[[dict], str],
    n_help: str,
) -> dict:
    """The command line of a baselines script: parse ``argv``, evaluate, print the Markdown, write ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=1000, help=n_help)
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


def main(argv: list[str] | None = None) -> dict:
    return run(argv, __doc__.split("\n\n")[0], evaluate, markdown, "test cases (and train cases for the oracle)")


if __name__ == "__main__":
    main()
