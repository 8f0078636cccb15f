"""Imports run one way: data -> features -> training -> packaging -> serving app -> CLI/deploy.

Every import in every module of the platform, at module level or inside a function, is read
from the source (ast); none may reach a higher layer, and no two modules may import each other
through a chain (a cycle). The README's Layout section states the same order.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lowest first; packages of one layer may import each other.
LAYERS = [("data",), ("features", "feature_repo"), ("training",), ("serving",), ("ray_apps",),
          ("irec",)]
RANK = {package: rank for rank, group in enumerate(LAYERS) for package in group}


def _modules() -> dict[str, Path]:
    found = {}
    for package in RANK:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The platform modules ``path`` imports (``from a.b import c`` counts a.b.c or a.b)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] in RANK:
                while name not in modules and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in modules:
                    out.add(name)
    return out


def test_no_import_reaches_a_higher_layer():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        for target in _imports(path, modules):
            if RANK[target.split(".")[0]] > RANK[name.split(".")[0]]:
                upward.append(f"{name} -> {target}")
    assert not upward, upward


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    # a package's __init__ re-exporting its own modules is not a cycle worth flagging
    graph = {name: {t for t in targets if not name.startswith(f"{t}.")}
             for name, targets in graph.items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*trail[trail.index(target):], target]))
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, cycles
