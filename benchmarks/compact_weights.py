"""Heatmap agreement between a full-precision checkpoint and its compact (float16) export.

For every example image and its suggested prompt (plus every ground-truth phrase), both models produce a heatmap
on the original pixels; the script prints the largest and mean absolute difference on the [-1, 1] scale and how
often the arg-max pixel is the same.

    python benchmarks/compact_weights.py --reference RUN/checkpoints/last.ckpt --compact assets/models/NAME \\
        --examples assets/examples
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc import AFLocPredictor  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference", required=True, help="full-precision model (.ckpt or directory)")
    parser.add_argument("--compact", required=True, help="compact model directory")
    parser.add_argument("--examples", required=True, help="folder of images with ground-truth JSON")
    args = parser.parse_args(argv)
    reference = AFLocPredictor.from_pretrained(args.reference, device="cpu")
    compact = AFLocPredictor.from_pretrained(args.compact, device="cpu")
    diffs, same_argmax = [], []
    for truth_path in sorted(Path(args.examples).glob("*.json")):
        truth = json.loads(truth_path.read_text())
        prompts = list(dict.fromkeys([truth["suggested_prompt"], *(f["phrase"] for f in truth["findings"])]))
        image = str(Path(args.examples) / truth["image"])
        a = reference.localize(prompts, image=reference.encode_image(image))
        b = compact.localize(prompts, image=compact.encode_image(image))
        for x, y in zip(a, b, strict=True):
            diffs.append(np.abs(x - y))
            same_argmax.append(np.nanargmax(x) == np.nanargmax(y))
    result = {
        "heatmaps": len(diffs),
        "max_abs_diff": float(max(d.max() for d in diffs)),
        "mean_abs_diff": float(np.mean([d.mean() for d in diffs])),
        "argmax_agreement": float(np.mean(same_argmax)),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
