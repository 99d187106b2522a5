"""The fundus colour path: RGB kept through I/O, per-channel normalisation, preprocessing.json, and the predictor.

A tiny random model is enough: the tests check that colour reaches the network and that a model directory's
saved normalisation and modality are the ones the predictor applies, not what the heatmaps mean.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import afloc
from afloc.imaging.io import load_image, load_image_with_info
from afloc.imaging.transforms import Preprocessing, pad_resize

FUNDUS_MEAN = (0.52, 0.27, 0.09)
FUNDUS_STD = (0.27, 0.15, 0.06)


def _photo(height: int = 48, width: int = 72) -> np.ndarray:
    """A small orange-red disc with a yellow spot: uint8 RGB whose channels differ a lot."""
    rng = np.random.default_rng(0)
    image = np.zeros((height, width, 3), np.uint8)
    cv2.circle(image, (width // 2, height // 2), height // 2 - 2, (210, 95, 30), -1)
    cv2.circle(image, (width // 2 + 10, height // 2), 5, (250, 220, 90), -1)
    return np.clip(image.astype(int) + rng.integers(-3, 4, image.shape), 0, 255).astype(np.uint8)


def test_rgb_png_is_read_as_colour_and_grey_rgb_as_greyscale(tmp_path):
    photo = _photo()
    path = tmp_path / "fundus.png"
    cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    image, info = load_image_with_info(path)
    assert image.shape == (48, 72, 3) and image.dtype == np.float32 and info.channels == 3
    np.testing.assert_array_equal(np.rint(image * 255).astype(np.uint8), photo)  # R stays R (no BGR swap)
    grey = np.repeat(photo[..., :1], 3, axis=2)
    cv2.imwrite(str(tmp_path / "grey.png"), grey)
    assert load_image(tmp_path / "grey.png").shape == (48, 72)


def test_per_channel_normalisation_matches_a_naive_reference():
    image = _photo().astype(np.float32) / 255.0
    preprocessing = Preprocessing(image_size=64, mean=FUNDUS_MEAN, std=FUNDUS_STD, modality="fundus")
    tensor, mapping = preprocessing(image)
    padded, _ = pad_resize(image, 64)
    expected = np.stack([(padded[..., c] - FUNDUS_MEAN[c]) / FUNDUS_STD[c] for c in range(3)])
    assert tensor.shape == (3, 64, 64)
    np.testing.assert_allclose(tensor.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(expected[0], expected[1])  # the channels really differ
    # a greyscale film is replicated to three channels before the same normalisation
    grey, _ = preprocessing(image.mean(axis=2))
    assert grey.shape == (3, 64, 64)


def test_preprocessing_validates_modality_and_statistics():
    with pytest.raises(ValueError, match="modality"):
        Preprocessing(modality="retina")
    with pytest.raises(ValueError, match="std"):
        Preprocessing(std=(0.5, 0.0, 0.5))
    with pytest.raises(ValueError, match="3 values"):
        Preprocessing.from_dict({"mean": [0.5, 0.5]})
    assert Preprocessing.from_dict({"image_size": 64}).modality == "cxr"  # directories written before modality


@pytest.fixture()
def fundus_model_dir(tmp_path, tiny_config, tiny_tokenizer):
    torch.manual_seed(0)
    preprocessing = Preprocessing(image_size=64, mean=FUNDUS_MEAN, std=FUNDUS_STD, modality="fundus")
    return afloc.save_pretrained(afloc.AFLoc(tiny_config).eval(), tmp_path / "fundus", tiny_tokenizer, preprocessing)


def test_fundus_preprocessing_is_saved_and_used_by_the_predictor(fundus_model_dir):
    saved = json.loads((fundus_model_dir / "preprocessing.json").read_text())["preprocessing"]
    assert saved["modality"] == "fundus" and saved["mean"] == list(FUNDUS_MEAN) and saved["std"] == list(FUNDUS_STD)

    predictor = afloc.AFLocPredictor.from_pretrained(fundus_model_dir, device="cpu")
    assert predictor.preprocessing == Preprocessing(64, FUNDUS_MEAN, FUNDUS_STD, modality="fundus")
    photo = _photo()
    encoded = predictor.encode_image(photo)
    assert encoded.image.shape == (48, 72, 3)

    # what the network saw: the photo normalised with the saved statistics, channel by channel
    padded, _ = pad_resize(photo.astype(np.float32) / 255.0, 64)
    reference = torch.from_numpy(
        np.stack([(padded[..., c] - FUNDUS_MEAN[c]) / FUNDUS_STD[c] for c in range(3)])[None].astype(np.float32)
    )
    with torch.inference_mode():
        expected = predictor.model.encode_image(reference).image_embedding[0]
    torch.testing.assert_close(encoded.image_embedding, expected, rtol=1e-4, atol=1e-5)

    # colour matters: the same photo with its channels swapped is encoded differently
    swapped = predictor.encode_image(np.ascontiguousarray(photo[..., ::-1]))
    assert not torch.allclose(swapped.image_embedding, encoded.image_embedding, atol=1e-4)

    heatmaps = predictor.localize(["hard exudates", "optic disc"], image=encoded)
    assert heatmaps.shape == (2, 48, 72) and np.isfinite(heatmaps).all()
