"""Local contrast for fundus photographs (``Preprocessing(contrast="local")``): a tint or exposure offset is
removed, a small lesion stands out, the surround stays black, and the setting travels with a saved model."""

from __future__ import annotations

import numpy as np
import pytest

import afloc
from afloc.imaging.transforms import Preprocessing, local_contrast


def _photo(size: int = 96, tint=(0.0, 0.0, 0.0)) -> np.ndarray:
    """A retina (a disc of radius 0.45 of the side) of smoothly varying colour on black, with a bright 3-px spot."""
    y, x = np.mgrid[:size, :size] / size
    retina = (x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.45**2
    image = np.zeros((size, size, 3), np.float32)
    base = (0.55 + 0.1 * x, 0.3 + 0.05 * y, 0.12 + 0 * x)
    for channel in range(3):
        image[..., channel] = np.where(retina, base[channel] + tint[channel], 0.0)
    image[40:43, 60:63] += 0.3  # an exudate-like spot
    return np.clip(image, 0, 1)


def test_a_tint_is_removed_and_a_small_spot_stands_out():
    plain, tinted = local_contrast(_photo()), local_contrast(_photo(tint=(0.08, -0.05, 0.06)))
    core = np.zeros(plain.shape[:2], bool)
    core[25:71, 25:71] = True  # away from the retina's rim, where the tint changes the field-of-view ramp
    assert np.abs(plain - tinted)[core].max() < 0.02
    raw_gap = abs(_photo()[..., 0][core].mean() - _photo(tint=(0.08, 0, 0))[..., 0][core].mean())
    assert raw_gap > 0.07  # the tint the transform removed
    spot = plain[41, 61].mean()
    around = plain[30:36, 30:36].mean()
    assert spot > around + 0.45  # 0.3 brighter in the photograph, up to four times that after it (clipped at 1)
    assert abs(around - 0.5) < 0.05  # the smooth background sits at mid grey
    assert plain[2, 2].max() == 0.0 and plain.min() >= 0.0 and plain.max() <= 1.0  # black surround


def test_preprocessing_applies_it_and_checks_the_setting():
    photo = _photo()
    plain = Preprocessing(96, (0.0,) * 3, (1.0,) * 3, modality="fundus")
    local = Preprocessing(96, (0.0,) * 3, (1.0,) * 3, modality="fundus", contrast="local")
    resized = plain(photo)[0].numpy().transpose(1, 2, 0)
    np.testing.assert_allclose(local(photo)[0].numpy().transpose(1, 2, 0), local_contrast(resized), atol=1e-6)
    seen, _ = local.model_space_image(photo)  # what channel-stats and the colour diagnostic measure
    np.testing.assert_allclose(seen, local_contrast(resized), atol=1e-6)
    assert Preprocessing.from_dict(local.to_dict()) == local
    assert Preprocessing.from_dict({"image_size": 96}).contrast == "none"  # models saved before the setting
    with pytest.raises(ValueError, match="contrast 'local' is for colour fundus photographs"):
        Preprocessing(96, contrast="local")
    with pytest.raises(ValueError, match="contrast must be one of"):
        Preprocessing(96, modality="fundus", contrast="sharp")
    with pytest.raises(ValueError, match="needs an RGB"):
        local_contrast(np.zeros((8, 8), np.float32))


def test_a_saved_model_brings_its_contrast_setting(tmp_path, tiny_model, tiny_tokenizer):
    preprocessing = Preprocessing(64, modality="fundus", contrast="local")
    afloc.save_pretrained(tiny_model, tmp_path / "m", tiny_tokenizer, preprocessing)
    predictor = afloc.AFLocPredictor.from_pretrained(tmp_path / "m")
    assert predictor.preprocessing.contrast == "local"
    photo = _photo(64)
    expected, _ = preprocessing(photo)
    encoded = predictor.encode_image(photo)
    with np.errstate(all="ignore"):
        direct = predictor.encode_images(expected[None]).patch_embeddings[0]
    np.testing.assert_allclose(encoded.patch_embeddings.numpy(), direct.numpy(), atol=1e-5)


def test_channel_stats_of_the_transformed_photographs(tmp_path, capsys):
    from PIL import Image

    from training.channel_stats import main

    (tmp_path / "images").mkdir()
    rows = ["image,report,split"]
    for index in range(3):
        Image.fromarray((_photo(80, tint=(0.02 * index, 0, 0)) * 255).astype(np.uint8)).save(
            tmp_path / f"images/{index}.png"
        )
        rows.append(f"images/{index}.png,text,train")
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["--manifest", str(tmp_path / "manifest.csv"), "--contrast", "local", "--image-size", "64"]) == 0
    local = capsys.readouterr().out
    assert main(["--manifest", str(tmp_path / "manifest.csv")]) == 0
    raw = capsys.readouterr().out
    red = lambda text: float(text.split("mean: [")[1].split(",")[0])  # noqa: E731
    assert red(local) != red(raw)
    assert 0.25 < red(local) < 0.5  # mid grey on the retina, black around it
