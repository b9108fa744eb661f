"""End-to-end test kit: real processes, real TCP, and a raw client that speaks only the contract.

:class:`DimProcess` runs a twistd plugin (``dim``, ``dim-node``, ``dim-gateway``) as a child
process and waits until it answers.  :class:`WireClient` is a deliberately small client built
from the contract alone (not from :mod:`dim.client`), so these tests check what other people's
clients would see.  These tests use the global reactor: they talk to real sockets.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import treq
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sleep(seconds: float) -> defer.Deferred[None]:
    """A Deferred that fires after ``seconds`` on the real reactor."""
    return task.deferLater(reactor, seconds, lambda: None)


class DimProcess:
    """A twistd plugin running as a child process, with its log kept for failures."""

    def __init__(self, plugin: str, args: list[str], workdir: Path,
                 env: dict[str, str] | None = None, name: str | None = None) -> None:
        self.plugin, self.args, self.workdir = plugin, args, workdir
        self.name = name or plugin
        self.env = {**os.environ, "DIM_SECRET": "end-to-end-test-secret-of-at-least-32-bytes",
                    **(env or {})}
        self.log = workdir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process (it logs to ``self.log``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n",
               "--pidfile=",
               "--logfile", str(self.log), self.plugin, *self.args]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send a signal (kill -9 by default) and reap the process."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status."""
        self.kill(signal.SIGTERM)
        return self.proc.returncode if self.proc else None

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 60) -> str:
        """The end of the process log, for failure messages."""
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


def wait_for_port(host: str, port: int, timeout: float = 30.0,
                  process: DimProcess | None = None) -> None:
    """Block until something accepts TCP connections on host:port (before the test starts)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and not process.alive:
            raise AssertionError(f"{process.name} exited:\n{process.log_tail()}")
        with socket.socket() as s:
            s.settimeout(0.5)
            try:
                s.connect((host, port))
                return
            except OSError:
                time.sleep(0.05)
    tail = process.log_tail() if process else ""
    raise AssertionError(f"nothing listens on {host}:{port} after {timeout}s\n{tail}")


class EmbeddedDim:
    """``twistd -n dim`` on free ports with its data in a test directory."""

    def __init__(self, workdir: Path, heartbeat: int | None = None,
                 extra: list[str] | None = None) -> None:
        self.http_port, self.node_port = free_port(), free_port()
        self.data = workdir / "data"
        args = ["--gateway", f"tcp:{self.http_port}:interface=127.0.0.1",
                "--node", f"tcp:{self.node_port}:interface=127.0.0.1", "--data", str(self.data)]
        if heartbeat is not None:
            args += ["--heartbeat", str(heartbeat)]
        self.process = DimProcess("dim", args + (extra or []), workdir)
        self.base = f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        """Start and wait until both the gateway and the node accept connections."""
        self.process.start()
        wait_for_port("127.0.0.1", self.http_port, process=self.process)
        wait_for_port("127.0.0.1", self.node_port, process=self.process)


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
