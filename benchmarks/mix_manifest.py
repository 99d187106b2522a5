"""Build a training manifest that mixes a real corpus with some train studies of a synthetic one (experiment C14,
docs/real_data_experiments.md round 6): every row of the real manifest (its val and test splits stay the real
ones), then ``--synthetic-rows`` train rows of the synthetic manifest (seeded shuffle) with their image paths made
relative to the new folder. The new folder links ``images`` and ``annotations`` to the real corpus, so the
localization monitor scores the real val films.

Usage::

    python benchmarks/mix_manifest.py --real data/realcxr --synthetic data/phantom6k --synthetic-rows 1800 \\
        --out data/mixcxr
"""

from __future__ import annotations

import argparse
import csv
import os
import random
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", type=Path, required=True)
    parser.add_argument("--synthetic", type=Path, required=True)
    parser.add_argument("--synthetic-rows", type=int, default=1800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    real = list(csv.DictReader((args.real / "manifest.csv").open(encoding="utf-8")))
    synthetic = [r for r in csv.DictReader((args.synthetic / "manifest.csv").open(encoding="utf-8"))
                 if r["split"] == "train"]  # fmt: skip
    random.Random(args.seed).shuffle(synthetic)
    args.out.mkdir(parents=True, exist_ok=True)
    relative = Path(os.path.relpath(args.synthetic, args.out))
    columns = list(real[0])
    with (args.out / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(real)
        for row in synthetic[: args.synthetic_rows]:
            writer.writerow({**{k: row.get(k, "") for k in columns}, "image": str(relative / row["image"]),
                             "source": f"{args.synthetic.name} replay"})  # fmt: skip
    for name in ("images", "annotations"):
        link = args.out / name
        if not link.exists():
            link.symlink_to(Path(os.path.relpath(args.real / name, args.out)))
    print(f"wrote {args.out / 'manifest.csv'}: {len(real)} real rows, {min(len(synthetic), args.synthetic_rows)} "
          "synthetic train rows")  # fmt: skip


if __name__ == "__main__":
    main()
