"""Zone views (training.zone_views): the region comes from a sentence's words, in the image's frame, and the
option reaches the training images only, leaving every other run draw for draw."""

from __future__ import annotations

import random

import pytest
import torch
from training_fixtures import write_disc_photograph, write_manifest, write_tiny_bert, write_tiny_corpus

from training.data import ImageReportDataModule
from training.zone_views import (
    FUNDUS_DISC,
    FUNDUS_PLACES,
    apply_view,
    decoy_view,
    fundus_region,
    report_eye,
    sentence_region,
    zone_view,
)


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


# fundus: a right eye's disc (and nose) is on the image's right; a left eye is the mirror image
@pytest.mark.parametrize(
    ("sentence", "eye", "expected"),
    [
        ("the optic disc appears normal", "right", (0.55, 0.3, 0.95, 0.7)),
        ("the optic disc appears normal", "left", (0.05, 0.3, 0.45, 0.7)),
        ("hard exudates temporal to the macula", "right", (0.0, 0.25, 0.45, 0.75)),  # temporal: away from the nose
        ("hard exudates temporal to the macula", "left", (0.55, 0.25, 1.0, 0.75)),
        ("yellow exudates between the disc and the macula", "right", (0.45, 0.3, 0.8, 0.7)),  # not also "macula"
        ("haemorrhages at the macula", None, (0.3, 0.3, 0.7, 0.7)),  # the macula needs no eye
        ("several retinal haemorrhages near the superior arcade", "right", (0.05, 0.1, 0.7, 0.5)),
    ],
)
def test_a_fundus_sentence_names_its_region_for_its_eye(sentence, eye, expected):
    assert fundus_region(sentence, eye) == pytest.approx(expected)


def test_fundus_sentences_that_place_nothing_or_need_the_eye_give_none():
    assert fundus_region("no hard exudates", "right") is None
    assert fundus_region("features of diabetic retinopathy", "left") is None
    assert fundus_region("the optic disc appears normal", None) is None  # which side is the disc on?


def test_the_eye_is_read_from_the_whole_report():
    assert report_eye("EYE: OD.\nFINDINGS: The optic disc appears normal.") == "right"
    assert report_eye("EYE: Left eye (OS).\nFINDINGS: No haemorrhages.") == "left"
    assert report_eye("FINDINGS: The optic disc appears normal.") is None
    assert report_eye("The right eye and the left eye.") is None  # both named: no single eye
    sentences = ["the optic disc appears normal", "no haemorrhages"]  # "OD" alone is dropped as a sentence
    box, caption = zone_view(sentences, random.Random(0), "fundus", eye=report_eye("EYE: OD. " + ". ".join(sentences)))
    assert box == pytest.approx(FUNDUS_DISC[1]) and caption == "the optic disc appears normal. no haemorrhages"
    with pytest.raises(ValueError, match="layout"):
        zone_view(sentences, random.Random(0), "knee")


def test_a_fundus_corpus_gets_the_fundus_layout_and_the_eye_of_its_report(tmp_path, tiny_bert):
    """Bug class: colour photographs viewed with the chest's layout, or the eye lost with the one-word "OD"."""

    import numpy as np
    from PIL import Image

    rows = []
    for i, eye in enumerate(["OD", "OS"] * 3):
        Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(tmp_path / f"{i}.png")
        report = f"EYE: {eye}. FINDINGS: The optic disc appears normal. No haemorrhages. IMPRESSION: Normal fundus."
        rows.append({"image": f"{i}.png", "report": report, "split": "train"})
    write_manifest(tmp_path / "manifest.csv", rows)
    module = ImageReportDataModule(str(tmp_path / "manifest.csv"), text_model=str(tiny_bert), image_size=40,
                                   batch_size=2, num_workers=0, modality="fundus", zone_view_fraction=1.0)  # fmt: skip
    module.setup("fit")
    for i in range(6):
        item = module.datasets["train"][i]
        shown = (item["image"] != 0).any(dim=0)
        columns = shown.any(dim=0).nonzero().flatten()
        x0, _, x1, _ = FUNDUS_DISC[1] if i % 2 == 0 else (1 - FUNDUS_DISC[1][2], 0, 1 - FUNDUS_DISC[1][0], 0)
        assert (columns.min().item(), columns.max().item() + 1) == (round(x0 * 40), round(x1 * 40)), i
        assert item["caption"].startswith("the optic disc appears normal")


def test_region_mask_holds_the_cells_inside_each_box():
    from afloc.modeling.losses import boxes_to_region_mask

    mask = boxes_to_region_mask(
        torch.tensor([[0.0, 0.5, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0], [0.6, 0.6, 0.62, 0.62]]), 4, 4
    )
    assert mask[0].nonzero().tolist() == [[2, 0], [2, 1], [3, 0], [3, 1]]  # rows 2-3, columns 0-1
    assert mask[1].all()
    assert mask[2].sum() == 1 and mask[2, 2, 2]  # a box between cell centres keeps its nearest cell


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hidden_regions_take_no_part_in_the_local_loss(seed):
    """What a masked region holds cannot change the loss; an all-True mask is the unmasked loss."""
    from afloc.modeling.losses import local_contrastive_loss

    generator = torch.Generator().manual_seed(seed)
    patches = torch.randn(4, 8, 3, 3, generator=generator, dtype=torch.float64)
    tokens = torch.randn(4, 5, 8, generator=generator, dtype=torch.float64)
    token_mask = torch.ones(4, 5, dtype=torch.bool)
    token_mask[1, 3:] = False
    for null_attention in (False, True):
        plain = local_contrastive_loss(patches, tokens, token_mask, null_attention=null_attention)
        full = torch.ones(4, 3, 3, dtype=torch.bool)
        assert torch.allclose(local_contrastive_loss(patches, tokens, token_mask, null_attention=null_attention,
                                                     region_mask=full), plain)  # fmt: skip
        region_mask = torch.rand(4, 3, 3, generator=generator) < 0.5
        region_mask[:, 1, 1] = True
        masked = local_contrastive_loss(patches, tokens, token_mask, null_attention=null_attention,
                                        region_mask=region_mask)  # fmt: skip
        changed = patches.clone()
        changed.permute(0, 2, 3, 1)[~region_mask] = torch.randn(int((~region_mask).sum()), 8, dtype=torch.float64)
        again = local_contrastive_loss(changed, tokens, token_mask, null_attention=null_attention,
                                       region_mask=region_mask)  # fmt: skip
        assert torch.allclose(masked, again)
        assert not torch.allclose(masked, plain)  # the mask does change what is attended to
    with pytest.raises(ValueError, match="region_mask"):
        local_contrastive_loss(patches, tokens, token_mask, region_mask=torch.zeros(4, 3, 3, dtype=torch.bool))


def test_zone_view_masks_carry_each_items_visible_box(tmp_path, tiny_bert):
    from training.data import Collate

    corpus = write_tiny_corpus(tmp_path / "corpus")
    module = ImageReportDataModule(str(corpus), text_model=str(tiny_bert), image_size=48, batch_size=4,
                                   num_workers=0, zone_view_fraction=0.5, zone_view_masks=True)  # fmt: skip
    module.setup("fit")
    data = module.datasets["train"]
    plain = ImageReportDataModule(str(corpus), text_model=str(tiny_bert), image_size=48, batch_size=4, num_workers=0)
    plain.setup("fit")
    boxes = []
    for i in range(2 * len(data)):
        item, reference = data[i], plain.datasets["train"][i]["image"]
        box = item["view_box"].tolist()
        boxes.append(box)
        inside = torch.zeros(48, 48, dtype=torch.bool)
        inside[round(box[1] * 48) : round(box[3] * 48), round(box[0] * 48) : round(box[2] * 48)] = True
        assert torch.equal(item["image"][:, inside], reference[:, inside]), i  # the box is what shows
        assert (item["image"][:, ~inside] == 0).all(), i  # and nothing else
    assert 0 < sum(b == [0.0, 0.0, 1.0, 1.0] for b in boxes) < len(boxes)
    batch = Collate(module.tokenizer)([data[0], data[1]])
    assert batch["view_boxes"].shape == (2, 4)
    assert "view_box" not in module.datasets["val"][0]  # training only
    with pytest.raises(ValueError, match="zone_view_masks"):
        ImageReportDataModule(str(corpus), zone_view_masks=True)


def test_a_fit_with_zone_view_masks_hands_the_boxes_to_the_loss(tmp_path, tiny_bert, monkeypatch):
    """Bug class: the boxes made by the data never reaching the loss (the views would train unmasked)."""
    from pathlib import Path

    from afloc.modeling.losses import AFLocLoss
    from training.cli import cli_main

    seen: list = []
    forward = AFLocLoss.forward

    def spy(self, image, text, view_boxes=None):
        seen.append(None if view_boxes is None else view_boxes.clone())
        return forward(self, image, text, view_boxes)

    monkeypatch.setattr(AFLocLoss, "forward", spy)
    corpus = write_tiny_corpus(tmp_path / "corpus")
    configs = Path(__file__).resolve().parents[1] / "training" / "configs"
    cli_main(["fit", "--config", str(configs / "smoke.yaml"), "--model.text_model", str(tiny_bert),
              "--data.manifest", str(corpus), "--trainer.default_root_dir", str(tmp_path),
              "--trainer.logger.init_args.save_dir", str(tmp_path), "--data.zone_view_fraction", "1",
              "--data.zone_view_masks", "true"])  # fmt: skip
    boxes = [b for b in seen if b is not None]
    assert len(boxes) >= 2  # the two training steps
    for b in boxes:
        assert b.shape[1] == 4 and not (b == torch.tensor([0.0, 0.0, 1.0, 1.0])).all(dim=1).any()  # all views
    assert any(b is None for b in seen)  # validation batches: whole images, no boxes


def test_a_decoy_shows_a_lesion_free_photograph_through_a_lesion_place_of_its_eye():
    """Bug class: decoys that caption a hidden disc, that take a photograph whose report places a lesion (its
    caption would then deny what the view may show), or that ignore the eye (a place no lesion view of that eye has)."""
    normal = ["the optic disc appears normal", "no hard exudates", "no haemorrhages"]
    places = {box for _, box in FUNDUS_PLACES}
    mirrored = {(1.0 - x1, y0, 1.0 - x0, y1) for x0, y0, x1, y1 in places}
    for seed in range(20):
        box, caption = decoy_view(normal, random.Random(seed), eye="right")
        assert box in places and caption == "no hard exudates. no haemorrhages"  # the disc sentence is left out
        left_box, _ = decoy_view(normal, random.Random(seed), eye="left")
        assert left_box in mirrored
    lesion = ["the optic disc appears normal", "a few hard exudates temporal to the macula"]
    assert decoy_view(lesion, random.Random(0), eye="right") is None
    assert decoy_view(["the optic disc appears normal"], random.Random(0), eye="right") is None  # nothing to say
    unplaced = ["the optic disc appears normal", "some haemorrhages are seen", "no hard exudates"]
    assert decoy_view(unplaced, random.Random(0), eye="right") is None  # the haemorrhages may lie in the view
    retinopathy = ["the optic disc appears normal", "no hard exudates", "features of diabetic retinopathy"]
    assert decoy_view(retinopathy, random.Random(0), eye="right") is None
    assert decoy_view(["no diabetic retinopathy", "normal fundus"], random.Random(0), eye="right")[1] == (
        "no diabetic retinopathy. normal fundus"
    )


def test_zone_view_decoys_reach_lesion_free_training_photographs_only(tmp_path, tiny_bert):
    """The share of decoys follows the option; photographs with a placed lesion keep their own views; runs without
    decoys keep their views draw for draw; chest corpora and decoys without views are refused by name."""
    import numpy as np
    from PIL import Image

    rows = []
    for i in range(40):
        Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(tmp_path / f"{i}.png")
        finding = "Hard exudates temporal to the macula." if i % 2 else "No hard exudates."
        report = f"EYE: OD. FINDINGS: The optic disc appears normal. {finding} No haemorrhages."
        rows.append({"image": f"{i}.png", "report": report, "split": "train" if i < 36 else "val"})
    write_manifest(tmp_path / "manifest.csv", rows)

    def boxes(decoys: float) -> list[tuple]:
        module = ImageReportDataModule(str(tmp_path / "manifest.csv"), text_model=str(tiny_bert), image_size=40,
                                       batch_size=2, num_workers=0, modality="fundus", zone_view_fraction=1.0,
                                       zone_view_masks=True, zone_view_decoys=decoys)  # fmt: skip
        module.setup("fit")
        assert "view_box" not in module.datasets["val"][0]
        return [tuple(module.datasets["train"][i]["view_box"].tolist()) for i in range(36)]

    none, half, every = boxes(0.0), boxes(0.5), boxes(1.0)
    disc = tuple(pytest.approx(v) for v in FUNDUS_DISC[1])
    assert all(none[i] == disc for i in range(0, 36, 2))  # without decoys a normal photograph shows its disc
    assert all(every[i] != disc for i in range(0, 36, 2))
    assert 3 <= sum(half[i] != disc for i in range(0, 36, 2)) <= 15
    assert [none[i] for i in range(1, 36, 2)] == [every[i] for i in range(1, 36, 2)]  # lesion photographs: as before
    manifest = str(tmp_path / "manifest.csv")
    with pytest.raises(ValueError, match="zone_view_decoys needs zone views"):
        ImageReportDataModule(manifest, modality="fundus", zone_view_decoys=0.5)
    with pytest.raises(ValueError, match="zone_view_decoys is for fundus"):
        ImageReportDataModule(manifest, zone_view_fraction=1.0, zone_view_decoys=0.5)
    with pytest.raises(ValueError, match=r"zone_view_decoys must be in \[0, 1\]"):
        ImageReportDataModule(manifest, modality="fundus", zone_view_fraction=1.0, zone_view_decoys=1.5)


def test_an_anchored_place_is_measured_from_the_disc_on_either_eye():
    """Bug class: the fovea put on the disc's (nasal) side, the temporal sector not mirrored for a left eye, or a
    fine phrase also matched as "the fovea" (which would widen the view to the macula)."""
    from training.zone_views import ANCHOR_MARGIN, DISC_DIAMETER, anchored_box

    dd, m = DISC_DIAMETER, ANCHOR_MARGIN * DISC_DIAMETER
    fovea = (0.75 - 2.5 * dd, 0.5 + 0.3 * dd)  # a right eye's disc at (0.75, 0.5)
    centre = anchored_box("centre", (0.75, 0.5), "right")
    assert centre == pytest.approx((fovea[0] - 0.5 * dd - m, fovea[1] - 0.5 * dd - m,
                                    fovea[0] + 0.5 * dd + m, fovea[1] + 0.5 * dd + m))  # fmt: skip
    temporal = fundus_region("hard exudates just temporal of the fovea", "right", (0.75, 0.5))
    assert temporal == pytest.approx(anchored_box("inner_temporal", (0.75, 0.5), "right"))
    assert temporal[2] < fovea[0]  # temporal: away from the disc, the image's left on a right eye
    left = fundus_region("hard exudates in the inner temporal subfield", "left", (0.25, 0.5))
    assert left[0] > 1 - fovea[0] and left == pytest.approx(
        (1 - temporal[2], temporal[1], 1 - temporal[0], temporal[3])
    )
    assert fundus_region("hard exudates in the inner temporal subfield", None, (0.25, 0.5)) == pytest.approx(left)
    moved = fundus_region("exudates in the central subfield", "right", (0.7, 0.45))
    assert moved == pytest.approx(anchored_box("centre", (0.7, 0.45), "right")) and moved != centre
    framed = fundus_region("exudates in the central subfield", "right")  # no disc: the frame's generous box
    assert framed[0] < centre[0] and framed[2] > centre[2]
    assert fundus_region("hard exudates temporal to the macula", "right") == pytest.approx(FUNDUS_PLACES[4][1])


def test_zone_view_anchor_follows_the_disc_found_in_each_photograph(tmp_path, tiny_bert):
    """The view of a fine place moves with the photograph's own disc; no disc option without fundus views."""
    from training.zone_views import anchored_box

    rows, size = [], 64
    for i, disc_x in enumerate((48, 44, 16, 20)):
        write_disc_photograph(tmp_path / f"{i}.png", disc_x, size)
        eye = "OD" if disc_x > 32 else "OS"
        rows.append({"image": f"{i}.png", "split": "train",
                     "report": f"EYE: {eye}. FINDINGS: Hard exudates in the central subfield."})  # fmt: skip
    write_manifest(tmp_path / "manifest.csv", rows)
    manifest = str(tmp_path / "manifest.csv")
    module = ImageReportDataModule(manifest, text_model=str(tiny_bert), image_size=size, batch_size=2, num_workers=0,
                                   modality="fundus", zone_view_fraction=1.0, zone_view_masks=True,
                                   zone_view_anchor="disc")  # fmt: skip
    module.setup("fit")
    for i, disc_x in enumerate((48, 44, 16, 20)):
        box = module.datasets["train"][i]["view_box"].tolist()
        eye = "right" if disc_x > 32 else "left"
        assert box == pytest.approx(anchored_box("centre", ((disc_x + 0.5) / size, 30.5 / size), eye), abs=2 / size)
    with pytest.raises(ValueError, match="zone_view_anchor 'disc' is for fundus"):
        ImageReportDataModule(manifest, zone_view_fraction=1.0, zone_view_anchor="disc")
    with pytest.raises(ValueError, match="needs zone views"):
        ImageReportDataModule(manifest, modality="fundus", zone_view_anchor="disc")
    with pytest.raises(ValueError, match="zone_view_anchor must be one of"):
        ImageReportDataModule(manifest, modality="fundus", zone_view_fraction=1.0, zone_view_anchor="fovea")
