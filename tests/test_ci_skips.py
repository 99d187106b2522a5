"""The CI skip check (``.ci/check_skips.py``): lists skips and fails on any not on its allow-list."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "check_skips.py"


def _check():
    spec = importlib.util.spec_from_file_location("check_skips", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _report(path: Path, *messages: str) -> Path:
    cases = "".join(
        f'<testcase classname="tests.test_x" name="t{k}"><skipped message="{m}"/></testcase>'
        for k, m in enumerate(messages)
    )
    path.write_text(f'<testsuites><testsuite name="pytest">{cases}<testcase classname="a" name="b"/></testsuite>'
                    "</testsuites>")  # fmt: skip
    return path


def test_unexpected_skip_fails_and_is_listed(tmp_path, capsys):
    """Bug class: a test silently skipped in CI (missing shared data, browser not found)."""
    check = _check()
    assert check.main([str(_report(tmp_path / "r.xml", "shared data not present: x"))]) == 1
    assert "UNEXPECTED SKIP tests.test_x::t0: shared data not present" in capsys.readouterr().out


def test_allowed_skips_pass_and_no_skip_passes(tmp_path, capsys):
    check = _check()
    assert check.main([str(_report(tmp_path / "a.xml", "needs CUDA"))]) == 0
    assert "expected skip" in capsys.readouterr().out
    assert check.main([str(_report(tmp_path / "b.xml"))]) == 0
