"""Predictor: heatmaps on the original pixels, caching, zero-shot classification, thread safety."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from afloc import AFLocPredictor, LocalizationConfig, Preprocessing


@pytest.fixture
def predictor(tiny_model, tiny_tokenizer):
    return AFLocPredictor(tiny_model, tiny_tokenizer, Preprocessing(image_size=64), device="cpu")


def _image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((height, width), dtype=np.float32)


@pytest.mark.parametrize(("height", "width"), [(97, 61), (61, 97), (64, 64), (301, 199), (3, 5)])
def test_heatmap_has_the_input_shape(predictor, height, width):
    predictor.set_image(_image(height, width))
    heatmap = predictor.localize("right lower lobe consolidation")
    assert heatmap.shape == (height, width) and heatmap.dtype == np.float32
    assert np.nanmin(heatmap) >= -1.0 - 1e-5 and np.nanmax(heatmap) <= 1.0 + 1e-5
    several = predictor.localize(["left pleural effusion", "cardiomegaly", "pneumothorax"])
    assert several.shape == (3, height, width)
    assert predictor.localize("cardiomegaly", space="model").shape == (64, 64)


def test_rgb_and_uint8_inputs(predictor):
    rgb = (np.random.default_rng(1).random((50, 70, 3)) * 255).astype(np.uint8)
    encoded = predictor.encode_image(rgb)
    assert encoded.image.dtype == np.float32 and encoded.image.max() <= 1.0
    assert predictor.localize("haemorrhage", image=encoded).shape == (50, 70)


def test_one_word_prompts_do_not_collapse(predictor):
    predictor.set_image(_image(80, 80))
    edema, effusion = predictor.localize(["edema", "effusion"])
    assert not np.allclose(edema, effusion)
    vectors = predictor.embed_prompts(["edema", "effusion", "pneumothorax"]).numpy()
    assert np.linalg.matrix_rank(vectors) == 3


def test_caches_are_used(predictor, monkeypatch):
    encoded = predictor.encode_image(_image(40, 60))
    first = predictor.localize("left lower lobe opacity", image=encoded)
    calls = []
    original = predictor.model.encode_text
    monkeypatch.setattr(predictor.model, "encode_text", lambda t: calls.append(1) or original(t))
    again = predictor.localize("Left lower lobe opacity.", image=encoded)  # same after normalisation
    assert again is not first and np.array_equal(again, first) and not calls
    other = predictor.encode_image(_image(40, 60, seed=3))
    predictor.localize("left lower lobe opacity", image=other)
    assert not calls  # text embedding reused for a new image
    first[:] = 0.0  # a caller changing its result does not corrupt the cache
    assert np.array_equal(predictor.localize("left lower lobe opacity", image=encoded), again)


def test_margin_gives_nan_border(tiny_model, tiny_tokenizer):
    predictor = AFLocPredictor(
        tiny_model, tiny_tokenizer, Preprocessing(image_size=64), LocalizationConfig(margin=4), device="cpu"
    )
    predictor.set_image(_image(64, 64))
    heatmap = predictor.localize("cardiomegaly")
    assert np.isnan(heatmap[:3]).all() and not np.isnan(heatmap[10:50, 10:50]).any()


def test_classify_probabilities(predictor):
    predictor.set_image(_image(64, 64))
    probabilities = predictor.classify(["pneumothorax", "pleural effusion"])
    assert set(probabilities) == {"pneumothorax", "pleural effusion"}
    assert all(0.0 < p < 1.0 for p in probabilities.values())


def test_bad_inputs(predictor):
    with pytest.raises(ValueError, match="no image"):
        predictor.localize("edema")
    predictor.set_image(_image(32, 32))
    for bad, message in (("", "no words"), ("...", "no words"), ([], "no prompt"), ("x" * 1001, "limit")):
        with pytest.raises(ValueError, match=message):
            predictor.localize(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        predictor.encode_image(np.full((10, 10), 3.0, np.float32))
    with pytest.raises(ValueError, match="too small"):
        predictor.encode_image(np.zeros((1, 10), np.float32))
    with pytest.raises(ValueError, match="shape"):
        predictor.encode_image(np.zeros((10, 10, 4), np.float32))
    with pytest.raises(ValueError, match="space"):
        predictor.localize("edema", space="screen")


def test_image_from_file(predictor, tmp_path):
    from PIL import Image

    path = tmp_path / "film.png"
    Image.fromarray((_image(45, 30) * 255).astype(np.uint8)).save(path)
    encoded = predictor.encode_image(str(path))
    assert predictor.localize("nodule", image=encoded).shape == (45, 30)


def test_threads_get_their_own_results(predictor):
    images = [predictor.encode_image(_image(50 + 7 * k, 40 + 5 * k, seed=k)) for k in range(4)]
    prompts = ["left pleural effusion", "right upper lobe nodule", "cardiomegaly", "pneumothorax"]
    expected = [predictor.localize(p, image=i) for p, i in zip(prompts, images, strict=True)]
    fresh = [predictor.encode_image(i.image) for i in images]  # new caches, same pixels
    results = [None] * 4

    def work(k):
        for _ in range(3):
            results[k] = predictor.localize(prompts[k], image=fresh[k])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(4):
        assert np.allclose(results[k], expected[k], atol=1e-6)


def test_concurrent_prompt_embeddings_are_not_mixed(predictor):
    """Text encoding from many threads at once gives each thread its own embeddings (no shared capture)."""
    from concurrent.futures import ThreadPoolExecutor

    prompts = [
        f"{side} {zone} lobe {finding}"
        for side in ("left", "right")
        for zone in ("upper", "lower")
        for finding in ("opacity", "nodule", "effusion", "mass")
    ]
    expected = {p: predictor.model.encode_text(predictor.tokenizer([p])).report_embedding[0] for p in prompts}

    def encode(prompt):
        return prompt, predictor.model.encode_text(predictor.tokenizer([prompt])).report_embedding[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(encode, prompts * 10))
    for prompt, vector in results:
        assert np.allclose(vector.detach().numpy(), expected[prompt].detach().numpy(), atol=1e-5), prompt


def test_from_pretrained_is_the_saved_model(tiny_model, tiny_tokenizer, tmp_path):
    """A saved directory loads into a predictor with the saved preprocessing, heatmap settings and weights."""
    import afloc

    localization = LocalizationConfig(smoothing_sigma=0.0, margin=2)
    afloc.save_pretrained(tiny_model, tmp_path / "m", tiny_tokenizer, Preprocessing(image_size=64), localization)
    loaded = AFLocPredictor.from_pretrained(tmp_path / "m", device="cpu")
    assert loaded.device.type == "cpu" and loaded.localization == localization
    assert loaded.preprocessing == Preprocessing(image_size=64)
    direct = AFLocPredictor(tiny_model, tiny_tokenizer, Preprocessing(image_size=64), localization, device="cpu")
    image = _image(50, 70)
    np.testing.assert_allclose(
        loaded.localize("left pleural effusion", image=loaded.encode_image(image)),
        direct.localize("left pleural effusion", image=direct.encode_image(image)),
        atol=1e-5,
        equal_nan=True,
    )


def test_default_device_without_a_gpu(tiny_model, tiny_tokenizer, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert AFLocPredictor(tiny_model, tiny_tokenizer, Preprocessing(image_size=64)).device == torch.device("cpu")


def test_16_bit_images_are_scaled_by_their_full_range(predictor):
    """A uint16 film is its float twin x 65535: same encoding."""
    levels = (np.random.default_rng(2).random((40, 30)) * 65535).astype(np.uint16)
    from_uint16 = predictor.encode_image(levels)
    from_float = predictor.encode_image(levels.astype(np.float32) / 65535.0)
    np.testing.assert_allclose(from_uint16.image, from_float.image, atol=1e-7)
    np.testing.assert_allclose(from_uint16.patch_embeddings, from_float.patch_embeddings, atol=1e-5)


def test_the_prompt_rule_reaches_the_text_encoder(tiny_model, tiny_tokenizer):
    """With the reference rule a prompt loses its one-word sentences (as the authors' inference does)."""
    prompt = "Effusion. Small left pleural effusion."
    reference = AFLocPredictor(
        tiny_model, tiny_tokenizer, Preprocessing(64), LocalizationConfig(prompt_rule="reference"), device="cpu"
    )
    sentences = AFLocPredictor(tiny_model, tiny_tokenizer, Preprocessing(64), device="cpu")
    np.testing.assert_allclose(
        reference.embed_prompts([prompt]).numpy(), sentences.embed_prompts(["small left pleural effusion"]).numpy()
    )
    assert not np.allclose(reference.embed_prompts([prompt]).numpy(), sentences.embed_prompts([prompt]).numpy())
