"""The finding-kind oracle: a prompt-blind, image-blind heatmap that knows each finding kind's usual location.

For every category, the mean ground-truth mask (in model space, after the pad-resize) over the first
``train_samples`` training samples of a corpus with a train split (PhantomCXR layout). Every test sample of that
category then gets that same map, whatever its phrase (side, zone) and image. A localizer that reads the image
*and* the prompt must beat it; it is the strongest of the no-training floors on PhantomCXR (it is perfect for
central findings such as cardiomegaly).
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from afloc.imaging.io import load_image
from afloc.imaging.transforms import Preprocessing, pad_resize_mapping
from afloc.localization.heatmaps import apply_margin, scale_to_unit_range

from .protocol import HeatmapSource


class KindOracleSource(HeatmapSource):
    """Heatmaps = the category's mean training mask (needs each evaluated sample's category).

    Args:
        train_samples: training :class:`~training.evaluation.datasets.base.LocalizationSample` s with ground truth.
        samples: the samples that will be evaluated (their ``sample_id`` -> ``category`` is looked up).
        image_size: model-space side S.
    """

    def __init__(self, train_samples, samples, image_size: int = 224) -> None:
        self.predictor, self.baseline, self.name = None, "kind-oracle", "kind-oracle"
        self.preprocessing = Preprocessing(image_size=image_size)
        sums: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((image_size, image_size), np.float64))
        counts: dict[str, int] = defaultdict(int)
        for sample in train_samples:
            height, width = sample.image_size or load_image(sample.image_path).shape[:2]
            mapping = pad_resize_mapping(height, width, image_size)
            sums[sample.category] += mapping.mask_to_model(sample.gt_mask(height, width))
            counts[sample.category] += 1
        self.maps = {name: (sums[name] / counts[name]).astype(np.float32) for name in sums}
        self.categories = {s.sample_id: s.category for s in samples}
        missing = sorted({c for c in self.categories.values() if c not in self.maps})
        if missing:
            raise ValueError(f"kind oracle: no training sample of the categories {missing}")

    def encode(self, tensors):
        return [None] * len(tensors)

    def heatmaps(self, encoded, prompts, sample_id, margin):
        prior = self.maps[self.categories[sample_id]]
        return scale_to_unit_range(apply_margin(np.stack([prior] * len(prompts)), margin or 0))
