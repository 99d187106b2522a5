"""Choose a model among candidates by how safely each clears the minimum to ship on a held-out split.

The minimum to ship (issue #13) is: above every prompt-blind baseline on every metric, with 95% confidence
intervals that do not overlap. A candidate that clears it on validation by one CI width may still fail on the test
split (session 5's choice did, on IoU). So this rule picks, among the candidates that clear the minimum on the
split they were scored on, the one whose *smallest* margin over the baselines is largest, with each margin in units
of the combined standard error:

    z = (model - baseline) / sqrt(se_model^2 + se_baseline^2),   se = (ci_high - ci_low) / (2 * 1.96)

taken over the metrics (pointing game, IoU, Dice, CNR, side mass) and the baselines. Ties (equal smallest z to two
decimals) go to the higher pointing game.

    python benchmarks/select_model.py --baseline runs/val/kind_oracle --baseline runs/val/center \\
        runs/val/model_a runs/val/model_b ...

Each argument is an output folder of ``python -m training evaluate`` (its ``summary.json``), all scored on the
same split. Prints a table (markdown) and the chosen folder on the last line.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.card import read_summary  # noqa: E402

METRICS = ("pointing_game", "iou_mean", "dice_mean", "cnr", "side_mass")


def read_scores(folder: str | Path) -> dict[str, tuple[float, float]]:
    """``{metric: (value, standard error)}`` from an evaluation folder's ``summary.json``."""
    localization, _ = read_summary(folder)
    scores = {}
    for metric in METRICS:
        entry = localization.get(metric)
        if not entry:
            continue
        value = entry["macro"] if "macro" in entry else entry["mean"]
        low, high = entry["ci"]
        if value is None or low is None or high is None:
            continue
        scores[metric] = (float(value), (float(high) - float(low)) / (2 * 1.96))
    return scores


def margins(model: dict, baseline: dict) -> dict[str, float]:
    """z-margin of the model over one baseline, per metric both have."""
    out = {}
    for metric in METRICS:
        if metric in model and metric in baseline:
            (m, se_m), (b, se_b) = model[metric], baseline[metric]
            spread = math.hypot(se_m, se_b)
            if spread > 0:
                out[metric] = (m - b) / spread
            else:  # two exact values (e.g. a constant baseline): any difference is infinitely many errors
                out[metric] = 0.0 if m == b else math.copysign(math.inf, m - b)
    return out


def clears(model: dict, baseline: dict) -> bool:
    """True when the model's CI lies above the baseline's on every metric both have (the minimum to ship)."""
    for metric in METRICS:
        if metric in model and metric in baseline:
            (m, se_m), (b, se_b) = model[metric], baseline[metric]
            if m - 1.96 * se_m <= b + 1.96 * se_b:
                return False
    return True


def choose(candidates: dict[str, dict], baselines: dict[str, dict]) -> tuple[str | None, list[dict]]:
    """Apply the rule. Returns the chosen name (None when no candidate clears) and one row per candidate."""
    if not candidates:
        raise ValueError("no candidate to choose from")
    if not baselines:
        raise ValueError("at least one --baseline is needed")
    rows = []
    for name, scores in candidates.items():
        per = {b: margins(scores, base) for b, base in baselines.items()}
        smallest = min((z, f"{m} vs {b}") for b, zs in per.items() for m, z in zs.items())
        rows.append(
            {
                "name": name,
                "clears": all(clears(scores, base) for base in baselines.values()),
                "min_z": smallest[0],
                "binding": smallest[1],
                "pointing_game": scores.get("pointing_game", (math.nan, 0))[0],
                "scores": scores,
            }
        )
    qualified = [r for r in rows if r["clears"]]
    if not qualified:
        return None, rows
    best = max(qualified, key=lambda r: (round(r["min_z"], 2), r["pointing_game"]))
    return best["name"], rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("candidates", nargs="+", help="evaluation folders of the candidate models")
    parser.add_argument("--baseline", action="append", required=True, help="evaluation folder of a baseline")
    args = parser.parse_args(argv)
    try:
        candidates = {c: read_scores(c) for c in args.candidates}
        baselines = {b: read_scores(b) for b in args.baseline}
        chosen, rows = choose(candidates, baselines)
    except ValueError as error:  # a folder without summary.json, or nothing to compare
        print(f"error: {error}", file=sys.stderr)
        return 2
    print("| candidate | " + " | ".join(METRICS) + " | clears | smallest z (metric vs baseline) |")
    print("|---|" + "---|" * (len(METRICS) + 2))
    for r in rows:
        cells = [f"{r['scores'][m][0]:.3f}" if m in r["scores"] else "-" for m in METRICS]
        verdict = "yes" if r["clears"] else "no"
        print(f"| {r['name']} | " + " | ".join(cells) + f" | {verdict} | {r['min_z']:.2f} ({r['binding']}) |")
    print(f"chosen: {chosen}" if chosen else "chosen: none (no candidate clears the minimum to ship)")
    return 0 if chosen else 1


if __name__ == "__main__":
    raise SystemExit(main())
