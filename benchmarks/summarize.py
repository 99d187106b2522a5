"""Print evaluation summaries side by side: macro and per-category pointing game, IoU, Dice and CNR with 95% CIs.

python benchmarks/summarize.py runs/eval/val_center runs/eval/val_kind-oracle runs/eval/model
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METRICS = (("pointing_game", "PG"), ("iou_mean", "IoU"), ("dice_mean", "Dice"), ("cnr", "CNR"))


def rows(folder: Path) -> list[str]:
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))["localization"]
    out = []
    for group in ["macro", *summary["categories"]]:
        cells = []
        for key, label in METRICS:
            metric = summary[key]
            if group == "macro":
                mean, ci = metric["macro"], metric.get("ci", [float("nan")] * 2)
            else:
                mean, ci = metric["per_category"][group]["mean"], metric["per_category"][group].get("ci", [0, 0])
            cells.append(f"{label} {mean:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]")
        n = summary["iou_mean"]["n"] if group == "macro" else summary["iou_mean"]["per_category"][group]["n"]
        out.append(f"{folder.name:<28} {group:<16} n={n:<5} " + "  ".join(cells))
    return out


def main(argv: list[str] | None = None) -> int:
    folders = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    if not folders:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    for folder in folders:
        try:
            print("\n".join(rows(folder)))
        except (OSError, KeyError, ValueError) as error:
            print(f"error: {folder}: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
