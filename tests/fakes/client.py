"""The client-side fixtures: a scripted gateway, a scripted node side, a session test case
and live-chat helpers."""
from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from treq.testing import StubTreq
from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Request

from dim import errors
from dim.client import events as E
from dim.client import session as S
from dim.client import chat as C
from dim.client.cache import MessageCache
from dim.client.gateway import GatewayClient
from dim.protocol import codec
from dim.protocol import frames as F

PASSWORD = "correct horse battery"
WAIT = 20.0


def client(*answers: tuple[int, Any]) -> tuple[GatewayClient, ScriptedGateway]:
    """A GatewayClient whose requests go to a ScriptedGateway with these answers."""
    resource = ScriptedGateway(*answers)
    return GatewayClient("http://gw.test/", StubTreq(resource)), resource


NODE1 = {"id": "n1", "host": "127.0.0.1", "port": 9000}


class EventRecorder:
    """Subscribes to a session (or ChatClient) and keeps every event, in order."""

    def __init__(self, source: E.EventSource) -> None:
        self.events: list[E.SessionEvent] = []
        self._waiters: list[tuple[Callable[[E.SessionEvent], bool], defer.Deferred[Any]]] = []
        source.subscribe(self._record)

    def _record(self, event: E.SessionEvent) -> None:
        self.events.append(event)
        for waiter in list(self._waiters):
            match, d = waiter
            if match(event):
                self._waiters.remove(waiter)
                d.callback(event)

    def of(self, kind: type) -> list[Any]:
        """Every recorded event of one class."""
        return [e for e in self.events if isinstance(e, kind)]

    def wait_for(self, match: Callable[[E.SessionEvent], bool], timeout: float | None = None,
                 clock: Any = None) -> defer.Deferred[Any]:
        """A Deferred firing with the next event ``match`` accepts (or a recorded one)."""
        for event in self.events:
            if match(event):
                return defer.succeed(event)
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiters.append((match, d))
        if timeout is not None:
            if clock is None:
                from twisted.internet import reactor as clock  # the real reactor, for live tests
            d.addTimeout(timeout, clock)
        return d


class NodeSide:
    """The node's end of one client connection: reads the client's frames, writes frames."""

    def __init__(self, reactor: MemoryReactorClock, index: int = -1) -> None:
        host, port, factory, _, _ = reactor.tcpClients[index]
        self.host, self.port = host, port
        self.transport = StringTransport()
        self.protocol = factory.buildProtocol(None)
        self.protocol.makeConnection(self.transport)
        self.decoder = codec.FrameDecoder(F.CLIENT_FRAME_TYPES)

    def received(self) -> list[F._Frame]:
        """The frames the client wrote since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return self.decoder.feed(data)  # type: ignore[return-value]

    def types(self) -> list[str]:
        """The types of the frames the client wrote since the last call."""
        return [F.frame_type(f) for f in self.received()]

    def send(self, *frames: F._Frame) -> None:
        """Deliver frames to the client in one read."""
        self.protocol.dataReceived(codec.encode_many(frames))

    def welcome(self, node: str = "n1", last_seq: int = 0, heartbeat: int = 30) -> None:
        """Read the client's hello and welcome it."""
        hello = self.received()
        assert hello and isinstance(hello[0], F.Hello), hello
        self.send(F.Welcome(user="alice", node=node, heartbeat=heartbeat, max_frame=65536,
                            last_seq=last_seq))

    def lose(self, why: str = "gone") -> None:
        """The TCP connection drops."""
        from twisted.internet.error import ConnectionLost
        self.protocol.connectionLost(Failure(ConnectionLost(why)))


def sending(session: S.ClientSession, to: str | None, body: str,
            **kw: Any) -> E.OutgoingMessage:
    """Send through ``session`` as a user interface does: the message, whose state the events
    tell (the send's Deferred is left to itself)."""
    id = session.new_id()
    session.send(to, body, id=id, **kw)
    return session.outgoing[id]


def msg(seq: int, sender: str = "bob", body: str | None = None, **kw: Any) -> F.Msg:
    """A ``msg`` frame to alice at inbox position ``seq``."""
    fields: dict[str, Any] = dict(mid=f"m{seq}", id=f"c{seq}", from_=sender, to="alice",
                                  ts=1_700_000_000_000 + seq, seq=seq, body=body or f"hello {seq}",
                                  kind="text")
    fields.update(kw)
    return F.Msg(**fields)


class SessionTestCase(unittest.TestCase):
    """Builds a session for alice on a MemoryReactorClock with a scripted gateway."""

    def make(self, answers: Iterable[Any] = (), rng: Callable[[], float] = lambda: 0.5,
             **kw: Any) -> tuple[S.ClientSession, MemoryReactorClock, RouteScript, EventRecorder]:
        """A session for alice, not started, with its reactor, gateway and event record."""
        reactor = MemoryReactorClock()
        gateway = RouteScript(answers)
        session = S.ClientSession(gateway, reactor, "alice", "tok", rng=rng, **kw)
        return session, reactor, gateway, EventRecorder(session)

    def connect(self, node: dict[str, Any] = NODE1, last_seq: int = 0, **kw: Any):  # type: ignore[no-untyped-def]
        """A session for alice, connected to ``node`` and welcomed; plus the node's side."""
        session, reactor, gateway, events = self.make(**kw)
        session.start(node)
        side = NodeSide(reactor)
        side.welcome(node["id"], last_seq=last_seq)
        return session, reactor, gateway, events, side


class LiveChat:
    """One user's ChatClient on the real reactor, with its events recorded."""

    def __init__(self, base_url: str, user: str, device: str = "test") -> None:
        self.user = user
        self.gateway = GatewayClient(base_url, request_options={"persistent": False, "timeout": 20})
        self.client = C.ChatClient(self.gateway, reactor, config=None, device=device,
                                   cache_factory=lambda url, name: MessageCache(":memory:", name))
        self.events = EventRecorder(self.client)

    def wait_for(self, kind: type, timeout: float = WAIT, **fields: Any) -> defer.Deferred[Any]:
        """The first event of class ``kind`` whose fields match (already seen, or coming)."""
        def match(e: Any) -> bool:
            return isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())
        return self.events.wait_for(match, timeout, reactor)

    def received(self) -> list[str]:
        """Bodies of the messages received, in the order they were reported."""
        return [e.entry.body for e in self.events.of(E.MessageReceived)]

    def stop(self) -> None:
        """Disconnect for good."""
        self.client.stop()


@defer.inlineCallbacks
def live_client(base_url: str, user: str, register: bool = True, device: str = "test"):
    """A connected LiveChat for ``user`` (registered first unless ``register`` is false)."""
    chat = LiveChat(base_url, user, device)
    try:
        if register:
            yield chat.client.register(user, PASSWORD)
        else:
            yield chat.client.login(user, PASSWORD)
        yield chat.wait_for(E.Connected)
    except BaseException as e:
        chat.stop()
        raise AssertionError(f"{user} did not connect ({e!r}); events: {chat.events.events}"
                             ) from e
    return chat


class _Anything:
    """Equal to any object whose named attributes have the given values."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def __eq__(self, other: object) -> bool:
        return all(getattr(other, k, None) == v for k, v in self.fields.items())


def png(width: int = 4, height: int = 4) -> bytes:
    """A small valid PNG (grey pixels), so the gateway recognises an image by its content."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
                                                              0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class ScriptedGateway(Resource):
    """Answers every request with the next (status, body) and records what was asked."""

    isLeaf = True

    def __init__(self, *answers: tuple[int, Any]) -> None:
        super().__init__()
        self.answers = list(answers)
        self.requests: list[dict[str, Any]] = []

    def render(self, request: Request) -> bytes:
        body = request.content.read()
        self.requests.append({
            "method": request.method.decode(), "path": request.path.decode(),
            "args": {k.decode(): [x.decode() for x in v] for k, v in request.args.items()},
            "auth": (request.getHeader("authorization") or ""),
            "json": json.loads(body) if body else None})
        status, answer = self.answers.pop(0)
        request.setResponseCode(status)
        request.setHeader("content-type", "application/json")
        return answer if isinstance(answer, bytes) else json.dumps(answer).encode()


class RouteScript:
    """A gateway stand-in: answers ``route`` from a list of nodes or errors, recording calls."""

    def __init__(self, answers: Iterable[Any] = ()) -> None:
        self.answers = list(answers)
        self.calls: list[list[str]] = []
        self.base_url = "http://gateway.test"
        self.token: str | None = "tok"

    def route(self, exclude: Iterable[str] = ()) -> defer.Deferred[dict[str, Any]]:
        """The next scripted answer: a node dict, or an exception to fail with."""
        self.calls.append(list(exclude))
        answer = self.answers.pop(0) if self.answers else errors.Unavailable("no node")
        if isinstance(answer, BaseException):
            return defer.fail(answer)
        return defer.succeed({"node": answer})
