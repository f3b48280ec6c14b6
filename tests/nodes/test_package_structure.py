"""What tests/test_architecture.py's layer rules do not say about the ROS package: its imports
sit at the top of a module, never inside functions to dodge cycles, and every node module has its
console script's ``main(args=None)``."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import fowm
import pytest

PKG = Path(fowm.__file__).resolve().parent
REPO = Path(__file__).resolve().parents[2]
CORE = REPO / "fowm_core"
NODES = sorted((PKG / "nodes").glob("[!_]*.py"))


def _module(path: Path) -> str:
    return ".".join(path.relative_to(PKG.parent).with_suffix("").parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(module imported, at top level?) for every import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, id(node) in top))
    return out


def _fowm(path: Path) -> set[str]:
    return {m for m, _ in _imports(path) if m == "fowm" or m.startswith("fowm.")}


def test_no_package_module_imports_fowm_inside_a_function() -> None:
    for path in sorted(PKG.rglob("*.py")):
        late = [m for m, top in _imports(path) if not top and m.startswith("fowm")]
        assert not late, f"{path.relative_to(PKG)} imports {late} inside a function"


@pytest.mark.parametrize("path", NODES, ids=lambda p: p.stem)
def test_every_node_module_has_its_main(path: Path) -> None:
    main = importlib.import_module(_module(path)).main
    assert list(inspect.signature(main).parameters) == ["args"]
    assert inspect.signature(main).parameters["args"].default is None
