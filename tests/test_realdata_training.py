"""Training on real images: augmentation reaches the training images only, never flips; init_model copies weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from training_fixtures import write_manifest, write_tiny_bert, write_tiny_corpus

from training.augment import Augmentation
from training.data import ImageReportDataModule


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, vocab_file, tiny_bert_config):
    return write_tiny_bert(tmp_path_factory.mktemp("bert"), vocab_file, tiny_bert_config)


def _module(corpus, tiny_bert, augment: str) -> ImageReportDataModule:
    module = ImageReportDataModule(str(corpus), text_model=str(tiny_bert), image_size=48, batch_size=4,
                                   num_workers=0, augment=augment)  # fmt: skip
    module.setup("fit")
    return module


def test_augment_changes_training_images_only_and_reproducibly(tmp_path, tiny_bert):
    corpus = write_tiny_corpus(tmp_path / "corpus", colour=True)
    plain, augmented = _module(corpus, tiny_bert, "none"), _module(corpus, tiny_bert, "fundus")
    a, b = plain.datasets["train"][0]["image"], augmented.datasets["train"][0]["image"]
    assert not torch.equal(a, b)  # the setting reaches the images the model trains on
    assert torch.equal(b, augmented.datasets["train"][0]["image"])  # same (seed, epoch, sample): same image
    assert not torch.equal(b, augmented.datasets["train"][len(augmented.datasets["train"])]["image"])  # next epoch
    for split in ("val", "test"):
        if len(plain.datasets[split]):
            assert torch.equal(plain.datasets[split][0]["image"], augmented.datasets[split][0]["image"])
    with pytest.raises(ValueError, match="unknown augmentation"):
        ImageReportDataModule(str(corpus), augment="flip")


def test_augmentation_never_mirrors_the_sides():
    """A bright left half stays on the left under every draw (no horizontal flip: the report names sides)."""
    image = np.zeros((64, 96), np.float32)
    image[:, :48] = 0.8
    for name in ("cxr", "fundus"):
        augmentation = Augmentation.named(name)
        for seed in range(30):
            out = augmentation(image, np.random.default_rng(seed))
            assert out.shape == image.shape and out.dtype == np.float32
            assert out[:, :30].mean() > out[:, 66:].mean() + 0.2, (name, seed)
    assert Augmentation.named("none") is None


def test_init_model_copies_matching_weights(tmp_path, tiny_config, tiny_tokenizer):
    from afloc import AFLoc
    from training.system import _copy_matching_weights

    torch.manual_seed(0)
    source = AFLoc(tiny_config)
    folder = tmp_path / "source"
    from afloc.hub.format import save_pretrained

    save_pretrained(source, folder, tokenizer=tiny_tokenizer)
    torch.manual_seed(1)
    target = AFLoc(tiny_config)
    key = next(k for k in target.state_dict() if k.startswith("image_encoder"))
    assert not torch.equal(target.state_dict()[key], source.state_dict()[key])
    _copy_matching_weights(target, str(folder))
    assert torch.equal(target.state_dict()[key], source.state_dict()[key])


def test_full_report_fraction_mixes_whole_reports_into_training_captions_only(tmp_path, tiny_bert):
    """Bug class: the option not reaching the captions, reaching val/test too, or changing the captions of runs
    that do not set it (the reference's sampled subsets must stay the same draw for draw)."""
    import random

    from afloc.text.tokenizer import sample_caption

    corpus = write_tiny_corpus(tmp_path / "corpus")

    def captions(fraction: float, split: str = "train") -> tuple[list[str], list]:
        module = ImageReportDataModule(str(corpus), text_model=str(tiny_bert), image_size=48, batch_size=4,
                                       num_workers=0, full_report_fraction=fraction)  # fmt: skip
        module.setup("fit")
        data = module.datasets[split]
        return [data[i]["caption"] for i in range(3 * len(data))], data.sentences  # three epochs

    reference, sentences = captions(0.0)
    n = len(sentences)
    assert sum(len(s) > 1 for s in sentences) >= n // 2, "the tiny corpus needs reports of several sentences"
    expected = [sample_caption(sentences[i % n], random.Random(f"1:{i // n}:{i % n}")) for i in range(3 * n)]
    assert reference == expected  # fraction 0 is the reference's draw, unchanged
    full, _ = captions(1.0)
    assert full == [". ".join(sentences[i % n]) for i in range(3 * n)]
    half, _ = captions(0.5)
    several = [i for i in range(3 * n) if len(sentences[i % n]) > 1]
    share = sum(half[i] == full[i] for i in several) / len(several)
    assert 0.2 < share < 0.8, share  # about half whole reports (a sampled subset is never the whole report)
    if n_val := len(captions(0.0, "val")[0]):
        assert captions(1.0, "val")[0] == captions(0.0, "val")[0], n_val  # training captions only
    with pytest.raises(ValueError, match="full_report_fraction"):
        ImageReportDataModule(str(corpus), full_report_fraction=1.5)


def test_label_repeats_show_a_rare_finding_more_often(tmp_path, tiny_bert):
    """--data.label_repeats: a record with a named label appears n times per training epoch (the largest n of its
    labels), each copy with its own caption draw; val is untouched; a label nobody carries or a bad n is refused."""
    import csv

    corpus = write_tiny_corpus(tmp_path / "corpus")
    with open(corpus) as handle:
        rows = list(csv.DictReader(handle))
    labels = ["active_tb", "active_tb;obsolete_tb", "covid", "", "obsolete_tb"]
    for i, row in enumerate(rows):
        row["labels"] = labels[i % len(labels)]
    write_manifest(corpus, rows)

    def module(**options):
        data = ImageReportDataModule(str(corpus), text_model=str(tiny_bert), image_size=48, batch_size=4,
                                     num_workers=0, **options)  # fmt: skip
        data.setup("fit")
        return data

    plain, repeated = module(), module(label_repeats={"active_tb": 3, "obsolete_tb": 2})
    times = {"active_tb": 3, "active_tb;obsolete_tb": 3, "covid": 1, "": 1, "obsolete_tb": 2}
    train = [r for r in rows if r["split"] == "train"]
    assert len(repeated.datasets["train"]) == sum(times[r["labels"]] for r in train) > len(plain.datasets["train"])
    counts = {}
    for record in repeated.datasets["train"].records:
        counts[record.image] = counts.get(record.image, 0) + 1
    assert {str(r.image): counts[r.image] for r in plain.datasets["train"].records} == {
        str(r.image): times[";".join(r.labels)] for r in plain.datasets["train"].records
    }
    assert len(repeated.datasets["val"]) == len(plain.datasets["val"])
    dataset = repeated.datasets["train"]
    first = next(i for i, r in enumerate(dataset.records) if "active_tb" in r.labels)
    captions = {dataset[first + k]["caption"] for k in range(3)}
    assert all(dataset.records[first + k].image == dataset.records[first].image for k in range(3))
    assert len(captions) > 1  # the copies are drawn independently, not one sample three times
    with pytest.raises(ValueError, match="no training record carries.*'pneumothorax'"):
        module(label_repeats={"pneumothorax": 2})
    with pytest.raises(ValueError, match="whole number >= 1"):
        ImageReportDataModule(str(corpus), label_repeats={"active_tb": 0})


def test_drop_negated_leaves_denied_findings_out_of_training_captions_only(tmp_path, tiny_bert):
    """--data.drop_negated: a report's negated sentences ("No hard exudates.") never reach a training caption while
    it has another sentence; an all-negative report keeps its text; val captions and runs without the option keep
    them. Bug class: a negation pattern that also eats affirmed findings ("nodular opacity"), or that empties a
    normal report (a caption of no words stops training)."""
    import csv

    from training.data import affirmed_sentences

    assert affirmed_sentences(["no hard exudates", "scattered hard exudates temporal to the macula"]) == [
        "scattered hard exudates temporal to the macula"
    ]
    mixed = ["there are no haemorrhages", "without effusion", "nodular opacity", "normal fundus"]
    assert affirmed_sentences(mixed) == ["nodular opacity", "normal fundus"]
    assert affirmed_sentences(["no pleural effusion", "no pneumothorax"]) == ["no pleural effusion", "no pneumothorax"]

    corpus = write_tiny_corpus(tmp_path / "corpus")
    with open(corpus) as handle:
        rows = list(csv.DictReader(handle))
    for i, row in enumerate(rows):
        row["report"] = (
            "No pleural effusion. There is no pneumothorax."
            if i % 3 == 0
            else f"Patchy opacity in the right lower zone number {i}. No pleural effusion. There is no pneumothorax."
        )
    write_manifest(corpus, rows)

    def captions(split: str, **options) -> list[str]:
        data = ImageReportDataModule(str(corpus), text_model=str(tiny_bert), image_size=48, batch_size=4,
                                     num_workers=0, **options)  # fmt: skip
        data.setup("fit")
        dataset = data.datasets[split]
        return [dataset[i]["caption"] for i in range(3 * len(dataset))]

    dropped = captions("train", drop_negated=True)
    assert any(c.startswith("patchy opacity") for c in dropped)
    assert all("no pleural effusion" not in c for c in dropped if "patchy" in c)
    assert any("no pleural effusion" in c or "no pneumothorax" in c for c in dropped)  # all-negative reports
    assert any("there is no pneumothorax" in c and "patchy" in c for c in captions("train"))  # off: unchanged
    assert captions("val", drop_negated=True) == captions("val")
