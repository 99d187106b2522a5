"""Zero-shot calibration and the out-of-distribution flag of the bundled models, measured on images they never saw
(issue #34). Each model's ``calibration.json`` / ``ood.safetensors`` were fitted on its corpus's val split
(``python -m training calibrate``); everything here is scored on other images:

* calibration: ECE and AUC per finding on the corpus's **test** split, uncalibrated against calibrated;
* OOD flag: the share flagged of the model's own test images, the other modality's synthetic test images, real
  images of its own modality (``../shared/data``), and images that are no radiograph or fundus photo at all
  (photographs and a logo shipped with matplotlib, rendered text, blank and noise images);
* time: what the flag adds per image (the score of one embedding) next to ``encode_image`` itself.

    python benchmarks/ood_calibration.py --n 200 [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing


def _nonmedical(n: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Photographs (crops of matplotlib's sample photos), rendered text, blank and noise images: ``n`` in all."""
    import matplotlib
    from PIL import Image, ImageDraw

    sample = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
    photos = [np.asarray(Image.open(sample / name).convert("RGB"), dtype=np.float32) / 255 for name in
              ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")]  # fmt: skip
    images = []
    for index in range(n):
        kind = index % 4
        if kind == 0:  # a random crop of a photograph
            photo = photos[index // 4 % len(photos)]
            h, w = photo.shape[:2]
            ch, cw = int(h * rng.uniform(0.5, 1.0)), int(w * rng.uniform(0.5, 1.0))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            images.append(photo[y : y + ch, x : x + cw])
        elif kind == 1:  # a screenshot of text
            canvas = Image.new("L", (400, 300), int(rng.integers(200, 256)))
            draw = ImageDraw.Draw(canvas)
            for line in range(12):
                lengths = rng.integers(2, 9, 6)
                words = " ".join("".join(chr(int(c)) for c in rng.integers(97, 123, n)) for n in lengths)
                draw.text((10, 10 + 24 * line), words, fill=int(rng.integers(0, 60)))
            images.append(np.asarray(canvas, dtype=np.float32) / 255)
        elif kind == 2:  # blank: one grey level
            images.append(np.full((256, 256), rng.uniform(0, 1), np.float32))
        else:  # noise
            images.append(rng.random((256, 256)).astype(np.float32))
    return images


def _files(folder: Path, pattern: str, n: int, rng: np.random.Generator) -> list[Path]:
    files = sorted(folder.glob(pattern))
    return [files[i] for i in sorted(rng.choice(len(files), size=min(n, len(files)), replace=False))] if files else []


def _split_images(manifest: Path, split: str, n: int) -> list[Path]:
    from training.manifest import read_manifest

    return [r.image for r in read_manifest(manifest, split)[:n]]


def _flagged(predictor, images) -> tuple[float, int]:
    from afloc.imaging.io import load_image

    flags = []
    for image in images:
        array = load_image(image) if isinstance(image, Path) else image
        if array.ndim == 3 and predictor.preprocessing.modality == "cxr":
            array = array.mean(axis=2)  # a chest model reads grey films: give it the grey version
        flags.append(bool(predictor.encode_image(array).out_of_distribution))
    return (float(np.mean(flags)) if flags else float("nan")), len(flags)


def _calibration_rows(predictor, manifest: Path, n: int) -> list[dict]:
    from afloc.localization.calibration import expected_calibration_error, roc_auc, uncalibrated_probability
    from training.calibrate import embed_split

    data = embed_split(predictor, manifest, "test", n)
    logits = predictor.zero_shot_logits_batch(list(data.labels), data.embeddings)
    rows = []
    for finding, z in logits.items():
        y, item = data.labels[finding], predictor.calibration.get(finding)
        raw = uncalibrated_probability(z)
        rows.append({
            "finding": finding, "n": int(y.size), "positives": int(y.sum()),
            "auc_before": roc_auc(raw, y), "auc_after": roc_auc(item.probability(z), y) if item else float("nan"),
            "ece_before": expected_calibration_error(raw, y),
            "ece_after": expected_calibration_error(item.probability(z), y) if item else float("nan"),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cxr-model", default=str(ROOT / "assets/models/afloc_phantomcxr_r10"))
    parser.add_argument("--fundus-model", default=str(ROOT / "assets/models/afloc_idrid_fundus_r10"))
    parser.add_argument("--cxr-corpus", default=str(ROOT / "data/phantom6k"))
    parser.add_argument("--fundus-corpus", default=str(ROOT / "data/idrid_fine"))
    parser.add_argument("--shared", default=str(ROOT.parent / "shared/data"))
    parser.add_argument("--n", type=int, default=200, help="images per set")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from afloc import AFLocPredictor

    torch.set_num_threads(1)
    rng, shared = np.random.default_rng(0), Path(args.shared)
    nonmedical = _nonmedical(args.n, rng)
    corpora = {"cxr": Path(args.cxr_corpus) / "manifest.csv", "fundus": Path(args.fundus_corpus) / "manifest.csv"}
    real = {
        "cxr": _files(shared / "cxr/covidqu_train", "*/images/*.png", args.n // 2, rng)
        + _files(shared / "cxr/tbx11k_train/images", "*.jpg", args.n // 2, rng),
        "fundus": _files(shared / "fundus", "**/*.jpg", args.n, rng),
    }
    results = {}
    for modality, model in (("cxr", args.cxr_model), ("fundus", args.fundus_model)):
        predictor = AFLocPredictor.from_pretrained(model, device="cpu")
        other = "fundus" if modality == "cxr" else "cxr"
        sets = {
            "own test split (synthetic)": _split_images(corpora[modality], "test", args.n),
            f"{other} test split (synthetic, other modality)": _split_images(corpora[other], "test", args.n),
            f"real {modality} images (../shared/data)": real[modality],
            "photographs, text, blank, noise": nonmedical,
        }
        flagged = {name: _flagged(predictor, images) for name, images in sets.items()}
        encoded = predictor.encode_image(nonmedical[0])
        start = time.perf_counter()
        for _ in range(200):
            predictor.ood.score(encoded.image_embedding)
        score_ms = (time.perf_counter() - start) / 200 * 1000
        start = time.perf_counter()
        for _ in range(20):
            predictor.encode_image(nonmedical[0])
        encode_ms = (time.perf_counter() - start) / 20 * 1000
        results[Path(model).name] = {
            "calibration": _calibration_rows(predictor, corpora[modality], None),
            "flagged": {name: {"share": share, "n": count} for name, (share, count) in flagged.items()},
            "ood_ms": score_ms, "encode_ms": encode_ms,
        }  # fmt: skip
    for name, result in results.items():
        print(f"\n### {name}\n\n| finding | test images / positive | AUC | ECE uncalibrated | ECE calibrated |")
        print("|---|---|---|---|---|")
        for row in result["calibration"]:
            print(f"| {row['finding']} | {row['n']} / {row['positives']} | {row['auc_before']:.3f} | "
                  f"{row['ece_before']:.3f} | {row['ece_after']:.3f} |")  # fmt: skip
        print("\n| images | n | flagged as out of distribution |\n|---|---|---|")
        for set_name, item in result["flagged"].items():
            print(f"| {set_name} | {item['n']} | {item['share']:.1%} |")
        print(f"\nOOD score: {result['ood_ms']:.3f} ms per image (encode_image: {result['encode_ms']:.1f} ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
