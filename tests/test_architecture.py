"""The package's shape: no import cycle between its modules, no module too long to read.

Every module under src/manyicl is parsed with ``ast`` (nothing is imported), and every import
statement counts -- at module level and inside functions alike -- because a cycle hidden in a
function still ties the two modules together. Relative imports are resolved to module names within
the package; ``from . import x`` counts as an import of the submodule ``x`` when there is one.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "manyicl"
ROOT = Path(__file__).resolve().parent.parent / "src" / PACKAGE
MAX_LINES = 700


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name ("manyicl.x.y"; a package is its __init__)."""
    modules = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name a (possibly relative) ``from ... import`` refers to."""
    if level == 0:
        return target or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The package module that the dotted name ``name`` lives in (its longest known prefix)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node.level, node.module)
                for alias in node.names:
                    # "from pkg import sub" imports the submodule pkg.sub when there is one;
                    # any other name comes from pkg itself
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                owner = _owner(target, modules)
                if owner is not None and owner != name and owner.startswith(PACKAGE):
                    graph[name].add(owner)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan): each is a tangle of cycles."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A concrete cycle a -> b -> ... -> a through the component's first module (shortest, by BFS)."""
    members = set(component)
    start = component[0]
    parents: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node] & members):
                if nxt == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [*reversed(path), start]
                if nxt not in parents:
                    parents[nxt] = node
                    nxt_frontier.append(nxt)
        frontier = nxt_frontier
    return component  # unreachable for a strongly connected component


def _describe(graph: dict[str, set[str]], components: list[list[str]]) -> str:
    """One line per tangle: a concrete cycle through it, then every module caught in it."""
    return "\n".join(
        f"{' -> '.join(_one_cycle(graph, c))}   [all {len(c)} in this cycle: {', '.join(c)}]"
        for c in components
    )


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert graph, "no module found under src/manyicl"
    # cli imports its workflows inside functions, relatively; the parser must see those edges
    assert any(graph[m] for m in graph if m.startswith(f"{PACKAGE}.cli"))


def test_no_import_cycle():
    graph = import_graph()
    tangles = find_cycles(graph)
    assert not tangles, f"{len(tangles)} import cycle(s) between manyicl modules:\n" + _describe(
        graph, tangles
    )


def test_no_module_over_the_line_limit():
    too_long = {
        name: n
        for name, path in _modules().items()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    listing = "\n".join(f"{name}: {n} lines" for name, n in sorted(too_long.items(), key=lambda kv: -kv[1]))
    assert not too_long, f"modules over {MAX_LINES} lines:\n{listing}"
