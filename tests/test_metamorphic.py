"""Metamorphic tests of the model path (issue #30): change the input in a known way, expect a known change.

* Mirror the film left/right and swap "left"/"right" in the prompt: the heatmap is the mirror of the old one.
* Pad the film with background: the heatmap moves with the film, and the zero-shot score does not change.

A trained model is not reliable enough for exact relations, so the model is a deterministic stand-in with planted
weights (as in ``test_behaviour_heatmaps.py``): its regions say "bright on the image's left half" and "bright on
the image's right half"; a prompt naming the patient's right asks for the first (the patient's right is the
image's left on a frontal film), "left" for the second, any other prompt for either.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import afloc
from afloc.imaging.transforms import Preprocessing
from afloc.localization.heatmaps import LocalizationConfig
from afloc.modeling.types import ImageEncoderOutput

SIZE, GRID = 64, 16


class SidedModel(torch.nn.Module):
    """Region embedding ``[bright on image-left, bright on image-right, nothing]``; see the module docstring."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))
        vocab = tokenizer.tokenizer
        self.right_id, self.left_id = vocab.convert_tokens_to_ids("right"), vocab.convert_tokens_to_ids("left")
        assert vocab.unk_token_id not in (self.right_id, self.left_id)

    def encode_image(self, images: torch.Tensor) -> ImageEncoderOutput:
        bright = F.adaptive_avg_pool2d(((images.mean(dim=1, keepdim=True) * 0.5 + 0.5) > 0.75).float(), GRID)
        half = torch.zeros(1, 1, GRID, GRID)
        half[..., : GRID // 2] = 1.0  # the image's left half (of the padded square: the film is centred)
        patches = torch.cat([bright * half, bright * (1 - half), torch.zeros_like(bright)], dim=1)
        peaks = patches.amax(dim=(2, 3))
        return ImageEncoderOutput(patches, patches, torch.stack([peaks[:, 0], peaks[:, 1], 1 - peaks.amax(1)], 1))

    def encode_text(self, tokens) -> SimpleNamespace:
        ids = tokens.input_ids
        right, left = (ids == self.right_id).any(1), (ids == self.left_id).any(1)
        either = ~right & ~left
        embedding = torch.stack([(right | either).float(), (left | either).float(), torch.zeros_like(right.float())], 1)
        return SimpleNamespace(report_embedding=embedding)


@pytest.fixture
def sided(tiny_tokenizer) -> afloc.AFLocPredictor:
    return afloc.AFLocPredictor(
        SidedModel(tiny_tokenizer), tiny_tokenizer, Preprocessing(image_size=SIZE), LocalizationConfig(), "cpu"
    )


def film(height: int, width: int, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    image = np.full((height, width), 0.5, np.float32)
    for x, y, w, h in boxes:
        image[y : y + h, x : x + w] = 0.95
    return image


def swap(prompt: str) -> str:
    return prompt.replace("right", "@").replace("left", "right").replace("@", "left")


@pytest.mark.parametrize(("height", "width"), [(96, 96), (80, 128), (128, 80)])
@pytest.mark.parametrize("prompt", ["opacity in the right lower zone", "left upper zone mass", "nodule"])
def test_mirror_and_swap_sides_mirrors_the_heatmap(sided, height, width, prompt):
    image = film(height, width, [(4, height - 30, 20, 20), (width - 28, 6, 22, 16)])  # one blob on each side
    before = sided.localize(prompt, image=sided.encode_image(image))
    after = sided.localize(swap(prompt), image=sided.encode_image(image[:, ::-1].copy()))
    np.testing.assert_allclose(after, before[:, ::-1], atol=1e-5)
    if prompt != "nodule":  # the side word matters: the unswapped prompt on the mirrored film differs
        same_words = sided.localize(prompt, image=sided.encode_image(image[:, ::-1].copy()))
        assert np.abs(same_words - before[:, ::-1]).max() > 0.5


def test_the_side_word_puts_the_heat_on_the_patients_side(sided):
    image = film(96, 128, [(8, 60, 20, 20), (100, 10, 20, 20)])
    right = sided.localize("right lung opacity", image=sided.encode_image(image))
    row, col = np.unravel_index(np.nanargmax(right), right.shape)
    assert col < 64  # the patient's right: the image's left
    left = sided.localize("left lung opacity", image=sided.encode_image(image))
    assert np.unravel_index(np.nanargmax(left), left.shape)[1] >= 64


@pytest.mark.parametrize(("top", "left"), [(0, 40), (30, 0), (12, 12)])
def test_padding_moves_the_heatmap_and_keeps_the_score(sided, top, left):
    image = film(64, 64, [(6, 40, 16, 16)])
    padded = np.full((64 + top, 64 + left), 0.5, np.float32)
    padded[top:, left:] = image
    # the padding keeps the blob on the image's left half of the padded square (the stand-in is side-aware)
    encoded, encoded_padded = sided.encode_image(image), sided.encode_image(padded)
    before = sided.localize("bright nodule", image=encoded)
    after = sided.localize("bright nodule", image=encoded_padded)
    row, col = np.unravel_index(np.nanargmax(after), after.shape)
    assert padded[row, col] > 0.9  # the peak moved with the blob
    hot_before = before > 0.5
    hot_after = after[top:, left:] > 0.5
    assert (hot_before & hot_after).sum() >= 0.5 * hot_before.sum()
    assert sided.classify(["bright nodule"], image=encoded) == pytest.approx(
        sided.classify(["bright nodule"], image=encoded_padded), abs=1e-6
    )
