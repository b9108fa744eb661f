"""The import graph of DIM's packages: no module imports itself back through others."""
from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial import unittest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dim", "tui")


def module_files() -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its own name)."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports, annotation-only imports included."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module name -> the package modules it imports."""
    files = module_files()
    known = set(files)
    return {name: imports_of(name, path, known) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a path that ends where it starts, or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 finished
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


class ImportGraphTests(unittest.TestCase):
    """dim/ and tui/ import in one direction only."""

    def test_no_cycles(self) -> None:
        """No module of dim/ or tui/ reaches itself through its imports."""
        cycle = find_cycle(import_graph())
        self.assertIsNone(cycle, " -> ".join(cycle or []))

    def test_the_walk_sees_annotation_imports_and_cycles(self) -> None:
        """TYPE_CHECKING and relative imports count as edges, and a planted cycle is found."""
        path = Path(self.mktemp())
        path.write_text("from typing import TYPE_CHECKING\n"
                        "from . import fields\n"
                        "if TYPE_CHECKING:\n"
                        "    from dim.gateway.app import Gateway\n")
        known = set(module_files())
        self.assertEqual(imports_of("dim.gateway.x", path, known),
                         {"dim.gateway.fields", "dim.gateway.app"})
        self.assertEqual(find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}), ["a", "b", "c", "a"])
        self.assertIsNone(find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}))


class TestFixtureImportTests(unittest.TestCase):
    """Test modules share fixtures through tests/fakes/, never by importing each other."""

    def test_no_test_module_imports_another(self) -> None:
        """No file under tests/ imports a test_ module."""
        offenders = []
        for path in sorted((ROOT / "tests").rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                if any(n.rpartition(".")[2].startswith("test_") for n in names):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
        self.assertEqual(offenders, [])
