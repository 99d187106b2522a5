"""``python -m training plot RUN_DIR``: training curves from the run's CSV log (``metrics.csv``).

The first row shows every loss term (train per step and per epoch, validation); when the run was scored by
:class:`training.callbacks.LocalizationMonitor`, two more rows show the localization metrics (validation, and
training studies when monitored) against steps and against wall-clock seconds of fitting.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from afloc.commands import command

from .callbacks import LocalizationMonitor

LOCALIZATION = LocalizationMonitor.METRICS


def read_curves(metrics_csv: Path) -> dict[str, list[tuple[int, float]]]:
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    with metrics_csv.open(newline="") as handle:
        for row in csv.DictReader(handle):
            step = int(float(row.get("step") or 0))
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    curves[key].append((step, float(value)))
    return dict(curves)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    found = sorted(run_dir.rglob("metrics.csv"))
    if not found:
        raise ValueError(f"no metrics.csv under {run_dir} (runs log with CSVLogger)")
    curves = read_curves(found[-1])
    terms = sorted({k.split("/", 1)[1].removesuffix("_step").removesuffix("_epoch") for k in curves if "/" in k})
    terms = [t for t in terms if t not in ("skipped", "elapsed_s", *LOCALIZATION)]
    if not terms:
        raise ValueError(f"{found[-1]} has no loss columns")
    localization = [m for m in LOCALIZATION if f"val/{m}" in curves]
    rows = 3 if localization else 1
    columns = max(len(terms), len(localization))
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for ax, term in zip(axes[0], terms, strict=False):
        ax.set_visible(True)
        for key, style in ((f"train/{term}_step", "-"), (f"train/{term}_epoch", "o-"), (f"val/{term}", "s--")):
            if key in curves:
                steps, values = zip(*curves[key], strict=True)
                ax.plot(steps, values, style, label=key, markersize=3)
        ax.set_title(term)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    seconds = dict(curves.get("val/elapsed_s", []))  # step -> wall-clock seconds at that validation
    for column, metric in enumerate(localization):
        for row, xlabel in ((1, "step"), (2, "wall-clock seconds of fitting")):
            ax = axes[row][column]
            ax.set_visible(True)
            for key, style in ((f"val/{metric}", "s-"), (f"train_loc/{metric}", "o--")):
                points = curves.get(key, [])
                if row == 2:
                    points = [(seconds[step], value) for step, value in points if step in seconds]
                if points:
                    xs, values = zip(*points, strict=True)
                    ax.plot(xs, values, style, label=key, markersize=3)
            ax.set_title(f"{metric} (localization)")
            ax.set_xlabel(xlabel)
            ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out) if out else found[-1].parent / "curves.png"
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training plot", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="run folder (searched for metrics.csv)")
    parser.add_argument("--out", default=None, help="PNG path (default: curves.png next to metrics.csv)")
    args = parser.parse_args(argv)
    path = plot_run(args.run_dir, args.out)
    print(f"wrote {path}")
    return 0
