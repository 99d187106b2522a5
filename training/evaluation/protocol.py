"""The localization protocol (``docs/method.md`` section 5): heatmaps per (image, phrase), scored against
ground truth.

* ``space="model"`` is the reference protocol: maps and ground truth on the ``S x S`` pad-resized input (224),
  optional NaN margin (14 px), [-1, 1] scaling, IoU/Dice at 0.1..0.5 and their mean, signed CNR, pointing game.
* ``space="native"``: the heatmap is mapped back to the original pixels and scored against the original mask.

Ground-truth boxes become model-space masks by one of two rules (``box_rule``): ``"centre"`` (default) rasterises
each box in original pixels by pixel centres and maps the mask like the image; ``"reference"`` is the authors'
evaluation (:func:`reference_box_mask`), comparable with the paper's tables.

Images are loaded and pad-resized in DataLoader workers and encoded in batches (on the GPU when the model is
there); each image is encoded once for all its phrases. Heatmap sources are the model or a no-training baseline
(``random``, ``center``, ``uniform``) scored by the same code.
"""

from __future__ import annotations

import warnings
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from afloc.imaging.io import load_image
from afloc.imaging.transforms import PadResizeMapping, Preprocessing
from afloc.localization.field_of_view import retina_gates
from afloc.localization.heatmaps import (
    LocalizationConfig,
    apply_margin,
    centre_prior,
    scale_to_unit_range,
)
from afloc.localization.lung_field import gate_heatmaps
from afloc.localization.metrics import CNR_REGIONS, THRESHOLDS, cnr, pointing_game, threshold_metrics
from afloc.predictor import AFLocPredictor
from afloc.text.prompts import LOCALIZATION_TEMPLATE

from .datasets import LocalizationSample

TEMPLATE = LOCALIZATION_TEMPLATE.replace("{finding}", "{category}")  # the reference prompt, per category
TUNE_GRID = tuple(round(float(t), 2) for t in np.arange(-0.9, 0.95, 0.1))  # CheXlocalize threshold tuning
BASELINES = ("random", "center", "uniform")
BOX_RULES = ("centre", "reference")
PRESETS = {
    "paper": {
        "space": "model",
        "margin": 14,
        "box_rule": "reference",
        "cnr_regions": "reference",
        "flat_cnr": "zero",
        "phrase_case": "lower",
        "aggregation": "mean",
    }
}
"""Settings of the authors' released evaluation (docs/evaluation_protocol.md has each rule beside ours and the
measured size of each difference): ``ProtocolConfig.paper()`` applies them all."""


def reference_box_mask(boxes: np.ndarray, height: int, width: int, size: int, counts: bool = False) -> np.ndarray:
    """Boxes rasterised on the ``size x size`` model input exactly as the authors' evaluation does.

    Every coordinate is multiplied by ``size / max(height, width)``; the padding offset is
    ``floor((size - s) / 2)`` with the short side ``s = int(min(height, width) * (size / max(height, width)))``;
    then ``x, y`` (offset added) and ``w, h`` are each floored and the box covers rows ``y .. y + h - 1`` and
    columns ``x .. x + w - 1``. Flooring both the corner and the size makes boxes up to a pixel smaller than the
    ``"centre"`` rule on each axis (the paper's masks). A start below 0 is clipped to 0.

    Args:
        boxes: ``[K, 4]`` ``[x, y, w, h]`` boxes in original pixels.
        height, width: the original image's size.
        size: side of the model input.

        counts: return how many boxes cover each pixel (the authors add the box masks) instead of the union.

    Returns:
        ``bool [size, size]``, the union of the boxes; with ``counts``, ``uint16 [size, size]``.
    """
    scale = size / float(max(height, width))
    pad = size - int(min(height, width) * scale)
    left, top = (pad // 2, 0) if height >= width else (0, pad // 2)
    out = np.zeros((size, size), dtype=np.uint16)
    for x, y, w, h in np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * scale:
        col, row = max(int(np.floor(x + left)), 0), max(int(np.floor(y + top)), 0)
        out[row : row + int(np.floor(h)), col : col + int(np.floor(w))] += 1
    return out if counts else out > 0


@dataclass(frozen=True)
class ProtocolConfig:
    """How samples are turned into scores.

    Attributes:
        space: ``"model"`` (reference, S x S maps) or ``"native"`` (original pixels).
        margin: NaN border in model pixels (the reference protocol's 14 px); ``None`` = the model's own setting
            (``LocalizationConfig.margin``, 14 for converted authors' models) and 0 for baselines.
        prompt_mode: ``"phrase"`` (the dataset's phrase) or ``"template"`` ("Findings suggesting {category}.").
        templates: templates used by ``prompt_mode="template"`` and by the ensemble.
        ensemble: average the [-1, 1] maps of the phrase and every template (prompt ensemble), then rescale.
        category_prompts: ``((category, (prompt, ...)), ...)``: a category named here is prompted with its own
            prompts instead of the phrase and the templates (several are averaged like the ensemble); other
            categories keep the rules above. ``training evaluate --prompts-file`` reads it from JSON.
        thresholds: IoU/Dice thresholds.
        box_rule: how boxes become model-space masks: ``"centre"`` (pixel centres in original pixels, mapped like
            the image) or ``"reference"`` (the authors' flooring rule, :func:`reference_box_mask`; model space only).
        cnr_regions: ``"union"`` (ours: inside = any box) or ``"reference"`` (the authors': inside = pixels of
            exactly one box, outside = of none; where a phrase's boxes overlap, neither). Needs the reference
            box rule (the boxes are counted on its grid).
        flat_cnr: CNR when a map has no variance inside nor outside: ``"nan"`` (ours: undefined) or ``"zero"``
            (the authors').
        phrase_case: ``"as-is"`` (ours: "Pleural effusion" and "pleural effusion" are two samples) or ``"lower"``
            (the authors lower-case phrases before grouping an image's boxes by phrase: one sample).
        aggregation: the mean over thresholds of the per-threshold macros: ``"nanmean"`` (ours: a threshold
            where no category is defined is skipped) or ``"mean"`` (the authors': it makes the mean NaN).
        preset: the name of the preset these settings came from (``"paper"``), recorded in the summary.
    """

    space: str = "model"
    margin: int | None = None
    prompt_mode: str = "phrase"
    templates: tuple[str, ...] = (TEMPLATE,)
    ensemble: bool = False
    category_prompts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    thresholds: tuple[float, ...] = THRESHOLDS
    box_rule: str = "centre"
    cnr_regions: str = "union"
    flat_cnr: str = "nan"
    phrase_case: str = "as-is"
    aggregation: str = "nanmean"
    preset: str | None = None

    def __post_init__(self) -> None:
        if self.space not in ("model", "native"):
            raise ValueError(f"space must be 'model' or 'native', got {self.space!r}")
        if self.prompt_mode not in ("phrase", "template"):
            raise ValueError(f"prompt_mode must be 'phrase' or 'template', got {self.prompt_mode!r}")
        if self.margin is not None and self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if self.box_rule not in BOX_RULES:
            raise ValueError(f"box_rule must be one of {BOX_RULES}, got {self.box_rule!r}")
        if self.box_rule == "reference" and self.space != "model":
            raise ValueError("box_rule='reference' is defined on the model-space maps only (use space='model')")
        choices = {"cnr_regions": CNR_REGIONS, "flat_cnr": ("nan", "zero"), "phrase_case": ("as-is", "lower")}
        choices |= {"aggregation": ("nanmean", "mean"), "preset": (None, *PRESETS)}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.cnr_regions == "reference" and self.box_rule != "reference":
            raise ValueError(
                "cnr_regions='reference' counts boxes on the reference box rule's grid (box_rule='reference')"
            )
        for template in self.templates:
            if "{category}" not in template:
                raise ValueError(f"template {template!r} has no {{category}} placeholder")
        for category, prompts in self.category_prompts:
            if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
                raise ValueError(f"category_prompts[{category!r}] must be a non-empty list of non-empty prompts")

    @classmethod
    def paper(cls, **settings) -> ProtocolConfig:
        """The authors' evaluation rules (:data:`PRESETS` ``["paper"]``), with ``settings`` that no rule fixes
        (prompts, templates, thresholds)."""
        fixed = sorted(set(settings) & set(PRESETS["paper"]))
        if fixed:
            raise ValueError(f"the paper preset fixes {fixed}; drop them or evaluate without the preset")
        return cls(**PRESETS["paper"], preset="paper", **settings)

    def prompts(self, sample: LocalizationSample) -> list[str]:
        own = dict(self.category_prompts).get(sample.category)
        if own:
            return list(dict.fromkeys(own))
        category = sample.category.replace("_", " ")
        from_templates = [t.format(category=category) for t in self.templates]
        if self.ensemble:
            return list(dict.fromkeys([sample.phrase, *from_templates]))
        return [sample.phrase] if self.prompt_mode == "phrase" else from_templates[:1]


class _Images(Dataset):
    """Distinct image files, loaded and pad-resized in workers. Unreadable files give ``None``."""

    def __init__(self, paths: list[str], preprocessing: Preprocessing) -> None:
        self.paths, self.preprocessing = paths, preprocessing

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            image = load_image(self.paths[index])
        except ValueError as error:
            return index, None, None, str(error)
        tensor, mapping = self.preprocessing(image)
        return index, tensor, mapping, None


def _collate(items):
    return items


def _baseline_map(name: str, size: int, sample_id: str) -> np.ndarray:
    if name == "random":
        rng = np.random.default_rng(zlib.crc32(sample_id.encode()))
        return rng.random((size, size), dtype=np.float32)
    if name == "center":
        return centre_prior(size, size)
    if name == "uniform":
        return np.zeros((size, size), np.float32)
    raise ValueError(f"unknown baseline {name!r}; expected one of {BASELINES}")


class HeatmapSource:
    """Model-space heatmaps ``[K, S, S]`` for an image's prompts, from a predictor or a baseline."""

    def __init__(
        self,
        predictor: AFLocPredictor | None = None,
        baseline: str | None = None,
        image_size: int = 224,
        field_of_view: bool = False,
    ) -> None:
        """``field_of_view``: a baseline's maps are gated by each photograph's field of view, as a fundus model's
        are with ``LocalizationConfig.field_of_view`` (a model takes the setting from its predictor)."""
        if (predictor is None) == (baseline is None):
            raise ValueError("give exactly one of a model (predictor) or a baseline")
        if baseline is not None and baseline not in BASELINES:
            raise ValueError(f"unknown baseline {baseline!r}; expected one of {BASELINES}")
        self.predictor, self.baseline = predictor, baseline
        self.preprocessing = predictor.preprocessing if predictor else Preprocessing(image_size=image_size)
        self.name = baseline or "model"
        if field_of_view and predictor is not None:
            raise ValueError("a model's field-of-view gate is its predictor's setting (localization.field_of_view)")
        self.field_of_view = field_of_view

    def encode(self, tensors: torch.Tensor):
        if self.predictor is None:
            if self.field_of_view:
                return list(retina_gates(tensors, self.preprocessing.mean, self.preprocessing.std))
            return [None] * len(tensors)
        out = self.predictor.encode_images(tensors)
        gates = self.predictor.image_gates(tensors)
        gates = [None] * len(tensors) if gates is None else list(gates)
        return list(zip(out.patch_embeddings, out.shallow_patch_embeddings, gates, strict=True))

    def heatmaps(self, encoded, prompts: list[str], sample_id: str, margin: int | None) -> np.ndarray:
        """``margin=None`` keeps the model's own margin (0 for baselines)."""
        size = self.preprocessing.input_size
        if self.predictor is None:
            maps = np.stack([_baseline_map(self.baseline, size, f"{sample_id}|{p}") for p in prompts])
            maps = scale_to_unit_range(apply_margin(maps, margin or 0))
            return maps if encoded is None else gate_heatmaps(maps, encoded)
        patches, shallow, gate = encoded
        config = self.predictor.localization
        if margin is not None:
            config = LocalizationConfig(**{**config.to_dict(), "margin": margin})
        return self.predictor.model_space_heatmaps(patches, shallow, prompts, config, gate=gate)


class EnsembleSource(HeatmapSource):
    """The mean of several models' unit-range maps (a map-level ensemble), rescaled to [-1, 1].

    Each model keeps its own localization settings and margin rule; all must prepare images the same way (size,
    crop, normalisation), so that one input serves all and their maps lie on the same grid. Unlike a weight soup
    (``training average``), the models need not share a start or an architecture.
    """

    def __init__(self, predictors: Sequence[AFLocPredictor]) -> None:
        predictors = list(predictors)
        if len(predictors) < 2:
            raise ValueError(f"an ensemble needs at least two models, got {len(predictors)}")
        first = predictors[0].preprocessing
        for index, other in enumerate(predictors[1:], start=2):
            if other.preprocessing != first:
                raise ValueError(
                    f"the ensemble's models prepare images differently (model 1: {first}; model {index}: "
                    f"{other.preprocessing}): one input cannot serve both, and their maps would not align"
                )
        super().__init__(predictor=predictors[0])
        self.members = [HeatmapSource(predictor=p) for p in predictors]
        self.name = "ensemble"

    def encode(self, tensors: torch.Tensor):
        per_model = [member.encode(tensors) for member in self.members]
        return list(zip(*per_model, strict=True))

    def heatmaps(self, encoded, prompts: list[str], sample_id: str, margin: int | None) -> np.ndarray:
        return mean_map([m.heatmaps(e, prompts, sample_id, margin) for m, e in zip(self.members, encoded, strict=True)])


def mean_map(maps: Sequence[np.ndarray]) -> np.ndarray:
    """The NaN-ignoring mean of same-shaped ``[K, h, w]`` map stacks, each of its K maps rescaled to [-1, 1] (a
    pixel NaN in every stack stays NaN, without a warning): how ensembles of models or of prompts combine maps."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return scale_to_unit_range(np.nanmean(np.stack(maps), axis=0))


class LungFieldSource(HeatmapSource):
    """A prompt-blind baseline: the film's lung field alone (:class:`afloc.localization.lung_field.LungField`),
    the floor a lung-gated model must clear to show that its heat, not the gate, finds the lesion."""

    def __init__(self, lung_field, image_size: int = 224) -> None:
        self.predictor, self.baseline, self.name = None, "lung-field", "lung-field"
        self.lung_field = lung_field
        self.preprocessing = Preprocessing(image_size=image_size)

    def encode(self, tensors: torch.Tensor):
        from afloc.localization.lung_field import films_from_tensors

        films = films_from_tensors(tensors, self.preprocessing.mean, self.preprocessing.std)
        return list(self.lung_field(films))

    def heatmaps(self, encoded, prompts: list[str], sample_id: str, margin: int | None) -> np.ndarray:
        return scale_to_unit_range(apply_margin(np.stack([encoded] * len(prompts)), margin or 0))


def score_heatmap(
    heatmap: np.ndarray, truth: np.ndarray, thresholds: Sequence[float], config: ProtocolConfig | None = None
) -> dict[str, float]:
    """One sample's scores. ``truth`` is a boolean mask, or (reference box rule) the number of boxes covering each
    pixel: IoU, Dice and the pointing game use the pixels covered at all, CNR follows ``config.cnr_regions``."""
    config = config or ProtocolConfig()
    covered = truth > 0 if truth.dtype != np.bool_ else truth
    record: dict[str, float] = {}
    sweep = threshold_metrics(heatmap, covered, thresholds)
    for t, i, d in zip(thresholds, sweep["iou"], sweep["dice"], strict=True):
        record[f"iou@{t:g}"], record[f"dice@{t:g}"] = float(i), float(d)
    record["iou_mean"], record["dice_mean"] = sweep["iou_mean"], sweep["dice_mean"]
    flat = 0.0 if config.flat_cnr == "zero" else float("nan")
    regions = config.cnr_regions
    record["cnr"] = cnr(heatmap, truth if regions == "reference" else covered, regions=regions, flat=flat)
    record["pointing_game"] = pointing_game(heatmap, covered)
    for t, value in zip(TUNE_GRID, threshold_metrics(heatmap, covered, TUNE_GRID)["iou"], strict=True):
        record[f"tune_iou@{t:g}"] = float(value)
    return record


def side_mass(heatmap: np.ndarray, phrase: str, midline: float) -> float:
    """Share of the heatmap's positive mass on the side the phrase names (patient sides: the patient's right is
    the image's left). NaN when the phrase names no single side or the map has no positive mass.

    Args:
        heatmap: ``[H, W]`` map on [-1, 1] (NaN ignored).
        phrase: the prompt; "right"/"left" as words, "bilateral" excluded.
        midline: x coordinate (pixels) of the patient's midline in ``heatmap``.
    """
    words = set(phrase.lower().replace("-", " ").split())
    sides = {"right", "left"} & words
    if len(sides) != 1 or "bilateral" in words:
        return float("nan")
    mass = np.clip(np.nan_to_num(heatmap, nan=0.0), 0.0, None)
    total = float(mass.sum())
    if total <= 0:
        return float("nan")
    columns = np.arange(heatmap.shape[1]) + 0.5
    image_left = float(mass[:, columns < midline].sum())
    return (image_left if "right" in sides else total - image_left) / total


def sample_heatmap(
    source: HeatmapSource, encoded, sample: LocalizationSample, mapping: PadResizeMapping, config: ProtocolConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``(heatmap, ground truth)`` of one sample in the protocol's space."""
    prompts = config.prompts(sample)
    maps = source.heatmaps(encoded, prompts, sample.sample_id, config.margin)
    heatmap = maps[0] if len(maps) == 1 else mean_map([m[None] for m in maps])[0]
    if config.box_rule == "reference":
        return heatmap, _reference_truth(sample, mapping)
    truth = sample.gt_mask(mapping.original_height, mapping.original_width)
    if config.space == "model":
        return heatmap, mapping.mask_to_model(truth)
    return mapping.heatmap_to_original(heatmap), truth


def _reference_truth(sample: LocalizationSample, mapping: PadResizeMapping) -> np.ndarray:
    """Model-space ground truth with the authors' box rule, as the number of boxes covering each pixel; a mask
    given by the dataset is mapped like the image."""
    height, width = mapping.original_height, mapping.original_width
    if sample.image_size is not None and sample.image_size != (height, width):
        raise ValueError(
            f"{sample.sample_id}: the ground truth is for a {sample.image_size[0]}x{sample.image_size[1]} image, "
            f"got {height}x{width}"
        )
    truth = mapping.crop(reference_box_mask(sample.boxes, height, width, mapping.size, counts=True))
    if sample.mask_shape is not None:  # a dataset's mask counts once where no box covers it
        truth[(truth == 0) & mapping.mask_to_model(sample.mask)] = 1
    return truth


def iterate_encoded(
    samples: list[LocalizationSample],
    source: HeatmapSource,
    batch_size: int = 16,
    workers: int = 2,
    progress: bool = True,
) -> Iterator[tuple[LocalizationSample, object, object, str]]:
    """Yield ``(sample, encoded image, mapping, error)`` with every image loaded and encoded once, in batches."""
    by_image: dict[str, list[LocalizationSample]] = defaultdict(list)
    for sample in samples:
        by_image[str(sample.image_path)].append(sample)
    paths = list(by_image)
    loader = DataLoader(
        _Images(paths, source.preprocessing), batch_size=batch_size, num_workers=workers, collate_fn=_collate
    )
    with tqdm(total=len(samples), desc=f"evaluate ({source.name})", unit="sample", disable=not progress) as bar:
        for items in loader:
            good = [item for item in items if item[1] is not None]
            encoded = source.encode(torch.stack([item[1] for item in good])) if good else []
            for (index, _, mapping, _), enc in zip(good, encoded, strict=True):
                for sample in by_image[paths[index]]:
                    yield sample, enc, mapping, None
                    bar.update()
            for index, _, _, error in (item for item in items if item[1] is None):
                for sample in by_image[paths[index]]:
                    yield sample, None, None, error
                    bar.update()


def evaluate_localization(
    samples: list[LocalizationSample],
    source: HeatmapSource,
    config: ProtocolConfig,
    batch_size: int = 16,
    workers: int = 2,
    progress: bool = True,
    on_heatmap: Callable | None = None,
) -> tuple[list[dict], dict[str, str]]:
    """Per-sample records (see :mod:`training.evaluation.report`) and the unreadable images with reasons."""
    records, unreadable = [], {}
    for sample, encoded, mapping, error in iterate_encoded(samples, source, batch_size, workers, progress):
        if error is not None:
            unreadable[str(sample.image_path)] = error
            continue
        heatmap, truth = sample_heatmap(source, encoded, sample, mapping, config)
        record = {
            "sample_id": sample.sample_id,
            "category": sample.category,
            "phrase": sample.phrase,
            "prompt": " | ".join(config.prompts(sample)),
            "image": str(sample.image_path),
        }
        record.update(score_heatmap(heatmap, truth, config.thresholds, config))
        if config.space == "model":
            midline = mapping.left - mapping.crop_left + mapping.resized_width / 2
        else:
            midline = mapping.original_width / 2
        record["side_mass"] = side_mass(heatmap, sample.phrase, midline)
        records.append(record)
        if on_heatmap is not None:
            on_heatmap(sample, record, heatmap, truth)
    return records, unreadable


def tune_thresholds(val_records: list[dict]) -> dict[str, float]:
    """CheXlocalize protocol: per category, the threshold of :data:`TUNE_GRID` with the highest mean IoU on val."""
    best: dict[str, float] = {}
    categories = sorted({r["category"] for r in val_records})
    for category in categories:
        rows = [r for r in val_records if r["category"] == category]
        means = []
        for t in TUNE_GRID:
            values = np.array([r[f"tune_iou@{t:g}"] for r in rows], dtype=float)
            means.append(np.nanmean(values) if np.isfinite(values).any() else -np.inf)
        best[category] = TUNE_GRID[int(np.argmax(means))]
    return best


def apply_tuned_thresholds(records: list[dict], thresholds: dict[str, float]) -> list[dict]:
    """Add ``iou@tuned`` (IoU at the category's tuned threshold; NaN for a category tuning never saw)."""
    for record in records:
        t = thresholds.get(record["category"])
        record["iou@tuned"] = float("nan") if t is None else record[f"tune_iou@{t:g}"]
    return records
