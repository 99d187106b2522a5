"""From region embeddings and a prompt embedding to a heatmap (``docs/method.md`` section 4).

Pipeline in model space: similarity of each deep-map region with the prompt's report vector -> Gaussian
smoothing on the grid -> bilinear upsampling to the input size -> optional NaN margin -> min-max to [-1, 1].
:meth:`afloc.imaging.transforms.PadResizeMapping.heatmap_to_original` then maps it onto the original pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from ..settings import from_dict
from .gloria import attention_map

SIMILARITIES = ("dot", "cosine", "gloria")
"""Region-prompt similarities of :class:`LocalizationConfig` (and zero-shot scores of
:class:`afloc.localization.zero_shot.ZeroShotConfig`): the command lines' choices."""


@dataclass(frozen=True)
class LocalizationConfig:
    """How heatmaps are computed; saved in ``preprocessing.json`` (zero-shot scoring:
    :class:`afloc.localization.zero_shot.ZeroShotConfig`).

    Attributes:
        similarity: ``"dot"`` = raw dot product of each region with the prompt's report vector (reference;
            the report vector's 1/max_length scale only changes the map's scale, which min-max removes) or
            ``"cosine"``, or ``"gloria"``: GLoRIA's own map, the maximum over the prompt's words of their attention
            over the regions (:func:`afloc.localization.gloria.attention_map`; for scoring a converted GLoRIA
            model as published; no shallow map).
        smoothing_sigma: Gaussian sigma in grid cells on the deep map (1.5); 0 disables smoothing.
        margin: width in model pixels of a NaN border (the reference protocol's optional 14 px emulates a
            centre crop); 0 = none.
        shallow_weight: weight of the shallow (word-level, layer2) map fused with the deep map; 0 = reference.
        prompt_rule: how a prompt's text becomes the text encoder's input
        (:func:`afloc.text.tokenizer.normalize_prompt`):
            ``"sentences"`` (default; sentences joined with ". " like training captions) or ``"reference"`` (the
            authors' inference: one-word sentences dropped, the rest joined with a space). Converted authors'
            models use ``"reference"``.
        field_of_view: fundus photographs only: every map is gated by the photograph's field of view (the retina,
            found from its brightness: :mod:`afloc.localization.field_of_view`), so that the black surround and the
            padding get no heat. False = ungated (reference).
    """

    similarity: Literal["dot", "cosine", "gloria"] = "dot"
    smoothing_sigma: float = 1.5
    margin: int = 0
    shallow_weight: float = 0.0
    prompt_rule: Literal["sentences", "reference"] = "sentences"
    field_of_view: bool = False

    def __post_init__(self) -> None:
        if self.prompt_rule not in ("sentences", "reference"):
            raise ValueError(f"prompt_rule must be 'sentences' or 'reference', got {self.prompt_rule!r}")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"similarity must be 'dot', 'cosine' or 'gloria', got {self.similarity!r}")
        if self.smoothing_sigma < 0:
            raise ValueError(f"smoothing_sigma must be >= 0, got {self.smoothing_sigma}")
        if self.margin < 0:
            raise ValueError(f"margin must be >= 0, got {self.margin}")
        if not 0.0 <= self.shallow_weight <= 1.0:
            raise ValueError(f"shallow_weight must be in [0, 1], got {self.shallow_weight}")
        if self.similarity == "gloria" and self.shallow_weight > 0:
            raise ValueError("similarity 'gloria' (GLoRIA's word-attention map) has no shallow map: shallow_weight 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LocalizationConfig:
        return from_dict(cls, data, "localization")


def similarity_maps(
    patch_embeddings: torch.Tensor, text_embeddings: torch.Tensor, similarity: str = "dot"
) -> torch.Tensor:
    """Region x prompt similarity.

    Args:
        patch_embeddings: ``[D, h, w]`` region embeddings of one image.
        text_embeddings: ``[K, D]`` prompt (report) vectors.
        similarity: ``"dot"`` or ``"cosine"``.

    Returns:
        ``[K, h, w]`` similarity maps (float32).
    """
    if patch_embeddings.ndim != 3 or text_embeddings.ndim != 2:
        raise ValueError(
            f"expected patch_embeddings [D, h, w] and text_embeddings [K, D], got "
            f"{tuple(patch_embeddings.shape)} and {tuple(text_embeddings.shape)}"
        )
    patches = patch_embeddings.float()
    text = text_embeddings.float()
    if similarity == "cosine":
        patches = F.normalize(patches, dim=0)
        text = F.normalize(text, dim=1)
    elif similarity != "dot":
        raise ValueError(f"similarity must be 'dot' or 'cosine', got {similarity!r}")
    return torch.einsum("dhw,kd->khw", patches, text)


def smooth(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of ``[K, h, w]`` maps over the two grid axes (scipy, ``mode="reflect"``)."""
    if sigma <= 0:
        return maps
    return gaussian_filter(maps, sigma=(0.0, sigma, sigma))


def centre_prior(height: int, width: int) -> np.ndarray:
    """The prompt-blind centre prior ``[height, width]``: an isotropic Gaussian on the image's centre with a standard
    deviation of a quarter of its longer side, peak 1 (the evaluation's ``center`` baseline on the square model
    grid; a reference a heatmap has to beat). Scale it with :func:`scale_to_unit_range` to threshold it like a
    model's map."""
    sigma = max(height, width) / 4
    rows = np.arange(height, dtype=np.float32) - (height - 1) / 2
    cols = np.arange(width, dtype=np.float32) - (width - 1) / 2
    return np.exp(-(rows[:, None] ** 2 + cols[None, :] ** 2) / (2 * sigma**2)).astype(np.float32)


def scale_to_unit_range(maps: np.ndarray) -> np.ndarray:
    """Min-max each ``[h, w]`` map of ``[K, h, w]`` to [-1, 1] over its non-NaN pixels.

    A constant map becomes all zeros (no direction to show); NaN stays NaN.
    """
    maps = np.asarray(maps, dtype=np.float32)
    out = np.full_like(maps, np.nan)
    for k, m in enumerate(maps):
        valid = ~np.isnan(m)
        if not valid.any():
            continue
        low, high = float(m[valid].min()), float(m[valid].max())
        if high - low <= 1e-12 * max(1.0, abs(high)):
            out[k][valid] = 0.0
        else:
            out[k][valid] = 2.0 * (m[valid] - low) / (high - low) - 1.0
    return out


def upsample(maps: np.ndarray, size: int) -> np.ndarray:
    """Bilinear upsampling of ``[K, h, w]`` grid maps to ``[K, size, size]`` (``align_corners=False``)."""
    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).unsqueeze(1)
    return F.interpolate(tensor, size=(size, size), mode="bilinear", align_corners=False).squeeze(1).numpy()


def apply_margin(maps: np.ndarray, margin: int) -> np.ndarray:
    """Set a ``margin``-pixel border of ``[K, S, S]`` maps to NaN."""
    if margin <= 0:
        return maps
    if 2 * margin >= maps.shape[-1]:
        raise ValueError(f"margin {margin} leaves no pixel of a {maps.shape[-1]}-pixel map")
    out = maps.copy()
    out[:, :margin] = np.nan
    out[:, -margin:] = np.nan
    out[:, :, :margin] = np.nan
    out[:, :, -margin:] = np.nan
    return out


def heatmaps_from_embeddings(
    patch_embeddings: torch.Tensor,
    text_embeddings: torch.Tensor,
    image_size: int,
    config: LocalizationConfig,
    shallow_patch_embeddings: torch.Tensor | None = None,
    prompt_words: Sequence[torch.Tensor] | None = None,
) -> np.ndarray:
    """Model-space heatmaps on [-1, 1].

    Args:
        patch_embeddings: ``[D, h, w]`` deep-map embeddings of one image.
        text_embeddings: ``[K, D]`` prompt report vectors.
        image_size: side S of the model input.
        config: localization settings.
        shallow_patch_embeddings: ``[D, h2, w2]``, needed when ``config.shallow_weight > 0``.
        prompt_words: per prompt, its ``[n, D]`` word vectors ([CLS] and its words), needed when
            ``config.similarity == "gloria"``.

    Returns:
        ``[K, S, S]`` float32 heatmaps, NaN on the margin.
    """
    if config.similarity == "gloria":
        if prompt_words is None or len(prompt_words) != len(text_embeddings):
            raise ValueError("similarity 'gloria' needs each prompt's word vectors (prompt_words)")
        deep = torch.stack([attention_map(words, patch_embeddings) for words in prompt_words]).cpu().numpy()
    else:
        deep = similarity_maps(patch_embeddings, text_embeddings, config.similarity).cpu().numpy()
    # the margin is applied before min-max so that the scaling only sees the pixels that are kept
    maps = scale_to_unit_range(apply_margin(upsample(smooth(deep, config.smoothing_sigma), image_size), config.margin))
    if config.shallow_weight > 0:
        if shallow_patch_embeddings is None:
            raise ValueError("shallow_weight > 0 needs the shallow patch embeddings")
        shallow = similarity_maps(shallow_patch_embeddings, text_embeddings, config.similarity).cpu().numpy()
        # the same physical smoothing on the finer grid: sigma scaled by the grid ratio
        sigma = config.smoothing_sigma * shallow.shape[-1] / deep.shape[-1]
        shallow_maps = scale_to_unit_range(apply_margin(upsample(smooth(shallow, sigma), image_size), config.margin))
        maps = scale_to_unit_range((1 - config.shallow_weight) * maps + config.shallow_weight * shallow_maps)
    return maps
