"""Every third-party package the product imports is declared in pyproject.toml (and pinned in
requirements.lock); what only tests and benchmarks import is declared as a dev dependency."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("schemas", "infra", "streams", "trainer", "inference", "samtuner", "console")
OURS = {*PRODUCT, "tests", "benchmarks"}


def top_level_imports(paths: list[Path]) -> set[str]:
    found: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - OURS - set(sys.stdlib_module_names) - {"__future__"}


def declared(group: str | None) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {re.split(r"[\[=<>!~ ]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specs}


def undeclared(modules: set[str], names: set[str]) -> list[str]:
    dists = packages_distributions()
    missing = []
    for module in sorted(modules):
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        if not owners & names:
            missing.append(f"{module} (from {', '.join(sorted(owners)) or 'no installed distribution'})")
    return missing


def python_files(*rooms: str) -> list[Path]:
    return [p for room in rooms for p in (ROOT / room).rglob("*.py")]


def test_the_product_imports_only_declared_dependencies() -> None:
    assert undeclared(top_level_imports(python_files(*PRODUCT)), declared(None)) == []


def test_tests_and_benchmarks_import_only_declared_or_dev_dependencies() -> None:
    names = declared(None) | declared("dev")
    assert undeclared(top_level_imports(python_files("tests", "benchmarks")), names) == []


def test_the_check_sees_an_undeclared_import() -> None:
    assert undeclared({"yaml", "numpy"}, {"pyyaml"}) == ["numpy (from numpy)"]
