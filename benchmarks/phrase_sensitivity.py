"""Does the side a prompt names move the heat? Correct side against wrong side on real films (issue #32).

For every target of ``annotations/<split>_phrases.json`` (a corpus of ``training prepare-cxr``) whose phrase names
one side ("patchy ground-glass opacities in the right lower zone"), the model is prompted with the phrase and
with the same phrase with "right" and "left" swapped. For each prompt, the share of the heatmap's positive mass on
the side the prompt names (the patient's right is the image's left; midline at half the width) is measured:

* ``prompted_side_share``: the mean over both prompts. A model that ignores the side words puts the same map under
  both prompts, so its two shares add up to one: 0.5. Above 0.5 (with CI), the side word moves the heat.
* ``correct_side_share``: the share on the correct side under the correct prompt (the lesion's side).

    python benchmarks/phrase_sensitivity.py --model MODEL_DIR --corpus data/realcxr --split test --out DIR
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc.localization.heatmaps import SIMILARITIES  # noqa: E402
from afloc.localization.lung_field import LungField  # noqa: E402
from afloc.localization.metrics import bootstrap_ci  # noqa: E402
from afloc.predictor import AFLocPredictor  # noqa: E402
from training.evaluation.datasets import read_ms_cxr  # noqa: E402
from training.evaluation.protocol import mean_map, side_mass  # noqa: E402

SIDE = re.compile(r"\b(right|left)\b")


def swap_sides(phrase: str) -> str:
    """The phrase with every "right" and "left" exchanged."""
    return SIDE.sub(lambda m: "left" if m.group(1) == "right" else "right", phrase)


def unilateral(phrase: str) -> bool:
    words = set(SIDE.findall(phrase.lower()))
    return len(words) == 1 and "bilateral" not in phrase.lower()


def ensemble_maps(predictors: list[AFLocPredictor], image_path: str, prompts: list[str]) -> np.ndarray:
    """One model's maps on the film's pixels, or several models' mean map rescaled to [-1, 1] (as the map-level
    ensemble of ``training evaluate --model A B ...``)."""
    maps = [p.localize(prompts, image=p.encode_image(image_path)) for p in predictors]
    return maps[0] if len(maps) == 1 else mean_map(maps)


def measure(predictor: AFLocPredictor | list[AFLocPredictor], samples, limit: int | None = None) -> dict:
    predictors = predictor if isinstance(predictor, list) else [predictor]
    prompted, correct, rows = [], [], []
    for sample in [s for s in samples if unilateral(s.phrase)][:limit]:
        swapped = swap_sides(sample.phrase)
        maps = ensemble_maps(predictors, sample.image_path, [sample.phrase, swapped])
        midline = maps.shape[2] / 2
        right = side_mass(maps[0], sample.phrase, midline)
        wrong = side_mass(maps[1], swapped, midline)
        if np.isfinite(right) and np.isfinite(wrong):
            prompted.append((right + wrong) / 2)
            correct.append(right)
            rows.append({"sample_id": sample.sample_id, "phrase": sample.phrase, "correct_prompt_share": right,
                         "swapped_prompt_share": wrong})  # fmt: skip
    prompted_a, correct_a = np.array(prompted), np.array(correct)
    return {
        "n": len(rows),
        "prompted_side_share": float(prompted_a.mean()) if rows else float("nan"),
        "prompted_side_share_ci": list(bootstrap_ci(prompted_a)) if rows else None,
        "correct_side_share": float(correct_a.mean()) if rows else float("nan"),
        "correct_side_share_ci": list(bootstrap_ci(correct_a)) if rows else None,
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, nargs="+", help="one model, or several: their map-level ensemble")
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--lung-field", help="gate the maps by this lung field (as training evaluate)")
    parser.add_argument("--lung-field-threshold", type=float, help="a hard gate at this lung probability")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--smoothing-sigma", type=float, help="instead of the model's own (as training evaluate)")
    parser.add_argument("--similarity", choices=SIMILARITIES, help="instead of the model's own")
    parser.add_argument("--shallow-weight", type=float, help="instead of the model's own")
    args = parser.parse_args(argv)
    overrides = {"smoothing_sigma": args.smoothing_sigma, "similarity": args.similarity}
    overrides["shallow_weight"] = args.shallow_weight
    overrides = {key: value for key, value in overrides.items() if value is not None}
    field = LungField.load(args.lung_field) if args.lung_field else None
    if field is not None and args.lung_field_threshold is not None:
        field = field.with_threshold(args.lung_field_threshold)
    predictors = []
    for path in args.model:
        predictor = AFLocPredictor.from_pretrained(path, device="cpu")
        predictor = predictor.with_localization(**overrides) if overrides else predictor
        predictors.append(predictor.with_lung_field(field) if field is not None else predictor)
    samples = read_ms_cxr(args.corpus / "annotations" / f"{args.split}_phrases.json", args.corpus).samples
    result = measure(predictors, samples, args.limit)
    result.update({"model": args.model, "corpus": str(args.corpus), "split": args.split})
    result["localization"] = predictors[0].localization.to_dict()
    result["lung_field"] = {"folder": args.lung_field, "threshold": args.lung_field_threshold} if field else None
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "phrase_sensitivity.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
