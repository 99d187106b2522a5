"""The paper's localization protocol on a dataset, callable from Python: ``evaluate_dataset(predictor, "coco",
annotations=..., images=...) -> EvaluationResult``. ``python -m training evaluate`` is a thin layer over it that
adds the output folder (tables, plots, the best and worst samples) and the command line."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .datasets import registry
from .protocol import (
    EnsembleSource,
    HeatmapSource,
    LungFieldSource,
    ProtocolConfig,
    apply_tuned_thresholds,
    evaluate_localization,
)


@dataclass
class EvaluationResult:
    """What :func:`evaluate_dataset` measured.

    Attributes:
        records: one dict per scored (image, phrase) pair (the rows of ``samples.csv``).
        summary: macro means with bootstrap CIs per metric and category (``summary.json``'s ``localization``).
        samples: the samples that were scored (after ``limit``).
        source: the heatmap source used (a model's predictor or a baseline).
        missing: image files the annotations name that do not exist; ``unreadable``: images that failed to decode.
        skipped: counts of annotations left out, by reason.
    """

    records: list[dict]
    summary: dict
    samples: list
    source: object
    missing: list = field(default_factory=list)
    unreadable: list = field(default_factory=list)
    skipped: dict = field(default_factory=dict)


def evaluate_dataset(
    source,
    dataset: str,
    *,
    annotations: str | None = None,
    images: str | None = None,
    masks: str | None = None,
    phrase: str | None = None,
    split: str | None = None,
    protocol: ProtocolConfig | None = None,
    limit: int | None = None,
    batch_size: int = 16,
    workers: int = 0,
    n_resamples: int = 1000,
    seed: int = 0,
    tuned_thresholds: dict[str, float] | None = None,
    oracle_train: int = 2000,
    image_size: int = 224,
    progress: bool = False,
    on_heatmap=None,
    lung_field=None,
    field_of_view: bool = False,
) -> EvaluationResult:
    """The paper's localization protocol on a dataset, from Python (``training evaluate`` is a thin layer over it).

    Args:
        source: an :class:`afloc.AFLocPredictor`, a list of them (a map-level ensemble: the mean of their
            unit-range maps, :class:`.protocol.EnsembleSource`), or a baseline name (``"center"``, ``"uniform"``,
            ``"random"``, ``"kind-oracle"``: the mean training mask of each finding, for PhantomCXR-layout corpora).
        dataset: a name of :data:`.datasets.registry.DATASETS`; ``annotations`` ... ``split``: its paths and options.
        protocol: model-space or native scoring, margin, box rule, prompts (default :class:`ProtocolConfig`).
        tuned_thresholds: per-category thresholds tuned on a validation run (CheXlocalize), applied and reported.
        oracle_train, image_size: the kind oracle's training samples and the baselines' model-space size.
        lung_field: the :class:`afloc.localization.lung_field.LungField` of the ``"lung-field"`` baseline (the
            field alone; to gate a model's maps, give its predictor the field: ``predictor.with_lung_field``).
        field_of_view: a ``"center"``, ``"uniform"`` or ``"random"`` baseline's maps are gated by each
            photograph's field of view (:mod:`afloc.localization.field_of_view`); a model's gate is its predictor's
            ``localization.field_of_view``.

    Raises:
        ValueError: a bad dataset, path or setting, or no sample to score.
    """
    from .report import summarize_localization

    if field_of_view and source not in ("center", "uniform", "random"):
        raise ValueError(
            "field_of_view gates the centre, uniform or random baseline; a model's gate is its predictor's "
            f"localization.field_of_view, and {source if isinstance(source, str) else 'a model'!r} takes no gate here"
        )
    protocol = protocol or ProtocolConfig()
    result = registry.read_dataset(dataset, annotations, images, masks, phrase, split)
    samples = result.samples
    if protocol.phrase_case == "lower":
        from .datasets.base import group_phrases_lowercase

        samples = group_phrases_lowercase(samples)
    samples = samples[:limit] if limit else samples
    if not samples:
        raise ValueError(f"no sample to evaluate ({result.summary() if hasattr(result, 'summary') else result})")
    if isinstance(source, (list, tuple)):
        heatmaps = EnsembleSource(source) if len(source) > 1 else HeatmapSource(predictor=source[0])
    elif not isinstance(source, str):
        heatmaps = HeatmapSource(predictor=source)
    elif source == "kind-oracle":
        if dataset != "phantom":
            raise ValueError("--baseline kind-oracle needs --dataset phantom (a corpus with a train split)")
        from .datasets import read_phantom
        from .oracle import KindOracleSource

        train = read_phantom(images, "train").samples[:oracle_train]
        heatmaps = KindOracleSource(train, samples, image_size=image_size)
    elif source == "lung-field":
        if lung_field is None:
            raise ValueError("the lung-field baseline needs a lung field (--lung-field DIR)")
        heatmaps = LungFieldSource(lung_field, image_size=image_size)
    else:
        heatmaps = HeatmapSource(baseline=source, image_size=image_size, field_of_view=field_of_view)
    records, unreadable = evaluate_localization(
        samples, heatmaps, protocol, batch_size, workers, progress=progress, on_heatmap=on_heatmap
    )
    if tuned_thresholds is not None:
        apply_tuned_thresholds(records, tuned_thresholds)
    summary = summarize_localization(
        records,
        thresholds=protocol.thresholds,
        n_resamples=n_resamples,
        seed=seed,
        aggregation=protocol.aggregation,
        authors_ci=protocol.preset == "paper",
    )
    sides = np.array([r["side_mass"] for r in records], dtype=float)
    if np.isfinite(sides).any():
        from afloc.localization.metrics import bootstrap_ci

        summary["side_mass"] = {
            "mean": float(np.nanmean(sides)),
            "ci": list(bootstrap_ci(sides, n_resamples=n_resamples, seed=seed)),
            "n": int(np.isfinite(sides).sum()),
            "definition": "share of the heatmap's positive mass on the side the phrase names (lateralised phrases)",
        }
    if tuned_thresholds is not None:
        values = np.array([r["iou@tuned"] for r in records], dtype=float)
        summary["chexlocalize"] = {
            "thresholds": tuned_thresholds,
            "iou_at_tuned_threshold": float(np.nanmean(values)),
        }
    return EvaluationResult(records, summary, samples, heatmaps, list(result.missing), unreadable, dict(result.skipped))
