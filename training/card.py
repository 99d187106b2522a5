"""``python -m training card --model DIR --results R1 [R2 ...]``: put evaluation results into a model card.

The "## Evaluation" section of ``DIR/README.md`` is replaced by a table generated from the ``summary.json`` of each
result folder (``python -m training evaluate``), so the card always matches the evaluation files kept beside it.
``--per-category R1 [R2 ...] --per-category-title TITLE`` also writes a section of per-category rows (pointing
game, IoU, CNR with their CIs), e.g. for a real-data check whose classes differ in size and difficulty.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path


def _cell(entry: dict | None, digits: int = 3) -> str:
    if not entry or entry.get("mean", entry.get("macro")) is None:
        return "-"
    value = entry.get("mean", entry.get("macro"))
    low, high = (entry.get("ci") or [None, None])[:2]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if low is None or high is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def read_summary(folder: str | Path) -> tuple[dict, dict]:
    """``(localization, meta)`` of a ``python -m training evaluate`` result folder."""
    path = Path(folder) / "summary.json"
    if not path.is_file():
        raise ValueError(f"{folder}: no summary.json (run python -m training evaluate first)")
    data = json.loads(path.read_text())
    return data["localization"], data["meta"]


def evaluation_table(result_dirs: list[str | Path]) -> str:
    """Markdown table: one row per result (model or baseline), headline metrics with 95% CIs."""
    header = (
        "| model | samples | pointing game | IoU (mean over 0.1-0.5) | Dice (mean over 0.1-0.5) | CNR | "
        "side mass (lateralised) |\n|---|---|---|---|---|---|---|"
    )
    rows = []
    for folder in result_dirs:
        loc, meta = read_summary(folder)
        rows.append(
            f"| {meta['model']} | {meta['n_samples']} | {_cell(loc['pointing_game'])} | "
            f"{_cell(loc['per_threshold_mean']['iou'])} | {_cell(loc['per_threshold_mean']['dice'])} | "
            f"{_cell(loc['cnr'], 2)} | {_cell(loc.get('side_mass'))} |"
        )
    return "\n".join([header, *rows])


def per_category_table(result_dirs: list[str | Path]) -> str:
    """Markdown table: per result, one row per category and one macro row (pointing game, IoU by the paper's rule,
    CNR; means with 95% CIs). A summary written before per-category paper-rule values existed gives, in all its
    rows, each sample's IoU averaged over the thresholds instead (the rule its card was written with)."""
    from training.evaluation.report import headline

    header = "| model | category | n | pointing game | IoU (mean over 0.1-0.5) | CNR |\n|---|---|---|---|---|---|"
    rows = []
    for folder in result_dirs:
        loc, meta = read_summary(folder)
        # one rule per table: the paper's where the summary has it per category, else the per-sample means
        iou_metric = "iou" if "per_category" in loc.get("per_threshold_mean", {}).get("iou", {}) else "iou_mean"
        metrics = ("pointing_game", iou_metric, "cnr")
        for category in sorted(loc["pointing_game"].get("per_category", {})):
            pg, iou, cnr = (headline(loc, metric, category) for metric in metrics)
            rows.append(
                f"| {meta['model']} | {category} | {pg.get('n', '-')} | {_cell(pg)} | {_cell(iou)} | {_cell(cnr, 2)} |"
            )
        pg, iou, cnr = (headline(loc, metric) for metric in metrics)
        rows.append(f"| {meta['model']} | macro | {meta['n_samples']} | {_cell(pg)} | {_cell(iou)} | {_cell(cnr, 2)} |")
    return "\n".join([header, *rows])


def replace_section(card_path: Path, title: str, body: str) -> None:
    """Put ``## title`` with ``body`` into the card, replacing a section of that title if there is one."""
    section = f"## {title}\n\n{body.strip()}\n"
    text = card_path.read_text()
    pattern = re.compile(rf"## {re.escape(title)}\n.*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    card_path.write_text(text)


def update_card(model_dir: str | Path, result_dirs: list[str | Path], note: str = "") -> str:
    card_path = Path(model_dir) / "README.md"
    if not card_path.is_file():
        raise ValueError(f"{card_path} does not exist")
    table = evaluation_table(result_dirs)
    replace_section(card_path, "Evaluation", f"{note.strip()}\n\n{table}" if note else table)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training card", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model directory whose README.md is updated")
    parser.add_argument("--results", nargs="+", required=True, help="evaluation result folders")
    parser.add_argument("--note", default="", help="paragraph placed above the table")
    parser.add_argument("--per-category", nargs="+", default=[], help="result folders for a per-category section")
    parser.add_argument("--per-category-title", default="Evaluation per category", help="that section's title")
    parser.add_argument("--per-category-note", default="", help="paragraph placed above the per-category table")
    args = parser.parse_args(argv)
    try:
        print(update_card(args.model, args.results, args.note))
        if args.per_category:
            table = per_category_table(args.per_category)
            body = f"{args.per_category_note.strip()}\n\n{table}" if args.per_category_note else table
            replace_section(Path(args.model) / "README.md", args.per_category_title, body)
            print(table)
    except (ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
