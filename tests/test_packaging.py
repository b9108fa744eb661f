"""setup.cfg declares, with a lower bound, every third-party package each part imports."""
from __future__ import annotations

import ast
import configparser
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

from twisted.trial import unittest

ROOT = Path(__file__).resolve().parent.parent


def normal(name: str) -> str:
    """A distribution name as pip compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements() -> dict[str, dict[str, str]]:
    """Extra ('' for install_requires) -> distribution -> its version specifier."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    groups = {"": config["options"]["install_requires"]}
    groups.update(config["options.extras_require"])
    out: dict[str, dict[str, str]] = {}
    for extra, text in groups.items():
        found: dict[str, str] = {}
        for line in text.splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                name, spec = re.match(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?(.*)", line).groups()
                found[normal(name)] = spec.strip()
        out[extra] = found
    return out


def third_party_imports(paths: list[Path]) -> set[str]:
    """Top-level names imported by the files that are neither stdlib nor DIM's own."""
    names: set[str] = set()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "import_module"
                  and node.args and isinstance(node.args[0], ast.Constant)):
                names.add(str(node.args[0].value).split(".")[0])
    return {n for n in names
            if n not in sys.stdlib_module_names and n not in {"dim", "tui", "tests", "__future__"}}


def files(*patterns: str, but: str | None = None) -> list[Path]:
    """The Python files matching the patterns, less those under ``but``."""
    found = [p for pattern in patterns for p in ROOT.glob(pattern)]
    return [p for p in found if but is None or not p.is_relative_to(ROOT / but)]


class PackagingTests(unittest.TestCase):
    """Dependencies are declared by use: the server and client core, chat, bench, tests."""

    def missing(self, paths: list[Path], extras: list[str]) -> list[str]:
        """Imported distributions the given requirement groups do not declare with >=."""
        declared: dict[str, str] = {}
        for extra in extras:
            declared.update(requirements()[extra])
        dists = packages_distributions()
        problems = []
        for name in sorted(third_party_imports(paths)):
            candidates = [normal(d) for d in dists.get(name, [name])]
            if not any(">=" in declared.get(c, "") for c in candidates):
                problems.append(f"{name} ({', '.join(candidates)})")
        return problems

    def test_core_declares_what_it_imports(self) -> None:
        """The server, the client core and the twistd plugins need only install_requires."""
        paths = files("dim/**/*.py", "twisted/plugins/*.py", but="dim/bench")
        self.assertEqual(self.missing(paths, [""]), [])

    def test_chat_and_bench_extras_cover_their_parts(self) -> None:
        """dim-chat needs only [chat] beyond the core, dim-bench only [bench]."""
        self.assertEqual(self.missing(files("tui/**/*.py"), ["", "chat"]), [])
        self.assertEqual(self.missing(files("dim/bench/**/*.py"), ["", "bench"]), [])

    def test_tests_use_only_declared_packages(self) -> None:
        """The suite imports nothing beyond the core and the chat, bench and test extras."""
        self.assertEqual(self.missing(files("tests/**/*.py"), ["", "chat", "bench", "test"]), [])

    def test_core_pulls_no_client_or_bench_packages(self) -> None:
        """A server install does not bring Textual, matplotlib or the test tools."""
        core = requirements()[""]
        for name in ("textual", "textual-image", "matplotlib", "numpy", "hypothesis",
                     "schemathesis", "trustme", "psutil"):
            self.assertNotIn(name, core)

    def test_the_check_sees_an_undeclared_import(self) -> None:
        """A file importing a package nobody declares is reported."""
        path = Path(self.mktemp())
        path.write_text("import textual\nfrom importlib import import_module\n"
                        "import_module('numpy.linalg')\n")
        self.assertEqual(self.missing([path], [""]), ["numpy (numpy)", "textual (textual)"])
