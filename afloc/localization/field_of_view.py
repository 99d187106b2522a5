"""The field of view of a fundus photograph: where the retina is, from the photograph's brightness alone.

A fundus photograph is a bright disc of retina inside a black surround, and once pad-resized to the model's square
it has black padding as well. Heat there points at nothing, yet a map may put it there: on real IDRiD photographs
the haemorrhage maps of several runs sat on the surround (``docs/real_data_experiments.md``, round 14). Gating the
maps by the field of view (``LocalizationConfig.field_of_view``) keeps them on the retina, as the lung field keeps
chest maps on the lungs. No annotation and no training: the gate is the photograph's grey level, lightly smoothed,
ramped from 0 at ``low`` times its 99th percentile to 1 at ``high`` times it (relative, so that a dark exposure keeps
its retina).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from .lung_field import films_from_tensors

LOW, HIGH = 0.08, 0.16  # fractions of the photograph's 99th-percentile grey level
SMOOTHING = 0.01  # Gaussian sigma as a fraction of the square's side


def retina_gate(film: np.ndarray, low: float = LOW, high: float = HIGH, smoothing: float = SMOOTHING) -> np.ndarray:
    """``[S, S]`` in [0, 1]: 1 on the retina, 0 on the black surround and padding, of a grey model-space film in
    [0, 1] (a fundus photograph's channels averaged). A photograph with no bright pixel at all gets a gate of ones
    (nothing is known to be outside).

    Raises:
        ValueError: ``0 <= low < high`` does not hold, or the film is not 2-D.
    """
    if not 0.0 <= low < high:
        raise ValueError(f"the field-of-view ramp needs 0 <= low < high, got low={low}, high={high}")
    film = np.asarray(film, dtype=np.float32)
    if film.ndim != 2:
        raise ValueError(f"expected a grey [S, S] film, got shape {film.shape}")
    grey = gaussian_filter(film, sigma=smoothing * film.shape[0]) if smoothing > 0 else film
    top = float(np.percentile(grey, 99))
    if top <= 0.0:
        return np.ones_like(film)
    return np.clip((grey / top - low) / (high - low), 0.0, 1.0).astype(np.float32)


def check_modality(field_of_view: bool, modality: str) -> None:
    """Refuse the gate for a model that does not read fundus photographs (a chest film has no black surround to
    remove; the gate would cut its dark lungs out), naming the problem.

    Raises:
        ValueError: ``field_of_view`` is set and ``modality`` is not ``"fundus"``.
    """
    if field_of_view and modality != "fundus":
        raise ValueError("the field-of-view gate is for fundus photographs; this model reads chest films")


def retina_gates(tensors: torch.Tensor, mean, std) -> np.ndarray:
    """``[B, S, S]`` field-of-view gates of a batch of preprocessed photographs ``[B, C, S, S]`` (normalised with
    ``mean`` / ``std``, which are undone first)."""
    return np.stack([retina_gate(film) for film in films_from_tensors(tensors, mean, std)])
