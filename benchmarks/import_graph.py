"""The import graph between screenlib's packages, and any cycle in it.

    python benchmarks/import_graph.py          # edges and cycles, as text
    python benchmarks/import_graph.py --dot    # Graphviz for a picture

Every ``import screenlib.X`` / ``from screenlib.X import`` counts, also inside functions (a
deferred import is still a dependency). Top-level modules (``settings``, ``errors``,
``platemap``...) count as packages of their own.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "screenlib"


def package_of(module: str) -> str:
    """``screenlib.analysis.kernel`` -> ``analysis``; ``screenlib.settings`` -> ``settings``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "screenlib"


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{package: packages it imports}`` over every module under ``root``."""
    graph: dict[str, set[str]] = {}
    for path in sorted(root.rglob("*.py")):
        relative = path.relative_to(root.parent).with_suffix("")
        source = package_of(".".join(relative.parts))
        targets = graph.setdefault(source, set())
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.startswith("screenlib."):
                    target = package_of(name)
                    if target != source:
                        targets.add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary cycle found by a depth-first search (each reported once)."""
    found: set[tuple[str, ...]] = set()

    def visit(node: str, path: list[str]) -> None:
        for target in sorted(graph.get(node, ())):
            if target in path:
                cycle = path[path.index(target) :]
                start = cycle.index(min(cycle))
                found.add(tuple(cycle[start:] + cycle[:start]))
            elif len(path) < 12:
                visit(target, [*path, target])

    for node in sorted(graph):
        visit(node, [node])
    return [list(c) for c in sorted(found)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dot", action="store_true", help="print Graphviz dot")
    args = parser.parse_args()
    graph = import_graph()
    if args.dot:
        print("digraph screenlib {")
        for source, targets in sorted(graph.items()):
            for target in sorted(targets):
                print(f'  "{source}" -> "{target}";')
        print("}")
        return
    for source, targets in sorted(graph.items()):
        print(f"{source:14s} -> {', '.join(sorted(targets)) or '-'}")
    found = cycles(graph)
    print(f"cycles: {len(found)}")
    for cycle in found:
        print("  " + " -> ".join([*cycle, cycle[0]]))


if __name__ == "__main__":
    main()
