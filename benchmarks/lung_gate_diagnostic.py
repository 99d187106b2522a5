"""How much of a chest model's COVID-19 shortfall is heat outside the lungs? (issue #32, a diagnostic)

On the COVID-QU-Ex films of a ``training prepare-cxr`` corpus split (the only films with lung masks), scores the
COVID-19 opacity targets by the evaluation protocol (model space, the model's own settings) with each heatmap
source twice: as it is, and **gated by the film's expert lung mask** (every pixel outside the lungs set to the
map's minimum). The gate uses an annotation, so a gated row is never a model to ship: it says what the same map
would score if it never put heat off the lungs, i.e. how well it ranks the pixels *inside* them.

Gates: the film's expert lung mask (an annotation: a diagnostic only), the mean training lung mask (film-blind),
optionally black top-hats of the mean film or of each film (``--tophat``, ``--film-tophat``: annotation-free
image processing) and a phantom-trained lung field (``--lung-field``: no real annotation); ``--self-gate PROMPT``
gates by the model's own map of a prompt such as "lungs".

Sources: ``--model`` (one, or several for their map-level ensemble), the prior mask (``kind-oracle``: the mean
training COVID-19 mask) and ``lungs`` (the lung mask alone: each lung pixel's distance to the lung border, a
prompt-blind map that knows only where the lungs are).

    python benchmarks/lung_gate_diagnostic.py --model CKPT [CKPT ...] --corpus data/realcxr \\
        --shared ../shared/data/cxr --split val --smoothing-sigma 0.6 --similarity cosine --shallow-weight 0.5 \\
        --out runs/diagnostics/lung_gate
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from afloc.imaging.io import load_image  # noqa: E402
from afloc.imaging.transforms import Preprocessing, pad_resize_mapping  # noqa: E402
from afloc.localization.heatmaps import scale_to_unit_range  # noqa: E402
from training.evaluation.datasets import read_phantom  # noqa: E402
from training.evaluation.oracle import KindOracleSource  # noqa: E402
from training.evaluation.protocol import (  # noqa: E402
    EnsembleSource,
    HeatmapSource,
    ProtocolConfig,
    evaluate_localization,
)
from training.evaluation.report import summarize_localization  # noqa: E402

CATEGORY = "covid_opacity"


def lung_mask_path(sample_id: str, shared: Path) -> Path:
    """``covidqu_covid_5|phrase`` -> ``<shared>/covidqu_train/covid/lung_masks/covid_5.png``."""
    stem = sample_id.split("|")[0]
    if not stem.startswith("covidqu_"):
        raise ValueError(f"{stem}: not a COVID-QU-Ex film (only those have lung masks)")
    name = stem[len("covidqu_") :]
    folder = name.rsplit("_", 1)[0]
    return shared / "covidqu_train" / folder / "lung_masks" / f"{name}.png"


class LungMasks:
    """Each sample's expert lung mask in model space (pad-resized like the image)."""

    def __init__(self, samples, shared: Path, size: int) -> None:
        self.masks = {}
        for sample in samples:
            lungs = load_image(lung_mask_path(sample.sample_id, shared)) > 0.5
            lungs = lungs if lungs.ndim == 2 else lungs[..., 0]
            self.masks[sample.sample_id] = pad_resize_mapping(*lungs.shape, size).mask_to_model(lungs)


class Gated(HeatmapSource):
    """Another source's maps, rescaled to [0, 1] and multiplied by a gate in [0, 1] (0 outside the lungs)."""

    def __init__(self, inner: HeatmapSource, gate, name: str) -> None:
        self.inner, self.gate = inner, gate
        self.predictor, self.baseline, self.preprocessing = inner.predictor, inner.baseline, inner.preprocessing
        self.name = f"{inner.name} x {name}"

    def encode(self, tensors):
        return self.inner.encode(tensors)

    def heatmaps(self, encoded, prompts, sample_id, margin):
        maps = (self.inner.heatmaps(encoded, prompts, sample_id, margin) + 1.0) / 2.0
        return scale_to_unit_range(maps * self.gate(sample_id)[None])


class SelfGated(HeatmapSource):
    """A model's maps times its own map of another prompt (both rescaled to [0, 1]): a per-film gate that needs no
    annotation, e.g. the model's map of "the lungs"."""

    def __init__(self, inner: HeatmapSource, prompt: str) -> None:
        self.inner, self.prompt = inner, prompt
        self.predictor, self.baseline, self.preprocessing = inner.predictor, inner.baseline, inner.preprocessing
        self.name = f"{inner.name} x its map of {prompt!r}"

    def encode(self, tensors):
        return self.inner.encode(tensors)

    def heatmaps(self, encoded, prompts, sample_id, margin):
        maps = (self.inner.heatmaps(encoded, prompts, sample_id, margin) + 1.0) / 2.0
        gate = (self.inner.heatmaps(encoded, [self.prompt], sample_id, margin) + 1.0) / 2.0
        return scale_to_unit_range(maps * gate)


class SelfGateAlone(SelfGated):
    """The model's map of the gate prompt alone, whatever the prompt asked."""

    def heatmaps(self, encoded, prompts, sample_id, margin):
        return np.repeat(self.inner.heatmaps(encoded, [self.prompt], sample_id, margin), len(prompts), axis=0)


def film_tophat(path: str, size: int, element: int, blur: float = 6.0) -> np.ndarray:
    """A per-film lung field without annotation: the black top-hat of the film itself (parts darker than their
    surroundings at the scale of ``element`` model pixels), smoothed and scaled to [0, 1]."""

    from afloc.imaging.transforms import pad_resize

    image = load_image(path).astype(np.float32)
    image = pad_resize(image if image.ndim == 2 else image.mean(-1), size)[0].astype(np.float32)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (element, element))
    hat = cv2.morphologyEx(
        cv2.GaussianBlur(image, (0, 0), 3), cv2.MORPH_BLACKHAT, kernel, borderType=cv2.BORDER_REPLICATE
    )
    hat = cv2.GaussianBlur(hat, (0, 0), blur)
    return (hat - hat.min()) / max(float(hat.max() - hat.min()), 1e-6)


def mean_film_tophat(corpus: str, size: int, element: int) -> np.ndarray:
    """A film-blind lung atlas from unlabelled training films: the black top-hat of their mean film (the parts
    darker than their surroundings at the scale of ``element`` model pixels), scaled to [0, 1]."""

    from afloc.imaging.transforms import pad_resize

    total, count = np.zeros((size, size), np.float64), 0
    for sample in read_phantom(corpus, "train").samples:
        if sample.category != CATEGORY and not sample.sample_id.startswith("tbx"):
            continue
        image = load_image(sample.image_path).astype(np.float32)
        image = image if image.ndim == 2 else image.mean(-1)
        total += pad_resize(image, size)[0]
        count += 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (element, element))
    atlas = cv2.morphologyEx((total / count).astype(np.float32), cv2.MORPH_BLACKHAT, kernel)
    return (atlas - atlas.min()) / (atlas.max() - atlas.min())


class GateAlone(HeatmapSource):
    """A gate as a heatmap of its own (prompt-blind)."""

    def __init__(self, gate, size: int) -> None:
        self.gate, self.predictor, self.baseline, self.name = gate, None, "gate", "gate"
        self.preprocessing = Preprocessing(image_size=size)

    def encode(self, tensors):
        return [None] * len(tensors)

    def heatmaps(self, encoded, prompts, sample_id, margin):
        return scale_to_unit_range(np.stack([self.gate(sample_id)] * len(prompts)))


def score(source: HeatmapSource, samples, n_resamples: int) -> dict:
    records, unreadable = evaluate_localization(samples, source, ProtocolConfig(), batch_size=16, workers=0)
    if unreadable:
        raise ValueError(f"unreadable images: {unreadable[:3]}")
    summary = summarize_localization(records, n_resamples=n_resamples, seed=0)
    cell = summary["pointing_game"]["per_category"][CATEGORY]
    cnr = summary["cnr"]["per_category"][CATEGORY]
    return {
        "pointing_game": cell["mean"],
        "pointing_game_ci": cell["ci"],
        "cnr": cnr["mean"],
        "cnr_ci": cnr["ci"],
        "iou": summary["iou_mean"]["per_category"][CATEGORY]["mean"],
        "n": len(records),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", nargs="*", default=[], help="model(s); several: their map-level ensemble")
    parser.add_argument("--corpus", required=True, help="a training prepare-cxr corpus (e.g. data/realcxr)")
    parser.add_argument("--shared", required=True, help="the shared cxr folder holding covidqu_train/")
    parser.add_argument("--split", default="val", choices=["train", "val", "test"])
    parser.add_argument("--smoothing-sigma", type=float, default=None)
    parser.add_argument("--similarity", default=None)
    parser.add_argument("--shallow-weight", type=float, default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--self-gate", nargs="*", default=[], help="prompts whose model map gates the finding's")
    parser.add_argument("--film-tophat", type=int, nargs="*", default=[], help="per-film top-hat element sizes")
    parser.add_argument("--lung-field", default=None, help="a lung-field folder (python -m training lung-field)")
    parser.add_argument("--tophat", type=int, nargs="*", default=[61], help="atlas element sizes (model pixels)")
    parser.add_argument("--n-resamples", type=int, default=1000)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    samples = [s for s in read_phantom(args.corpus, args.split).samples if s.category == CATEGORY]
    samples = [s for s in samples if s.sample_id.startswith("covidqu_")][: args.limit]
    size = 224
    sources: dict[str, HeatmapSource] = {}
    if args.model:
        from afloc import AFLocPredictor

        overrides = {"smoothing_sigma": args.smoothing_sigma, "similarity": args.similarity}
        overrides["shallow_weight"] = args.shallow_weight
        overrides = {k: v for k, v in overrides.items() if v is not None}
        predictors = [AFLocPredictor.from_pretrained(path).with_localization(**overrides) for path in args.model]
        size = predictors[0].preprocessing.input_size
        sources["model"] = EnsembleSource(predictors) if len(predictors) > 1 else HeatmapSource(predictor=predictors[0])
    lungs = LungMasks(samples, Path(args.shared), size)
    train = read_phantom(args.corpus, "train").samples
    sources["prior mask"] = KindOracleSource([s for s in train if s.category == CATEGORY][:2000], samples, size)
    distances = {k: cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 5) for k, m in lungs.masks.items()}
    sources["lungs"] = GateAlone(lambda key: distances[key], size)  # knows only the lungs: distance to their border
    atlas_train = [s for s in train if s.category == CATEGORY][:2000]
    mean_lungs = np.mean(list(LungMasks(atlas_train[:500], Path(args.shared), size).masks.values()), axis=0)
    gates = {
        "the film's lung mask": lambda key: lungs.masks[key].astype(np.float32),
        "the mean training lung mask": lambda key: mean_lungs,
    }
    for element in args.tophat:
        atlas = mean_film_tophat(args.corpus, size, element)
        gates[f"the mean training film's black top-hat ({element} px)"] = lambda key, a=atlas: a
    paths = {sample.sample_id: sample.image_path for sample in samples}
    for element in args.film_tophat:
        cache = {key: film_tophat(path, size, element) for key, path in paths.items()}
        gates[f"the film's own black top-hat ({element} px)"] = lambda key, c=cache: c[key]
    if args.lung_field:
        from afloc.imaging.transforms import pad_resize
        from afloc.localization.lung_field import LungField

        field = LungField.load(args.lung_field)
        films = {}
        for key, path in paths.items():
            image = load_image(path).astype(np.float32)
            films[key] = pad_resize(image if image.ndim == 2 else image.mean(-1), size)[0].astype(np.float32)
        gated = dict(zip(films, field(np.stack(list(films.values()))), strict=True))
        gates["the phantom-trained lung field"] = lambda key, c=gated: c[key]
    rows = {}
    if "model" in sources:
        for prompt in args.self_gate:
            rows[f"model x its map of {prompt!r}"] = score(
                SelfGated(sources["model"], prompt), samples, args.n_resamples
            )
            rows[f"its map of {prompt!r} alone"] = score(
                SelfGateAlone(sources["model"], prompt), samples, args.n_resamples
            )
    for name, source in sources.items():
        rows[name] = score(source, samples, args.n_resamples)
        if name == "lungs":
            continue
        for gate_name, gate in gates.items():
            rows[f"{name} x {gate_name}"] = score(Gated(source, gate, gate_name), samples, args.n_resamples)
    for gate_name, gate in list(gates.items())[1:]:
        rows[f"{gate_name} alone"] = score(GateAlone(gate, size), samples, args.n_resamples)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"models": args.model, "split": args.split, "n_targets": len(samples), "overrides": vars(args)}
    (out / "lung_gate.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"COVID-19 opacity, {args.split}, {len(samples)} targets")
    print("| heatmap | PG [95% CI] | IoU | CNR [95% CI] |\n|---|---|---|---|")
    for name, r in rows.items():
        pg, cnr = r["pointing_game_ci"], r["cnr_ci"]
        print(
            f"| {name} | {r['pointing_game']:.3f} [{pg[0]:.3f}, {pg[1]:.3f}] | {r['iou']:.3f} | "
            f"{r['cnr']:.2f} [{cnr[0]:.2f}, {cnr[1]:.2f}] |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
