"""Greedy weight soup of runs that start from the same weights (Wortsman et al., 2022, "model soups").

Ingredients (checkpoints of runs that differ only in their data order or another seed, all from one start) are
ranked by their own validation pointing game; the soup starts with the best one, and each next ingredient stays in
the soup only when the mean of the soup's weights with it scores higher on the validation split. Only the
validation split takes part: score the chosen soup on the test split afterwards, once.

    python benchmarks/greedy_soup.py --out runs/rc/soup/greedy \\
        --ingredient runs/rc/C8_null/.../periodic-step=200.ckpt=runs/rc_eval/val_C8_s200 [--ingredient ...] \\
        -- --smoothing-sigma 0.6 --similarity cosine --shallow-weight 0.5 --dataset phantom --images data/realcxr

Each ``CKPT=RESULT`` pairs a checkpoint with its own ``training evaluate`` result on the validation split (made
with the same arguments). Arguments after ``--`` go to every ``training evaluate`` call (``--split val`` is added).
Writes ``OUT/steps.md`` (one row per ingredient tried) and ``OUT/soup.ckpt`` (the chosen soup).
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
from pathlib import Path


def macro(result: Path, metric: str = "pointing_game_mean") -> float:
    """The macro row's ``metric`` of a ``training evaluate`` result folder."""
    with (result / "summary.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if row["category"] == "macro":
                return float(row[metric])
    raise ValueError(f"{result / 'summary.csv'} has no macro row")


def _run(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "training", *args], check=True)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    evaluate_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingredient", action="append", required=True, help="CKPT=VAL_RESULT_DIR (repeatable)")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    pairs = []
    for item in args.ingredient:
        checkpoint, _, result = item.rpartition("=")  # checkpoint names hold "=" (periodic-step=200.ckpt)
        if not result:
            parser.error(f"--ingredient {item!r}: expected CKPT=VAL_RESULT_DIR")
        if not Path(checkpoint).is_file() or not (Path(result) / "summary.csv").is_file():
            parser.error(f"--ingredient {item!r}: no checkpoint file, or no summary.csv in the result folder")
        pairs.append((Path(checkpoint), Path(result)))
    ranked = sorted(((macro(result), checkpoint) for checkpoint, result in pairs), key=lambda x: -x[0])
    args.out.mkdir(parents=True, exist_ok=True)
    best, soup = ranked[0][0], [ranked[0][1]]
    rows = [f"| 1 | {ranked[0][1]} | {ranked[0][0]:.3f} | {best:.3f} | kept (the best single run) |"]
    for index, (own, checkpoint) in enumerate(ranked[1:], start=2):
        trial = args.out / f"trial{index}.ckpt"
        _run("average", "--out", str(trial), *map(str, soup + [checkpoint]))
        result = args.out / f"val_trial{index}"
        _run("evaluate", "--model", str(trial), *evaluate_args, "--split", "val", "--quiet", "--out", str(result))
        score = macro(result)
        kept = score > best
        rows.append(f"| {index} | {checkpoint} | {own:.3f} | {score:.3f} | {'kept' if kept else 'left out'} |")
        if kept:
            best, soup = score, soup + [checkpoint]
            shutil.copyfile(trial, args.out / "soup.ckpt")
        trial.unlink()
    if len(soup) == 1:
        shutil.copyfile(soup[0], args.out / "soup.ckpt")
    table = [
        "| step | ingredient | its own val pointing | soup's val pointing with it | |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Soup: {len(soup)} of {len(ranked)} ingredients, val pointing {best:.3f}.",
    ]
    (args.out / "steps.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
