"""The shape of the library, checked: package edges point one way along the record's path, no module
imports another that (through any chain, lazy imports included) imports it back, and modules and
functions stay small enough to read."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "medtrinity_tasks"

LAYERS = [
    {"reasons"},
    {"errors"},
    {"config"},
    {"phi"},
    {"records"},
    {"stages", "storage"},
    {"sources"},
    {"preprocess"},
    {"roi"},
    {"knowledge"},
    {"generation"},
    {"validation"},
    {"run", "dataset", "backfill"},
    {"airflow_glue", "browser", "cli"},
]
"""Lowest first, along the record's path: a package may import the packages of lower layers only.
Packages that share a layer are independent of each other."""

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
LONG_FUNCTIONS: dict[str, str] = {}
"""``module:function`` allowed past MAX_FUNCTION_LINES, with the reason."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (lazy imports too)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:  # `from package import submodule` depends on the submodule
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {target for target in found if target in MODULES and target != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def package_of(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the root package (its version string)


def layer_of(package: str) -> int:
    for number, layer in enumerate(LAYERS):
        if package in layer:
            return number
    raise AssertionError(f"package {package!r} is in no layer of LAYERS: place it on the record's path")


def test_every_package_edge_points_down():
    upward = [
        f"{source} -> {target}"
        for source, targets in GRAPH.items()
        for target in targets
        if package_of(source) and package_of(target) and package_of(source) != package_of(target)
        if layer_of(package_of(target)) >= layer_of(package_of(source))
    ]
    assert not upward, "imports that point up or sideways:\n" + "\n".join(sorted(upward))


def test_no_module_imports_itself_back_through_a_chain():
    assert not cycles(GRAPH), f"import circles: {cycles(GRAPH)}"


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_only_dag_files_and_plugins_import_the_airflow_glue():
    importers = [name for name, targets in GRAPH.items() if package_of(name) != "airflow_glue"
                 for target in targets if package_of(target) == "airflow_glue"]  # fmt: skip
    assert not importers


@pytest.mark.parametrize("name", sorted(MODULES))
def test_modules_and_functions_stay_small(name):
    source = MODULES[name].read_text()
    assert source.count("\n") <= MAX_MODULE_LINES, f"{name} has {source.count(chr(10))} lines"
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        and f"{name}:{node.name}" not in LONG_FUNCTIONS
    ]
    assert not long, f"{name}: functions over {MAX_FUNCTION_LINES} lines: {long}"
