"""The gateway fixtures: a test case on the memory store with an in-memory HTTP client."""
from __future__ import annotations

import json
import os
from typing import Any

from treq.testing import StubTreq
from twisted.internet import _producer_helpers, defer, task
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from dim.cluster.interface import NodeInfo
from dim.cluster.local import LocalNodeRegistry, LocalSessionRegistry
from dim.files import FileStorage
from dim.gateway.app import Gateway
from dim.protocol import frames as F
from dim.store.memory import MemoryStore
from dim.tokens import TokenAuthority
from tests.fakes.tokens import SECRET, fast_hasher

NOW = 1_700_000_000


class GatewayTestCase(SynchronousTestCase):
    """A gateway over a MemoryStore, local registries with two nodes, a Clock, file storage
    in a temporary directory and a recording pusher."""

    routing = "round_robin"
    max_file_size = 20 * 1024 * 1024
    max_group_members = 500

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(NOW)
        self.store = MemoryStore()
        self.tokens = TokenAuthority(SECRET, self.store, ttl=3600, clock=self.clock)
        self.passwords, self.pool = fast_hasher()
        self.nodes = LocalNodeRegistry([
            NodeInfo(id="node-a", host="10.0.0.1", port=7001, connections=3),
            NodeInfo(id="node-b", host="10.0.0.2", port=7002, connections=5)])
        self.sessions = LocalSessionRegistry()
        self.files = FileStorage(self.mktemp())
        self.pusher = RecordingPusher()
        self.gateway = Gateway(self.store, self.tokens, self.passwords, self.nodes,
                               self.sessions, routing=self.routing, clock=self.clock,
                               files=self.files, max_file_size=self.max_file_size,
                               max_group_members=self.max_group_members, pusher=self.pusher)
        self.http = StubTreq(self.gateway.resource())
        # twisted.web drives pull producers (file downloads) with the global cooperator,
        # which runs on the global reactor; here the test's clock drives them instead.
        cooperator = task.Cooperator(scheduler=lambda f: self.clock.callLater(0, f))
        self.patch(_producer_helpers, "cooperate", cooperator.cooperate)
        self.addCleanup(cooperator.stop)

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             raw: bytes | None = None, headers: dict[str, str] | None = None) -> Answer:
        """Make one request and return its answer."""
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (
            json.dumps(body).encode() if body is not None else None)
        if data is not None:
            hdrs.setdefault("Content-Type", "application/json")
        d = self.http.request(method, BASE + path, data=data, headers=hdrs)
        response = self.successResultOf(self.flushed(d))
        content = self.successResultOf(self.flushed(response.content()))
        return Answer(response.code, response.headers, content, response.length)

    def flushed(self, d: defer.Deferred[Any], rounds: int = 10000) -> defer.Deferred[Any]:
        """Pump data between client and gateway until ``d`` fires (answers produced a piece
        at a time, like file downloads, take several rounds)."""
        fired: list[bool] = []
        d.addBoth(lambda r: (fired.append(True), r)[1])
        for _ in range(rounds):
            self.http.flush()
            self.clock.advance(0)
            if fired:
                break
        return d

    def assertError(self, answer: Answer, status: int, code: str) -> None:
        """The answer is an error of the contract's shape with this status and code."""
        self.assertEqual(answer.status, status, answer.raw)
        self.assertEqual(answer.content_type, "application/json")
        self.assertEqual(set(answer.json), {"error"})
        self.assertEqual(answer.json["error"]["code"], code)
        self.assertIsInstance(answer.json["error"]["message"], str)
        self.assertTrue(answer.json["error"]["message"])

    def register(self, user: str = "alice", password: str = "password1") -> Answer:
        """Register a user."""
        return self.call("POST", "/v1/register", {"user": user, "password": password})

    def login(self, user: str = "alice", password: str = "password1") -> str:
        """Register (if needed) and log in; the token."""
        self.register(user, password)
        answer = self.call("POST", "/v1/login", {"user": user, "password": password})
        self.assertEqual(answer.status, 200, answer.raw)
        return answer.json["token"]


class FilesTestCase(GatewayTestCase):
    """Helpers for uploads and downloads through StubTreq."""

    def upload_answer(self, token: str | None, data: bytes, name: str | None = "f.bin",
                      mime: str | None = "application/octet-stream") -> Any:
        """POST /v1/files with these bytes; the answer."""
        path = "/v1/files" + (f"?name={name}" if name is not None else "")
        headers = {"Content-Type": mime} if mime is not None else {}
        return self.call("POST", path, raw=data, token=token, headers=headers)

    def upload(self, token: str, data: bytes, name: str = "f.bin",
               mime: str = "application/octet-stream") -> dict[str, Any]:
        """Upload; the file dict of the 201 answer."""
        answer = self.upload_answer(token, data, name, mime)
        self.assertEqual(answer.status, 201, answer.raw)
        return answer.json["file"]

    def download(self, token: str | None, file_id: str,
                 headers: dict[str, str] | None = None) -> Any:
        """GET /v1/files/ID; the answer."""
        return self.call("GET", f"/v1/files/{file_id}", token=token, headers=headers)

    def header(self, answer: Any, name: str) -> str | None:
        """One header of an answer, or None."""
        values = answer.headers.getRawHeaders(name.encode())
        return values[0].decode() if values else None

    def stored(self) -> list[str]:
        """The names in the storage directory (stored files and partial ones)."""
        return sorted(os.listdir(self.files.directory))


def http_request(head: str, body: bytes = b"") -> bytes:
    """Raw HTTP/1.1 request bytes: ``head`` lines joined by CRLF, then the body."""
    return head.replace("\n", "\r\n").encode() + b"\r\n\r\n" + body


class StreamingTestCase(FilesTestCase):
    """``gateway.site()`` driven over a StringTransport with a Clock."""

    max_file_size = 1000

    def setUp(self) -> None:
        super().setUp()
        self.token = self.login()
        self.site_clock = Clock()
        self.site = self.gateway.site(reactor=self.site_clock)
        self.requests: list[Any] = []
        factory = self.site.requestFactory

        def recording(channel: Any, *queued: Any) -> Any:
            request = factory(channel)
            self.requests.append(request)
            return request

        self.site.requestFactory = recording
        self.channel = self.site.buildProtocol(None)
        self.transport = StringTransport()
        self.channel.makeConnection(self.transport)
        self.lost = False
        self.addCleanup(self.lose)

    def lose(self) -> None:
        """The client's connection goes away (once)."""
        if not self.lost:
            self.lost = True
            self.channel.connectionLost(Failure(ConnectionDone()))

    def head(self, length: int | None, extra: str = "", token: str | None = None,
             path: str = "/v1/files?name=a.bin") -> str:
        """The head of an upload request: a Content-Length, or chunked when None."""
        lines = [f"POST {path} HTTP/1.1", "Host: gateway.test",
                 f"Authorization: Bearer {token or self.token}"]
        lines.append(f"Content-Length: {length}" if length is not None
                     else "Transfer-Encoding: chunked")
        return "\n".join(lines) + extra

    def answer(self) -> tuple[int, dict[str, str], Any]:
        """The status, headers and JSON body written so far."""
        raw = self.transport.value()
        head, _, body = raw.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        headers = {k.lower(): v for k, v in headers.items()}
        if headers.get("transfer-encoding") == "chunked":
            body = dechunk(body)
        return int(lines[0].split()[1]), headers, json.loads(body) if body else None


BASE = "http://gateway.test"


class Answer:
    """One HTTP answer: status, headers and the decoded JSON body (None if not JSON)."""

    def __init__(self, status: int, headers: Any, raw: bytes, length: Any = None) -> None:
        self.status, self.headers, self.raw = status, headers, raw
        #: The Content-Length the client read (its HTTP parser keeps it out of ``headers``).
        self.length = length
        try:
            self.json: Any = json.loads(raw)
        except ValueError:
            self.json = None

    @property
    def content_type(self) -> str:
        """The Content-Type header."""
        return self.headers.getRawHeaders(b"content-type", [b""])[0].decode()


class RecordingPusher:
    """An IPusher that records every push: ``pushes`` is the list of targets dicts, each
    frame as the JSON object the wire carries."""

    def __init__(self) -> None:
        self.pushes: list[dict[str, list[dict[str, Any]]]] = []

    def push(self, targets: dict[str, list[F._Frame]]) -> defer.Deferred[None]:
        """Record the frames (typed frames only), as handed over at once."""
        self.pushes.append({user: [f.to_dict() for f in frames]
                            for user, frames in targets.items()})
        return defer.succeed(None)

    def frames(self, user: str) -> list[dict[str, Any]]:
        """Every frame pushed to ``user``, in order."""
        return [f for targets in self.pushes for f in targets.get(user, [])]

    def clear(self) -> None:
        """Forget what was pushed so far."""
        self.pushes.clear()


def dechunk(raw: bytes) -> bytes:
    """The body of a chunked transfer encoding (as far as it was written)."""
    body = b""
    while raw:
        size, _, raw = raw.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        body, raw = body + raw[:n], raw[n + 2:]
    return body
