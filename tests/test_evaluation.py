"""Evaluation protocol and CLI: heatmaps scored against ground truth, baselines, tuning, outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from afloc import Preprocessing, save_pretrained
from training.__main__ import main as training_main
from training.evaluation.datasets import LocalizationSample, read_phantom
from training.evaluation.protocol import (
    TUNE_GRID,
    HeatmapSource,
    ProtocolConfig,
    apply_tuned_thresholds,
    evaluate_localization,
    reference_box_mask,
    tune_thresholds,
)
from training.phantoms.generate import CorpusSpec, generate_corpus


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom_eval")
    generate_corpus(out, CorpusSpec(n=40, size=128, seed=3), workers=1, dicom_samples=0)
    return out


@pytest.fixture
def model_dir(tmp_path, tiny_model, tiny_tokenizer):
    return save_pretrained(tiny_model, tmp_path / "model", tiny_tokenizer, preprocessing=Preprocessing(image_size=64))


def test_prompts_per_mode():
    sample = LocalizationSample("x.png", "small left pleural effusion", "pleural_effusion", [[1, 1, 2, 2]])
    assert ProtocolConfig().prompts(sample) == ["small left pleural effusion"]
    assert ProtocolConfig(prompt_mode="template").prompts(sample) == ["Findings suggesting pleural effusion."]
    both = ProtocolConfig(ensemble=True, templates=("{category}", "There is {category}."))
    assert both.prompts(sample) == ["small left pleural effusion", "pleural effusion", "There is pleural effusion."]
    with pytest.raises(ValueError, match="placeholder"):
        ProtocolConfig(templates=("no placeholder",))


def test_category_prompts_replace_phrase_for_their_category_only():
    effusion = LocalizationSample("x.png", "small left pleural effusion", "pleural_effusion", [[1, 1, 2, 2]])
    nodule = LocalizationSample("x.png", "a nodule", "nodule", [[1, 1, 2, 2]])
    own = ProtocolConfig(category_prompts=(("pleural_effusion", ("effusion", "fluid", "effusion")),))
    assert own.prompts(effusion) == ["effusion", "fluid"]  # duplicates are scored once
    assert own.prompts(nodule) == ["a nodule"]
    with pytest.raises(ValueError, match="non-empty"):
        ProtocolConfig(category_prompts=(("nodule", ()),))
    with pytest.raises(ValueError, match="non-empty"):
        ProtocolConfig(category_prompts=(("nodule", ("  ",)),))


def test_prompts_file_is_read_and_refused_by_name(tmp_path):
    from training.evaluation.evaluate import _category_prompts

    good = tmp_path / "prompts.json"
    good.write_text('{"nodule": ["a nodule", "a mass"]}')
    assert _category_prompts(str(good)) == (("nodule", ("a nodule", "a mass")),)
    for text in ("not json", '["a list"]', '{"nodule": "a nodule"}'):
        good.write_text(text)
        with pytest.raises(ValueError, match="prompts-file"):
            _category_prompts(str(good))
    with pytest.raises(ValueError, match="not a readable JSON file"):
        _category_prompts(str(tmp_path / "missing.json"))


def test_oracle_source_scores_perfectly_and_baselines_do_not(phantom):
    samples = read_phantom(phantom, split="train").samples[:12]

    class Oracle(HeatmapSource):
        """Heatmap = the ground truth itself: every metric must reach its best value."""

        def heatmaps(self, encoded, prompts, sample_id, margin):
            sample = next(s for s in samples if s.sample_id == sample_id.split("|")[0] or s.sample_id == sample_id)
            truth = sample.gt_mask(128, 128)
            jitter = 0.01 * np.random.default_rng(0).standard_normal(truth.shape)  # CNR needs some variance
            return np.stack([np.where(truth, 0.98, -0.98) + jitter] * len(prompts)).astype(np.float32)

    oracle = Oracle(baseline="uniform", image_size=128)
    records, unreadable = evaluate_localization(samples, oracle, ProtocolConfig(), workers=0, progress=False)
    assert not unreadable and len(records) == len(samples)
    for record in records:
        assert record["pointing_game"] == 1.0
        assert record["iou@0.3"] == pytest.approx(1.0) and record["dice_mean"] == pytest.approx(1.0)
        assert record["cnr"] > 10
    random_records, _ = evaluate_localization(
        samples, HeatmapSource(baseline="random", image_size=128), ProtocolConfig(), workers=0, progress=False
    )
    assert np.nanmean([r["iou_mean"] for r in random_records]) < 0.3
    again, _ = evaluate_localization(
        samples, HeatmapSource(baseline="random", image_size=128), ProtocolConfig(), workers=0, progress=False
    )
    assert [r["iou_mean"] for r in again] == [r["iou_mean"] for r in random_records]  # seeded per sample


def test_threshold_tuning():
    rows = []
    for k in range(4):
        row = {"category": "a" if k < 2 else "b", **{f"tune_iou@{t:g}": 0.1 for t in TUNE_GRID}}
        row["tune_iou@0.2" if k < 2 else "tune_iou@-0.5"] = 0.9
        rows.append(row)
    assert tune_thresholds(rows) == {"a": 0.2, "b": -0.5}
    test = apply_tuned_thresholds([dict(rows[0]), {**rows[2], "category": "c"}], {"a": 0.2})
    assert test[0]["iou@tuned"] == 0.9 and np.isnan(test[1]["iou@tuned"])


def test_end_to_end_cli_writes_every_output(tmp_path, phantom, model_dir):
    out = tmp_path / "result"
    code = training_main(
        [
            "evaluate",
            "--model",
            str(model_dir),
            "--dataset",
            "phantom",
            "--images",
            str(phantom),
            "--split",
            "train",
            "--out",
            str(out),
            "--limit",
            "10",
            "--workers",
            "0",
            "--quiet",
            "--n-resamples",
            "50",
            "--classification",
        ]
    )
    assert code == 0
    for name in (
        "samples.csv",
        "summary.csv",
        "summary.json",
        "per_category.png",
        "threshold_curves.png",
        "best_worst.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["meta"]["dataset"] == "phantom" and summary["meta"]["n_samples"] == 10
    assert "classification" in summary
    native = tmp_path / "native"
    assert (
        training_main(
            [
                "evaluate",
                "--baseline",
                "center",
                "--dataset",
                "phantom",
                "--images",
                str(phantom),
                "--split",
                "train",
                "--out",
                str(native),
                "--limit",
                "6",
                "--workers",
                "0",
                "--quiet",
                "--protocol",
                "native",
                "--margin",
                "14",
                "--n-resamples",
                "20",
            ]
        )
        == 0
    )
    compare = tmp_path / "cmp"
    assert training_main(["compare", str(out), str(native), "--out", str(compare)]) == 0
    assert (compare / "comparison.md").is_file()


def test_cli_errors(tmp_path, capsys):
    assert (
        training_main(
            [
                "evaluate",
                "--baseline",
                "random",
                "--dataset",
                "ms-cxr",
                "--images",
                str(tmp_path),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "--annotations" in capsys.readouterr().err
    assert (
        training_main(
            [
                "evaluate",
                "--baseline",
                "random",
                "--dataset",
                "phantom",
                "--images",
                str(tmp_path / "none"),
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "error" in capsys.readouterr().err


def test_side_mass():
    from training.evaluation.protocol import side_mass

    heatmap = -np.ones((4, 8), np.float32)
    heatmap[:, :2] = 1.0  # all positive mass on the image's left = the patient's right
    assert side_mass(heatmap, "right lower lobe consolidation", midline=4) == 1.0
    assert side_mass(heatmap, "small left pleural effusion", midline=4) == 0.0
    assert np.isnan(side_mass(heatmap, "bilateral perihilar edema", midline=4))
    assert np.isnan(side_mass(heatmap, "cardiomegaly", midline=4))
    heatmap[:, 6:] = 1.0
    assert side_mass(heatmap, "left-sided effusion", midline=4) == pytest.approx(0.5)


def _chexlocalize(root, split_folder: str, name: str, patient: int):
    import pycocotools.mask as mask_utils
    from PIL import Image

    mask = np.zeros((40, 50), dtype=np.uint8)
    mask[10:25, 5:30] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    image_id = f"patient{patient}_study1_view1_frontal"
    annotations = root / name
    annotations.write_text(json.dumps({image_id: {"Edema": {"size": [40, 50], "counts": rle["counts"].decode()}}}))
    path = root / "CheXpert-v1.0" / split_folder / f"patient{patient}" / "study1" / "view1_frontal.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.arange(2000).reshape(40, 50) % 251).astype(np.uint8)).save(path)
    return annotations, path


def test_chexlocalize_split_is_honoured_and_datasets_without_splits_refuse_it(tmp_path, capsys):
    from training.evaluation.evaluate import parse_args, read_dataset

    val_json, val_image = _chexlocalize(tmp_path, "valid", "gt_segmentations_val.json", 1)
    test_json, test_image = _chexlocalize(tmp_path, "test", "gt_segmentations_test.json", 2)
    images = str(tmp_path / "CheXpert-v1.0")

    def paths(*extra):
        common = ["--baseline", "center", "--dataset", "chexlocalize", "--images", images, "--out", "o"]
        result = read_dataset(parse_args([*common, *extra]))
        return [s.image_path for s in result.samples], result.missing

    assert paths("--annotations", str(val_json), "--split", "valid") == ([val_image], [])
    assert paths("--annotations", str(val_json), "--split", "val") == ([val_image], [])
    assert paths("--annotations", str(val_json)) == ([val_image], [])  # split read off the file name
    assert paths("--annotations", str(test_json), "--split", "test") == ([test_image], [])
    # the CheXlocalize download names the folder val/; an --images that is already the split folder works too
    (tmp_path / "CheXpert-v1.0" / "valid").rename(tmp_path / "CheXpert-v1.0" / "val")
    moved = tmp_path / "CheXpert-v1.0/val/patient1/study1/view1_frontal.jpg"
    assert paths("--annotations", str(val_json))[0] == [moved]
    args = ["--baseline", "center", "--dataset", "chexlocalize", "--annotations", str(test_json), "--split", "test"]
    args += ["--images", str(tmp_path / "CheXpert-v1.0" / "test"), "--out", "o"]
    assert [s.image_path for s in read_dataset(parse_args(args)).samples] == [test_image]

    out = tmp_path / "out"
    base = ["evaluate", "--baseline", "center", "--out", str(out), "--workers", "0", "--quiet", "--n-resamples", "5"]
    chex = [*base, "--dataset", "chexlocalize", "--images", images]
    assert training_main([*chex, "--annotations", str(test_json), "--split", "valid"]) == 2
    assert "contradicts" in capsys.readouterr().err
    assert training_main([*chex, "--annotations", str(test_json), "--split", "train"]) == 2
    assert "valid or test" in capsys.readouterr().err
    assert training_main([*chex, "--annotations", str(test_json), "--split", "test"]) == 0
    assert json.loads((out / "summary.json").read_text())["meta"]["n_samples"] == 1
    capsys.readouterr()
    no_splits = [*base, "--dataset", "ms-cxr", "--annotations", str(val_json), "--images", images]
    assert training_main([*no_splits, "--split", "test"]) == 2
    assert "has no splits" in capsys.readouterr().err


def test_smoothing_sigma_override(tmp_path, phantom, model_dir):
    """``--smoothing-sigma`` scores the model's heatmaps at another sigma; the model's own sigma changes nothing."""
    from afloc import AFLocPredictor

    own = AFLocPredictor.from_pretrained(model_dir).localization.smoothing_sigma
    common = ["--dataset", "phantom", "--images", str(phantom), "--split", "train", "--limit", "6"]
    common += ["--workers", "0", "--quiet", "--n-resamples", "20", "--protocol", "native"]

    def scores(name: str, *extra: str) -> tuple[dict, list[str]]:
        out = tmp_path / name
        assert training_main(["evaluate", "--model", str(model_dir), *common, "--out", str(out), *extra]) == 0
        meta = json.loads((out / "summary.json").read_text())["meta"]
        rows = (out / "samples.csv").read_text().splitlines()
        return meta, rows

    default_meta, default_rows = scores("default")
    same_meta, same_rows = scores("same", "--smoothing-sigma", f"{own}")
    other_meta, other_rows = scores("other", "--smoothing-sigma", f"{own + 3}")
    assert default_meta["smoothing_sigma"] == same_meta["smoothing_sigma"] == own
    assert other_meta["smoothing_sigma"] == own + 3
    assert same_rows == default_rows and other_rows != default_rows
    baseline = ["evaluate", "--baseline", "center", *common, "--out", str(tmp_path / "b"), "--smoothing-sigma", "1"]
    assert training_main(baseline) == 2
    negative = ["evaluate", "--model", str(model_dir), *common, "--out", str(tmp_path / "n"), "--smoothing-sigma", "-1"]
    assert training_main(negative) == 2


def test_similarity_and_shallow_weight_overrides(tmp_path, phantom, model_dir, capsys):
    """``--similarity`` and ``--shallow-weight`` change the scored heatmaps and are recorded; bad values exit 2."""
    from afloc import AFLocPredictor

    own = AFLocPredictor.from_pretrained(model_dir).localization
    assert own.similarity == "dot" and own.shallow_weight == 0.0
    common = ["--dataset", "phantom", "--images", str(phantom), "--split", "train", "--limit", "6"]
    common += ["--workers", "0", "--quiet", "--n-resamples", "20", "--protocol", "native"]

    def scores(name: str, *extra: str) -> tuple[dict, list[str]]:
        out = tmp_path / name
        assert training_main(["evaluate", "--model", str(model_dir), *common, "--out", str(out), *extra]) == 0
        return json.loads((out / "summary.json").read_text())["meta"], (out / "samples.csv").read_text().splitlines()

    default_meta, default_rows = scores("default")
    cosine_meta, cosine_rows = scores("cosine", "--similarity", "cosine")
    shallow_meta, shallow_rows = scores("shallow", "--shallow-weight", "0.5")
    assert (default_meta["similarity"], default_meta["shallow_weight"]) == ("dot", 0.0)
    assert cosine_meta["similarity"] == "cosine" and shallow_meta["shallow_weight"] == 0.5
    assert cosine_rows != default_rows and shallow_rows != default_rows
    capsys.readouterr()
    baseline = ["evaluate", "--baseline", "center", *common, "--out", str(tmp_path / "b"), "--similarity", "cosine"]
    assert training_main(baseline) == 2
    assert "--similarity" in capsys.readouterr().err
    too_heavy = ["evaluate", "--model", str(model_dir), *common, "--out", str(tmp_path / "w"), "--shallow-weight", "2"]
    assert training_main(too_heavy) == 2
    assert "shallow_weight" in capsys.readouterr().err


# ------------------------------------------------------------------------------ behaviours found by mutation


def test_centre_baseline_is_an_isotropic_gaussian_and_uniform_is_flat():
    from training.evaluation.protocol import _baseline_map

    size = 33
    centre = _baseline_map("center", size, "x")
    sigma = size / 4
    assert centre[16, 16] == pytest.approx(1.0)
    assert centre[16, 24] == pytest.approx(np.exp(-(8**2) / (2 * sigma**2)), rel=1e-5)
    assert centre[20, 16] == pytest.approx(centre[16, 20]) and centre[4, 28] == pytest.approx(centre[28, 4])
    assert centre.max() <= 1.0 + 1e-6
    uniform = _baseline_map("uniform", size, "x")
    assert uniform.shape == (size, size) and not uniform.any()
    with pytest.raises(ValueError, match="unknown baseline 'nope'"):
        HeatmapSource(baseline="nope")


def test_reference_box_rule_hand_computed():
    # 100 x 50 (h x w) onto 20: scale 0.2, short side int(50 * 0.2) = 10, pad 10 -> 5 columns on the left.
    # box [10, 20, 15, 25] -> [2, 4, 3, 5] scaled -> column floor(2 + 5) = 7, row 4, 3 wide, 5 high.
    expected = np.zeros((20, 20), bool)
    expected[4:9, 7:10] = True
    np.testing.assert_array_equal(reference_box_mask(np.array([[10, 20, 15, 25]]), 100, 50, 20), expected)


def test_reference_rule_truth_is_the_union_of_boxes_and_mask(tmp_path):
    from afloc.imaging.transforms import pad_resize_mapping
    from training.evaluation.protocol import sample_heatmap

    mask = np.zeros((100, 50), bool)
    mask[80:90, 0:10] = True  # far from the box
    sample = LocalizationSample(tmp_path / "a.png", "opacity", "opacity", [[10, 20, 15, 25]], mask=mask)
    mapping = pad_resize_mapping(100, 50, 20)
    config = ProtocolConfig(space="model", box_rule="reference")
    source = HeatmapSource(baseline="center", image_size=20)
    _, truth = sample_heatmap(source, None, sample, mapping, config)
    expected = reference_box_mask(sample.boxes, 100, 50, 20) | mapping.mask_to_model(mask)
    np.testing.assert_array_equal(truth > 0, expected)  # truth counts the boxes over each pixel
    assert (truth > 0).sum() > reference_box_mask(sample.boxes, 100, 50, 20).sum()
    wrong_size = LocalizationSample(tmp_path / "a.png", "opacity", "opacity", [[1, 1, 2, 2]], image_size=(90, 50))
    with pytest.raises(ValueError, match="ground truth is for a 90x50 image, got 100x50"):
        sample_heatmap(source, None, wrong_size, mapping, config)


def _png(path, height, width, seed=0):
    from PIL import Image

    pixels = (np.random.default_rng(seed).random((height, width)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def test_records_use_the_configured_thresholds_and_name_their_image(tmp_path, capsys):
    image = _png(tmp_path / "film.png", 60, 40)
    sample = LocalizationSample(image, "left opacity", "opacity", [[5, 10, 20, 20]])
    config = ProtocolConfig(space="native", thresholds=(0.3,))
    source = HeatmapSource(baseline="center", image_size=32)
    (record,), unreadable = evaluate_localization([sample], source, config, workers=0, progress=False)
    assert not unreadable and record["image"] == str(image)
    assert "iou@0.3" in record and "iou@0.1" not in record
    assert record["iou_mean"] == record["iou@0.3"]
    assert capsys.readouterr().err == ""  # progress=False: no progress bar


def test_threshold_tuning_skips_thresholds_never_defined():
    rows = [{"category": "a", **{f"tune_iou@{t:g}": 0.1 for t in TUNE_GRID}} for _ in range(3)]
    for row in rows:
        row[f"tune_iou@{TUNE_GRID[0]:g}"] = float("nan")  # no prediction at the first threshold
        row[f"tune_iou@{TUNE_GRID[-1]:g}"] = 0.4
    assert tune_thresholds(rows) == {"a": TUNE_GRID[-1]}


def test_evaluation_heatmaps_are_the_predictors(tiny_model, tiny_tokenizer):
    """What `training evaluate` scores is what the predictor shows, also with settings that use the shallow map."""
    from afloc import AFLocPredictor, LocalizationConfig

    config = LocalizationConfig(shallow_weight=0.5, smoothing_sigma=0.0)
    predictor = AFLocPredictor(tiny_model, tiny_tokenizer, Preprocessing(image_size=64), config, device="cpu")
    image = np.random.default_rng(4).random((70, 50)).astype(np.float32)
    source = HeatmapSource(predictor=predictor)
    tensor, _ = predictor.preprocessing(image)
    (encoded,) = source.encode(tensor[None])
    from_source = source.heatmaps(encoded, ["left pleural effusion"], "id", None)[0]
    shown = predictor.localize("left pleural effusion", image=predictor.encode_image(image), space="model")
    np.testing.assert_allclose(from_source, shown, atol=1e-5)


def test_a_zero_margin_is_allowed():
    assert ProtocolConfig(margin=0).margin == 0
    with pytest.raises(ValueError, match="margin must be >= 0"):
        ProtocolConfig(margin=-1)


def test_evaluate_dataset_from_python_equals_the_command(tmp_path, phantom, model_dir):
    """``evaluate_dataset`` is what ``training evaluate`` runs: the same records and summary from Python."""
    from afloc import AFLocPredictor
    from training.evaluation.api import evaluate_dataset
    from training.evaluation.datasets.registry import DATASETS, read_dataset

    predictor = AFLocPredictor.from_pretrained(model_dir)
    result = evaluate_dataset(predictor, "phantom", images=str(phantom), split="val", limit=6, n_resamples=10)
    out = tmp_path / "cli"
    args = ["evaluate", "--model", str(model_dir), "--dataset", "phantom", "--images", str(phantom), "--split", "val"]
    assert (
        training_main([*args, "--limit", "6", "--n-resamples", "10", "--workers", "0", "--quiet", "--out", str(out)])
        == 0
    )
    cli = json.loads((out / "summary.json").read_text())["localization"]
    assert cli["pointing_game"] == result.summary["pointing_game"] and cli["cnr"] == result.summary["cnr"]
    assert len(result.records) == cli["n_samples"] == len(result.samples) >= 3  # the val split is small
    baseline = evaluate_dataset("center", "phantom", images=str(phantom), split="val", limit=6, n_resamples=10)
    assert baseline.summary["cnr"] != result.summary["cnr"]
    assert "phantom" in DATASETS and DATASETS["phantom"].has_splits and not DATASETS["coco"].has_splits
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        read_dataset("nope", images=str(phantom))
    with pytest.raises(ValueError, match="--dataset coco needs --annotations"):
        read_dataset("coco", images=str(phantom))


# ------------------------------------------------------------------------------ map-level ensembles


def test_ensemble_source_is_the_rescaled_mean_of_its_members_maps(tiny_model, tiny_tokenizer, tiny_config):
    """An ensemble's map is the [-1, 1] rescaling of its members' mean map, member by member as each shows it."""
    import torch

    import afloc
    from afloc import AFLocPredictor, LocalizationConfig
    from training.evaluation.protocol import EnsembleSource

    torch.manual_seed(1)
    other_model = afloc.AFLoc(tiny_config).eval()
    preprocessing = Preprocessing(image_size=64)
    first = AFLocPredictor(tiny_model, tiny_tokenizer, preprocessing, LocalizationConfig(), device="cpu")
    second = AFLocPredictor(
        other_model, tiny_tokenizer, preprocessing, LocalizationConfig(shallow_weight=0.5), device="cpu"
    )
    image = np.random.default_rng(5).random((70, 50)).astype(np.float32)
    tensor, _ = preprocessing(image)
    prompts = ["left pleural effusion", "cardiomegaly"]
    ensemble = EnsembleSource([first, second])
    (encoded,) = ensemble.encode(tensor[None])
    maps = ensemble.heatmaps(encoded, prompts, "id", None)
    members = [
        p.localize(prompt, image=p.encode_image(image), space="model") for prompt in prompts for p in (first, second)
    ]
    for k in range(len(prompts)):
        mean = (members[2 * k] + members[2 * k + 1]) / 2
        expected = 2 * (mean - mean.min()) / (mean.max() - mean.min()) - 1
        np.testing.assert_allclose(maps[k], expected, atol=1e-5)
        assert not np.allclose(maps[k], members[2 * k], atol=1e-2)  # the second model changes the map
    same = EnsembleSource([first, first])
    (twice,) = same.encode(tensor[None])
    np.testing.assert_allclose(same.heatmaps(twice, prompts[:1], "id", None)[0], members[0], atol=1e-5)


def test_ensemble_refuses_one_model_and_models_that_prepare_images_differently(tiny_model, tiny_tokenizer):
    from afloc import AFLocPredictor, LocalizationConfig
    from training.evaluation.protocol import EnsembleSource

    def predictor(size: int) -> AFLocPredictor:
        return AFLocPredictor(tiny_model, tiny_tokenizer, Preprocessing(image_size=size), LocalizationConfig())

    with pytest.raises(ValueError, match="at least two models, got 1"):
        EnsembleSource([predictor(64)])
    with pytest.raises(ValueError, match="model 2: .*image_size=96"):
        EnsembleSource([predictor(64), predictor(96)])


def test_evaluate_with_several_models_scores_their_ensemble(tmp_path, phantom, model_dir, capsys):
    """``--model A B`` scores the map-level ensemble, names both models, and refuses ``--classification``."""
    common = ["--dataset", "phantom", "--images", str(phantom), "--split", "train", "--limit", "6"]
    common += ["--workers", "0", "--quiet", "--n-resamples", "20", "--protocol", "native"]
    # a second model of another seed, saved with the same preprocessing
    import torch

    import afloc

    torch.manual_seed(2)
    config = afloc.AFLocPredictor.from_pretrained(model_dir).model.config
    tokenizer = afloc.AFLocPredictor.from_pretrained(model_dir).tokenizer
    second = save_pretrained(
        afloc.AFLoc(config).eval(), tmp_path / "second", tokenizer, preprocessing=Preprocessing(image_size=64)
    )

    def run(name: str, *models) -> tuple[dict, list[str]]:
        out = tmp_path / name
        assert training_main(["evaluate", "--model", *map(str, models), *common, "--out", str(out)]) == 0
        return json.loads((out / "summary.json").read_text())["meta"], (out / "samples.csv").read_text().splitlines()

    one_meta, one_rows = run("one", model_dir)
    both_meta, both_rows = run("both", model_dir, second)
    assert one_meta["model"] == "model" and both_meta["model"] == "model + second"
    assert both_meta["model_path"] == [str(model_dir), str(second)]
    assert both_rows != one_rows
    capsys.readouterr()
    refused = ["evaluate", "--model", str(model_dir), str(second), *common, "--out", str(tmp_path / "c")]
    assert training_main([*refused, "--classification"]) == 2
    assert "single --model" in capsys.readouterr().err
