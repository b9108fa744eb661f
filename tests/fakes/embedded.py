"""The embedded-DIM fixtures: test cases that run a real ``twistd -n dim`` per test, one
speaking the wire protocol, one driving the real client core."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import treq

from twisted.internet import defer
from twisted.trial import unittest

from tests.fakes.client import LiveChat, live_client
from tests.harness import EmbeddedDim, WireClient, register_and_login, sleep


class EmbeddedTestCase(unittest.TestCase):
    """Runs one embedded ``dim`` per test in a directory of its own."""

    timeout = 120
    heartbeat: int | None = None
    #: More command-line options for ``twistd dim``.
    extra: list[str] | None = None

    def setUp(self) -> None:
        self.dim = EmbeddedDim(Path(self.mktemp()).resolve(), heartbeat=self.heartbeat,
                               extra=self.extra)
        self.dim.start()
        self.addCleanup(self.dim.process.stop)
        self.clients: list[WireClient] = []

    def tearDown(self) -> defer.Deferred:
        return defer.gatherResults([c.close() for c in self.clients])

    @defer.inlineCallbacks
    def user(self, name: str, device: str | None = None):
        """Register and log in ``name``, connect to the node it was given; a WireClient."""
        login = yield register_and_login(self.dim.base, name)
        node = login["node"]
        c = yield WireClient.login(node["host"], node["port"], login["token"], device)
        c.token = login["token"]
        self.clients.append(c)
        return c

    @defer.inlineCallbacks
    def second_session(self, first: WireClient, device: str):
        """Another session of the same user, with the same token."""
        c = yield WireClient.login("127.0.0.1", self.dim.node_port, first.token, device)
        c.token = first.token
        self.clients.append(c)
        return c


class LiveChatTestCase(EmbeddedTestCase):
    """The embedded ``dim`` with the real client core: :meth:`chat` gives a connected
    LiveChat, stopped at the end of the test."""

    heartbeat = 2

    def setUp(self) -> None:
        super().setUp()
        self.chats: list[LiveChat] = []

    def tearDown(self) -> defer.Deferred:
        for chat in self.chats:
            chat.stop()
        return super().tearDown()

    @defer.inlineCallbacks
    def chat(self, user: str, register: bool = True, device: str = "test"):  # type: ignore[no-untyped-def]
        """A connected LiveChat, stopped at the end of the test."""
        c = yield live_client(self.dim.base, user, register=register, device=device)
        self.chats.append(c)
        return c

    @defer.inlineCallbacks
    def until(self, check: Any, what: str, timeout: float = 15.0):  # type: ignore[no-untyped-def]
        """Poll ``check()`` until it is true (roster refetches and read echoes are
        asynchronous)."""
        for _ in range(int(timeout / 0.05)):
            if check():
                return
            yield sleep(0.05)
        raise AssertionError(f"not within {timeout} s: {what}")


class FileTransfers:
    """Upload and download over real HTTP, for embedded test cases (``self.dim``)."""

    dim: Any

    @defer.inlineCallbacks
    def upload(self, token: str, name: str, data: bytes, mime: str):
        """POST /v1/files; the answer's ``file`` (fails the test unless 201)."""
        resp = yield treq.post(f"{self.dim.base}/v1/files?name={name}", data=data,
                               headers={"Authorization": f"Bearer {token}",
                                        "Content-Type": mime}, persistent=False)
        body = yield resp.json()
        self.assertEqual(resp.code, 201, body)  # type: ignore[attr-defined]
        return body["file"]

    @defer.inlineCallbacks
    def download(self, token: str, file_id: str, headers: dict | None = None):
        """GET /v1/files/ID: the response and its content."""
        resp = yield treq.get(f"{self.dim.base}/v1/files/{file_id}",
                              headers={"Authorization": f"Bearer {token}", **(headers or {})},
                              persistent=False)
        content = yield resp.content()
        return resp, content
