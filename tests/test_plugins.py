"""The twistd plugins are found by the installed twistd, wherever it is started from."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from twisted.trial import unittest


class PluginDiscoveryTests(unittest.TestCase):
    """`twistd --help` lists dim, dim-node and dim-gateway outside the source tree too."""

    def test_installed_twistd_lists_plugins(self) -> None:
        """The venv's twistd, run from an unrelated directory, knows the three plugins."""
        twistd = Path(sys.executable).parent / "twistd"
        self.assertTrue(twistd.exists(), f"no twistd beside {sys.executable}")
        elsewhere = Path(self.mktemp())
        elsewhere.mkdir()
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        out = subprocess.run([str(twistd), "--help"], cwd=elsewhere, env=env,
                             capture_output=True, text=True, timeout=60).stdout
        listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ")}
        self.assertLessEqual({"dim", "dim-node", "dim-gateway"}, listed, out)


# Imports the plugins, the tap modules and every other module of dim/ in a fresh interpreter,
# then reports whether any of them installed (or imported) the global reactor.  Left out:
# dim.gateway.app, because klein imports the global reactor itself when it is imported (the
# taps import the app inside makeService, after twistd has installed the reactor).
_IMPORT_ALL = """
import importlib, pkgutil, sys
import dim
names = ["twisted.plugins.dim_plugins", "dim.standalone", "dim.node.tap", "dim.gateway.tap"]
names += [m.name for m in pkgutil.walk_packages(dim.__path__, "dim.")
          if m.name not in ("dim.gateway.app", "dim.bench.__main__")]
for name in names:
    importlib.import_module(name)
{extra}
print("reactor" if "twisted.internet.reactor" in sys.modules else "none")
"""


class NoReactorAtImportTests(unittest.TestCase):
    """Importing DIM's modules leaves the choice of reactor to whoever runs them."""

    def imported(self, extra: str = "") -> str:
        """What the import script says: 'reactor' or 'none'."""
        out = subprocess.run([sys.executable, "-c", _IMPORT_ALL.replace("{extra}", extra)],
                             capture_output=True, text=True, timeout=120)
        self.assertEqual(out.returncode, 0, out.stderr)
        return out.stdout.strip()

    def test_plugins_and_taps_install_no_reactor(self) -> None:
        """The twistd plugins, the tap modules and dim/'s library import without a reactor."""
        self.assertEqual(self.imported(), "none")

    def test_the_check_sees_a_reactor(self) -> None:
        """A module that imports the global reactor is reported."""
        self.assertEqual(self.imported("import twisted.internet.reactor"), "reactor")


#: The functions under dim/ that may take the global reactor: the entry points that twistd or
#: a command line runs, which hand it to everything they build.
ENTRY_POINTS = frozenset({"makeService", "main"})


def global_reactor_users(source: str, filename: str = "<source>") -> list[str]:
    """Where ``source`` imports the global reactor outside an entry point, as
    ``function:line`` (``<module>:line`` at module level)."""
    found: list[str] = []

    def visit(node: ast.AST, function: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, child.name)
                continue
            imports_reactor = (
                isinstance(child, ast.ImportFrom) and child.module == "twisted.internet"
                and any(alias.name == "reactor" for alias in child.names)
            ) or (
                isinstance(child, ast.Import)
                and any(alias.name == "twisted.internet.reactor" for alias in child.names))
            if imports_reactor and function not in ENTRY_POINTS:
                found.append(f"{function}:{child.lineno}")
            visit(child, function)

    visit(ast.parse(source, filename), "<module>")
    return found


class ClockInjectedTests(unittest.TestCase):
    """Under dim/, only the entry points take the global reactor; the rest is handed a clock."""

    def test_only_entry_points_take_the_global_reactor(self) -> None:
        """No module, class or helper under dim/ imports the global reactor for itself."""
        root = Path(__file__).resolve().parent.parent / "dim"
        offenders = {str(path.relative_to(root)): users
                     for path in sorted(root.rglob("*.py"))
                     if (users := global_reactor_users(path.read_text(), str(path)))}
        self.assertEqual(offenders, {})

    def test_the_check_sees_a_fallback(self) -> None:
        """A default that falls back to the global reactor, or a module-level import, is
        reported; the same import in ``makeService`` or ``main`` is not."""
        source = (
            "from twisted.internet import reactor as r\n"
            "def connect(clock=None):\n"
            "    if clock is None:\n"
            "        from twisted.internet import reactor\n"
            "class Channel:\n"
            "    def lost(self):\n"
            "        import twisted.internet.reactor\n"
            "def makeService(options):\n"
            "    from twisted.internet import reactor\n"
            "def main():\n"
            "    from twisted.internet import reactor, stdio\n")
        self.assertEqual(global_reactor_users(source), ["<module>:1", "connect:4", "lost:7"])
