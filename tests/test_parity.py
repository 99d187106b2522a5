"""Parity with the authors' inference and evaluation (issue #15), each setting against a derivation written here
from the method statement (docs/method.md section 7), and our defaults unchanged.

D1 8-bit resize, D2 the short-side rule, D3 prompt joining, D6 the ground-truth box rule, and the caption
sampler's word limit. D5 (the margin of converted models) is tested with the converter in test_convert.py.
"""

from __future__ import annotations

import random
from fractions import Fraction

import cv2
import numpy as np
import pytest
import torch

from afloc import AFLocPredictor, LocalizationConfig, Preprocessing
from afloc.imaging.transforms import pad_resize, pad_resize_mapping
from afloc.text.tokenizer import limit_sentences, normalize_prompt, sample_caption
from training.evaluation.datasets import LocalizationSample
from training.evaluation.protocol import HeatmapSource, ProtocolConfig, reference_box_mask, sample_heatmap

REFERENCE = Preprocessing(image_size=224, resize_8bit=True, size_rule="reference")
SQUARE_SIZES = (299, 612, 2544, 3056)  # sizes the issue lists where the authors lose a column


def _authors_pixels(image: np.ndarray, size: int = 224) -> torch.Tensor:
    """The authors' inference input, step by step: an 8-bit film, the longest side scaled to ``size`` with the
    scale factor computed first (``int(w * (size / h))``), INTER_AREA on the 8-bit array, zero padding
    floor / ceil, then ToTensor (/ 255) and Normalize(0.5, 0.5) on three identical channels."""
    grey = np.rint(image * 255.0).clip(0, 255).astype(np.uint8)
    h, w = grey.shape
    if h >= w:
        shape = (size, int(w * (size / h)))
    else:
        shape = (int(h * (size / w)), size)
    resized = cv2.resize(grey, (shape[1], shape[0]), interpolation=cv2.INTER_AREA)
    pad_rows, pad_cols = size - resized.shape[0], size - resized.shape[1]
    padded = np.pad(resized, [(pad_rows // 2, pad_rows - pad_rows // 2), (pad_cols // 2, pad_cols - pad_cols // 2)])
    tensor = torch.from_numpy(padded).float().div(255).expand(3, size, size)
    return (tensor - 0.5) / 0.5


# ------------------------------------------------------------------------------------------------ D1


def test_d1_reference_preset_resizes_the_8bit_film_of_an_odd_size():
    rng = np.random.default_rng(0)
    film = (rng.random((301, 257)) * 255).round() / 255  # an 8-bit film of an odd size, read as [0, 1]
    film = np.clip(film + rng.uniform(-0.4, 0.4, film.shape) / 255, 0, 1).astype(np.float32)  # not whole levels
    tensor, mapping = REFERENCE(film)
    assert torch.equal(tensor, _authors_pixels(film))
    assert (mapping.resized_height, mapping.resized_width) == (224, int(257 * (224 / 301)))
    # the default (our models) resizes the float image: no quantisation, so different pixels
    ours, _ = Preprocessing(image_size=224)(film)
    difference = (ours - tensor).abs().max().item()
    assert 0 < difference < 2.5 / 255 * 2  # at most ~a grey level on the [-1, 1] scale
    padded, _ = pad_resize(film, 224)
    assert torch.equal(ours[0], torch.from_numpy((padded - 0.5) / 0.5))


# ------------------------------------------------------------------------------------------------ D2


@pytest.mark.parametrize("side", SQUARE_SIZES)
def test_d2_reference_rule_loses_a_column_on_the_listed_square_sizes(side):
    reference = pad_resize_mapping(side, side, 224, size_rule="reference")
    exact = pad_resize_mapping(side, side, 224)
    assert (exact.resized_height, exact.resized_width, exact.left) == (224, 224, 0)
    assert (reference.resized_height, reference.resized_width, reference.left) == (224, 223, 0)
    padded, _ = pad_resize(np.ones((side, side), np.float32), 224, size_rule="reference")
    assert np.all(padded[:, 223] == 0) and np.all(padded[:, :223] > 0)  # one zero column, on the right
    film = np.random.default_rng(side).random((side, side)).astype(np.float32)
    assert torch.equal(REFERENCE(film)[0], _authors_pixels(film))


def test_d2_exact_rule_is_the_true_floor_and_the_rules_differ_rarely():
    differing = 0
    for height in range(200, 1200, 7):
        for width in range(150, height + 1, 13):
            exact = pad_resize_mapping(height, width, 224).resized_width
            assert exact == int(Fraction(width * 224, height))  # floor of the exact ratio
            reference = pad_resize_mapping(height, width, 224, size_rule="reference").resized_width
            assert reference in (exact, exact - 1)
            differing += reference != exact
    assert differing < 20  # a rare double-rounding effect, not a different geometry


# ------------------------------------------------------------------------------------------------ D3

PROMPT = "Small left pleural effusion of 3.5 cm. Mild edema."


def test_d3_prompt_rules_on_two_sentences_with_a_decimal():
    # the reference: "3." is a numbered-list marker, "." ends sentences, one-word pieces are dropped, and the
    # sentences are joined with a space: "small left pleural effusion of" + "5 cm" + "mild edema"
    assert normalize_prompt(PROMPT, "reference") == "small left pleural effusion of 5 cm mild edema"
    assert normalize_prompt(PROMPT) == "small left pleural effusion of. 5 cm. mild edema"  # ours, default
    assert normalize_prompt("Edema. Small left effusion.", "reference") == "small left effusion"
    assert normalize_prompt("Edema", "reference") == "edema"  # kept: the reference would embed an empty prompt
    with pytest.raises(ValueError, match="prompt rule"):
        normalize_prompt("edema", "authors")


def test_d3_the_predictor_embeds_the_reference_text(tiny_model, tiny_tokenizer):
    predictor = AFLocPredictor(
        tiny_model, tiny_tokenizer, Preprocessing(64), LocalizationConfig(prompt_rule="reference"), device="cpu"
    )
    default = AFLocPredictor(tiny_model, tiny_tokenizer, Preprocessing(64), device="cpu")
    with torch.inference_mode():
        expected = tiny_model.encode_text(tiny_tokenizer(["small left pleural effusion of 5 cm mild edema"]))
        with_periods = tiny_model.encode_text(tiny_tokenizer(["small left pleural effusion of. 5 cm. mild edema"]))
    assert torch.equal(predictor.embed_prompts(PROMPT)[0], expected.report_embedding[0])
    assert torch.equal(default.embed_prompts(PROMPT)[0], with_periods.report_embedding[0])
    assert not torch.equal(expected.report_embedding, with_periods.report_embedding)  # the "." words count


# ------------------------------------------------------------------------------------------------ D6


def test_d6_reference_box_rule_on_a_hand_computed_box():
    # 10 x 20 film (wider than tall) into 8 x 8: scale 8 / 20 = 0.4, content 4 rows high, 2 rows of padding on top.
    # Box [2.6, 1.2, 5.1, 3.9] -> x = floor(1.04) = 1, y = floor(0.48 + 2) = 2, w = floor(2.04) = 2,
    # h = floor(1.56) = 1: row 2, columns 1-2.
    expected = np.zeros((8, 8), bool)
    expected[2, 1:3] = True
    assert np.array_equal(reference_box_mask(np.array([[2.6, 1.2, 5.1, 3.9]]), 10, 20, 8), expected)


def _authors_box_mask(boxes, height, width, size):
    """The authors' evaluation per box: scale every coordinate by size / longest side, add the padding offset
    floor((size - short side) / 2) to x (tall films) or y (wide films), floor each of x, y, w, h, add 1 (the
    phrase's box masks are summed: overlaps count 2)."""
    factor = size / float(max(height, width))
    offset = (size - int(min(height, width) * factor)) // 2
    mask = np.zeros((size, size), np.uint8)
    for box in boxes:
        x, y, w, h = (float(v) * factor for v in box)
        if height >= width:
            x += offset
        else:
            y += offset
        x, y, w, h = (int(np.floor(v)) for v in (x, y, w, h))
        mask[y : y + h, x : x + w] += 1
    return mask


def test_d6_box_rule_in_the_protocol_on_ms_cxr_sized_films():
    rng = np.random.default_rng(1)
    source = HeatmapSource(baseline="uniform", image_size=224)
    areas, ious = np.zeros(2), []
    for height, width in ((3056, 2544), (2544, 3056), (2022, 1736)) * 20:
        count = int(rng.integers(1, 4))
        boxes = np.column_stack(
            [rng.uniform(0, width / 2, count), rng.uniform(0, height / 2, count), rng.uniform(150, 1100, (count, 2))]
        )
        sample = LocalizationSample("film.png", "left pleural effusion", "effusion", boxes, image_size=(height, width))
        mapping = pad_resize_mapping(height, width, 224)
        _, truth = sample_heatmap(source, None, sample, mapping, ProtocolConfig(box_rule="reference"))
        assert np.array_equal(truth, _authors_box_mask(boxes, height, width, 224))  # counts, overlaps included
        truth = truth > 0
        _, ours = sample_heatmap(source, None, sample, mapping, ProtocolConfig())  # default: pixel centres
        areas += ours.sum(), truth.sum()
        ious.append((ours & truth).sum() / (ours | truth).sum())
    # flooring both corner and size makes the reference masks smaller than the pixel-centre masks
    assert areas[0] > 1.01 * areas[1]
    assert 0.9 < np.mean(ious) < 0.99
    with pytest.raises(ValueError, match="model-space"):
        ProtocolConfig(space="native", box_rule="reference")


# ------------------------------------------------------------------------------------------------ captions


def _authors_sentence_list(sentences, limit):
    """The authors' caption table: add sentences, count their words, stop when the count equals the limit."""
    kept, count = [], 0
    for sentence in sentences:
        kept.append(sentence)
        count += len(sentence.split(" "))
        if count == limit:
            break
    return kept


@pytest.mark.parametrize(
    "sentences",
    [
        ["no effusion", "mild cardiomegaly is seen", "lungs are clear today"],  # 2 + 3 = 5: stops after two
        ["heart size is normal", "no effusion", "lungs are clear"],  # 4, 6, 9: never equals 5, all kept
        ["a b c d e", "f g"],  # 5 at once: one sentence
    ],
)
def test_caption_word_limit_follows_the_authors_rule(sentences):
    assert limit_sentences(sentences, 5) == _authors_sentence_list(sentences, 5)
    allowed = set(_authors_sentence_list(sentences, 5))
    seen = set()
    for seed in range(50):
        caption = sample_caption(sentences, random.Random(seed), word_limit=5)
        parts = caption.split(". ")
        assert set(parts) <= allowed and (len(parts) < len(allowed) or len(allowed) == 1)
        seen.update(parts)
    assert seen == allowed
    # default: no limit, every sentence can be drawn
    drawn = {p for seed in range(50) for p in sample_caption(sentences, random.Random(seed)).split(". ")}
    assert drawn == set(sentences)
    with pytest.raises(ValueError, match="word_limit"):
        limit_sentences(sentences, 0)


def test_data_module_caption_word_limit(tmp_path):
    from training_fixtures import write_tiny_corpus

    from afloc.text.tokenizer import report_sentences
    from training.data import ImageReportDataModule

    manifest = write_tiny_corpus(tmp_path / "corpus", n=12, size=32)
    limited = ImageReportDataModule(str(manifest), batch_size=2, num_workers=0, caption_word_limit=5)
    default = ImageReportDataModule(str(manifest), batch_size=2, num_workers=0)
    limited.setup("fit")
    default.setup("fit")
    train, full = limited.datasets["train"], default.datasets["train"]
    expected = [_authors_sentence_list(report_sentences(r.report), 5) for r in train.records]
    assert train.sentences == expected
    assert full.sentences == [report_sentences(r.report) for r in full.records]
    # "mild cardiomegaly" (2) + "bilateral perihilar edema" (3) = 5 words: "pulmonary edema" is left out
    assert ["mild cardiomegaly", "bilateral perihilar edema"] in train.sentences
    assert ["mild cardiomegaly", "bilateral perihilar edema", "pulmonary edema"] in full.sentences
