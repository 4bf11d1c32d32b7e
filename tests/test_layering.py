"""The package's layering (docs/architecture.md, "Layers"), checked over every import of every module.

Bottom to top: core, kernels · data, models, metrics, mpc · attacks, defenses · config · sim · sweep, report, flower · cli.
A module may import fedshield modules of its own unit (package or top-level module) and of lower layers only:
never a higher layer, never a sibling of its own layer. Imports inside functions count too, and an import of a
fedshield module inside a function is refused outright (it only ever served to dodge a cycle). A module whose
unit is not in the table fails the test, so a new package has to be given its layer here and in the docs.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "fedshield"

LAYERS: dict[str, int] = {
    "core": 0, "kernels": 0,
    "data": 1, "models": 1, "metrics": 1, "mpc": 1,
    "attacks": 2, "defenses": 2,
    "config": 3,
    "sim": 4,
    "sweep": 5, "report": 5, "flower": 5,
    "cli": 6,
    "__main__": 7,
}
ROOT = "__init__"  # fedshield/__init__.py: may import nothing of fedshield


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _dotted(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ["fedshield", *parts]


def _unit(dotted: list[str]) -> str:
    """The layer unit of a module: its top-level package or module under fedshield."""
    return dotted[1] if len(dotted) > 1 else ROOT


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(absolute module imported, line, inside a function) for every fedshield import in ``path``."""
    package = _dotted(path)[:-1]  # the package a relative import starts from (also for an __init__.py)
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, in_function) for a in child.names if a.name.split(".")[0] == "fedshield")
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package[: len(package) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                    if not child.module:  # from . import a, b: each name is a module of that package
                        found.extend((f"{target}.{a.name}", child.lineno, in_function) for a in child.names)
                        continue
                else:
                    target = child.module or ""
                if target.split(".")[0] == "fedshield":
                    found.append((target, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return found


def _violations() -> list[str]:
    bad = []
    for path in _modules():
        here = _dotted(path)
        unit = _unit(here)
        rel = path.relative_to(PACKAGE.parent)
        if unit != ROOT and unit not in LAYERS:
            bad.append(f"{rel}: unit {unit!r} has no layer; add it to LAYERS and docs/architecture.md")
            continue
        for target, line, in_function in _imports(path):
            other = _unit(target.split("."))
            where = f"{rel}:{line} imports {target}"
            if in_function:
                bad.append(f"{where} inside a function")
            if other == unit:
                continue
            if unit == ROOT or other == ROOT:
                bad.append(f"{where}: the package root neither imports nor is imported")
            elif other not in LAYERS:
                bad.append(f"{where}: unit {other!r} has no layer")
            elif LAYERS[other] >= LAYERS[unit]:
                kind = "a sibling in its layer" if LAYERS[other] == LAYERS[unit] else "a higher layer"
                bad.append(f"{where}: {other} is {kind} ({unit} is layer {LAYERS[unit]}, {other} {LAYERS[other]})")
    return bad


def test_every_import_points_down():
    assert _violations() == []


def test_the_checker_sees_upward_relative_and_function_imports(tmp_path):
    """The checker itself: a planted upward import, a sibling import, a function-level import and an unassigned
    package are all reported (so the test above cannot pass by seeing nothing)."""
    pkg = tmp_path / "fedshield"
    for rel, text in {
        "__init__.py": "",
        "core/__init__.py": "",
        "core/a.py": "from ..sim import loop\n",
        "attacks/__init__.py": "from ..defenses import base\n",
        "defenses/__init__.py": "",
        "defenses/base.py": "def f():\n    from ..core import a\n",
        "sim/__init__.py": "",
        "sim/loop.py": "import fedshield.core.a\nfrom .other import x\n",
        "newthing/__init__.py": "",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    real = globals()["PACKAGE"]
    globals()["PACKAGE"] = pkg
    try:
        found = "\n".join(_violations())
    finally:
        globals()["PACKAGE"] = real
    assert "core/a.py:1 imports fedshield.sim: sim is a higher layer" in found
    assert "attacks/__init__.py:1 imports fedshield.defenses: defenses is a sibling in its layer" in found
    assert "defenses/base.py:2 imports fedshield.core inside a function" in found
    assert "newthing/__init__.py: unit 'newthing' has no layer" in found
    assert "sim/loop.py" not in found  # downward and same-package imports are fine


@pytest.mark.parametrize("unit", sorted(LAYERS))
def test_layer_table_names_real_or_planned_units(unit):
    planned = {"mpc", "__main__"}  # listed ahead of the branches that add them
    assert unit in planned or (PACKAGE / unit).is_dir() or (PACKAGE / f"{unit}.py").exists()
