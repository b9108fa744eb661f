"""The twistd plugins are found by the installed twistd, wherever it is started from."""
from __future__ import annotations

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
