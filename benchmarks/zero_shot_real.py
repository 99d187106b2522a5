"""Zero-shot classification AUC on real films of a ``training prepare-cxr`` corpus (issue #32).

For each comparison, the films of the two groups in the chosen split (by the manifest's ``labels`` and
``source``), the model's zero-shot probability of one finding text (``AFLocPredictor.classify``: positive against
negative prompts), and the ROC AUC with a bootstrap 95% CI:

* COVID-19 vs normal (COVID-QU-Ex): "COVID-19 pneumonia";
* other lung disease vs normal (COVID-QU-Ex "Non-COVID"): "pneumonia";
* tuberculosis (TBX11K) vs normal (COVID-QU-Ex; another source, so read with care): "tuberculosis".

    python benchmarks/zero_shot_real.py --model MODEL --corpus data/realcxr --split test --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc.localization.metrics import bootstrap_auc_ci, roc_auc  # noqa: E402
from afloc.predictor import AFLocPredictor  # noqa: E402
from training.manifest import read_manifest  # noqa: E402

COMPARISONS = (
    ("covid_vs_normal", "COVID-19 pneumonia", "covid_opacity"),
    ("other_disease_vs_normal", "pneumonia", "other_disease"),
    ("tb_vs_normal", "tuberculosis", "active_tb"),
)


def group(record) -> str:
    labels = record.extra.get("labels", "")
    if record.extra.get("source", "").startswith("covidqu") and not labels:
        return "normal"
    if "tb" in labels:
        return "active_tb"
    return labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    predictor = AFLocPredictor.from_pretrained(args.model, device="cpu")
    records = read_manifest(args.corpus / "manifest.csv", split=args.split)
    texts = sorted({text for _, text, _ in COMPARISONS})
    scores: dict[str, list[tuple[str, dict]]] = {}
    for record in records:
        kind = group(record)
        if kind in {"normal", *(g for _, _, g in COMPARISONS)}:
            probabilities = predictor.classify(texts, image=predictor.encode_image(record.image))
            scores.setdefault(kind, []).append(probabilities)
    result = {"model": args.model, "split": args.split, "films": {k: len(v) for k, v in scores.items()}}
    for name, text, positive in COMPARISONS:
        pos, neg = scores.get(positive, []), scores.get("normal", [])
        labels = np.array([1] * len(pos) + [0] * len(neg))
        values = np.array([p[text] for p in pos + neg])
        auc = roc_auc(labels, values) if len(pos) and len(neg) else float("nan")
        result[name] = {"text": text, "auc": auc, "ci": list(bootstrap_auc_ci(labels, values)) if len(pos) else None,
                        "positives": len(pos), "negatives": len(neg)}  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "zero_shot.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
