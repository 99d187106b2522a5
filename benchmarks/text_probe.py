"""Diagnostic: do the prompt embeddings of a model tell finding kinds, sides and zones apart?

Every distinct test-split phrase of a PhantomCXR corpus (held-out phrasings: none occurs in training reports) is
embedded as a prompt (the report vector that heatmaps use) and matched to its nearest training phrase by
cosine. The probe reports how often that neighbour has the same finding kind, the same side (patient's right /
left / both, read off the ground-truth boxes) and the same zone (upper / middle / lower third of the film, by
the boxes' centre), next to the chance rate of always answering the most frequent value::

    python benchmarks/text_probe.py --corpus data/phantom20k                   # the frozen MiniLM
    python benchmarks/text_probe.py --corpus data/phantom20k --model frozen --model assets/models/afloc_phantomcxr_r10
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc import AFLocPredictor, build_model  # noqa: E402
from afloc.modeling.config import AFLocConfig, ImageEncoderConfig  # noqa: E402
from afloc.text.tokenizer import load_tokenizer  # noqa: E402
from training.evaluation.datasets import read_phantom  # noqa: E402


def attributes(sample) -> dict[str, str]:
    """Kind, side and zone of a phantom sample, from its category and boxes (original pixels)."""
    height, width = sample.image_size or (256, 256)
    boxes = sample.boxes
    centres_x = boxes[:, 0] + boxes[:, 2] / 2
    centre_y = float((boxes[:, 1] + boxes[:, 3] / 2).mean()) / height if len(boxes) else 0.5
    if len(boxes) and (centres_x < width / 2).all():
        side = "right"  # the patient's right is the image's left
    elif len(boxes) and (centres_x >= width / 2).all():
        side = "left"
    else:
        side = "both"
    zone = "upper" if centre_y < 0.4 else "middle" if centre_y < 0.6 else "lower"
    return {"kind": sample.category, "side": side, "zone": zone}


def phrases(corpus: Path, split: str) -> dict[str, dict[str, str]]:
    """Distinct phrases of a split with the attributes of their first occurrence."""
    out: dict[str, dict[str, str]] = {}
    for sample in read_phantom(corpus, split).samples:
        out.setdefault(sample.phrase, attributes(sample))
    return out


def probe(predictor: AFLocPredictor, train: dict, test: dict) -> dict[str, dict[str, float]]:
    train_names, test_names = list(train), list(test)
    with torch.no_grad():
        a = F.normalize(
            torch.cat([predictor.embed_prompts(train_names[i : i + 256]) for i in range(0, len(train_names), 256)]),
            dim=1,
        )
        b = F.normalize(
            torch.cat([predictor.embed_prompts(test_names[i : i + 256]) for i in range(0, len(test_names), 256)]), dim=1
        )
    nearest = (b @ a.t()).argmax(dim=1).tolist()
    result = {}
    for key in ("kind", "side", "zone"):
        truth = [test[n][key] for n in test_names]
        guess = [train[train_names[j]][key] for j in nearest]
        majority = Counter(truth).most_common(1)[0][1] / len(truth)
        result[key] = {
            "accuracy": float(np.mean([g == t for g, t in zip(guess, truth, strict=True)])),
            "chance": majority,
        }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", required=True, type=Path)
    parser.add_argument(
        "--model", action="append", help="model directory (repeatable); 'frozen' (default) = the frozen MiniLM"
    )
    args = parser.parse_args(argv)
    train, test = phrases(args.corpus, "train"), phrases(args.corpus, "test")
    print(f"{len(test)} distinct test phrases against {len(train)} distinct training phrases")
    print("| text side | kind | side | zone |")
    print("|---|---|---|---|")
    for source in args.model or ["frozen"]:
        if source == "frozen":
            model = build_model(AFLocConfig(image=ImageEncoderConfig("resnet18", 64)))
            predictor, name = AFLocPredictor(model, load_tokenizer(None), device="cpu"), "frozen all-MiniLM-L6-v2"
        else:
            predictor, name = AFLocPredictor.from_pretrained(source, device="cpu"), Path(source).name
        r = probe(predictor, train, test)
        cells = " | ".join(f"{r[k]['accuracy']:.3f} (chance {r[k]['chance']:.3f})" for k in ("kind", "side", "zone"))
        print(f"| {name} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
