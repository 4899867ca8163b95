"""The rooms of the tree: a role's package imports only itself, ``schemas/`` (the contract) and
``infra/`` (the edges); ``infra/`` imports only ``schemas/``; ``schemas/`` imports nothing of ours.
``samtuner/`` is the composition root and may import every room. Imports inside functions count."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"schemas", "infra", "streams", "trainer", "inference", "samtuner"}
ALLOWED = {
    "schemas": {"schemas"},
    "infra": {"infra", "schemas"},
    "streams": {"streams", "schemas", "infra"},
    "trainer": {"trainer", "schemas", "infra"},
    "inference": {"inference", "schemas", "infra"},
}


def imported_packages(source: str) -> set[str]:
    """The top-level packages of ours that a module imports, anywhere in it."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names} & OURS
    return found


def violations(room: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / room).rglob("*.py")):
        for package in sorted(imported_packages(path.read_text()) - ALLOWED[room]):
            bad.append(f"{path.relative_to(ROOT)} imports {package}")
    return bad


@pytest.mark.parametrize("room", sorted(ALLOWED))
def test_a_room_imports_only_what_its_layer_allows(room: str) -> None:
    assert violations(room) == []


def test_the_check_sees_imports_at_the_top_and_inside_functions() -> None:
    source = "import os\nfrom streams.x import y\ndef f():\n    import trainer.job\n    from . import z\n"
    assert imported_packages(source) == {"streams", "trainer"}


def module_graph() -> dict[str, set[str]]:
    """Our modules and the modules of ours each imports (``from pkg import sub`` names ``pkg.sub``)."""
    modules: dict[str, Path] = {}
    for room in (*ALLOWED, "samtuner", "console"):
        for path in (ROOT / room).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in modules:
                subs = {f"{node.module}.{alias.name}" for alias in node.names} & modules.keys()
                deps |= subs or {node.module}
        graph[name] = deps - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_itself_round_a_cycle() -> None:
    assert cycles(module_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_two_stream_roles_share_only_the_streams_errors() -> None:
    graph = module_graph()
    for role, sibling in (("streams.decider", "streams.projector"), ("streams.projector", "streams.decider")):
        for module, deps in graph.items():
            if module == role or module.startswith(role + "."):
                crossing = sorted(d for d in deps if d == sibling or d.startswith(sibling + ".") or d == "streams")
                assert crossing == [], f"{module} imports {crossing}"
