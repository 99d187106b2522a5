"""Heatmaps from embeddings: similarity, smoothing, scaling, margin, fusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from afloc.localization.heatmaps import (
    LocalizationConfig,
    heatmaps_from_embeddings,
    scale_to_unit_range,
    similarity_maps,
    smooth,
)


def test_similarity_dot_and_cosine():
    patches = torch.zeros(2, 2, 3)
    patches[0, 0, 0] = 3.0  # region (0, 0) = [3, 0]
    patches[1, 1, 2] = 1.0  # region (1, 2) = [0, 1]
    text = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    dot = similarity_maps(patches, text, "dot")
    assert dot.shape == (2, 2, 3)
    assert dot[0, 0, 0] == 6.0 and dot[1, 1, 2] == 5.0 and dot[0, 1, 2] == 0.0
    cos = similarity_maps(patches, text, "cosine")
    assert cos[0, 0, 0] == pytest.approx(1.0) and cos[1, 1, 2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"\[D, h, w\]"):
        similarity_maps(torch.zeros(2, 3), text)


def test_scale_to_unit_range_and_constant_maps():
    maps = np.array([[[0.0, 1.0], [2.0, np.nan]], [[4.0, 4.0], [4.0, 4.0]]], np.float32)
    out = scale_to_unit_range(maps)
    assert np.allclose(out[0, 0], [-1.0, 0.0]) and out[0, 1, 0] == 1.0 and np.isnan(out[0, 1, 1])
    assert np.all(out[1] == 0.0)


def test_smoothing_matches_scipy_per_map():
    rng = np.random.default_rng(0)
    maps = rng.normal(size=(3, 19, 19)).astype(np.float32)
    out = smooth(maps, 1.5)
    for k in range(3):
        assert np.allclose(out[k], gaussian_filter(maps[k], 1.5), atol=1e-6)
    assert smooth(maps, 0) is maps


def test_heatmap_peaks_where_the_text_matches():
    torch.manual_seed(0)
    patches = 0.1 * torch.randn(8, 14, 14)
    text = torch.zeros(1, 8)
    text[0, 3] = 1.0
    patches[3, 2:5, 9:12] += 3.0  # a region block aligned with the prompt
    heatmap = heatmaps_from_embeddings(patches, text, 224, LocalizationConfig())[0]
    assert heatmap.shape == (224, 224)
    assert np.nanmin(heatmap) == -1.0 and np.nanmax(heatmap) == 1.0
    row, col = np.unravel_index(np.nanargmax(heatmap), heatmap.shape)
    assert 2 * 16 <= row < 5 * 16 and 9 * 16 <= col < 12 * 16


def test_margin_is_nan_and_excluded_from_scaling():
    torch.manual_seed(0)
    patches = torch.randn(4, 7, 7)
    text = torch.randn(2, 4)
    maps = heatmaps_from_embeddings(patches, text, 56, LocalizationConfig(margin=7))
    assert maps.shape == (2, 56, 56)
    assert np.isnan(maps[:, :7]).all() and np.isnan(maps[:, :, -7:]).all()
    inner = maps[:, 7:-7, 7:-7]
    assert not np.isnan(inner).any()
    assert np.allclose(inner.reshape(2, -1).min(1), -1) and np.allclose(inner.reshape(2, -1).max(1), 1)


def test_shallow_fusion():
    torch.manual_seed(0)
    deep, shallow, text = torch.randn(4, 7, 7), torch.randn(4, 14, 14), torch.randn(1, 4)
    config = LocalizationConfig(shallow_weight=0.5)
    with pytest.raises(ValueError, match="shallow"):
        heatmaps_from_embeddings(deep, text, 56, config)
    fused = heatmaps_from_embeddings(deep, text, 56, config, shallow)
    plain = heatmaps_from_embeddings(deep, text, 56, LocalizationConfig(), shallow)
    assert fused.shape == plain.shape and not np.allclose(fused, plain)
    only_shallow = heatmaps_from_embeddings(deep, text, 56, LocalizationConfig(shallow_weight=1.0), shallow)
    ref = heatmaps_from_embeddings(shallow, text, 56, LocalizationConfig(smoothing_sigma=3.0))
    assert np.allclose(only_shallow, ref, atol=1e-5)


def test_config_validation_and_roundtrip():
    config = LocalizationConfig(similarity="cosine", margin=14)
    assert LocalizationConfig.from_dict(config.to_dict()) == config
    for bad in ({"similarity": "l2"}, {"margin": -1}, {"shallow_weight": 2.0}, {"smoothing_sigma": -1}):
        with pytest.raises(ValueError):
            LocalizationConfig(**bad)
    with pytest.raises(ValueError, match="unknown localization keys"):
        LocalizationConfig.from_dict({"sigma": 2})


def test_cosine_setting_reaches_the_heatmaps():
    """Cosine heatmaps equal dot-product heatmaps of unit-length region and prompt vectors (a per-region scale
    changes a dot-product map but not a cosine one)."""
    torch.manual_seed(0)
    patches = torch.randn(8, 5, 5) * torch.rand(1, 5, 5) * 3  # regions of very different lengths
    text = torch.randn(2, 8)
    cosine = heatmaps_from_embeddings(patches, text, 20, LocalizationConfig(similarity="cosine", smoothing_sigma=0))
    unit = heatmaps_from_embeddings(
        torch.nn.functional.normalize(patches, dim=0),
        torch.nn.functional.normalize(text, dim=-1),
        20,
        LocalizationConfig(similarity="dot", smoothing_sigma=0),
    )
    np.testing.assert_allclose(cosine, unit, atol=1e-5)
    dot = heatmaps_from_embeddings(patches, text, 20, LocalizationConfig(similarity="dot", smoothing_sigma=0))
    assert not np.allclose(cosine, dot, atol=1e-3)


def test_bad_similarity_and_prompt_rule_are_named():
    with pytest.raises(ValueError, match="similarity must be 'dot' or 'cosine', got 'l2'"):
        similarity_maps(torch.randn(4, 2, 2), torch.randn(1, 4), "l2")
    with pytest.raises(ValueError, match="prompt_rule must be 'sentences' or 'reference', got 'x'"):
        LocalizationConfig(prompt_rule="x")
