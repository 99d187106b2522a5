"""Localization measured while training: the evaluation protocol run on a fixed set of validation studies.

Contrastive losses say little about whether heatmaps land on findings (a run can lower its loss and still point
at the wrong lung). :class:`LocalizationMonitor` scores pointing game, IoU (mean over 0.1-0.5), CNR and side
mass at every validation, with the code path of ``python -m training evaluate`` (same reader, heatmaps, protocol
and summary), and logs them as ``val/pointing_game``, ``val/iou``, ``val/cnr`` and ``val/side_mass`` so that
``ModelCheckpoint`` can select on them and ``training plot`` can draw them. How often it runs is the trainer's
``val_check_interval`` (every N training steps).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl

from afloc.imaging.transforms import Preprocessing
from afloc.localization.heatmaps import LocalizationConfig
from afloc.predictor import AFLocPredictor

logger = logging.getLogger(__name__)


def summarize_scores(records: list[dict], n_resamples: int = 0, seed: int = 0) -> dict[str, float]:
    """The headline numbers of ``training evaluate``'s ``summary.json`` for a list of protocol records.

    Returns ``{"pointing_game", "iou", "cnr"}`` as macro averages over categories (the tables' headline) and
    ``side_mass`` as the mean over lateralised phrases (NaN when there is none).
    """
    from .evaluation.report import summarize_localization

    summary = summarize_localization(records, n_resamples=max(1, n_resamples), seed=seed)
    sides = np.array([r["side_mass"] for r in records], dtype=float)
    return {
        "pointing_game": float(summary["pointing_game"]["macro"]),
        "iou": float(summary["iou_mean"]["macro"]),
        "cnr": float(summary["cnr"]["macro"]),
        "side_mass": float(np.nanmean(sides)) if np.isfinite(sides).any() else float("nan"),
    }


class LocalizationMonitor(pl.Callback):
    """Score localization on fixed PhantomCXR-layout studies at every validation (rank 0 computes, all log).

    Args:
        corpus: the corpus folder with ``annotations/<split>.json`` (PhantomCXR layout); default: the folder of
            the data module's manifest.
        split: annotation split scored as ``val/...`` (``val``; the test split is never used while training).
        samples: how many (image, phrase) samples of that split, the first ones of the file (a fixed set).
        train_samples: also score this many training-split samples as ``train_loc/...`` (fit vs generalisation);
            0 = off.
        protocol: ``native`` (heatmaps on the original pixels, as the phantom targets are stated) or ``reference``
            (model-space maps).
        smoothing_sigma: heatmap smoothing in grid cells (the value the model will be exported with).
        similarity: ``dot`` (reference) or ``cosine``.
        batch_size: images encoded at once.
    """

    METRICS = ("pointing_game", "iou", "cnr", "side_mass")

    def __init__(
        self,
        corpus: str | None = None,
        split: str = "val",
        samples: int = 300,
        train_samples: int = 0,
        protocol: str = "native",
        smoothing_sigma: float = 1.5,
        similarity: str = "dot",
        batch_size: int = 32,
    ) -> None:
        super().__init__()
        if samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        if train_samples < 0:
            raise ValueError(f"train_samples must be >= 0, got {train_samples}")
        if protocol not in ("native", "reference"):
            raise ValueError(f"protocol must be 'native' or 'reference', got {protocol!r}")
        if split == "test":
            raise ValueError("the test split is for the final evaluation only; monitor 'val' (or 'train')")
        self.corpus, self.split, self.samples, self.train_samples = corpus, split, samples, train_samples
        self.protocol = protocol
        self.localization = LocalizationConfig(smoothing_sigma=smoothing_sigma, similarity=similarity)
        self.batch_size = batch_size
        self._sets: dict[str, list] = {}

    def _corpus(self, trainer: pl.Trainer) -> Path:
        if self.corpus is not None:
            return Path(self.corpus).expanduser()
        manifest = getattr(trainer.datamodule, "manifest", None)
        if manifest is None:
            raise ValueError("LocalizationMonitor needs corpus= or a data module with a manifest")
        return Path(manifest).parent

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self._sets:
            return
        from .evaluation.datasets import read_phantom

        corpus = self._corpus(trainer)
        for prefix, split, count in (("val", self.split, self.samples), ("train_loc", "train", self.train_samples)):
            if count == 0:
                continue
            path = corpus / "annotations" / f"{split}.json"
            if not path.is_file():
                raise ValueError(f"LocalizationMonitor: {path} does not exist (needs a PhantomCXR-layout corpus)")
            self._sets[prefix] = read_phantom(corpus, split).samples[:count]

    def _predictor(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> AFLocPredictor:
        tokenizer = trainer.datamodule.tokenizer
        # the training images' preprocessing (modality, mean, std), else the default at the model's size
        preprocessing = getattr(trainer.datamodule, "preprocessing", None)
        if preprocessing is None:
            preprocessing = Preprocessing(image_size=pl_module.model.config.image.image_size)
        # the live model on its own device; the predictor puts it in eval mode, restored by the caller
        return AFLocPredictor(pl_module.model, tokenizer, preprocessing, self.localization, device=pl_module.device)

    def score(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, dict[str, float]]:
        """``{prefix: {metric: value}}`` for every monitored set (the model must be in eval mode)."""
        from .evaluation.protocol import HeatmapSource, ProtocolConfig, evaluate_localization

        source = HeatmapSource(predictor=self._predictor(trainer, pl_module))
        config = ProtocolConfig(space="model" if self.protocol == "reference" else "native")
        results = {}
        for prefix, samples in self._sets.items():
            records, _ = evaluate_localization(
                samples, source, config, batch_size=self.batch_size, workers=0, progress=False
            )
            results[prefix] = summarize_scores(records) if records else dict.fromkeys(self.METRICS, float("nan"))
        return results

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._sets:
            return
        start = time.perf_counter()
        was_training = pl_module.model.training
        pl_module.model.eval()
        try:
            results = self.score(trainer, pl_module)
        finally:
            pl_module.model.train(was_training)
            if getattr(pl_module.hparams, "freeze_text", False):
                pl_module.model.text_encoder.eval()
        for prefix, values in results.items():
            for name, value in values.items():
                pl_module.log(f"{prefix}/{name}", value, on_step=False, on_epoch=True, sync_dist=True)
        if hasattr(pl_module, "elapsed_seconds"):
            pl_module.log("val/elapsed_s", pl_module.elapsed_seconds(), on_step=False, on_epoch=True, sync_dist=True)
        logger.info(
            "localization at step %d (%.1f s): %s",
            trainer.global_step,
            time.perf_counter() - start,
            {p: {k: round(v, 3) for k, v in r.items()} for p, r in results.items()},
        )
