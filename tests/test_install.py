"""The README's install command installs the project itself: ``import afloc`` from any folder, and the afloc-*
commands (issue #15). These tests expect that command to have been run (CI runs it before the tests)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "afloc-demo": "app:main",
    "afloc-localize": "afloc.__main__:main",
    "afloc-convert": "afloc.convert:main",
    "afloc-training": "training.__main__:main",
    "afloc-evaluate": "training.evaluation.evaluate:main",
}


def _requirements(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_readme_install_command_installs_the_project():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert len(commands) == 2, "the README starts with two commands"
    assert all(c.startswith("pip install -r requirements.txt && ") for c in commands)
    assert commands[0].endswith("python app.py") and commands[1].endswith("python -m pytest")
    # requirements.txt installs this very project (editable), whose pyproject names the packages and commands
    assert "-e ." in _requirements(ROOT / "requirements.txt")
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11; the commands are also checked when installed
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["name"] == "afloc"
    assert project["project"]["scripts"] == COMMANDS
    assert set(project["tool"]["setuptools"]["packages"]["find"]["include"]) == {"afloc*", "training*", "demo*"}


def test_import_afloc_from_another_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import afloc, training, demo, app; print(afloc.__file__)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"run `pip install -r requirements.txt` first: {result.stderr[-500:]}"
    assert Path(result.stdout.strip()) == ROOT / "afloc" / "__init__.py"  # the editable install of this tree


def test_console_commands_are_installed(tmp_path):
    installed = {e.name: e for e in metadata.entry_points(group="console_scripts") if e.name.startswith("afloc-")}
    assert {name: entry.value for name, entry in installed.items()} == COMMANDS
    for entry in installed.values():
        assert callable(entry.load())
    script = shutil.which("afloc-localize")
    assert script, "afloc-localize is not on PATH: run `pip install -r requirements.txt`"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([script, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0 and "usage" in result.stdout


def test_readme_library_example_runs(tmp_path):
    """The README's first Python block ("The library") runs as written, in a fresh interpreter, offline."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## The library") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code += '\nassert set(losses) == {"report", "sentence", "word", "total"}\nprint("ok")\n'
    script = tmp_path / "example.py"
    script.write_text(code)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
