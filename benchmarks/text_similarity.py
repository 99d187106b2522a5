"""Cosine similarity of report vectors of a few finding prompts from the frozen text encoder, raw and with the
word centring the bundled model was trained with (``center_words``: mean word vector of the first N training
captions, sampled as in training).

    python benchmarks/text_similarity.py --manifest data/phantom20k/manifest.csv
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc import AFLocConfig, build_model  # noqa: E402
from afloc.modeling.config import TextEncoderConfig  # noqa: E402
from afloc.text.tokenizer import load_tokenizer, report_sentences, sample_caption  # noqa: E402
from training.manifest import read_manifest  # noqa: E402

PROMPTS = [
    "Moderate consolidation in the right lower lobe.",
    "Moderate consolidation in the left lower lobe.",
    "Small left effusion.",
    "Small right effusion.",
    "No acute cardiopulmonary process.",
    "Moderate cardiomegaly.",
    "Pulmonary nodule at the left base.",
    "Large right pneumothorax.",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", required=True, help="training manifest (captions for the centre)")
    parser.add_argument("--captions", type=int, default=1024)
    args = parser.parse_args(argv)

    tokenizer = load_tokenizer()
    model = build_model(AFLocConfig(text=TextEncoderConfig(center_words=True))).eval()
    records = [r for r in read_manifest(args.manifest, split="train") if report_sentences(r.report)]
    sentences = [report_sentences(r.report) for r in records[: args.captions]]
    captions = [sample_caption(s, random.Random(f"center:{i}")) for i, s in enumerate(sentences)]
    with torch.no_grad():
        batches = [tokenizer(captions[i : i + 64]) for i in range(0, len(captions), 64)]
        text = tokenizer(PROMPTS)
        raw = model.text_encoder(text).report_embedding
        model.set_word_center(batches)
        centred = model.encode_text(text).report_embedding
    for name, vectors in (("raw", raw), (f"centred ({len(captions)} captions)", centred)):
        unit = torch.nn.functional.normalize(vectors, dim=-1)
        similarity = unit @ unit.T
        print(f"\n{name}:")
        for prompt, row in zip(PROMPTS, similarity, strict=True):
            print(f"{prompt[:40]:40s} " + " ".join(f"{v:5.2f}" for v in row.tolist()))
        off = similarity[~torch.eye(len(PROMPTS), dtype=torch.bool)]
        print(f"off-diagonal range {off.min():.2f} .. {off.max():.2f}")


if __name__ == "__main__":
    main()
