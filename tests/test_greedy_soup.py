"""The greedy soup keeps an ingredient only when the soup with it scores higher on val (the ranking and the
decisions, with the average/evaluate commands stubbed: each trial soup's val score is given by the test)."""

from __future__ import annotations

from pathlib import Path

import benchmarks.greedy_soup as greedy


def _result(folder: Path, pointing: float) -> Path:
    folder.mkdir(parents=True)
    (folder / "summary.csv").write_text("category,n,pointing_game_mean\nactive_tb,3,0.9\n" + f"macro,5,{pointing}\n")
    return folder


def test_ingredients_are_ranked_and_kept_only_when_the_soup_improves(tmp_path, monkeypatch):
    own = {"a": 0.40, "b": 0.44, "c": 0.14, "d": 0.39}
    checkpoints = {}
    for name, score in own.items():
        checkpoints[name] = tmp_path / f"{name}-step=200.ckpt"
        checkpoints[name].write_text(name)
        _result(tmp_path / f"val_{name}", score)
    # the val score of each soup, by its ingredients (as the stubbed evaluation will report it)
    soups = {"ab": 0.50, "abd": 0.53, "abcd": 0.30, "abd c": 0.30, "abc": 0.30}
    calls = []

    def run(*args):
        calls.append(args)
        if args[0] == "average":
            out, members = Path(args[2]), [Path(m).name[0] for m in args[3:]]
            out.write_text("".join(sorted(members)))
        else:
            model, out = Path(args[args.index("--model") + 1]), Path(args[args.index("--out") + 1])
            assert "--split" in args and args[args.index("--split") + 1] == "val"
            _result(out, soups[model.read_text()])

    monkeypatch.setattr(greedy, "_run", run)
    out = tmp_path / "soup"
    argv = ["--out", str(out)]
    for name in own:
        argv += ["--ingredient", f"{checkpoints[name]}={tmp_path / f'val_{name}'}"]
    assert greedy.main([*argv, "--", "--dataset", "phantom"]) == 0
    # b (0.44) first; a joins (0.50 > 0.44); d joins (0.53); c (0.14) would drop it to 0.30: left out
    assert (out / "soup.ckpt").read_text() == "abd"
    steps = (out / "steps.md").read_text()
    assert steps.count("kept") == 3 and "left out" in steps and "val pointing 0.530" in steps
    tried = [call for call in calls if call[0] == "average"]
    assert [len(call) - 3 for call in tried] == [2, 3, 4]  # b+a, b+a+d, b+a+d+c
    assert all("--dataset" in call for call in calls if call[0] == "evaluate")


def test_a_missing_result_is_refused_by_name(tmp_path, capsys):
    checkpoint = tmp_path / "a-step=200.ckpt"
    checkpoint.write_text("a")
    try:
        greedy.main(["--out", str(tmp_path / "o"), "--ingredient", f"{checkpoint}={tmp_path / 'nowhere'}"])
    except SystemExit as stop:
        assert stop.code == 2
    else:
        raise AssertionError("a missing result folder was accepted")
    assert "no summary.csv" in capsys.readouterr().err
