"""Place targets (training.place_targets): what a fundus report says is where, read from its text and the disc
found in the pixels, and the place loss that trains the model's own heatmaps with it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_fixtures import write_disc_photograph, write_manifest, write_tiny_bert

from training.place_targets import (
    PLACE_NAMES,
    place_labels,
    place_loss,
    place_masks,
    place_tensors,
    report_places,
    sentence_classes,
)
from training.realdata.fundus import Photo, fine_region, fovea_from_disc, region_of
from training.zone_views import DISC_DIAMETER, anchored_box, fundus_region

CATEGORIES = ("optic_disc", "hard_exudates", "haemorrhage")
CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"
DISC = (0.75, 0.5)  # a right eye's disc, as fractions of the square


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, vocab_file, tiny_bert_config):
    return write_tiny_bert(tmp_path_factory.mktemp("bert"), vocab_file, tiny_bert_config)


def test_a_sentence_speaks_of_its_lesions_or_else_of_the_disc():
    assert sentence_classes("the optic disc appears normal", CATEGORIES) == ["optic_disc"]
    assert sentence_classes("exudates adjacent to the disc", CATEGORIES) == ["hard_exudates"]
    assert sentence_classes("diabetic retinopathy with exudates and haemorrhages", CATEGORIES) == [
        "hard_exudates",
        "haemorrhage",
    ]
    assert sentence_classes("hemorrhages are seen", CATEGORIES) == ["haemorrhage"]  # either spelling
    assert sentence_classes("normal fundus", CATEGORIES) == []


def test_places_follow_the_text_and_the_disc_and_rule_out_what_the_report_excludes():
    """Bug class: a denial taken as a finding, a place measured from the frame instead of the disc, or cells ruled
    out for a finding the report places nowhere."""
    sentences = [
        "the optic disc appears normal",
        "scattered hard exudates in the inner temporal subfield",
        "some haemorrhages are seen",
        "no cotton wool spots",
    ]
    places, ruled_out = report_places(sentences, CATEGORIES, "right", DISC)
    assert [p.category for p in places] == [0, 1]
    assert places[1][1] == pytest.approx(anchored_box("inner_temporal", DISC, "right"))
    assert places[0][1] == pytest.approx(fundus_region("the optic disc appears normal", "right", DISC))
    assert ruled_out == [True, True, False]  # the haemorrhages are somewhere unsaid: nothing ruled out
    moved = report_places(sentences, CATEGORIES, "right", (0.7, 0.45))[0][1][1]
    assert moved != pytest.approx(places[1][1])  # the place moves with the photograph's own disc

    clear = ["the disc margins are sharp", "no hard exudates", "there are no haemorrhages"]
    places, ruled_out = report_places(clear, CATEGORIES, "right", DISC)
    assert [p.category for p in places] == [0] and ruled_out == [True, True, True]  # denied: ruled out everywhere


def test_an_impression_line_summarises_placed_findings():
    """The generated reports end with "diabetic retinopathy with exudates": read as a summary of the placed
    exudates by default, and as a finding somewhere unsaid by the bound's recorded reading (``summaries=False``)."""
    sentences = ["hard exudates just temporal of the fovea", "diabetic retinopathy with exudates"]
    places, ruled_out = report_places(sentences, CATEGORIES, "right", DISC)
    assert [p.category for p in places] == [1] and ruled_out[1]
    assert not report_places(sentences, CATEGORIES, "right", DISC, summaries=False)[1][1]
    unplaced_only = report_places(["diabetic retinopathy with exudates"], CATEGORIES, "right", DISC)
    assert unplaced_only == ([], [True, False, True])


def test_a_place_past_the_cap_rules_nothing_out():
    sentences = [f"hard exudates in the inner {d} subfield" for d in ("superior", "inferior", "nasal", "temporal")]
    places, ruled_out = report_places(sentences, CATEGORIES, "right", DISC, max_places=2)
    assert len(places) == 2 and not ruled_out[1]  # the two dropped places may hold exudates


def test_masks_and_loss_reward_heat_in_the_named_place_and_none_where_ruled_out():
    sentences = ["the disc margins are sharp", "hard exudates in the central subfield", "no haemorrhages"]
    one = place_tensors(*report_places(sentences, CATEGORIES, "right", DISC), max_places=4)
    batch = {k: v[None] for k, v in one.items()}
    bags, negative = place_masks(batch["place_boxes"], batch["place_class"], batch["place_ruled_out"], 16, 16)
    exudates = bags[0, 1]
    assert exudates.any() and not bags[0, 2:].any()  # two bags, the rest empty
    assert torch.equal(negative[0, 1], ~exudates)  # outside its place, every exudate cell is ruled out
    assert negative[0, 2].all() and torch.equal(negative[0, 0], ~bags[0, 0])
    row, col = [int(i) for i in exudates.nonzero()[len(exudates.nonzero()) // 2]]
    inside = torch.full((1, 3, 16, 16), -4.0)
    inside[0, 1][exudates] = 4.0
    inside[0, 0][bags[0, 0]] = 4.0
    outside = torch.full((1, 3, 16, 16), -4.0)
    outside[0, 1][~exudates & negative[0, 1]] = 4.0
    outside[0, 0][bags[0, 0]] = 4.0
    args = (bags, batch["place_class"], negative)
    assert place_loss(inside, *args, r=1.0) < place_loss(outside, *args, r=1.0)
    # mean-like pooling (r = 1) asks the whole place to be warm; near-max pooling (large r) one cell of it
    one_cell = torch.full((1, 3, 16, 16), -4.0)
    one_cell[0, 1, row, col] = 4.0
    one_cell[0, 0][bags[0, 0]] = 4.0
    assert place_loss(one_cell, *args, r=1.0) > 2 * place_loss(inside, *args, r=1.0)
    assert place_loss(one_cell, *args, r=50.0) < place_loss(one_cell, *args, r=1.0)


@pytest.mark.parametrize("labelling, label_of", [(1, fine_region), (2, region_of)])
def test_cells_are_labelled_as_the_report_generator_names_places(labelling, label_of):
    """Bug class: the training bags and the places the generated reports name drifting apart (a sector's sign, a
    ring's radius, the eye's direction, the order in which regions win)."""
    grid = 16
    for disc, eye in (((0.75, 0.5), "right"), ((0.22, 0.46), "left"), ((0.6, 0.4), "right"), ((0.35, 0.6), "left")):
        anchor = torch.tensor([[*disc, 1.0 if eye == "right" else -1.0, float(labelling)]])
        labels = place_labels(anchor, grid, grid)[0]
        photo = Photo(eye, disc, fovea_from_disc(disc, DISC_DIAMETER, eye), DISC_DIAMETER, {})
        expected = [[label_of(((j + 0.5) / grid, (i + 0.5) / grid), photo) for j in range(grid)] for i in range(grid)]
        assert [[PLACE_NAMES[k] for k in row] for row in labels.tolist()] == expected
        assert len(set(sum(expected, []))) >= 6  # the grid spans several places, so the comparison means something


def test_fine_cells_hold_exactly_the_named_subfield():
    """``place_cells="fine"``: an exudate bag is the cells of its subfield, not its box with a margin, so the
    neighbouring subfields (the fovea's own cells among them) are ruled out; a place the labelling never gives
    keeps its box."""
    sentences = ["the disc margins are sharp", "hard exudates in the inner temporal subfield", "no haemorrhages"]
    places, ruled_out = report_places(sentences, CATEGORIES, "right", DISC)
    boxed, fine = (
        {k: v[None] for k, v in place_tensors(places, ruled_out, 4, DISC, "right", cells).items()}
        for cells in ("box", "fine")
    )
    masks = {}
    for name, one in (("box", boxed), ("fine", fine)):
        masks[name] = place_masks(one["place_boxes"], one["place_class"], one["place_ruled_out"], 16, 16,
                                  one["place_names"], one["place_anchor"])  # fmt: skip
    labels = place_labels(fine["place_anchor"], 16, 16)[0]
    sector = labels == PLACE_NAMES.index("inner_temporal")
    assert torch.equal(masks["fine"][0][0, 1], sector) and sector.any()
    assert bool((masks["box"][0][0, 1] & ~sector).any())  # the box holds more than the subfield ...
    assert not bool((sector & ~masks["box"][0][0, 1]).any())  # ... and all of it
    centre = labels == PLACE_NAMES.index("centre")
    assert masks["fine"][1][0, 1][centre].all() and not masks["box"][1][0, 1][centre].all()
    assert torch.equal(masks["fine"][0][0, 0], labels == PLACE_NAMES.index("peripapillary"))  # the disc's bag
    assert not boxed["place_names"].any() and not boxed["place_anchor"].any()
    # on a 4 x 4 grid no cell centre lies within a disc diameter of the disc: its bag falls back to its box's cells,
    # so that the disc is not ruled out everywhere on a photograph whose report places it
    coarse = [place_masks(*(one[k] for k in ("place_boxes", "place_class", "place_ruled_out")), 4, 4,
                          one["place_names"], one["place_anchor"])[0] for one in (boxed, fine)]  # fmt: skip
    assert not (place_labels(fine["place_anchor"], 4, 4) == PLACE_NAMES.index("peripapillary")).any()
    assert coarse[1][0, 0].sum() == 4 and torch.equal(coarse[1][0, 0], coarse[0][0, 0])

    macula = report_places(["hard exudates in the macula"], CATEGORIES, "right", DISC)
    one = place_tensors(*macula, 4, DISC, "right", "fine")
    assert not one["place_names"].any()  # the ETDRS labelling has no "macula": the bag keeps its box
    assert one["place_names"].shape == (4, len(PLACE_NAMES)) and one["place_anchor"].tolist() == [*DISC, 1.0, 1.0]
    with pytest.raises(ValueError, match="place cells must be one of"):
        place_tensors(*macula, 4, DISC, "right", "sectors")


def test_a_batch_without_targets_costs_nothing_and_keeps_a_gradient_path():
    logits = torch.zeros(2, 3, 4, 4, requires_grad=True)
    empty = place_tensors([], [False, False, False], 4)
    batch = {k: torch.stack([v, v]) for k, v in empty.items()}
    bags, negative = place_masks(batch["place_boxes"], batch["place_class"], batch["place_ruled_out"], 4, 4)
    loss = place_loss(logits, bags, batch["place_class"], negative, 1.0)
    assert float(loss) == 0.0
    loss.backward()
    assert logits.grad is not None
    with pytest.raises(ValueError, match="r must be > 0"):
        place_loss(logits, bags, batch["place_class"], negative, 0.0)


def _photographs(tmp_path, size=64):
    """Two synthetic right-eye photographs (disc at the right) and two left-eye ones, with placed exudates."""
    rows = []
    for i, disc_x in enumerate((48, 44, 16, 20)):
        write_disc_photograph(tmp_path / f"{i}.png", disc_x, size)
        eye = "OD" if disc_x > 32 else "OS"
        report = f"EYE: {eye}. FINDINGS: Disc normal. Hard exudates in the central subfield. No haemorrhages."
        rows.append({"image": f"{i}.png", "split": "train", "report": report})
    rows += [{"image": f"{i}.png", "split": "val", "report": rows[i]["report"]} for i in (0, 2)]
    write_manifest(tmp_path / "manifest.csv", rows)
    return str(tmp_path / "manifest.csv")


def test_whole_photographs_carry_places_from_their_own_disc_and_views_none(tmp_path, tiny_bert):
    from training.data import ImageReportDataModule

    manifest = _photographs(tmp_path)
    module = ImageReportDataModule(manifest, text_model=str(tiny_bert), image_size=64, batch_size=2, num_workers=0,
                                   modality="fundus", place_targets=True)  # fmt: skip
    module.setup("fit")
    for i, disc_x in enumerate((48, 44, 16, 20)):
        item = module.datasets["train"][i]
        assert item["place_class"].tolist()[:3] == [0, 1, -1] and item["place_ruled_out"].tolist() == [True] * 3
        eye = "right" if disc_x > 32 else "left"
        expected = anchored_box("centre", ((disc_x + 0.5) / 64, 30.5 / 64), eye)
        assert item["place_boxes"][1].tolist() == pytest.approx(expected, abs=2 / 64)
    assert "place_class" not in module.datasets["val"][0]  # training photographs only
    batch = module.train_dataloader().collate_fn([module.datasets["train"][i] for i in range(2)])
    assert batch["place_boxes"].shape == (2, 8, 4) and batch["place_ruled_out"].shape == (2, 3)

    viewed = ImageReportDataModule(manifest, text_model=str(tiny_bert), image_size=64, batch_size=2, num_workers=0,
                                   modality="fundus", place_targets=True, zone_view_fraction=1.0)  # fmt: skip
    viewed.setup("fit")
    item = viewed.datasets["train"][0]
    assert (item["place_class"] < 0).all() and not item["place_ruled_out"].any()  # a view teaches no place

    with pytest.raises(ValueError, match="place_targets reads places relative to the optic disc"):
        ImageReportDataModule(manifest, place_targets=True)
    with pytest.raises(ValueError, match="cannot be combined with mirroring"):
        ImageReportDataModule(manifest, modality="fundus", place_targets=True, mirror_fraction=0.5)
    with pytest.raises(ValueError, match="set place_targets true"):
        ImageReportDataModule(manifest, modality="fundus", place_cells="fine")
    with pytest.raises(ValueError, match="place_cells must be one of"):
        ImageReportDataModule(manifest, modality="fundus", place_targets=True, place_cells="exact")

    fine = ImageReportDataModule(manifest, text_model=str(tiny_bert), image_size=64, batch_size=2, num_workers=0,
                                 modality="fundus", place_targets=True, place_cells="fine")  # fmt: skip
    fine.setup("fit")
    batch = fine.train_dataloader().collate_fn([fine.datasets["train"][i] for i in (0, 2)])
    assert batch["place_names"][:, 1].any(dim=-1).all()  # the central subfield's bag, on a right and a left eye
    assert batch["place_anchor"][:, 2].tolist() == [1.0, -1.0] and batch["place_anchor"][:, 3].tolist() == [1.0, 1.0]


def test_place_bags_measures_exact_bags_smaller_than_boxes(tmp_path, tiny_bert):
    from benchmarks.place_bags import bag_sizes

    manifest = _photographs(tmp_path)
    box, fine = (bag_sizes(manifest, str(tiny_bert), cells, 4, 256, 16) for cells in ("box", "fine"))
    assert box["exact_bags"] == 0 and fine["exact_bags"] == 8 and fine["empty_exact_bags"] == 0  # disc + centre
    assert 0 < fine["hard_exudates"]["mean_cells"] < box["hard_exudates"]["mean_cells"]


def test_the_place_loss_trains_the_models_own_heatmaps(tmp_path, tiny_bert, capsys):
    """The place term is logged, reaches the image encoder, stays out of the exported model (benchmarks/place_fit.py
    reads it from the checkpoint), and is refused without place targets in the batches."""
    from afloc import load_pretrained
    from training.cli import cli_main

    manifest = _photographs(tmp_path)
    args = ["--config", str(CONFIGS / "smoke.yaml"), "--model.text_model", str(tiny_bert), "--data.manifest",
            manifest, "--trainer.default_root_dir", str(tmp_path), "--trainer.logger.init_args.save_dir",
            str(tmp_path), "--data.modality", "fundus", "--data.batch_size", "2",
            "--model.place_weight", "1.0"]  # fmt: skip
    cli = cli_main(["fit", *args, "--data.place_targets", "true", "--data.place_cells", "fine"])
    metrics = (Path(cli.trainer.log_dir) / "metrics.csv").read_text()
    assert "train/place" in metrics
    module = cli.model
    assert float(module.place_bias) != pytest.approx(-2.0, abs=1e-7)  # the training-only head was trained
    images = module.trainer.datamodule.datasets["train"]
    batch = module.trainer.datamodule.train_dataloader().collate_fn([images[0], images[1]])
    module.zero_grad()
    out = module.model.encode_image(batch["images"])
    module._place_loss(out.patch_embeddings, batch).backward()
    grads = [p.grad for p in module.model.image_encoder.parameters() if p.requires_grad]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)
    last = cli.trainer.checkpoint_callback.last_model_path
    bundle = load_pretrained(last)
    assert not any("place" in key for key in bundle.model.state_dict())  # the scale and bias stay in training

    import json

    from benchmarks import place_fit

    capsys.readouterr()  # what the fit printed
    assert place_fit.main(["--model", last, "--manifest", manifest, "--photographs", "4"]) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["optic_disc"]["bags"] == 4 and fit["haemorrhage"]["bags"] == 0  # the disc's bag on each photograph
    assert 0 <= fit["optic_disc"]["bag_p"] <= 1 and fit["haemorrhage"]["ruled_out_p"] is not None

    with pytest.raises(ValueError, match="needs place targets in the batches"):
        cli_main(["fit", *args, "--trainer.default_root_dir", str(tmp_path / "b"),
                  "--trainer.logger.init_args.save_dir", str(tmp_path / "b")])  # fmt: skip
    with pytest.raises(ValueError, match="place_weight must be >= 0"):
        from training.system import AFLocPretraining

        AFLocPretraining(text_model=str(tiny_bert), place_weight=-1.0)
