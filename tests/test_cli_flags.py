# ruff: noqa: F811  (pytest fixtures imported from test_evaluation are requested by name as arguments)
"""Every flag of the commands a user types, moved and checked: ``afloc-evaluate`` (``python -m training evaluate``),
``afloc-localize``, ``afloc-convert`` and ``afloc-demo``. The first test keeps it that way: a flag that no test
names fails it (``--overwrite`` of afloc-convert is moved in ``test_convert.py``, most others in the tests of each
command)."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_evaluation import model_dir, phantom  # noqa: F401 (the same fixtures: a PhantomCXR corpus, a tiny model)

from training.__main__ import main as training_main

TESTS = Path(__file__).resolve().parent


def _flags(parser: argparse.ArgumentParser) -> list[str]:
    flags = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                flags += _flags(sub)
        else:
            flags += [s for s in action.option_strings if s.startswith("--") and s != "--help"]
    return flags


def _parser_of(main, monkeypatch) -> argparse.ArgumentParser:
    """The parser a command's ``main`` builds, caught at its ``parse_args`` call."""
    caught = []

    def catch(self, *args, **kwargs):
        caught.append(self)
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", catch)
    with pytest.raises(SystemExit):
        main([])
    monkeypatch.undo()
    return caught[0]


def test_every_flag_of_every_command_is_named_by_a_test(monkeypatch):
    import app
    from afloc import __main__ as localize
    from afloc import convert
    from training.evaluation import evaluate

    text = "\n".join(path.read_text() for path in TESTS.glob("test_*.py"))
    missing = {}
    for name, main in (("afloc-localize", localize.main), ("afloc-convert", convert.main),
                       ("afloc-evaluate", evaluate.main), ("afloc-demo", app.main)):  # fmt: skip
        flags = _flags(_parser_of(main, monkeypatch))
        assert len(flags) >= 5, (name, flags)  # the parser was really caught
        unnamed = [flag for flag in flags if f'"{flag}"' not in text]
        if unnamed:
            missing[name] = unnamed
    assert not missing, f"flags no test moves: {missing}"


# ------------------------------------------------------------------------------------------- afloc-evaluate


def _evaluate(out: Path, *args: str) -> tuple[int, list[dict], dict]:
    common = ["--workers", "0", "--quiet", "--n-resamples", "10"]
    code = training_main(["evaluate", *args, *common, "--out", str(out)])
    if code != 0:
        return code, [], {}
    with open(out / "samples.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return code, rows, json.loads((out / "summary.json").read_text())


def test_evaluate_oracle_train_and_image_size(tmp_path, phantom, capsys):
    """--oracle-train: fewer training masks give another prior; too few to cover a finding is refused by name.
    --image-size: the baseline's model-space size, visible in the reference protocol's scores."""
    base = ["--baseline", "kind-oracle", "--dataset", "phantom", "--images", str(phantom), "--split", "val"]
    _, every, _ = _evaluate(tmp_path / "all", *base)
    _, fewer, _ = _evaluate(tmp_path / "fewer", *base, "--oracle-train", "25")
    assert [r["iou_mean"] for r in every] != [r["iou_mean"] for r in fewer]
    code, _, _ = _evaluate(tmp_path / "two", *base, "--oracle-train", "2")
    assert code == 2 and "no training sample of the categories" in capsys.readouterr().err

    centre = ["--baseline", "center", "--dataset", "phantom", "--images", str(phantom), "--split", "val"]
    centre += ["--protocol", "reference"]
    _, small, _ = _evaluate(tmp_path / "s32", *centre, "--image-size", "32")
    _, large, _ = _evaluate(tmp_path / "s96", *centre, "--image-size", "96")
    assert [r["iou_mean"] for r in small] != [r["iou_mean"] for r in large]


def test_evaluate_batch_size_and_device_change_nothing_but_a_bad_device_is_named(tmp_path, phantom, model_dir, capsys):
    base = ["--model", str(model_dir), "--dataset", "phantom", "--images", str(phantom), "--split", "val"]
    base += ["--limit", "8"]
    _, default, _ = _evaluate(tmp_path / "default", *base)
    _, one, _ = _evaluate(tmp_path / "one", *base, "--batch-size", "1", "--device", "cpu")
    _, three, _ = _evaluate(tmp_path / "three", *base, "--batch-size", "3")
    assert len(default) >= 3
    # the same scores up to float summation order in batched convolutions (1e-5 of a [-1, 1] map's metrics)
    for rows in (one, three):
        assert [r["sample_id"] for r in rows] == [r["sample_id"] for r in default]
        for key in ("iou_mean", "cnr"):
            np.testing.assert_allclose([float(r[key]) for r in rows], [float(r[key]) for r in default], atol=1e-5)
        assert [r["pointing_game"] for r in rows] == [r["pointing_game"] for r in default]
    code, _, _ = _evaluate(tmp_path / "bad", *base, "--device", "nonsense")
    assert code == 2 and "nonsense" in capsys.readouterr().err


def test_evaluate_template_prompts(tmp_path, phantom, model_dir, capsys):
    """--prompt template --template: the category in the user's template is what is scored."""
    base = ["--model", str(model_dir), "--dataset", "phantom", "--images", str(phantom), "--split", "val"]
    base += ["--limit", "8", "--prompt", "template"]
    _, plain, _ = _evaluate(tmp_path / "plain", *base, "--template", "{category}")
    _, framed, _ = _evaluate(tmp_path / "framed", *base, "--template", "There is {category} here.")
    assert [r["prompt"] for r in plain] == [r["category"].replace("_", " ") for r in plain]
    assert [r["prompt"] for r in framed] == [f"There is {r['category'].replace('_', ' ')} here." for r in plain]
    assert [r["cnr"] for r in plain] != [r["cnr"] for r in framed]
    code, _, _ = _evaluate(tmp_path / "bad", *base, "--template", "no placeholder")
    assert code == 2 and "placeholder" in capsys.readouterr().err


def _mask_folder(root: Path) -> tuple[Path, Path]:
    """Two non-square films (60 x 100) with a lesion mask in the top-left corner, as image + mask folders."""
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for k in range(2):
        film = (np.arange(6000).reshape(60, 100) * (k + 1) % 256).astype(np.uint8)
        Image.fromarray(film).save(images / f"film_{k}.png")
        mask = np.zeros((60, 100), dtype=np.uint8)
        mask[2:20, 3:30] = 255
        Image.fromarray(mask).save(masks / f"film_{k}.png")
    return images, masks


def test_evaluate_mask_folder_masks_and_phrase(tmp_path, model_dir):
    """--masks names the mask folder of --images; --phrase is the prompt every film is scored with."""
    images, masks = _mask_folder(tmp_path / "data")
    base = ["--model", str(model_dir), "--dataset", "mask-folder", "--images", str(images), "--masks", str(masks)]
    code, rows, _ = _evaluate(tmp_path / "a", *base, "--phrase", "patchy opacity")
    assert code == 0 and len(rows) == 2
    assert {r["prompt"] for r in rows} == {"patchy opacity"}
    _, other, _ = _evaluate(tmp_path / "b", *base, "--phrase", "pneumothorax")
    assert {r["prompt"] for r in other} == {"pneumothorax"}
    assert [r["cnr"] for r in rows] != [r["cnr"] for r in other]
    centre = ["--baseline", "center", "--dataset", "mask-folder", "--images", str(images), "--masks", str(masks)]
    _, scored, _ = _evaluate(tmp_path / "c", *centre, "--protocol", "native")
    # the corner lesion is not where the centre prior points: the mask was read in place, not transposed
    assert all(r["pointing_game"] in ("0", "0.0", "False") for r in scored)


def test_evaluate_tuned_thresholds_from_a_val_run(tmp_path, model_dir):
    """--tuned-thresholds-from: the val run's per-category thresholds are applied to the test run and reported."""
    from test_evaluation import _chexlocalize

    val_json, _ = _chexlocalize(tmp_path, "valid", "gt_segmentations_val.json", 1)
    test_json, _ = _chexlocalize(tmp_path, "test", "gt_segmentations_test.json", 2)
    base = ["--model", str(model_dir), "--dataset", "chexlocalize", "--images", str(tmp_path / "CheXpert-v1.0")]
    assert _evaluate(tmp_path / "val", *base, "--annotations", str(val_json))[0] == 0
    code, rows, summary = _evaluate(
        tmp_path / "test", *base, "--annotations", str(test_json), "--tuned-thresholds-from", str(tmp_path / "val")
    )
    assert code == 0
    assert len(summary["localization"]["chexlocalize"]["thresholds"]) == 1  # the one category, edema
    assert rows[0]["iou@tuned"] not in ("", "nan")
    _, untuned, plain = _evaluate(tmp_path / "plain", *base, "--annotations", str(test_json))
    assert "chexlocalize" not in plain["localization"] and "iou@tuned" not in untuned[0]


# ------------------------------------------------------------------------------ afloc-localize, -convert, -demo


def test_localize_device_flag(tmp_path, model_dir, capsys):
    from afloc.__main__ import main as localize_main

    film = tmp_path / "film.png"
    Image.fromarray((np.arange(4800).reshape(60, 80) % 256).astype(np.uint8)).save(film)
    common = [str(film), "--model", str(model_dir), "--prompt", "mass"]
    assert localize_main([*common, "--out", str(tmp_path / "cpu"), "--device", "cpu"]) == 0
    for device, message in (("nonsense", "unknown device 'nonsense'"), ("cuda:7", "cuda:7")):
        if device.startswith("cuda") and torch.cuda.device_count() > 7:
            continue
        assert localize_main([*common, "--out", str(tmp_path / "bad"), "--device", device]) == 2
        assert message in capsys.readouterr().err


def test_demo_share_and_device_flags(capsys):
    """--share reaches Gradio's launch; --device reaches the model store."""
    import app

    _, launch_kwargs, store, _ = app.create(["--share", "--device", "cpu"])
    assert launch_kwargs["share"] is True
    assert store.device == "cpu"
    _, launch_kwargs, _, _ = app.create([])
    assert launch_kwargs["share"] is False
    with pytest.raises(SystemExit) as stop:  # a device torch does not know stops the start, naming it
        app.create(["--device", "nonsense"])
    assert stop.value.code == 2 and "unknown device 'nonsense'" in capsys.readouterr().err
