"""``python -m training average``: the mean of a run's checkpoints, exported and loaded like any checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from training_fixtures import write_tiny_bert, write_tiny_corpus

from afloc import load_pretrained
from training.__main__ import main as training_main
from training.average import average_checkpoints, run_checkpoints
from training.cli import cli_main

CONFIGS = Path(__file__).resolve().parents[1] / "training" / "configs"


@pytest.fixture(scope="module")
def run(tmp_path_factory, vocab_file, tiny_bert_config):
    """A 3-step tiny fit with a frozen text encoder and a weights-only checkpoint after every step."""
    root = tmp_path_factory.mktemp("avg_run")
    bert = write_tiny_bert(root / "bert", vocab_file, tiny_bert_config)
    manifest = write_tiny_corpus(root / "corpus")
    overlay = root / "periodic.yaml"
    checkpoint = "pytorch_lightning.callbacks.ModelCheckpoint"
    callbacks = [
        {"class_path": checkpoint, "init_args": {"save_last": True, "save_top_k": 0}},
        {
            "class_path": checkpoint,
            "init_args": {"filename": "periodic-{step}", "every_n_train_steps": 1, "save_top_k": -1,
                          "save_weights_only": True},
        },
    ]  # fmt: skip
    overlay.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks, "limit_train_batches": 3}}))
    args = ["fit", "--config", str(CONFIGS / "smoke.yaml"), "--config", str(overlay), "--model.text_model", str(bert)]
    args += ["--model.freeze_text", "true", "--data.manifest", str(manifest), "--trainer.default_root_dir", str(root)]
    args += ["--trainer.logger.init_args.save_dir", str(root)]
    cli = cli_main(args)
    assert cli.trainer.global_step == 3
    return Path(cli.trainer.log_dir) / "checkpoints"


def _state(path):
    return torch.load(str(path), map_location="cpu", weights_only=True)


def test_run_checkpoints_picks_the_newest_distinct_steps(run):
    paths = run_checkpoints(run, 2)
    assert [_state(p)["global_step"] for p in paths] == [2, 3]  # last.ckpt (step 3) is not counted twice
    with pytest.raises(ValueError, match="fewer than --last 5"):
        run_checkpoints(run, 5)
    with pytest.raises(ValueError, match="no checkpoint"):
        run_checkpoints(run / "nothing", 2)


def test_average_is_the_mean_and_frozen_weights_stay_bit_identical(run, tmp_path):
    paths = run_checkpoints(run, 3)
    states = [_state(p)["state_dict"] for p in paths]
    out = tmp_path / "avg.ckpt"
    assert training_main(["average", "--run", str(run), "--last", "3", "--out", str(out)]) == 0
    averaged = _state(out)  # loads with weights_only: nothing but tensors, numbers and strings
    assert averaged["global_step"] == 3
    assert averaged["averaged_from"] == [f"{p.name} (step {s})" for p, s in zip(paths, (1, 2, 3), strict=True)]
    trained = [k for k in states[0] if states[0][k].is_floating_point() and not torch.equal(states[0][k], states[2][k])]
    frozen = [k for k in states[0] if ".text_encoder." in k or k.startswith("model.text_encoder")]
    assert trained and frozen and not set(trained) & set(frozen)
    for key in trained:
        expected = torch.stack([s[key].float() for s in states]).mean(0).to(states[0][key].dtype)
        torch.testing.assert_close(averaged["state_dict"][key], expected, rtol=0, atol=0)
    for key in frozen:
        assert torch.equal(averaged["state_dict"][key], states[2][key]), key
    counters = [k for k in states[0] if k.endswith("num_batches_tracked")]
    assert counters and all(torch.equal(averaged["state_dict"][k], states[2][k]) for k in counters)

    # it exports like any checkpoint, with the text side left out (unchanged), and the card names the averaging
    exported = tmp_path / "exported"
    assert training_main(["export", "--ckpt", str(out), "--out", str(exported), "--external-text"]) == 0
    card = (exported / "README.md").read_text()
    assert "the mean of the weights of 3 checkpoints" in card and "periodic-step=1.ckpt (step 1)" in card
    model = load_pretrained(exported).model.state_dict()
    key = next(k for k in trained if k.startswith("model.image_encoder"))
    torch.testing.assert_close(model[key.removeprefix("model.")], averaged["state_dict"][key])


def test_refusals_name_the_problem(run, tmp_path, capsys):
    paths = run_checkpoints(run, 3)
    with pytest.raises(ValueError, match="at least two"):
        average_checkpoints(paths[:1])
    other = _state(paths[0])
    other["state_dict"].pop(next(iter(other["state_dict"])))
    bad = tmp_path / "other.ckpt"
    torch.save(other, bad)
    with pytest.raises(ValueError, match="other.ckpt does not hold the same weights"):
        average_checkpoints([paths[1], bad])
    reshaped = _state(paths[0])
    key = next(k for k, v in reshaped["state_dict"].items() if v.ndim == 4)
    reshaped["state_dict"][key] = reshaped["state_dict"][key][:1]
    torch.save(reshaped, bad)
    with pytest.raises(ValueError, match=f"other.ckpt: {key} is"):
        average_checkpoints([paths[1], bad])
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    out = str(tmp_path / "o.ckpt")
    assert training_main(["average", str(paths[0]), str(tmp_path / "junk.ckpt"), "--out", out]) == 2
    assert "junk.ckpt could not be read safely" in capsys.readouterr().err
    assert training_main(["average", str(paths[0]), str(tmp_path / "missing.ckpt"), "--out", out]) == 2
    assert "missing.ckpt does not exist" in capsys.readouterr().err
    assert training_main(["average", str(paths[0]), "--last", "2", "--out", out]) == 2
    assert "--last needs --run" in capsys.readouterr().err
    assert training_main(["average", str(paths[0]), str(paths[1]), "--out", str(paths[1])]) == 2
    assert "is one of the checkpoints being averaged" in capsys.readouterr().err
    assert not Path(out).exists()
