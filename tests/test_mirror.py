"""Mirrored training images (training.mirror): the words swap with the pixels, a pair differs only in its side
(or eye) words, and runs that leave the options off are unchanged draw for draw."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from training_fixtures import write_manifest, write_tiny_bert, write_tiny_corpus

from training.data import MIRROR_OFFSET, EpochSampler, ImageReportDataModule
from training.mirror import mirror_box, mirror_caption, mirror_pair_order


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, vocab_file, tiny_bert_config):
    return write_tiny_bert(tmp_path_factory.mktemp("bert"), vocab_file, tiny_bert_config)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Patchy opacities in the right lower zone.", "Patchy opacities in the left lower zone."),
        ("RIGHT upper zone opacity; Left base clear", "LEFT upper zone opacity; Right base clear"),
        ("bilateral opacities in both lower zones", "bilateral opacities in both lower zones"),  # no side to swap
        ("the lungs are clear. no effusion", "the lungs are clear. no effusion"),
        ("a bright spot on the leftmost rib", "a bright spot on the leftmost rib"),  # whole words only
    ],
)
def test_a_chest_caption_swaps_the_patients_sides(text, expected):
    assert mirror_caption(text) == expected


@pytest.mark.parametrize(
    "text", ["consolidation of the right middle lobe", "lingular atelectasis", "RML opacity", "dextrocardia"]
)
def test_chest_anatomy_without_a_mirror_image_cannot_be_mirrored(text):
    assert mirror_caption(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("EYE: OD. Exudates temporal to the macula.", "EYE: OS. Exudates temporal to the macula."),
        ("left eye. haemorrhages nasal to the disc", "right eye. haemorrhages nasal to the disc"),
        # anatomy moves with the image: nasal, temporal, superior and inferior stay; "right" alone is no eye
        ("exudates along the superotemporal arcade", "exudates along the superotemporal arcade"),
        ("Right eye: dots at the right of the cosmos", "Left eye: dots at the right of the cosmos"),
    ],
)
def test_a_fundus_caption_swaps_the_eye_and_keeps_the_anatomy(text, expected):
    assert mirror_caption(text, "fundus") == expected


def test_mirror_caption_rejects_an_unknown_layout():
    with pytest.raises(ValueError, match="layout"):
        mirror_caption("right", "knee")


def test_a_box_mirrors_about_the_vertical_midline():
    assert mirror_box((0.0, 0.5, 0.56, 1.0)) == pytest.approx((0.44, 0.5, 1.0, 1.0))
    assert mirror_box(mirror_box((0.1, 0.2, 0.3, 0.4))) == pytest.approx((0.1, 0.2, 0.3, 0.4))


def test_pair_order_keeps_batches_whole_and_pairs_only_what_can_be_told_apart():
    size, batch, pairs = 20, 6, 2
    pairable = [i % 3 != 0 for i in range(size)]
    order = [int(i) + 5 * size for i in np.random.default_rng(0).permutation(size)]  # epoch 5's offset
    out = mirror_pair_order(order, size, batch, pairable, pairs, MIRROR_OFFSET)
    assert len(out) == (size // batch) * batch
    for start in range(0, len(out), batch):
        chunk = out[start : start + batch]
        mirrors = [i for i in chunk if i >= MIRROR_OFFSET]
        assert len(mirrors) == pairs  # each of these batches has at least two pairable samples
        for m in mirrors:
            original = m - MIRROR_OFFSET
            assert pairable[original % size] and chunk[chunk.index(m) - 1] == original
        assert len(set(chunk)) == batch
    assert {i - MIRROR_OFFSET if i >= MIRROR_OFFSET else i for i in out} <= set(order)


def test_the_sampler_refuses_pairs_it_cannot_make():
    with pytest.raises(ValueError, match="half the batch"):
        EpochSampler(10, batch_size=4, pairable=[True] * 10, mirror_pairs=3)
    with pytest.raises(ValueError, match="pairable"):
        EpochSampler(10, batch_size=4, mirror_pairs=1)


def _module(corpus, tiny_bert, **options) -> ImageReportDataModule:
    module = ImageReportDataModule(str(corpus), text_model=str(tiny_bert), image_size=48, batch_size=4,
                                   num_workers=0, full_report=True, **options)  # fmt: skip
    module.setup("fit")
    return module


def test_a_mirror_pair_is_the_film_flipped_with_its_sides_swapped(tmp_path, tiny_bert):
    """Bug class: the pixels flipped without the words (or the reverse), the view's box left in place, or a pair
    whose two captions are the same (a false negative, not a hard one)."""
    corpus = write_tiny_corpus(tmp_path / "corpus")
    data = _module(corpus, tiny_bert, mirror_pairs=2, zone_view_fraction=1.0, zone_view_masks=True).datasets["train"]
    pairable = data.pairable()
    assert pairable == [mirror_caption(r.report) not in (None, r.report) for r in data.records]
    assert any(pairable) and not all(pairable)  # the lobe of "right lower lobe" cannot be mirrored, "bilateral" ...
    for position in range(len(data)):
        plain, mirrored = data[position], data[position + MIRROR_OFFSET]
        if mirror_caption(plain["caption"]) is None:
            assert torch.equal(mirrored["image"], plain["image"]) and mirrored["caption"] == plain["caption"]
            continue
        assert torch.equal(mirrored["image"], plain["image"].flip(-1))
        assert mirrored["caption"] == mirror_caption(plain["caption"])
        assert mirrored["view_box"].tolist() == pytest.approx(list(mirror_box(tuple(plain["view_box"].tolist()))))
        if pairable[position]:
            assert mirrored["caption"] != plain["caption"]
    batch = next(iter(_module(corpus, tiny_bert, mirror_pairs=2).train_dataloader()))
    assert batch["images"].shape[0] == 4 and "view_boxes" not in batch


def test_mirror_fraction_mirrors_that_share_and_leaves_other_runs_unchanged(tmp_path, tiny_bert):
    corpus = write_tiny_corpus(tmp_path / "corpus", n=60)
    reference = _module(corpus, tiny_bert).datasets["train"]
    off = _module(corpus, tiny_bert, mirror_fraction=0.0).datasets["train"]
    half = _module(corpus, tiny_bert, mirror_fraction=0.5).datasets["train"]
    flipped = 0
    for i in range(2 * len(reference)):  # two epochs
        a, b, c = reference[i], off[i], half[i]
        assert torch.equal(a["image"], b["image"]) and a["caption"] == b["caption"]
        if not torch.equal(c["image"], a["image"]):
            flipped += 1
            assert torch.equal(c["image"], a["image"].flip(-1)) and c["caption"] == mirror_caption(a["caption"])
    mirrorable = sum(mirror_caption(r.report) is not None for r in reference.records)
    assert 0.25 < flipped / (2 * mirrorable) < 0.75
    module = _module(corpus, tiny_bert, mirror_fraction=1.0)
    for split in ("val", "test"):  # evaluation images are never mirrored
        for i in range(len(module.datasets[split])):
            assert torch.equal(
                module.datasets[split][i]["image"], _module(corpus, tiny_bert).datasets[split][i]["image"]
            )
    with pytest.raises(ValueError, match="a mirrored sample"):
        reference[MIRROR_OFFSET]
    with pytest.raises(ValueError, match="mirror_fraction"):
        ImageReportDataModule(str(corpus), mirror_fraction=1.5)
    with pytest.raises(ValueError, match="mirror_pairs"):
        ImageReportDataModule(str(corpus), batch_size=4, mirror_pairs=3)
    with pytest.raises(ValueError, match="combined"):
        ImageReportDataModule(str(corpus), batch_size=4, mirror_pairs=1, same_label_batches=0.5)


def test_a_fundus_pair_differs_in_the_eye_even_when_cleaning_dropped_it(tmp_path, tiny_bert):
    """The report's "EYE: OD." is a one-word sentence that cleaning drops; with mirrors on, the caption gets the
    eye back (in every sample), so that the pair's captions differ and the eye does not say "mirrored"."""
    rows = []
    for i, eye in enumerate(["OD", "OS", "Right eye", "Left eye"]):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
        report = f"EYE: {eye}. FINDINGS: The optic disc appears normal. Exudates temporal to the macula."
        rows.append({"image": f"{i}.png", "report": report, "split": "train"})
    write_manifest(tmp_path / "manifest.csv", rows)
    module = ImageReportDataModule(str(tmp_path / "manifest.csv"), text_model=str(tiny_bert), image_size=40,
                                   batch_size=4, num_workers=0, modality="fundus", full_report=True,
                                   mirror_pairs=2)  # fmt: skip
    module.setup("fit")
    data = module.datasets["train"]
    assert data.pairable() == [True] * 4
    for i, eye in enumerate(["right", "left", "right", "left"]):
        plain, mirrored = data[i], data[i + MIRROR_OFFSET]
        other = "left" if eye == "right" else "right"
        assert f"{eye} eye" in plain["caption"] and f"{other} eye" not in plain["caption"]
        assert mirrored["caption"] == plain["caption"].replace(f"{eye} eye", f"{other} eye")
        assert "temporal to the macula" in mirrored["caption"]
        assert torch.equal(mirrored["image"], plain["image"].flip(-1))
