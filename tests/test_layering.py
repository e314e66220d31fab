"""The stack reads core -> strategies -> workloads -> checkers -> harness: no import points up.

Every module of ours is parsed (imports inside functions included, since a lazy import is still a
dependency) and each ``import``/``from`` of one of our packages must name a package at the same
layer or below. A violation names the file, line and the two layers.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("core", "strategies", "workloads", "checkers", "harness")
RANK = {name: i for i, name in enumerate(LAYERS)}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def violations() -> list[str]:
    bad = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            for line, module in _imports(path):
                top = module.split(".")[0]
                if top in RANK and RANK[top] > RANK[layer]:
                    bad.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {module} (a higher layer)")
    return bad


def test_no_import_points_up() -> None:
    assert violations() == []


def test_core_imports_nothing_of_ours_but_core() -> None:
    for path in (ROOT / "core").rglob("*.py"):
        for line, module in _imports(path):
            assert module.split(".")[0] not in RANK or module.startswith("core"), f"{path}:{line}: {module}"


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The check can fail: a module that imports upward is reported."""
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from harness.runner import Run\n")
    assert [m for _, m in _imports(bad)] == ["harness.runner"]
