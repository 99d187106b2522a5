"""Which embedding should the out-of-distribution flag summarise? (issue #34; the choice behind
``afloc.localization.ood``). For each bundled model, a summary is fitted on 400 val images of its corpus with each
candidate feature and ``k`` principal directions, and the share flagged of four sets of 100 images is printed:

* ``global``: the global image embedding (the one zero-shot classification uses);
* ``deep-mean``: the mean of the deep-map region embeddings (what the library uses);
* ``concat``: both and the regions' standard deviation, each normalised, side by side.

    python benchmarks/ood_features.py --cxr-corpus data/phantom20k --fundus-corpus data/fundus12k
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.ood_calibration import _files, _nonmedical, _split_images  # noqa: E402


def _features(predictor, images) -> dict[str, np.ndarray]:
    from afloc.imaging.io import load_image

    out = {"global": [], "deep-mean": [], "concat": []}
    for image in images:
        array = load_image(image) if isinstance(image, Path) else image
        if array.ndim == 3 and predictor.preprocessing.modality == "cxr":
            array = array.mean(axis=2)
        tensor, _ = predictor.preprocessing(np.asarray(array, np.float32))
        encoded = predictor.encode_images(tensor[None])
        regions = encoded.patch_embeddings[0].flatten(1)
        vectors = {"global": encoded.image_embedding[0], "deep-mean": regions.mean(1), "std": regions.std(1)}
        for name in ("global", "deep-mean"):
            out[name].append(vectors[name].numpy())
        out["concat"].append(np.concatenate([(v / v.norm()).numpy() for v in vectors.values()]))
    return {name: np.stack(values) for name, values in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cxr-corpus", default=str(ROOT / "data/phantom20k"))
    parser.add_argument("--fundus-corpus", default=str(ROOT / "data/fundus12k"))
    parser.add_argument("--shared", default=str(ROOT.parent / "shared/data"))
    args = parser.parse_args(argv)
    import torch

    from afloc import AFLocPredictor
    from afloc.localization.ood import OODSummary

    torch.set_num_threads(1)
    rng, shared = np.random.default_rng(0), Path(args.shared)
    corpora = {"cxr": Path(args.cxr_corpus) / "manifest.csv", "fundus": Path(args.fundus_corpus) / "manifest.csv"}
    real = {
        "cxr": _files(shared / "cxr/covidqu_train", "*/images/*.png", 50, rng)
        + _files(shared / "cxr/tbx11k_train/images", "*.jpg", 50, rng),
        "fundus": _files(shared / "fundus", "**/*.jpg", 100, rng),
    }
    nonmedical = _nonmedical(100, rng)
    print(
        "| model | feature | k | own test | other modality | real images | non-medical |\n|---|---|---|---|---|---|---|"
    )
    for modality, model in (("cxr", "afloc_phantomcxr_r10"), ("fundus", "afloc_idrid_fundus_r10")):
        predictor = AFLocPredictor.from_pretrained(ROOT / "assets/models" / model, device="cpu")
        other = "fundus" if modality == "cxr" else "cxr"
        fitted = _features(predictor, _split_images(corpora[modality], "val", 400))
        sets = [_split_images(corpora[modality], "test", 100), _split_images(corpora[other], "test", 100),
                real[modality], nonmedical]  # fmt: skip
        features = [_features(predictor, images) for images in sets]
        for name in ("global", "deep-mean", "concat"):
            for k in (8, 16, 32):
                summary = OODSummary.fit(fitted[name], components=k)
                shares = [float(np.mean(summary.scores(f[name]) > summary.threshold)) for f in features]
                print(f"| {model} | {name} | {k} | " + " | ".join(f"{s:.0%}" for s in shares) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
