"""The fundus field-of-view gate: the retina found from brightness, the predictor and evaluation paths."""

from __future__ import annotations

import numpy as np
import pytest

from afloc import Preprocessing
from afloc.localization.field_of_view import retina_gate


def _photo(height: int = 60, width: int = 90, exposure: float = 1.0) -> np.ndarray:
    """A 3:2 photograph: an orange retina disc (radius 26) on black, its centre a little brighter."""
    y, x = np.mgrid[:height, :width]
    r = np.hypot(x - width / 2, y - height / 2)
    retina = (r < 26).astype(np.float32) * (0.6 + 0.3 * (r < 8))
    photo = np.stack([retina, 0.5 * retina, 0.15 * retina], axis=-1) * exposure
    return photo.astype(np.float32)


def test_the_gate_is_one_on_the_retina_and_zero_on_the_surround_at_any_exposure():
    """Bug class: a fixed threshold that loses a dark photograph's retina, or a gate that leaks onto the black."""
    y, x = np.mgrid[:64, :64]
    r = np.hypot(x - 32, y - 32)
    for exposure in (1.0, 0.15):
        film = ((r < 24) * 0.5 * exposure).astype(np.float32)
        gate = retina_gate(film)
        assert gate[r < 20].min() == 1.0, exposure
        assert gate[r > 28].max() == 0.0, exposure
    assert np.array_equal(retina_gate(np.zeros((8, 8), np.float32)), np.ones((8, 8), np.float32))
    with pytest.raises(ValueError, match="low < high"):
        retina_gate(np.ones((8, 8), np.float32), low=0.3, high=0.2)
    with pytest.raises(ValueError, match="grey"):
        retina_gate(np.ones((8, 8, 3), np.float32))


def test_a_fundus_predictor_keeps_its_heat_on_the_retina_and_the_evaluation_scores_the_same(tiny_model, tiny_tokenizer):
    from afloc import AFLocPredictor, LocalizationConfig
    from training.evaluation.protocol import HeatmapSource

    fundus = Preprocessing(image_size=64, mean=(0.45, 0.22, 0.08), std=(0.3, 0.17, 0.09), modality="fundus")
    plain = AFLocPredictor(tiny_model, tiny_tokenizer, fundus, LocalizationConfig(), "cpu")
    gated = plain.with_localization(field_of_view=True)
    photo = _photo()
    encoded = gated.encode_image(photo)
    assert plain.encode_image(photo).gate is None and encoded.gate.shape == (64, 64)
    shown = gated.localize("hard exudates", image=encoded, space="model")
    ungated = plain.localize("hard exudates", image=plain.encode_image(photo), space="model")
    outside = encoded.gate == 0
    assert outside.mean() > 0.3  # the padding above and below, and the black corners
    assert np.all(shown[outside] == shown.min())  # nothing off the retina is hotter than the coldest point
    assert not np.allclose(shown, ungated, atol=1e-3)
    source = HeatmapSource(predictor=gated)
    tensor, _ = gated.preprocessing(photo)
    (one,) = source.encode(tensor[None])
    np.testing.assert_allclose(source.heatmaps(one, ["hard exudates"], "id", None)[0], shown, atol=1e-5)
    with pytest.raises(ValueError, match="field-of-view gate is for fundus"):
        AFLocPredictor(tiny_model, tiny_tokenizer, Preprocessing(image_size=64), LocalizationConfig(field_of_view=True))


def test_the_centre_baseline_can_be_gated_and_other_baselines_refuse_the_gate(tmp_path):
    from training.evaluation.api import evaluate_dataset
    from training.evaluation.protocol import HeatmapSource

    centre = HeatmapSource(baseline="center", image_size=64, field_of_view=True)
    tensor, _ = centre.preprocessing(_photo())
    (gate,) = centre.encode(tensor[None])
    maps = centre.heatmaps(gate, ["hard exudates"], "id", None)
    assert np.all(maps[0][gate == 0] == maps.min())
    ungated = HeatmapSource(baseline="center", image_size=64)
    (none,) = ungated.encode(tensor[None])
    assert none is None and not np.allclose(ungated.heatmaps(none, ["hard exudates"], "id", None), maps)
    with pytest.raises(ValueError, match="field_of_view gates the centre"):
        evaluate_dataset("kind-oracle", "phantom", images=str(tmp_path), field_of_view=True)
