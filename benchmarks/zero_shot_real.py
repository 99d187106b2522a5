"""Zero-shot classification AUC on real films of a ``training prepare-cxr`` corpus (issue #32), or on real
photographs of a ``training prepare-fundus`` corpus (issue #24, ``--modality fundus``).

For each comparison, the films of the two groups in the chosen split (by the manifest's ``labels`` and
``source``), the model's zero-shot probability of one finding text (``AFLocPredictor.classify``: positive against
negative prompts), and the ROC AUC with a bootstrap 95% CI:

* COVID-19 vs normal (COVID-QU-Ex): "COVID-19 pneumonia";
* other lung disease vs normal (COVID-QU-Ex "Non-COVID"): "pneumonia";
* tuberculosis (TBX11K) vs normal (COVID-QU-Ex; another source, so read with care): "tuberculosis".

Fundus photographs (a lesion's presence read from the manifest's ``labels``, which come from the boxes):

* hard exudates present vs absent: "hard exudates";
* haemorrhages present vs absent: "haemorrhages".

Scored on the training split too, it measures the fit against generalisation: a model can learn which photographs
hold a finding without learning where it is (the localization evaluation says where).

    python benchmarks/zero_shot_real.py --model MODEL --corpus data/realcxr --split test --out DIR
    python benchmarks/zero_shot_real.py --modality fundus --model MODEL --corpus data/idrid_corpus --split val
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


FUNDUS_COMPARISONS = (
    ("hard_exudates_present_vs_absent", "hard exudates", "hard_exudates"),
    ("haemorrhage_present_vs_absent", "haemorrhages", "haemorrhage"),
)


def groups(record, modality: str) -> dict[str, bool]:
    """Per comparison of ``modality``, whether the record is a positive (True), a negative (False); absent: neither."""
    if modality == "fundus":
        labels = set(filter(None, record.extra.get("labels", "").split(";")))
        return {name: finding in labels for name, _, finding in FUNDUS_COMPARISONS}
    kind = group(record)
    return {name: kind == positive for name, _, positive in COMPARISONS if kind in (positive, "normal")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--modality", choices=("chest", "fundus"), default="chest")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (OSError, ValueError) as error:  # a missing model or corpus, an unreadable image, by name
        print(f"error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    predictor = AFLocPredictor.from_pretrained(args.model, device="cpu")
    records = read_manifest(args.corpus / "manifest.csv", split=args.split)
    comparisons = FUNDUS_COMPARISONS if args.modality == "fundus" else COMPARISONS
    texts = sorted({text for _, text, _ in comparisons})
    labelled: dict[str, list[tuple[int, float]]] = {name: [] for name, _, _ in comparisons}
    for record in records:
        member = groups(record, args.modality)
        if member:
            probabilities = predictor.classify(texts, image=predictor.encode_image(record.image))
            for name, text, _ in comparisons:
                if name in member:
                    labelled[name].append((int(member[name]), probabilities[text]))
    result = {"model": args.model, "split": args.split, "modality": args.modality}
    for name, text, _ in comparisons:
        labels = np.array([y for y, _ in labelled[name]], dtype=int)
        values = np.array([v for _, v in labelled[name]], dtype=float)
        pos, neg = int(labels.sum()), int(len(labels) - labels.sum())
        auc = roc_auc(labels, values) if pos and neg else float("nan")
        result[name] = {"text": text, "auc": auc, "ci": list(bootstrap_auc_ci(labels, values)) if pos and neg else None,
                        "positives": pos, "negatives": neg}  # fmt: skip
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "zero_shot.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
