"""``python -m training compare RESULT_DIR [RESULT_DIR ...]``: one table of several evaluation folders.

Each RESULT_DIR is an output folder of the evaluation (its ``summary.json``, see ``report.write_outputs``). Rows
are dataset x metric, columns are models (``meta["model"]``; the folder name is appended when one model has two
results on one dataset). Cells are ``mean [lo, hi]`` (95% bootstrap CI). IoU and Dice follow the paper's rule
(per threshold: mean per category, then over categories; then the mean over thresholds), the rule of the
reported numbers, so the optional "AFLoc (reported)" column compares like with like, provided the result was
evaluated with ``--preset paper`` (the authors' margin, box rule, CNR regions and aggregation): a column that was not
is marked ``‡`` and a warning above the table says it is not comparable with the reported column. Writes
``comparison.md`` and ``comparison.png`` to ``--out`` (default ``./comparison``) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from afloc.commands import command

logger = logging.getLogger(__name__)

METRICS: tuple[tuple[str, str], ...] = (
    ("iou", "IoU"),
    ("dice", "Dice"),
    ("cnr", "CNR"),
    ("pointing_game", "pointing game"),
)
REPORTED_COLUMN = "AFLoc (reported)"
REPORTED_NOTE = (
    "† reported, read off the authors' figure (approximate); docs/method.md section 5. "
    "The authors do not report the pointing game."
)
# docs/method.md section 5, keyed by the normalised meta["dataset"] name.
REPORTED: dict[str, dict[str, float]] = {
    "ms-cxr": {"iou": 0.325, "dice": 0.463, "cnr": 1.64},
    "rsna": {"iou": 0.342, "dice": 0.486, "cnr": 1.54},
    "covid-rural": {"iou": 0.211, "dice": 0.323, "cnr": 1.07},
    "fundus": {"iou": 0.188, "dice": 0.282, "cnr": 0.92},
}
MISSING = "—"


class ResultDirError(ValueError):
    """A result folder without a readable ``summary.json`` (the message names the folder)."""


def normalise_dataset(name: Any) -> str:
    """``"MS_CXR"`` / ``"ms cxr"`` -> ``"ms-cxr"``: the key of :data:`REPORTED`."""
    return str(name).strip().lower().replace("_", "-").replace(" ", "-")


def load_result(result_dir: str | Path) -> dict[str, Any]:
    """``summary.json`` of ``result_dir`` (or the JSON file itself) with ``meta`` and ``localization``.

    Raises:
        ResultDirError: if the folder or file is missing, is not JSON, or lacks ``meta`` / ``localization``.
    """
    path = Path(result_dir)
    path = path if path.suffix == ".json" else path / "summary.json"
    if not path.is_file():
        raise ResultDirError(f"{result_dir}: no {path.name} (expected an evaluation output folder)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ResultDirError(f"{result_dir}: {path.name} is not valid JSON ({error})") from error
    if not isinstance(document, dict) or not isinstance(document.get("localization"), dict):
        raise ResultDirError(f"{result_dir}: {path.name} has no 'localization' summary")
    if not isinstance(document.get("meta", {}), dict):
        raise ResultDirError(f"{result_dir}: {path.name} has a 'meta' that is not an object")
    document.setdefault("meta", {})
    return document


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def metric_cell(localization: Mapping[str, Any], metric: str) -> tuple[float, float, float]:
    """``(mean, ci_low, ci_high)`` of one table metric (NaN where absent or undefined).

    IoU and Dice use ``per_threshold_mean`` (the paper's rule) when present, else the macro of per-sample means.
    """
    entry = None
    if metric in ("iou", "dice"):
        entry = localization.get("per_threshold_mean", {}).get(metric)
        if entry is None and isinstance(localization.get(f"{metric}_mean"), Mapping):
            entry = {
                "mean": localization[f"{metric}_mean"].get("macro"),
                "ci": localization[f"{metric}_mean"].get("ci"),
            }
    elif isinstance(localization.get(metric), Mapping):
        entry = {"mean": localization[metric].get("macro"), "ci": localization[metric].get("ci")}
    if not entry:
        return math.nan, math.nan, math.nan
    ci = entry.get("ci") or [None, None]
    return _number(entry.get("mean")), _number(ci[0]), _number(ci[1])


def _format(mean: float, low: float = math.nan, high: float = math.nan) -> str:
    if not math.isfinite(mean):
        return MISSING
    if math.isfinite(low) and math.isfinite(high):
        return f"{mean:.3f} [{low:.3f}, {high:.3f}]"
    return f"{mean:.3f}"


def _clashes(labels: Sequence[str], datasets: Sequence[str]) -> list[int]:
    """Indices whose (label, dataset) pair occurs more than once: two cells would share one table slot."""
    pairs = list(zip(labels, datasets, strict=True))
    return [k for k, pair in enumerate(pairs) if pairs.count(pair) > 1]


def _column_labels(result_dirs: Sequence[Path], documents: Sequence[Mapping]) -> list[str]:
    """``meta["model"]`` (the folder name if absent). A model with two results on one dataset gets the folder name
    appended in all its columns; where that still clashes, the folder path; then ``#k`` (a folder given twice)."""
    models = [str(d["meta"].get("model") or Path(p).name) for p, d in zip(result_dirs, documents, strict=True)]
    datasets = [str(d["meta"].get("dataset") or "unknown") for d in documents]
    clashing = {models[k] for k in _clashes(models, datasets)}
    labels = [f"{m} ({Path(p).name})" if m in clashing else m for m, p in zip(models, result_dirs, strict=True)]
    for k in _clashes(labels, datasets):
        labels[k] = f"{models[k]} ({result_dirs[k]})"
    repeated, seen = _clashes(labels, datasets), {}
    for k, label in [(k, labels[k]) for k in repeated]:
        seen[label] = seen.get(label, 0) + 1
        labels[k] = f"{label} #{seen[label]}"
    return labels


def build_table(result_dirs: Sequence[str | Path], documents: Sequence[Mapping], reported: bool = True):
    """``(markdown, data)``: the table and ``data[(dataset, metric)][column] = (mean, lo, hi)`` for the plot."""
    result_dirs = [Path(p) for p in result_dirs]
    labels = _column_labels(result_dirs, documents)
    columns = list(dict.fromkeys(labels))  # a label is unique per dataset, so columns are unique labels
    datasets = list(dict.fromkeys(str(d["meta"].get("dataset") or "unknown") for d in documents))
    data: dict[tuple[str, str], dict[str, tuple[float, float, float]]] = {}
    for label, document in zip(labels, documents, strict=True):
        dataset = str(document["meta"].get("dataset") or "unknown")
        for metric, _ in METRICS:
            data.setdefault((dataset, metric), {})[label] = metric_cell(document["localization"], metric)
    # beside the reported column, a result evaluated under other rules is marked (docs/evaluation_protocol.md)
    off_protocol = {label for label, d in zip(labels, documents, strict=True) if d["meta"].get("preset") != "paper"}
    shown = [f"{c} ‡" if reported and c in off_protocol else c for c in columns]
    header = ["dataset", "metric", *shown] + ([f"{REPORTED_COLUMN} †"] if reported else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for dataset in datasets:
        for metric, metric_label in METRICS:
            cells = [_format(*data[(dataset, metric)].get(c, (math.nan,) * 3)) for c in columns]
            if reported:
                value = REPORTED.get(normalise_dataset(dataset), {}).get(metric)
                cells.append(MISSING if value is None else f"{value:g}")
            lines.append("| " + " | ".join([dataset, metric_label, *cells]) + " |")
    notes = [
        "",
        "Cells: mean [95% bootstrap CI]. IoU and Dice: per threshold t in the run's sweep, mean per category then "
        "over categories, then the mean over thresholds (the paper's rule); CNR (signed) and pointing game: "
        "macro average over categories. " + MISSING + ": not available.",
    ]
    warning = []
    if reported:
        notes += ["", REPORTED_NOTE]
        if off_protocol:
            warning = [
                f"**‡ Not comparable with the reported column: {', '.join(sorted(off_protocol))} "
                f"{'was' if len(off_protocol) == 1 else 'were'} evaluated without `--preset paper`** (other margin, "
                "box rule, CNR regions or aggregation than the authors'; docs/evaluation_protocol.md). Re-run "
                "`python -m training evaluate ... --preset paper` to place it beside the paper's numbers.",
                "",
            ]
    notes += ["", "Sources:"] + [f"- {label}: `{path}`" for label, path in zip(labels, result_dirs, strict=True)]
    return "\n".join(warning + lines + notes) + "\n", data


def plot_comparison(data: Mapping, path: str | Path, reported: bool = True) -> Path:
    """One panel per metric: bars per dataset, one per model with its CI (and the reported value, hatched)."""
    from .report import grouped_bars, new_figure

    datasets = list(dict.fromkeys(dataset for dataset, _ in data))
    columns = list(dict.fromkeys(column for cells in data.values() for column in cells))
    figure, axes = new_figure(len(METRICS), (3.2 * len(METRICS) + 0.6 * len(datasets) * len(columns), 3.8))
    for axis, (metric, metric_label) in zip(axes, METRICS, strict=True):
        series = {}
        for column in columns:
            cells = [data[(d, metric)].get(column, (math.nan,) * 3) for d in datasets]
            series[column] = ([c[0] for c in cells], [c[1:] for c in cells])
        if reported and metric != "pointing_game":
            values = [REPORTED.get(normalise_dataset(d), {}).get(metric, math.nan) for d in datasets]
            series[REPORTED_COLUMN] = (values, [(math.nan, math.nan)] * len(datasets))
        bars = grouped_bars(axis, datasets, series)
        if REPORTED_COLUMN in bars:
            for patch in bars[REPORTED_COLUMN].patches:  # the reported values: hatched, no CI
                patch.set_hatch("//")
                patch.set_alpha(0.5)
        axis.set_title(metric_label, fontsize=10)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0.0, 0.06 * math.ceil(len(labels) / 4), 1.0, 1.0))
    figure.savefig(path, dpi=110)
    return Path(path)


def compare(result_dirs: Sequence[str | Path], out: str | Path, reported: bool = True) -> str:
    """Read the result folders, write ``comparison.md`` and ``comparison.png`` under ``out``; return the Markdown.

    Raises:
        ResultDirError: naming the first folder without a readable ``summary.json``.
        ValueError: if ``result_dirs`` is empty.
    """
    if not result_dirs:
        raise ValueError("no result folders to compare")
    documents = [load_result(path) for path in result_dirs]
    markdown, data = build_table(result_dirs, documents, reported=reported)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text("# Localization comparison\n\n" + markdown, encoding="utf-8")
    plot_comparison(data, out / "comparison.png", reported=reported)
    logger.info("wrote %s and %s", out / "comparison.md", out / "comparison.png")
    return markdown


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("result_dirs", nargs="+", help="evaluation output folders (each with summary.json)")
    parser.add_argument("--out", default=None, help="output folder (default: ./comparison)")
    parser.add_argument(
        "--reported",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add the AFLoc numbers reported by the authors (approximate) as a column (default: on)",
    )
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else Path.cwd() / "comparison"
    markdown = compare(args.result_dirs, out, reported=args.reported)
    print(markdown)
    print(f"wrote {out / 'comparison.md'} and {out / 'comparison.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
