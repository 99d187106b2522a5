"""Zone views (training.zone_views): the region comes from a sentence's words, in the image's frame, and the
option reaches the training images only, leaving every other run draw for draw."""

from __future__ import annotations

import random

import pytest
import torch
from training_fixtures import write_tiny_bert, write_tiny_corpus

from training.data import ImageReportDataModule
from training.zone_views import apply_view, sentence_region, zone_view


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, vocab_file, tiny_bert_config):
    return write_tiny_bert(tmp_path_factory.mktemp("bert"), vocab_file, tiny_bert_config)


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        # the patient's right is the image's left; lower zone = bottom of the image
        ("patchy opacities in the right lower zone", (0.0, 0.5, 0.56, 1.0)),
        ("cavitating opacity in the left upper lung is seen", (0.44, 0.05, 1.0, 0.5)),
        ("bilateral perihilar airspace opacity", (0.0, 0.3, 1.0, 0.75)),
        ("consolidation at the right base", (0.0, 0.5, 0.56, 1.0)),
        ("small left pleural effusion", (0.44, 0.05, 1.0, 1.0)),  # a side without a zone: its whole height
        ("opacities in the right mid and lower zones", (0.0, 0.3, 0.56, 1.0)),
    ],
)
def test_a_sentence_names_its_region_in_the_image_frame(sentence, expected):
    assert sentence_region(sentence) == pytest.approx(expected)


@pytest.mark.parametrize(
    "sentence",
    [
        "the trachea is midline",  # "mid" only as a whole word
        "no pleural effusion or pneumothorax",
        "the lungs are clear",
        "opacities in the right upper and left lower zones",  # nearly the whole film: hides nothing
        "bilateral extensive infiltrates",
    ],
)
def test_a_sentence_that_names_no_small_region_gives_none(sentence):
    assert sentence_region(sentence) is None


def test_a_view_captions_its_sentence_with_the_unsided_ones_only():
    sentences = ["ap chest", "opacities in the left lower zone", "consolidation in the right upper zone",
                 "no pleural effusion", "findings consistent with covid-19 pneumonia"]  # fmt: skip
    seen = set()
    for seed in range(40):
        box, caption = zone_view(sentences, random.Random(seed))
        first = caption.split(". ")[0]
        assert first in sentences[1:3] and box == sentence_region(first)
        # the other located sentence is about a place the view hides
        assert caption.split(". ")[1:] == [
            "ap chest",
            "no pleural effusion",
            "findings consistent with covid-19 pneumonia",
        ]
        seen.add(first)
    assert len(seen) == 2  # both located sentences are drawn
    assert zone_view(["the lungs are clear", "no effusion"], random.Random(0)) is None


def test_apply_view_keeps_the_box_and_fills_the_rest():
    image = torch.arange(3 * 10 * 10, dtype=torch.float32).reshape(3, 10, 10) + 1
    out = apply_view(image, (0.0, 0.5, 0.5, 1.0))  # the image's bottom-left quarter
    assert torch.equal(out[:, 5:, :5], image[:, 5:, :5])
    assert (out[:, :5, :] == 0).all() and (out[:, :, 5:] == 0).all()
    assert image.min() > 0  # the input is untouched


def test_zone_view_fraction_reaches_training_images_only(tmp_path, tiny_bert):
    """Bug class: the option not reaching the pixels, reaching val/test, or changing runs that leave it at 0."""
    corpus = write_tiny_corpus(tmp_path / "corpus")

    def items(fraction: float, split: str = "train") -> list[dict]:
        module = ImageReportDataModule(str(corpus), text_model=str(tiny_bert), image_size=48, batch_size=4,
                                       num_workers=0, zone_view_fraction=fraction)  # fmt: skip
        module.setup("fit")
        data = module.datasets[split]
        return [data[i] for i in range(2 * len(data))], data.sentences

    plain, sentences = items(0.0)
    default = ImageReportDataModule(str(corpus), text_model=str(tiny_bert), image_size=48, batch_size=4, num_workers=0)
    default.setup("fit")
    for i, item in enumerate(plain):  # 0 is the run without the option, pixel for pixel and word for word
        reference = default.datasets["train"][i]
        assert item["caption"] == reference["caption"] and torch.equal(item["image"], reference["image"])
    viewed, _ = items(1.0)
    n = len(sentences)
    located = 0
    for i, (before, after) in enumerate(zip(plain, viewed, strict=True)):
        hidden = after["image"] == 0
        assert hidden.any(), i  # every training image is a view at fraction 1
        assert torch.equal(after["image"][~hidden], before["image"][~hidden])  # what shows is the same image
        view = [s for s in sentences[i % n] if sentence_region(s) is not None]
        if view:
            located += 1
            assert after["caption"].split(". ")[0] in view
    assert located >= n // 2
    if items(0.0, "val")[0]:
        for a, b in zip(items(0.0, "val")[0], items(1.0, "val")[0], strict=True):
            assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]
    with pytest.raises(ValueError, match="zone_view_fraction"):
        ImageReportDataModule(str(corpus), zone_view_fraction=-0.1)
