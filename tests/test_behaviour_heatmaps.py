"""Where heatmaps land, what zero-shot probabilities mean, and that every ensemble prompt counts.

Written against expectations that do not come from the code under test: a model with *planted* weights whose
right answer is known by construction. Its region embedding is "how much of this region is bright" and "how much
is mid-dark"; a prompt mentioning "findings" asks for the mid-dark area, any other prompt for the bright one, and
a prompt with the word "no" for neither. So on a synthetic film with a bright blob, the heatmap must peak on the
blob, in original pixels, whatever the image's aspect ratio, through the predictor and through
``python -m training evaluate``.
"""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import afloc
from afloc.imaging.transforms import Preprocessing
from afloc.localization.heatmaps import LocalizationConfig
from afloc.localization.zero_shot import ZeroShotConfig
from afloc.modeling.types import ImageEncoderOutput
from training.evaluation.evaluate import main as evaluate_main

SIZE, GRID = 64, 16  # model input and region grid of the planted model (4-pixel regions)
BACKGROUND, BRIGHT, MID_DARK = 0.5, 0.95, 0.2


class PlantedModel(torch.nn.Module):
    """An ``AFLoc`` stand-in with known answers (see the module docstring). Embedding width D = 3:
    ``[bright share, mid-dark share, "nothing there"]``; padding (black) is neither bright nor mid-dark."""

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # so that .to() / .eval() behave as for a real model
        vocab = tokenizer.tokenizer
        self.no_id, self.findings_id = vocab.convert_tokens_to_ids("no"), vocab.convert_tokens_to_ids("findings")
        assert self.no_id != vocab.unk_token_id and self.findings_id != vocab.unk_token_id

    def encode_image(self, images: torch.Tensor) -> ImageEncoderOutput:
        brightness = images.mean(dim=1, keepdim=True) * 0.5 + 0.5  # undo the (0.5, 0.5) normalisation
        bright = F.adaptive_avg_pool2d((brightness > 0.75).float(), GRID)
        mid_dark = F.adaptive_avg_pool2d(((brightness > 0.1) & (brightness < 0.3)).float(), GRID)
        patches = torch.cat([bright, mid_dark, torch.zeros_like(bright)], dim=1)
        peaks = patches.amax(dim=(2, 3))
        image_embedding = torch.stack([peaks[:, 0], peaks[:, 1], 1.0 - peaks[:, :2].amax(dim=1)], dim=1)
        return ImageEncoderOutput(patches, patches, image_embedding)

    def encode_text(self, tokens) -> SimpleNamespace:
        ids = tokens.input_ids
        negated = (ids == self.no_id).any(dim=1)
        dark = (ids == self.findings_id).any(dim=1) & ~negated
        bright = ~negated & ~dark
        return SimpleNamespace(report_embedding=torch.stack([bright, dark, negated], dim=1).float())


@pytest.fixture
def planted(tiny_tokenizer) -> afloc.AFLocPredictor:
    return afloc.AFLocPredictor(
        PlantedModel(tiny_tokenizer), tiny_tokenizer, Preprocessing(image_size=SIZE), LocalizationConfig(), "cpu"
    )


def film(height: int, width: int, blobs: dict[float, tuple[int, int, int, int]]) -> np.ndarray:
    """A flat grey film with rectangles ``value: (x, y, w, h)`` in original pixels."""
    image = np.full((height, width), BACKGROUND, np.float32)
    for value, (x, y, w, h) in blobs.items():
        image[y : y + h, x : x + w] = value
    return image


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    x, y, w, h = box
    mask = np.zeros(shape, bool)
    mask[y : y + h, x : x + w] = True
    return mask


# (height, width, blob box): square, tall (padding left/right), wide (padding top/bottom); blobs off-centre so
# that a lost padding offset, swapped axes or a mirrored map moves the peak off the blob.
GEOMETRIES = [
    pytest.param(128, 128, (16, 80, 32, 32), id="square"),
    pytest.param(160, 80, (6, 20, 28, 40), id="tall"),
    pytest.param(70, 175, (120, 8, 40, 28), id="wide"),
    pytest.param(97, 61, (33, 55, 26, 38), id="tall-odd"),
]


@pytest.mark.parametrize(("height", "width", "box"), GEOMETRIES)
def test_predictor_heatmap_peaks_on_the_planted_blob_in_original_pixels(planted, height, width, box):
    """Bug class: heatmap mapped back to the wrong place (padding offset ignored, axes swapped, map mirrored or
    stretched over the padding) on square and non-square images."""
    image = film(height, width, {BRIGHT: box})
    heatmap = planted.localize("bright area", image=planted.encode_image(image))
    inside = box_mask((height, width), box)
    assert heatmap.shape == (height, width)
    row, col = np.unravel_index(np.nanargmax(heatmap), heatmap.shape)
    assert inside[row, col], (row, col, box)
    assert np.nanmean(heatmap[inside]) > 0.4 and np.nanmean(heatmap[~inside]) < 0.0
    # model space: the blob's centre, mapped by the pad-resize arithmetic written out here, is hot
    model = planted.localize("bright area", image=planted.encode_image(image), space="model")
    scale = SIZE / max(height, width)
    top, left = (SIZE - int(height * scale)) // 2, (SIZE - int(width * scale)) // 2
    centre = (int(top + (box[1] + box[3] / 2) * scale), int(left + (box[0] + box[2] / 2) * scale))
    assert model[centre] > 0.5


def test_zero_shot_probability_is_that_of_the_positive_prompt(planted):
    """Bug class: classification returning the probability of the wrong prompt (negative set, swapped softmax
    index, positive and negative prompts mixed up)."""
    with_blob = planted.classify(["mass", "nodule"], image=planted.encode_image(film(64, 96, {BRIGHT: (5, 5, 30, 30)})))
    plain = planted.classify(["mass", "nodule"], image=planted.encode_image(film(64, 96, {})))
    for finding in ("mass", "nodule"):
        assert with_blob[finding] > 0.99, with_blob  # the image looks like the positive prompts
        assert plain[finding] < 0.01, plain  # the image looks like "No mass." / "There is no mass."


def test_zero_shot_direction_with_dot_product_scores(tiny_tokenizer):
    """Same bug class with the reference's raw dot-product scores."""
    predictor = afloc.AFLocPredictor(
        PlantedModel(tiny_tokenizer),
        tiny_tokenizer,
        Preprocessing(image_size=SIZE),
        LocalizationConfig(),
        "cpu",
        zero_shot=ZeroShotConfig(similarity="dot", logit_scale=1.0),
    )
    present = predictor.classify("mass", image=predictor.encode_image(film(64, 64, {BRIGHT: (8, 8, 24, 24)})))
    absent = predictor.classify("mass", image=predictor.encode_image(film(64, 64, {})))
    assert present["mass"] > 0.6 > 0.4 > absent["mass"]


# ------------------------------------------------------------------------------------ through training evaluate
def write_coco(folder, films: list[tuple[str, np.ndarray, list[tuple[str, tuple[int, int, int, int]]]]]) -> None:
    """Images as 8-bit PNGs and a COCO file whose category names are the phrases."""
    names = sorted({name for _, _, boxes in films for name, _ in boxes})
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(names)]
    ids = {name: k + 1 for k, name in enumerate(names)}
    images, annotations = [], []
    for number, (file_name, image, boxes) in enumerate(films, start=1):
        Image.fromarray(np.rint(image * 255).astype(np.uint8)).save(folder / file_name)
        images.append({"id": number, "file_name": file_name, "height": image.shape[0], "width": image.shape[1]})
        for name, box in boxes:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": number, "category_id": ids[name], "bbox": list(box)}
            )
    (folder / "coco.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )


def run_evaluate(tmp_path, monkeypatch, predictor, films, *extra) -> dict[str, dict]:
    images = tmp_path / "images"
    images.mkdir(parents=True)
    write_coco(images, films)
    monkeypatch.setattr(afloc.AFLocPredictor, "from_pretrained", classmethod(lambda cls, path, device=None: predictor))
    out = tmp_path / "out"
    argv = ["--model", "planted", "--dataset", "coco", "--annotations", str(images / "coco.json")]
    argv += ["--images", str(images), "--out", str(out), "--workers", "0", "--quiet", "--n-resamples", "10", *extra]
    assert evaluate_main(argv) == 0
    with (out / "samples.csv").open(newline="") as handle:
        return {row["sample_id"]: row for row in csv.DictReader(handle)}


# patient's right = image left; a tall film has its padding left and right, a wide one above and below.
# (file, film, [(phrase, ground-truth box)], blob on the named side?)
SIDED_FILMS = [
    ("tall_right.png", film(160, 80, {BRIGHT: (4, 50, 30, 40)}), [("right effusion", (4, 50, 30, 40))], True),
    ("tall_left.png", film(160, 80, {BRIGHT: (46, 90, 30, 40)}), [("left effusion", (46, 90, 30, 40))], True),
    ("wide_right.png", film(70, 175, {BRIGHT: (20, 10, 50, 30)}), [("right effusion", (20, 10, 50, 30))], True),
    ("wide_left.png", film(70, 175, {BRIGHT: (110, 30, 50, 30)}), [("left effusion", (110, 30, 50, 30))], True),
    ("square_left.png", film(100, 100, {BRIGHT: (60, 20, 34, 34)}), [("left effusion", (60, 20, 34, 34))], True),
    # the blob on the other side than the phrase (and its box) names
    ("tall_wrong.png", film(160, 80, {BRIGHT: (46, 50, 30, 40)}), [("right effusion", (4, 50, 30, 40))], False),
    ("wide_wrong.png", film(70, 175, {BRIGHT: (20, 10, 50, 30)}), [("left effusion", (110, 30, 50, 30))], False),
]


@pytest.mark.parametrize("protocol", ["reference", "native"])
def test_evaluate_scores_the_planted_model_by_where_its_heatmap_lands(tmp_path, monkeypatch, planted, protocol):
    """Bug class: the evaluation's heatmap/ground-truth geometry, or its midline, ignoring the padding of
    non-square images (side mass measured from the wrong midline), in model space and on original pixels; side
    mass that does not depend on the side named (constant, or right and left swapped)."""
    rows = run_evaluate(tmp_path, monkeypatch, planted, [f[:3] for f in SIDED_FILMS], "--protocol", protocol)
    assert len(rows) == len(SIDED_FILMS)
    for file_name, _, ((phrase, _),), on_the_named_side in SIDED_FILMS:
        row = rows[f"{file_name[:-4]}|{phrase}"]
        if on_the_named_side:
            assert float(row["pointing_game"]) == 1.0, (file_name, row["pointing_game"])
            assert float(row["iou@0.3"]) > 0.4, (file_name, row["iou@0.3"])
            assert float(row["cnr"]) > 1.0, (file_name, row["cnr"])
            assert float(row["side_mass"]) > 0.95, (file_name, row["side_mass"])
        else:
            assert float(row["pointing_game"]) == 0.0, (file_name, row["pointing_game"])
            assert float(row["side_mass"]) < 0.05, (file_name, row["side_mass"])


def test_evaluate_ensemble_uses_every_prompt(tmp_path, monkeypatch, planted):
    """Bug class: the prompt ensemble scoring only one of its prompts. The phrase finds the bright blob, the
    template ("Findings suggesting ...") the mid-dark one; the ground truth is both, so only a map that averages
    both prompts covers it. A tall film, so that the padding is in play too."""
    height, width = 150, 90
    bright, dark = (6, 10, 30, 30), (width - 36, height - 40, 30, 30)
    image = film(height, width, {BRIGHT: bright, MID_DARK: dark})
    films = [("two.png", image, [("opacity", bright), ("opacity", dark)])]
    ensemble = run_evaluate(tmp_path / "ensemble", monkeypatch, planted, films, "--ensemble")
    (row,) = ensemble.values()
    assert row["prompt"] == "opacity | Findings suggesting opacity."
    assert float(row["iou@0.3"]) > 0.6, row["iou@0.3"]
    (alone,) = run_evaluate(tmp_path / "phrase", monkeypatch, planted, films).values()
    assert float(alone["iou@0.3"]) < 0.55, alone["iou@0.3"]  # one blob of two: about half of the truth


def test_prompts_file_prompts_its_category_and_only_it(tmp_path, monkeypatch, planted):
    """Bug class: ``--prompts-file`` read but not reaching the heatmaps, or replacing the prompts of a category it
    does not name. The file sends the "opacity" category to the mid-dark blob ("findings ..."); the "mass"
    category keeps its phrase and finds the bright one."""
    height, width = 150, 90
    bright, dark = (6, 10, 30, 30), (width - 36, height - 40, 30, 30)
    image = film(height, width, {BRIGHT: bright, MID_DARK: dark})
    films = [("two.png", image, [("opacity", dark), ("mass", bright)])]
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"opacity": ["findings of opacity", "findings here"]}))
    rows = run_evaluate(tmp_path / "file", monkeypatch, planted, films, "--prompts-file", str(prompts))
    assert rows["two|opacity"]["prompt"] == "findings of opacity | findings here"
    assert float(rows["two|opacity"]["pointing_game"]) == 1.0
    assert rows["two|mass"]["prompt"] == "mass"
    assert float(rows["two|mass"]["pointing_game"]) == 1.0
    without = run_evaluate(tmp_path / "phrase", monkeypatch, planted, films)
    assert float(without["two|opacity"]["pointing_game"]) == 0.0  # the phrase alone finds the bright blob
