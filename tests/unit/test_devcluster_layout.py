"""The local cluster's code: one module per component, no import circles, no private cross-module calls."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hack" / "devcluster"


def _modules() -> dict[str, ast.Module]:
    return {p.stem: ast.parse(p.read_text()) for p in PACKAGE.glob("*.py")}


def _imports(tree: ast.Module) -> dict[str, set[str]]:
    """Sibling modules imported by ``tree`` (anywhere, also inside functions), and the names taken from each."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:  # from .x import a, b
                found.setdefault(node.module, set()).update(a.name for a in node.names)
            else:  # from . import x, y
                for alias in node.names:
                    found.setdefault(alias.name, set())
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("devcluster."):
            found.setdefault(node.module.split(".")[1], set()).update(a.name for a in node.names)
    return found


def test_no_import_circles():
    graph = {name: set(_imports(tree)) - {name} for name, tree in _modules().items()}
    visiting: list[str] = []
    done: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        assert name not in visiting, f"import circle: {' -> '.join([*visiting[visiting.index(name) :], name])}"
        visiting.append(name)
        for dep in sorted(graph.get(name, ())):
            visit(dep)
        visiting.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def test_components_do_not_import_the_cluster():
    """cluster.py puts the components together; they stand on the shared helpers only."""
    for name, tree in _modules().items():
        if name not in ("cluster", "__main__"):
            assert "cluster" not in _imports(tree), f"{name}.py imports cluster.py"


def test_no_private_names_cross_modules():
    modules = _modules()
    for name, tree in modules.items():
        for dep, names in _imports(tree).items():
            private = sorted(n for n in names if n.startswith("_"))
            assert not private, f"{name}.py imports private {private} from {dep}.py"
        siblings = set(modules)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in siblings
                and node.attr.startswith("_")
            ):
                raise AssertionError(f"{name}.py uses {node.value.id}.{node.attr}")


def test_each_component_has_its_module():
    names = set(_modules())
    assert {"etcd", "kubernetes", "kwok", "keda", "pulsar", "gobuild", "procs"} <= names
