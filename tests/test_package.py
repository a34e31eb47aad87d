"""The package's structure: no import circles (function-local imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "gmmpipe"


def _imports(path: Path) -> set[str]:
    """The gmmpipe modules a module imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gmmpipe"):
            if node.module == "gmmpipe":
                found.update(alias.name for alias in node.names)
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("gmmpipe."))
    return found - {path.stem}


def test_no_module_imports_a_module_that_imports_it_back():
    graph = {path.stem: _imports(path) for path in PACKAGE.glob("*.py")}
    assert graph["fit"] and graph["compare"]  # the parser sees imports
    order: list[str] = []  # modules in an order where each imports only earlier ones
    while len(order) < len(graph):
        ready = [m for m in sorted(graph) if m not in order and graph[m] <= set(order)]
        assert ready, {m: sorted(graph[m] - set(order)) for m in graph if m not in order}
        order += ready


def test_the_package_docstring_lists_every_module_below_the_ones_it_imports():
    """gmmpipe/__init__.py's list of modules, lowest first, is an order of the import graph."""
    import re

    docstring = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text())) or ""
    listed = re.findall(r":mod:`(\w+)`", docstring)
    modules = {path.stem for path in PACKAGE.glob("*.py")} - {"__init__"}
    assert sorted(listed) == sorted(modules)
    for position, module in enumerate(listed):
        above = _imports(PACKAGE / f"{module}.py") - set(listed[:position])
        assert not above, f"{module} imports {sorted(above)}, listed after it"
