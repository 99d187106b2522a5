"""How many photographs a model's out-of-distribution flag marks: the first N images of a folder, sorted by name.

    python benchmarks/ood_flag_rate.py --model assets/models/afloc_idrid_fundus_r10 \
        --images ../shared/data/fundus/idrid --n 40

Prints the count flagged and the scores (``AFLocPredictor.encode_image``'s ``ood_score`` against the model's
``ood.safetensors`` threshold). To compare fitting splits, refit a copy first: ``cp -r MODEL /tmp/m && python -m
training calibrate --model /tmp/m --manifest data/idrid_fine/manifest.csv --split val``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc import AFLocPredictor  # noqa: E402

SUFFIXES = (".jpg", ".jpeg", ".png", ".dcm")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path, help="a model directory with ood.safetensors")
    parser.add_argument("--images", required=True, type=Path, help="a folder of images")
    parser.add_argument("--n", type=int, default=40, help="the first N images by name")
    args = parser.parse_args(argv)
    if not (args.model / "ood.safetensors").is_file():
        parser.error(f"{args.model} has no ood.safetensors (fit it with python -m training calibrate)")
    images = sorted(p for p in args.images.glob("*") if p.suffix.lower() in SUFFIXES)[: args.n]
    if not images:
        parser.error(f"{args.images} holds no image ({', '.join(SUFFIXES)})")
    predictor = AFLocPredictor.from_pretrained(args.model, device="cpu")
    encoded = [predictor.encode_image(path) for path in images]
    flagged = sum(bool(e.out_of_distribution) for e in encoded)
    print(
        json.dumps(
            {"images": len(images), "flagged": flagged, "scores": [round(float(e.ood_score), 2) for e in encoded]}
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
