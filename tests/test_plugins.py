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
