"""How large are the region-token dot products a model's local losses softmax over? (issue #32, round 4)

    python benchmarks/region_token_dots.py MODEL --corpus data/realcxr [--split val] [--n 16]

For ``n`` captions of the corpus's split (sampled like training captions, seed 0) and their own images, prints the
mean, standard deviation and 5th/95th percentiles of the dot products between every region and every token of
the matching caption, for the sentence level (deep map) and the word level (shallow map). Dot products of
standard deviation ~150 make the per-region softmax over tokens nearly one-hot: every region, the film's border
included, attends fully to some token, which is what ``--model.null_attention`` changes.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from afloc import AFLocPredictor, load_image  # noqa: E402
from afloc.text.tokenizer import report_sentences, sample_caption  # noqa: E402
from training.manifest import read_manifest  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="model directory or .ckpt")
    parser.add_argument("--corpus", required=True, help="a corpus folder with manifest.csv")
    parser.add_argument("--split", default="val")
    parser.add_argument("--n", type=int, default=16)
    args = parser.parse_args(argv)
    predictor = AFLocPredictor.from_pretrained(args.model, device="cpu")
    corpus = Path(args.corpus)
    records = read_manifest(corpus / "manifest.csv", split=args.split)
    random.Random(0).shuffle(records)
    records = records[: args.n]
    images = torch.stack([predictor.preprocessing(load_image(r.image))[0] for r in records])
    captions = [sample_caption(report_sentences(r.report), random.Random(k)) for k, r in enumerate(records)]
    with torch.no_grad():
        image_out = predictor.model.encode_image(images)
        text_out = predictor.model.encode_text(predictor.tokenizer(captions))
    levels = (
        ("sentence (deep map)", image_out.patch_embeddings, text_out.sentence_embeddings, text_out.sentence_mask),
        ("word (shallow map)", image_out.shallow_patch_embeddings, text_out.word_embeddings, text_out.word_mask),
    )
    for name, regions, tokens, mask in levels:
        regions = regions.flatten(2).transpose(1, 2)  # [B, N, D]
        dots = torch.einsum("bnd,btd->bnt", regions, tokens)[mask[:, None, :].expand(-1, regions.shape[1], -1)]
        print(
            f"{name}: mean {dots.mean():.1f}, std {dots.std():.1f}, 5% {dots.quantile(0.05):.1f}, "
            f"95% {dots.quantile(0.95):.1f} over {dots.numel()} region-token pairs"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
