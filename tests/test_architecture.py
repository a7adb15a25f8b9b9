"""The package's shape: no import cycle between modules, and no import that runs up the layers.

Every ``import`` counts, including those inside functions (a lazy import is still a dependency).
The layers, lowest first; a module may import its own package and any lower layer. The table is
the one in docs/explanation/architecture.md.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).parents[1] / "src"
PACKAGE = SRC / "gridtrain"

LAYERS: list[set[str]] = [
    # the foundation: errors, file writing, checksums, settings, metrics, the run directory
    {
        "gridtrain",
        "errors",
        "files",
        "checksum",
        "config",
        "evaluation",
        "paths",
        "rundir",
        "jobstate",
        "task",
        "spawn",
        "liveness",
        "eventfile",
        "backend",
    },
    {"data", "ps"},  # shards and manifests; the parameter server (knows no framework)
    {"stage", "models", "report"},  # XRootD staging; Keras models; plots and summaries
    {"condor"},  # the batch system: submit descriptions, submission, job states, environments
    {"train"},  # the driver, the worker, the executors: where the layers below meet
    {"export", "tune", "serve"},  # exported models; hyper-parameter search; the web service
    {"apply"},  # scores on the analysis's own files, by the Keras model or the export
    {"cli", "__main__"},  # argument parsing only
]


def unit(module: str) -> str:
    """The layer unit of a module: its subpackage, or the top-level module's own name."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "gridtrain"


def layer_of(module: str) -> int:
    name = unit(module)
    for rank, members in enumerate(LAYERS):
        if name in members:
            return rank
    raise AssertionError(f"{module}: not in any layer; add {name!r} to LAYERS and the docs")


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = defaultdict(set)
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's package
                    anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from gridtrain.stage import xrd` imports the module gridtrain.stage.xrd
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            graph[module].update(t for t in targets if t in modules and t != module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    assert cycles(import_graph()) == []


def test_no_import_runs_up_the_layers() -> None:
    upward = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if unit(module) != unit(target) and layer_of(target) > layer_of(module)
    )
    assert upward == []


def test_the_checks_see_a_cycle_and_an_upward_import(tmp_path: Path) -> None:
    graph = {"gridtrain.a": {"gridtrain.b"}, "gridtrain.b": {"gridtrain.a"}, "gridtrain.c": set()}
    assert cycles(graph) == [["gridtrain.a", "gridtrain.b"]]
    assert layer_of("gridtrain.ps.server") < layer_of("gridtrain.train.driver")
    with pytest.raises(AssertionError, match="not in any layer"):
        layer_of("gridtrain.newthing.x")
