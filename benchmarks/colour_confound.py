"""Diagnostic: can a photograph's overall colour alone tell which photographs carry a finding? (issue #24)

For each split of a ``training prepare-fundus`` corpus and each lesion label of its manifest, the ROC AUC of
simple photograph-level statistics, measured on the retina only (pixels brighter than a fixed level, less a
rim): the mean of each channel and the standard deviation of green (and, in the JSON, the gap between the mean
statistic of the photographs with and without the label). An AUC far from 0.5 on the training split is a shortcut that a
contrastive model can learn instead of the lesions (it tells the photographs apart, not where the lesion is); if
it does not hold on the other splits, neither does what the model learned from it.

    python benchmarks/colour_confound.py --corpus data/idrid_corpus [--contrast local --image-size 256]

``--contrast local`` measures the photographs as the model sees them under ``data.contrast: local``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc.imaging.io import load_image  # noqa: E402
from afloc.imaging.transforms import Preprocessing  # noqa: E402
from afloc.localization.metrics import roc_auc  # noqa: E402
from training.manifest import read_manifest  # noqa: E402

STATISTICS = ("red_mean", "green_mean", "blue_mean", "green_std")
RETINA_LEVEL = 30 / 255  # the sum of the three channels above this (the black surround below it)


def statistics(image: np.ndarray) -> list[float]:
    """The :data:`STATISTICS` of one RGB photograph ``[H, W, 3]`` in [0, 1], over its retina less a rim of 1/30 of
    the longer side (where the surround bleeds in)."""
    from scipy.ndimage import binary_erosion

    retina = binary_erosion(image.sum(axis=2) > RETINA_LEVEL, iterations=max(1, max(image.shape[:2]) // 30))
    if not retina.any():
        retina = np.ones(image.shape[:2], bool)
    pixels = image[retina]
    return [
        float(pixels[:, 0].mean()),
        float(pixels[:, 1].mean()),
        float(pixels[:, 2].mean()),
        float(pixels[:, 1].std()),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument("--contrast", choices=("none", "local"), default="none")
    parser.add_argument("--image-size", type=int, default=256, help="the model's input side (with --contrast)")
    parser.add_argument("--split", nargs="+", default=["train", "val"], help="the splits measured")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (OSError, ValueError) as error:  # a missing corpus or an unreadable photograph, by name
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    records = [r for r in read_manifest(args.corpus / "manifest.csv") if r.split in args.split]
    seen = Preprocessing(args.image_size, modality="fundus", contrast=args.contrast)
    labels = sorted({label for r in records for label in r.extra.get("labels", "").split(";") if label})
    features = {}
    for record in records:
        image = load_image(record.image)
        if args.contrast != "none":
            image = seen.model_space_image(image)[0]
        image = image[..., :3] if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        features[str(record.image)] = statistics(image)
    result: dict = {"corpus": str(args.corpus), "contrast": args.contrast, "splits": {}}
    for split in args.split:
        rows = [r for r in records if r.split == split]
        result["splits"][split] = {}
        for label in labels:
            y = np.array([label in r.extra.get("labels", "").split(";") for r in rows], dtype=int)
            if y.min() == y.max():
                continue
            values = np.array([features[str(r.image)] for r in rows])
            aucs = {name: roc_auc(y, values[:, i]) for i, name in enumerate(STATISTICS)}
            gaps = {
                name: float(values[y == 1, i].mean() - values[y == 0, i].mean()) for i, name in enumerate(STATISTICS)
            }
            result["splits"][split][label] = {"positives": int(y.sum()), "photographs": len(y), "auc": aucs,
                                              "gap": gaps}  # fmt: skip
            cells = " ".join(f"{name} {auc:.2f}" for name, auc in aucs.items())
            print(f"{split:5s} {label:14s} {int(y.sum()):3d}/{len(y):3d}  {cells}")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "colour_confound.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
