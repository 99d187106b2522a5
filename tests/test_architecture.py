"""The import structure, read from the source with ``ast`` (nothing is imported): the layers between the top-level
folders, no import cycle between modules, and no module importing another module's underscore names. Each rule is
also run on a small planted tree where it must fail, so a checker that sees nothing cannot pass."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("afloc", "training", "demo")

# which top-level parts each part may import (app.py is the demo launcher; benchmarks and tests may import all)
ALLOWED = {
    "afloc": set(),
    "training": {"afloc"},
    "demo": {"afloc"},
    "app": {"afloc", "demo"},
}
# inside afloc, the packages of the library (issue #31) by layer: a module may import its own package and the
# packages of lower layers only; modeling, imaging and localization import no other afloc package (but the
# settings module, the one strict from_dict of every config)
AFLOC_LAYERS = [
    {"settings", "commands"},
    {"modeling", "imaging", "localization"},
    {"text"},  # imports modeling.types
    {"hub"},  # building models, the model directory format, weights, cards
    {"predictor", "convert"},
    {"__main__", "__init__"},
]


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def read_imports(root: Path, packages=PACKAGES, extra_files=("app.py",)) -> dict[str, list[tuple[str, str, int]]]:
    """``{module: [(imported module, imported name or "", line)]}`` for every import anywhere in the file
    (function-level and ``TYPE_CHECKING`` imports included: they are arrows too)."""
    files = [p for package in packages for p in sorted((root / package).rglob("*.py"))]
    files += [root / name for name in extra_files if (root / name).is_file()]
    modules = {module_name(p, root): p for p in files}
    found: dict[str, list[tuple[str, str, int]]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        arrows = []
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                arrows += [(alias.name, "", node.lineno) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in modules:
                        arrows.append((submodule, "", node.lineno))
                    else:
                        arrows.append((target, alias.name, node.lineno))
        found[name] = [(t, n, line) for t, n, line in arrows if t.split(".")[0] in (*packages, "app")]
    return found


def layer_violations(imports) -> list[str]:
    problems = []
    for module, arrows in imports.items():
        part = module.split(".")[0]
        for target, _, line in arrows:
            other = target.split(".")[0]
            if other != part and other not in ALLOWED.get(part, set()):
                problems.append(f"{module}:{line} imports {target} ({part} may import {sorted(ALLOWED[part])})")
            if part == "afloc" == other:
                own, theirs = afloc_package(module), afloc_package(target)
                if own != theirs and not _afloc_layer(theirs) < _afloc_layer(own):
                    problems.append(
                        f"{module}:{line} imports {target}: afloc.{theirs} is not below afloc.{own} "
                        f"(layers {_afloc_layer(theirs)} and {_afloc_layer(own)})"
                    )
    return problems


def afloc_package(module: str) -> str:
    """``afloc.modeling.losses`` -> ``modeling``; ``afloc.predictor`` -> ``predictor``; ``afloc`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _afloc_layer(package: str) -> int:
    for level, names in enumerate(AFLOC_LAYERS):
        if package in names:
            return level
    raise KeyError(f"afloc.{package} has no layer in AFLOC_LAYERS")


def cycles(imports) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    graph = {m: sorted({t for t, _, _ in arrows if t in imports and t != m}) for m, arrows in imports.items()}
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def private_imports(imports) -> list[str]:
    return [
        f"{module}:{line} imports {name} from {target}"
        for module, arrows in imports.items()
        for target, name, line in arrows
        if name.startswith("_") and not name.startswith("__") and target != module
    ]


def test_every_afloc_package_has_a_layer():
    names = {p.stem if p.is_file() else p.name for p in (ROOT / "afloc").iterdir() if p.suffix == ".py" or p.is_dir()}
    names.discard("__pycache__")
    unplaced = []
    for name in sorted(names):
        try:
            _afloc_layer(name)
        except KeyError:
            unplaced.append(name)
    assert not unplaced, f"afloc modules or packages without a layer in AFLOC_LAYERS: {unplaced}"


def test_layers_hold():
    assert layer_violations(read_imports(ROOT)) == []


def test_no_import_cycle():
    assert cycles(read_imports(ROOT)) == []


def test_no_module_imports_another_modules_underscore_names():
    assert private_imports(read_imports(ROOT)) == []


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "rule", "expected"),
    [
        ({"afloc/__init__.py": "", "afloc/metrics.py": "from training import system\n", "training/__init__.py": "",
          "training/system.py": ""}, layer_violations, "afloc.metrics:1 imports training.system"),
        ({"afloc/__init__.py": "", "afloc/localization/__init__.py": "",
          "afloc/localization/metrics.py": "from ..hub.format import load_pretrained\n", "afloc/hub/__init__.py": "",
          "afloc/hub/format.py": ""}, layer_violations, "afloc.hub is not below afloc.localization"),
        ({"afloc/__init__.py": "", "afloc/model.py": "def f():\n    from .checkpoint import load\n",
          "afloc/checkpoint.py": "from .model import AFLoc\n"}, cycles, "afloc.checkpoint"),
        ({"training/__init__.py": "", "training/a.py": "from .b import _helper\n", "training/b.py": ""},
         private_imports, "training.a:1 imports _helper from training.b"),
    ],
    ids=["upward-between-folders", "upward-inside-afloc", "cycle-through-a-lazy-import", "underscore-import"],
)  # fmt: skip
def test_each_rule_catches_a_planted_violation(tmp_path, files, rule, expected):
    found = rule(read_imports(_plant(tmp_path, files)))
    assert any(expected in str(item) for item in found), found


def test_commands_report_bad_input_in_one_line_with_exit_status_2(capsys):
    from afloc.commands import BAD_INPUT, command

    @command
    def main(argv):
        if argv == ["bad"]:
            raise ValueError("the file\n  is not an image")
        return 0

    assert main(["fine"]) == 0
    assert main(["bad"]) == BAD_INPUT == 2
    assert capsys.readouterr().err == "error: the file is not an image\n"
