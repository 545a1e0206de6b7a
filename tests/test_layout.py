"""The package's shape: no import circle between vistra's modules, inference without the
training stack, small files and functions, only the command at the package root."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "vistra"
MAX_FILE_LINES = 300
MAX_FUNCTION_LINES = 60


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(path: Path, known: set[str]) -> set[str]:
    """vistra modules ``path`` imports, at any depth of the file (lazy imports in functions
    count: they run too). ``from a import b`` is ``a.b`` when that is a module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            names = [n if n in known else node.module for n in names]
        else:
            continue
        found |= {name for name in names if name in known}
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(path, set(found)) - {name} for name, path in found.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, result = {}, {}, [], set(), []

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
                result.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return result


def test_no_import_circle():
    graph = import_graph()
    assert circles(graph) == []
    # The check sees a circle where there is one:
    assert circles({**graph, "vistra.data.preprocess": {"vistra.inference.spec"}})


def test_inference_does_not_reach_into_training():
    graph = import_graph()
    for name, targets in graph.items():
        if name.startswith(("vistra.inference", "vistra.serve")):
            training = {t for t in targets if t.startswith(("vistra.tasks", "vistra.engine"))}
            assert not training, f"{name} imports {training}"
        if name.startswith(("vistra.models", "vistra.losses", "vistra.data")):
            upward = {
                t
                for t in targets
                if t.startswith(
                    (
                        "vistra.tasks",
                        "vistra.engine",
                        "vistra.inference",
                        "vistra.demos",
                        "vistra.serve",
                    )
                )
            }
            assert not upward, f"{name} imports {upward}"  # fmt: skip


def test_package_root_holds_only_the_command():
    files = {p.name for p in PACKAGE.glob("*.py")}
    assert files == {"__init__.py", "cli.py"}


def test_files_and_functions_are_small():
    long_files, long_functions = [], []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > MAX_FILE_LINES:
            long_files.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                # The body, docstring included: a signature of many keyword arguments, one
                # per line, is a list to read, not logic.
                length = node.end_lineno - node.body[0].lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{path.relative_to(PACKAGE)}:{node.name} {length}")
    assert long_files == [] and long_functions == []
