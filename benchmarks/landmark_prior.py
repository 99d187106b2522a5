"""Diagnostic baseline: what geometry alone gives on fundus photographs, with the optic disc found from the image.

The disc is the brightest large blob of a fundus photograph's red channel, so it can be found without any annotation
(:func:`training.zone_views.find_disc`, which anchored zone views use): the red channel on the retina (less a thin
rim), blurred by a Gaussian of 2% of the side, and its maximum. From the disc the map places the **fovea** as the
report generator does (2.5 disc diameters temporal to the disc, 0.3 below it; the disc diameter taken as 1/8 of the
pad-resized square, IDRiD's median), and draws a Gaussian there for every lesion prompt (``--sigma`` disc diameters)
and one of half a disc diameter at the disc for a disc prompt. The map never looks at a lesion: it says how far
"lesions lie around the macula" and "the disc is the bright blob" go, against the centre prior and the models,
scored by the same protocol as ``training evaluate`` (native pixels, class-level prompts). A diagnostic, never a model::

    python benchmarks/landmark_prior.py --corpus data/idrid_corpus --split val --sigma 1 2 3

``--score-detector`` also prints how often the found disc lies within half a disc diameter of the annotated one
(the annotations judge the detector; they do not make the map).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc.imaging.transforms import Preprocessing  # noqa: E402
from afloc.localization.heatmaps import scale_to_unit_range  # noqa: E402
from training.evaluation.datasets import read_phantom  # noqa: E402
from training.evaluation.protocol import HeatmapSource, ProtocolConfig, evaluate_localization  # noqa: E402
from training.evaluation.report import summarize_localization, to_json_safe  # noqa: E402
from training.realdata.fundus import fovea_from_disc  # noqa: E402
from training.zone_views import DISC_DIAMETER, disc_in_tensor  # noqa: E402


def landmark_maps(size: int, disc: tuple[float, float], prompts: list[str], sigma: float) -> np.ndarray:
    """``[K, size, size]`` maps in [-1, 1]: a Gaussian at the fovea (``sigma`` disc diameters) for each lesion
    prompt, one of half a disc diameter at the disc for a prompt that names the disc. The eye (so the nasal side)
    is the disc's side of the square."""
    dd = DISC_DIAMETER * size
    fovea = fovea_from_disc(disc, dd, "right" if disc[0] > size / 2 else "left")
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    maps = []
    for prompt in prompts:
        (cx, cy), spread = (disc, 0.5) if "disc" in prompt.lower() else (fovea, sigma)
        maps.append(np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (spread * dd) ** 2)))
    return scale_to_unit_range(np.stack(maps).astype(np.float32))


class LandmarkSource(HeatmapSource):
    """The landmark prior as a heatmap source of the evaluation protocol."""

    def __init__(self, image_size: int = 256, sigma: float = 2.0) -> None:
        self.predictor, self.baseline, self.name = None, None, "landmark prior"
        self.preprocessing = Preprocessing(image_size=image_size, modality="fundus")
        self.sigma = sigma

    def encode(self, tensors: torch.Tensor):
        size, (mean, std) = tensors.shape[-1], (self.preprocessing.mean, self.preprocessing.std)
        return [tuple(v * size for v in disc_in_tensor(t, mean, std)) for t in tensors]

    def heatmaps(self, encoded, prompts, sample_id, margin):
        return landmark_maps(self.preprocessing.input_size, encoded, list(prompts), self.sigma)


def detector_hits(corpus: Path, split: str, image_size: int = 256) -> tuple[int, int]:
    """How many of a split's annotated discs the detector finds within half a disc diameter, of how many."""
    from afloc.imaging.io import load_image

    preprocessing = Preprocessing(image_size=image_size, modality="fundus")
    hits = total = 0
    for sample in read_phantom(corpus, split).samples:
        if sample.category != "optic_disc" or not len(sample.boxes):
            continue
        tensor, mapping = preprocessing(load_image(sample.image_path))
        x, y = (v * image_size for v in disc_in_tensor(tensor, preprocessing.mean, preprocessing.std))
        bx, by, bw, bh = sample.boxes[0]
        scale = mapping.resized_width / mapping.original_width
        cx, cy = (bx + bw / 2) * scale + mapping.left, (by + bh / 2) * scale + mapping.top
        hits += int(np.hypot(x - cx, y - cy) <= 0.25 * (bw + bh) * scale)
        total += 1
    return hits, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, required=True, help="a training prepare-fundus corpus")
    parser.add_argument("--split", default="val")
    parser.add_argument("--sigma", type=float, nargs="+", default=[2.0], help="lesion Gaussians, in disc diameters")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--score-detector", action="store_true", help="also score the disc detector itself")
    parser.add_argument("--out", type=Path, default=None, help="write summary.json here")
    args = parser.parse_args(argv)
    try:
        samples = read_phantom(args.corpus, args.split).samples
    except ValueError as error:
        raise SystemExit(f"landmark_prior: {error}") from None
    if not samples:
        raise SystemExit(f"{args.corpus}: no {args.split} targets")
    result = {"corpus": str(args.corpus), "split": args.split, "runs": {}}
    for sigma in args.sigma:
        source = LandmarkSource(args.image_size, sigma)
        records, _ = evaluate_localization(samples, source, ProtocolConfig(space="native"), workers=0, progress=False)
        summary = summarize_localization(records)
        result["runs"][str(sigma)] = summary
        for name in summary["categories"]:
            p, c = summary["pointing_game"]["per_category"][name], summary["cnr"]["per_category"][name]
            print(f"sigma {sigma} {args.split} {name}: PG {p['mean']:.3f} [{p['ci'][0]:.3f}, {p['ci'][1]:.3f}] "
                  f"CNR {c['mean']:.2f} [{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]", flush=True)  # fmt: skip
    if args.score_detector:
        hits, total = detector_hits(args.corpus, args.split, args.image_size)
        result["detector"] = {"hits": hits, "discs": total}
        print(f"disc detector: {hits} of {total} within half a disc diameter")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "summary.json").write_text(json.dumps(to_json_safe(result), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
