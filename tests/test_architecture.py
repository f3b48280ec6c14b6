"""The dependency rules of docs/architecture.md, checked on the source (every import, also the ones
inside functions): the core never reaches ROS, each layer imports only the layers below it, no
module of either package takes part in an import cycle, and no module grows past the size limit."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "fowm_core"
ROS_PKG = REPO / "ros2_ws" / "src" / "fowm" / "fowm"

# Layer → the fowm_core layers it may import besides itself (docs/architecture.md).
# tasks sits below config: a preset asks the task registry for the action size.
BASE = {"errors", "config", "tasks"}
CORE_RULES: dict[str, set[str]] = {
    "errors": set(),
    "tasks": {"errors"},
    "config": {"errors", "tasks"},
    "contract": BASE,
    "model": BASE,
    "data": BASE | {"contract", "tasks"},
    "perception": BASE | {"contract"},
    "sim": BASE | {"contract", "tasks", "data", "perception"},
    "planner": BASE | {"model"},
    "learning": BASE | {"contract", "tasks", "model", "data", "planner"},
    "runtime": BASE | {"contract", "tasks", "model", "data", "planner", "learning"},
    "jobs": BASE | {"contract", "tasks", "model", "data", "sim", "planner", "learning", "runtime",
             "perception"},
}
# ROS package: part → the parts of `fowm` it may import (fowm_core and rclpy are always allowed).
ROS_RULES: dict[str, set[str]] = {
    "ros": {"ros"},
    "hardware": {"hardware"},
    "nodes": {"ros", "hardware"},          # never another node
    "bringup": {"ros", "hardware", "nodes"},
    "demo": {"ros", "bringup"},
    "roles": {"ros", "hardware", "nodes", "bringup"},   # `fowm run --role`: two-host stacks
}
MAX_LINES = 400


def _module_name(path: Path) -> str:
    rel = path.relative_to(CORE.parent if CORE in path.parents else ROS_PKG.parent)
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = sorted(CORE.rglob("*.py")) + sorted(ROS_PKG.rglob("*.py"))
    return {_module_name(f): f for f in files}


SOURCES = _sources()


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in the file, resolved to a module of ours where it names one:
    ``from a.b import c`` is a.b.c when that is a module, else a.b."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                yield node.lineno, sub if sub in SOURCES else node.module


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_the_core_never_imports_ros() -> None:
    bad = [f"{SOURCES[m].relative_to(REPO)}:{line} imports {target}"
           for m in SOURCES if m.startswith("fowm_core")
           for line, target in _imports(SOURCES[m])
           if target.split(".")[0] in {"rclpy", "fowm", "launch", "launch_ros", "rosidl_runtime_py"}
           or target.split(".")[0].endswith("_msgs")]
    assert not bad, "fowm_core must stay ROS-free (docs/architecture.md):\n" + "\n".join(bad)


def test_core_layers_import_only_the_layers_below() -> None:
    bad = []
    for module, path in SOURCES.items():
        if not module.startswith("fowm_core.") or module.count(".") == 0:
            continue
        layer = _layer(module)
        allowed = CORE_RULES.get(layer)
        assert allowed is not None, f"{module}: layer {layer!r} has no rule in docs/architecture.md"
        for line, target in _imports(path):
            if target.startswith("fowm_core.") and _layer(target) != layer \
                    and _layer(target) not in allowed:
                bad.append(f"{path.relative_to(REPO)}:{line} ({layer}) imports {target}")
    assert not bad, "layer rule broken (docs/architecture.md):\n" + "\n".join(bad)


def test_ros_package_parts_import_only_what_their_rule_allows() -> None:
    bad = []
    for module, path in SOURCES.items():
        if not module.startswith("fowm."):
            continue
        part = _layer(module)
        allowed = ROS_RULES.get(part)
        assert allowed is not None, f"{module}: part {part!r} has no rule in docs/architecture.md"
        for line, target in _imports(path):
            if not target.startswith("fowm.") and target != "fowm":
                continue
            tpart = _layer(target)
            same_node = part == "nodes" and target == module
            if part == "nodes" and tpart == "nodes" and not same_node:
                bad.append(f"{path.relative_to(REPO)}:{line}: a node imports a node: {target}")
            elif tpart != part and tpart not in allowed:
                bad.append(f"{path.relative_to(REPO)}:{line} ({part}) imports {target}")
    assert not bad, "ROS package rule broken (docs/architecture.md):\n" + "\n".join(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles_in_either_package() -> None:
    graph = {m: {t for _, t in _imports(p) if t in SOURCES and t != m} for m, p in SOURCES.items()}
    cycles = _cycles(graph)
    assert not cycles, "import cycles (lazy imports count):\n" + "\n".join(
        " ↔ ".join(c) for c in cycles)


def test_the_cycle_check_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize("root", [CORE, ROS_PKG, REPO / "benchmarks"],
                         ids=lambda p: p.name)
def test_no_module_is_longer_than_the_limit(root: Path) -> None:
    long = {str(f.relative_to(REPO)): n for f in root.rglob("*.py")
            if (n := len(f.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (limit {MAX_LINES} lines): {long}"
