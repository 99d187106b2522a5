"""How well does a lung field (``python -m training lung-field``) find the lungs? Dice at a threshold against

* the visible lungs of PhantomCXR films it never saw (another corpus seed than its training films'), and
* the expert lung masks of real COVID-QU-Ex films (a measurement only: the field never learns from them).

    python benchmarks/lung_field_dice.py --field runs/lung_field --corpus data/realcxr --shared ../shared/data/cxr \\
        --split val --out runs/diagnostics/lung_field_dice.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc.imaging.io import load_image  # noqa: E402
from afloc.imaging.transforms import pad_resize, pad_resize_mapping  # noqa: E402
from afloc.localization.lung_field import LungField  # noqa: E402

SIZE = 224


def dice(predicted: np.ndarray, truth: np.ndarray) -> float:
    total = predicted.sum() + truth.sum()
    return float(2 * (predicted & truth).sum() / total) if total else float("nan")


def phantom_dice(field: LungField, n: int, seed: int, threshold: float) -> list[float]:
    from training.lung_field import phantom_films

    films, lungs = phantom_films(n, seed, SIZE)
    return [dice(g > threshold, lung > 0.5) for g, lung in zip(field(films), lungs, strict=True)]


def real_dice(field: LungField, corpus: str, shared: Path, split: str, threshold: float, limit: int | None):
    from lung_gate_diagnostic import CATEGORY, lung_mask_path

    from training.evaluation.datasets import read_phantom

    samples = [s for s in read_phantom(corpus, split).samples if s.category == CATEGORY]
    samples = [s for s in samples if s.sample_id.startswith("covidqu_")][:limit]
    scores = []
    for sample in samples:
        image = load_image(sample.image_path).astype(np.float32)
        film = pad_resize(image if image.ndim == 2 else image.mean(-1), SIZE)[0].astype(np.float32)
        lungs = load_image(lung_mask_path(sample.sample_id, shared)) > 0.5
        lungs = lungs if lungs.ndim == 2 else lungs[..., 0]
        truth = pad_resize_mapping(*lungs.shape, SIZE).mask_to_model(lungs)
        scores.append(dice(field(film[None])[0] > threshold, truth))
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--field", required=True)
    parser.add_argument("--corpus", help="a training prepare-cxr corpus (for the real films)")
    parser.add_argument("--shared", type=Path, help="the shared cxr folder holding covidqu_train/")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--phantoms", type=int, default=100, help="held-out phantom films")
    parser.add_argument("--phantom-seed", type=int, default=2027, help="not the field's training seed")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    field = LungField.load(args.field)
    result = {"field": args.field, "threshold": args.threshold}
    scores = phantom_dice(field, args.phantoms, args.phantom_seed, args.threshold)
    result["phantom"] = {"n": len(scores), "mean": float(np.mean(scores)), "median": float(np.median(scores))}
    if args.corpus and args.shared:
        scores = real_dice(field, args.corpus, args.shared, args.split, args.threshold, args.limit)
        result["real"] = {"split": args.split, "n": len(scores), "mean": float(np.mean(scores)),
                          "median": float(np.median(scores)), "p10": float(np.percentile(scores, 10))}  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
