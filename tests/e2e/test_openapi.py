"""schemathesis against a real ``twistd -n dim``: generated requests from the gateway's own
OpenAPI description must never get a 5xx answer."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from twisted.internet import defer, threads
from twisted.trial import unittest

from tests.harness import EmbeddedDim, http, register_and_login

#: Test cases per operation and phase; bounded so the run takes well under a minute.
MAX_EXAMPLES = 8


def schemathesis(base: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    """Run the schemathesis CLI against the gateway at ``base``, checking for 5xx only."""
    argv = [sys.executable, "-m", "schemathesis.cli", "run", f"{base}/v1/openapi.json",
            "-H", f"Authorization: Bearer {token}", "--checks", "not_a_server_error",
            "--max-examples", str(MAX_EXAMPLES), "--seed", "15", "--workers", "1",
            "--generation-database", "none", "--no-color", "--request-timeout", "10",
            *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=240)


class SchemathesisTests(unittest.TestCase):
    """The gateway answers everything schemathesis generates from its description."""

    timeout = 300

    def setUp(self) -> None:
        self.dim = EmbeddedDim(Path(self.mktemp()).resolve())
        self.dim.start()
        self.addCleanup(self.dim.process.stop)

    @defer.inlineCallbacks
    def test_no_server_errors(self):
        """Every operation (logout last, as it revokes the token) gets no 5xx, and the
        process logs no traceback."""
        answer = yield http("GET", f"{self.dim.base}/v1/openapi.json")
        self.assertEqual(answer.code, 200)
        login = yield register_and_login(self.dim.base, "schemathesis")
        result = yield threads.deferToThread(schemathesis, self.dim.base, login["token"],
                                             "--exclude-path", "/v1/logout")
        self.assertEqual(result.returncode, 0, result.stdout[-4000:] + result.stderr[-2000:])
        self.assertIn("Tested: 25", result.stdout)
        result = yield threads.deferToThread(schemathesis, self.dim.base, login["token"],
                                             "--include-path", "/v1/logout")
        self.assertEqual(result.returncode, 0, result.stdout[-4000:] + result.stderr[-2000:])
        self.assertNotIn("Traceback", self.dim.process.log_tail(100000))
