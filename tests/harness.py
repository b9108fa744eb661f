"""End-to-end test kit: real processes, real TCP, and a raw client that speaks only the contract.

:func:`twistd` and :class:`EmbeddedDim` are DIM's processes (:mod:`dim.launch`) with the tests'
secret.  :class:`WireClient` is a deliberately small client built from the contract alone
(not from :mod:`dim.client`), so these tests check what other people's clients would see.
These tests use the global reactor: they talk to real sockets.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import treq
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint

from dim import launch
from dim.launch import DimProcess

REPO = Path(__file__).resolve().parent.parent


def sleep(seconds: float) -> defer.Deferred[None]:
    """A Deferred that fires after ``seconds`` on the real reactor."""
    return task.deferLater(reactor, seconds, lambda: None)


#: The DIM_SECRET of the processes the end-to-end tests start.
SECRET_ENV = {"DIM_SECRET": "end-to-end-test-secret-of-at-least-32-bytes"}


def twistd(plugin: str, args: list[str], workdir: Path, env: dict[str, str] | None = None,
           name: str | None = None) -> DimProcess:
    """``twistd -n PLUGIN ARGS`` with the tests' secret (``env`` adds to or overrides it),
    logging to ``workdir/NAME.log``; not started yet."""
    name = name or plugin
    return DimProcess.twistd(plugin, args, workdir / f"{name}.log", name=name,
                             env={**SECRET_ENV, **(env or {})})


class EmbeddedDim(launch.EmbeddedDim):
    """``twistd -n dim`` on free ports with its data in a test directory, with the tests'
    secret."""

    def __init__(self, workdir: Path, heartbeat: int | None = None,
                 extra: list[str] | None = None) -> None:
        super().__init__(workdir, heartbeat=heartbeat, extra=extra or (), env=SECRET_ENV)


class HttpResult:
    """An HTTP answer: status code and decoded JSON body."""

    def __init__(self, code: int, body: Any, headers: Any) -> None:
        self.code, self.body, self.headers = code, body, headers

    def __repr__(self) -> str:
        return f"HttpResult({self.code}, {self.body!r})"


@defer.inlineCallbacks
def http(method: str, url: str, body: Any = None, token: str | None = None):
    """One JSON HTTP call to a gateway; returns an :class:`HttpResult`."""
    headers = {b"Content-Type": [b"application/json"]}
    if token:
        headers[b"Authorization"] = [b"Bearer " + token.encode()]
    data = json.dumps(body).encode() if body is not None else None
    resp = yield treq.request(method, url, data=data, headers=headers, timeout=20,
                              persistent=False)
    content = yield resp.content()
    try:
        parsed = json.loads(content) if content else None
    except ValueError:
        parsed = content
    return HttpResult(resp.code, parsed, resp.headers)


@defer.inlineCallbacks
def register_and_login(base: str, user: str, password: str = "correct horse battery"):
    """Register ``user`` (ignoring 409) and log in; returns the login body."""
    r = yield http("POST", f"{base}/v1/register", {"user": user, "password": password})
    assert r.code in (201, 409), r
    r = yield http("POST", f"{base}/v1/login", {"user": user, "password": password})
    assert r.code == 200, r
    return r.body


class _WireProtocol(protocol.Protocol):
    def __init__(self, owner: WireClient) -> None:
        self.owner = owner
        self.buf = b""

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 4:
            (n,) = struct.unpack(">I", self.buf[:4])
            if len(self.buf) < 4 + n:
                break
            payload, self.buf = self.buf[4:4 + n], self.buf[4 + n:]
            self.owner._received(json.loads(payload))

    def connectionLost(self, reason: Any = None) -> None:
        self.owner._lost()


class WireClient:
    """A raw contract client: writes frames, and waits for frames of a given type."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []
        self._waiters: list[tuple[Any, defer.Deferred[dict[str, Any]]]] = []
        self._lost_d: defer.Deferred[None] = defer.Deferred()
        self.connected = False
        self.proto: _WireProtocol | None = None

    @classmethod
    @defer.inlineCallbacks
    def connect(cls, host: str, port: int):
        """Open a TCP connection to a node."""
        self = cls()
        self.proto = yield TCP4ClientEndpoint(reactor, host, port, timeout=10).connect(
            protocol.Factory.forProtocol(lambda: _WireProtocol(self)))
        self.connected = True
        return self

    @classmethod
    @defer.inlineCallbacks
    def login(cls, host: str, port: int, token: str, device: str | None = None):
        """Connect, send hello, and wait for welcome (kept in ``self.welcome``)."""
        self = yield cls.connect(host, port)
        hello = {"type": "hello", "v": 1, "token": token}
        if device:
            hello["device"] = device
        self.send(hello)
        self.welcome = yield self.expect("welcome")
        return self

    def send(self, frame: dict[str, Any]) -> None:
        """Write one frame."""
        self.write_raw(json.dumps(frame).encode())

    def write_raw(self, payload: bytes, length: int | None = None) -> None:
        """Write a payload with a length prefix (``length`` overrides the true length)."""
        n = len(payload) if length is None else length
        self.proto.transport.write(struct.pack(">I", n) + payload)

    def _received(self, frame: dict[str, Any]) -> None:
        for i, (match, d) in enumerate(self._waiters):
            if match(frame):
                del self._waiters[i]
                d.callback(frame)
                return
        self.frames.append(frame)

    def _lost(self) -> None:
        self.connected = False
        self._lost_d.callback(None)

    def expect(self, type_: str, timeout: float = 10.0, **fields: Any) -> defer.Deferred:
        """The first frame (already received or coming) of ``type_`` with these field values."""
        def match(f: dict[str, Any]) -> bool:
            return f.get("type") == type_ and all(f.get(k) == v for k, v in fields.items())
        for i, f in enumerate(self.frames):
            if match(f):
                del self.frames[i]
                return defer.succeed(f)
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self._waiters.append((match, d))
        def timed_out(failure):
            failure.trap(defer.TimeoutError)
            raise AssertionError(f"no {type_} {fields} within {timeout}s; got {self.frames}")
        return d.addTimeout(timeout, reactor).addErrback(timed_out)

    @defer.inlineCallbacks
    def expect_closed(self, timeout: float = 10.0):
        """Wait until the node closes the connection."""
        if self.connected:
            yield self._lost_d.addTimeout(timeout, reactor)

    def take(self, type_: str) -> list[dict[str, Any]]:
        """Remove and return every buffered frame of ``type_``."""
        got = [f for f in self.frames if f.get("type") == type_]
        self.frames = [f for f in self.frames if f.get("type") != type_]
        return got

    def close(self) -> defer.Deferred[None]:
        """Close the connection and wait until it is gone."""
        if self.connected and self.proto is not None:
            self.proto.transport.loseConnection()
            return self._lost_d
        return defer.succeed(None)
