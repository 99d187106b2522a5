"""Learning curves of recipe experiments: validation localization against steps and wall-clock time.

Reads the ``metrics.csv`` of each run (CSVLogger of ``python -m training fit`` with
``training.callbacks.LocalizationMonitor``) and prints, per run, the validation rows (step, elapsed seconds,
pointing game, IoU, CNR, side mass, and pointing game on training studies when monitored), or with ``--at SECONDS``
one row per run: the last validation at or before that wall-clock time (equal-time comparison)::

    python benchmarks/experiment_curves.py runs/exp/A runs/exp/B --at 600
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

COLUMNS = (
    ("step", "step"),
    ("val/elapsed_s", "s"),
    ("val/pointing_game", "PG"),
    ("val/iou", "IoU"),
    ("val/cnr", "CNR"),
    ("val/side_mass", "side"),
    ("train_loc/pointing_game", "PG train"),
    ("val/total", "val loss"),
)


def validation_rows(run: Path) -> list[dict[str, float]]:
    """Rows of the newest ``metrics.csv`` under ``run`` that carry a validation pointing game."""
    files = sorted(run.rglob("metrics.csv"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise ValueError(f"no metrics.csv under {run}")
    merged: dict[int, dict[str, float]] = {}
    with files[-1].open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(row["step"])
            for key, value in row.items():
                if value not in ("", None) and key.startswith(("val/", "train_loc/")):
                    merged.setdefault(step, {"step": step})[key] = float(value)
    return [merged[s] for s in sorted(merged) if "val/pointing_game" in merged[s]]


def _cell(row: dict[str, float], key: str) -> str:
    value = row.get(key, math.nan)
    return "-" if math.isnan(value) else (f"{value:.0f}" if key in ("step", "val/elapsed_s") else f"{value:.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--at", type=float, default=None, help="equal wall-clock comparison at this many seconds")
    args = parser.parse_args(argv)
    header = "| run | " + " | ".join(short for _, short in COLUMNS) + " |"
    print(header)
    print("|" + "---|" * (len(COLUMNS) + 1))
    for run in args.runs:
        rows = validation_rows(run)
        if args.at is not None:
            rows = [r for r in rows if r.get("val/elapsed_s", math.inf) <= args.at][-1:]
        for row in rows:
            print(f"| {run.name} | " + " | ".join(_cell(row, key) for key, _ in COLUMNS) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
