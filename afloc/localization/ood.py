"""Is an image like the images a model was validated on? A Mahalanobis distance of its mean deep-map embedding.

The feature (:func:`ood_features`) is the mean over the deep map's regions of their embeddings, L2-normalised. It
was chosen by measurement (``benchmarks/README.md``): the global image embedding, trained to match report text,
let a fundus model take chest films and photographs for fundus photos; the mean region embedding separated every
kind tried. :class:`OODSummary` keeps, from the validation images' features, their mean, the top
``k`` principal directions with their variances, and the mean variance left outside them (a probabilistic-PCA
form of the Gaussian: a full shrunk covariance needs ``D x D`` numbers, this ``(k + 1) x D``). An image's score is

    sum_i (u_i . (x - mean))^2 / lambda_i  +  |residual|^2 / sigma^2,   divided by D,

and it is flagged when the score is over ``threshold``: the 99th percentile of the validation images' own scores.
Saved beside ``config.json`` as ``ood.safetensors`` (:data:`afloc.hub.format.OOD_NAME`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DEFAULT_COMPONENTS = 16
DEFAULT_QUANTILE = 0.99
FEATURE = "mean-deep-map-embedding"


def ood_features(patch_embeddings: torch.Tensor) -> torch.Tensor:
    """The OOD feature of deep-map embeddings ``[D, h, w]`` -> ``[D]`` (or ``[N, D, h, w]`` -> ``[N, D]``): the
    mean over the regions (normalised when scored)."""
    return patch_embeddings.float().flatten(-2).mean(-1)


def _normalised(embeddings: np.ndarray | torch.Tensor) -> np.ndarray:
    x = embeddings.detach().cpu().float().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    x = np.atleast_2d(x.astype(np.float64))
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class OODSummary:
    """A Gaussian summary of validation embeddings and the score above which an image counts as unlike them.

    Attributes:
        mean: ``[D]`` mean of the normalised embeddings.
        components: ``[k, D]`` principal directions (orthonormal rows).
        variances: ``[k]`` variance along each.
        residual_variance: mean variance per dimension outside the ``k`` directions (floored).
        threshold: scores above it are out of distribution (the ``quantile`` of the validation scores).
        quantile, n: how the threshold was chosen, and from how many images.
    """

    mean: np.ndarray
    components: np.ndarray
    variances: np.ndarray
    residual_variance: float
    threshold: float
    quantile: float = DEFAULT_QUANTILE
    n: int = 0

    @classmethod
    def fit(
        cls,
        embeddings: np.ndarray | torch.Tensor,
        components: int = DEFAULT_COMPONENTS,
        quantile: float = DEFAULT_QUANTILE,
    ) -> OODSummary:
        """Fit on ``[N, D]`` global image embeddings of validation images.

        Raises:
            ValueError: fewer than ``components + 2`` images, or a quantile outside (0, 1).
        """
        x = _normalised(embeddings)
        if x.shape[0] < components + 2:
            raise ValueError(f"an OOD summary with {components} components needs at least {components + 2} images")
        if not 0 < quantile < 1:
            raise ValueError(f"quantile must be in (0, 1), got {quantile}")
        mean = x.mean(axis=0)
        centred = x - mean
        _, singular, directions = np.linalg.svd(centred, full_matrices=False)
        variances = singular**2 / (x.shape[0] - 1)
        k = min(components, directions.shape[0])
        residual = float(variances[k:].sum() / max(x.shape[1] - k, 1))
        floor = 1e-6 * float(variances[0]) if variances.size else 1e-12
        summary = cls(mean, directions[:k], np.maximum(variances[:k], floor), max(residual, floor), np.inf, quantile, 0)
        scores = summary.scores(x, normalised=True)
        threshold = float(np.quantile(scores, quantile))
        return cls(summary.mean, summary.components, summary.variances, summary.residual_variance, threshold,
                   quantile, int(x.shape[0]))  # fmt: skip

    def scores(self, embeddings: np.ndarray | torch.Tensor, normalised: bool = False) -> np.ndarray:
        """``[N]`` scores of ``[N, D]`` (or ``[D]``) embeddings; higher = less like the validation images."""
        x = np.atleast_2d(np.asarray(embeddings, dtype=np.float64)) if normalised else _normalised(embeddings)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"embeddings have {x.shape[1]} dimensions; the OOD summary has {self.mean.shape[0]}")
        centred = x - self.mean
        projected = centred @ self.components.T
        residual = (centred**2).sum(axis=1) - (projected**2).sum(axis=1)
        inside = (projected**2 / self.variances).sum(axis=1)
        return (inside + np.maximum(residual, 0.0) / self.residual_variance) / x.shape[1]

    def score(self, embedding: np.ndarray | torch.Tensor) -> float:
        return float(self.scores(embedding)[0])

    def is_out(self, score: float) -> bool:
        return bool(score > self.threshold)

    # ---------------------------------------------------------------- storage (safetensors: tensors + metadata)
    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        tensors = {
            "mean": torch.from_numpy(self.mean.astype(np.float32)),
            "components": torch.from_numpy(np.ascontiguousarray(self.components, dtype=np.float32)),
            "variances": torch.from_numpy(self.variances.astype(np.float32)),
        }
        metadata = {"residual_variance": repr(self.residual_variance), "threshold": repr(self.threshold),
                    "quantile": repr(self.quantile), "n": str(self.n), "method": "ppca-mahalanobis",
                    "feature": FEATURE}  # fmt: skip
        return tensors, metadata

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> OODSummary:
        """Raises ValueError naming what is missing or inconsistent."""
        metadata = metadata or {}
        if metadata.get("feature", FEATURE) != FEATURE:
            raise ValueError(f"OOD summary of feature {metadata.get('feature')!r}; this library computes {FEATURE!r}")
        try:
            mean = tensors["mean"].double().numpy()
            components = tensors["components"].double().numpy()
            variances = tensors["variances"].double().numpy()
            residual, threshold = float(metadata["residual_variance"]), float(metadata["threshold"])
            quantile, n = float(metadata.get("quantile", DEFAULT_QUANTILE)), int(metadata.get("n", 0))
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"OOD summary is incomplete or malformed ({type(error).__name__}: {error})") from None
        k, d = components.shape if components.ndim == 2 else (0, 0)
        if mean.ndim != 1 or d != mean.shape[0] or variances.shape != (k,) or k == 0:
            raise ValueError("OOD summary tensors have inconsistent shapes")
        if not (residual > 0 and np.all(variances > 0) and np.isfinite(threshold)):
            raise ValueError("OOD summary variances must be > 0 and its threshold finite")
        return cls(mean, components, variances, residual, threshold, quantile, n)
