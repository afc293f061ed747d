"""No import cycles between the modules of `detector`, `proposals` and `bench` (issue 22).

Every import counts, also one placed inside a function: moving an import into a
function hides a cycle from Python's loader, not from the reader.
"""
from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

PACKAGES = ("detector", "proposals", "bench")


def module_files() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports anywhere in its file (a package's own parents excluded)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name and not name.startswith(t + "."))
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

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
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_checker_finds_a_cycle_through_a_function_level_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycles():
    modules = module_files()
    graph = {name: imported_modules(name, path, modules) for name, path in modules.items()}
    assert "detector.backends" in graph["detector.ray_backend"] or "detector.backend_options" in graph[
        "detector.ray_backend"]  # the checker sees relative imports
    assert cycles(graph) == []


# The modules that take the whole Config (issue 22): the builders of objects (build.py),
# of a model file's detector (model.py), of a training run (training/train.py: the shared
# settings and each stage's own sections), of an export and its torch-free runtime
# (deploy/export.py, deploy/runtime.py), and one command. Everything else is given sections.
CONFIG_READERS = {"detector.build", "detector.model", "detector.training.train", "detector.deploy.export",
                  "detector.deploy.runtime", "detector.commands.stats"}


def test_only_the_builders_take_the_whole_config():
    readers = set()
    for name, path in module_files().items():
        if not name.startswith("detector."):  # bench tools build their variants from configs
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[-1] == "config" \
                    and any(a.name == "Config" for a in node.names):
                readers.add(name)
    assert readers == CONFIG_READERS
