"""Fixtures shared by the node tests: a fake client over StringTransport, a node on the
memory store with a fake authenticator, and nodes joined by the in-memory forwarder."""
from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from dim import errors
from dim.cluster.interface import ISessionRegistry
from dim.cluster.local import ForwarderHub, LocalSessionRegistry, MemoryForwarder
from dim.node.connection import ClientConnection
from dim.node.delivery import NodeCore
from dim.protocol import codec
from dim.protocol import frames as F
from dim.store.memory import MemoryStore

#: The clock starts at a realistic epoch so timestamps look like timestamps.
EPOCH = 1_700_000_000.0
USERS = ("alice", "bob", "carol")


def authenticate(token: str) -> Deferred[str]:
    """The fake authenticator: token ``t-NAME`` is user NAME; anything else is refused."""
    if not token.startswith("t-"):
        raise errors.Unauthorized("invalid token")
    return succeed(token[2:])


class FakeClient:
    """A client end of a ClientConnection over a StringTransport."""

    def __init__(self, handler: Any, clock: Clock, max_frame: int = F.DEFAULT_MAX_FRAME) -> None:
        self.conn = ClientConnection(handler, clock, max_frame)
        self.transport = StringTransport()
        self.conn.makeConnection(self.transport)
        self.decoder = codec.FrameDecoder(F.SERVER_FRAME_TYPES, max_frame=1 << 30)

    def send(self, frame: F._Frame | dict[str, Any] | bytes) -> None:
        """Write a frame (typed, a dict, or raw bytes) to the node."""
        if isinstance(frame, bytes):
            data = frame
        elif isinstance(frame, dict):
            data = codec.encode_payload(frame)
        else:
            data = codec.encode(frame)
        self.conn.dataReceived(data)
        self.turn()

    def turn(self) -> None:
        """The reactor's next turn for the node: what the frames gave its store batch goes
        to the store, then what is to go to other nodes is forwarded."""
        handler = self.conn.handler
        batch = getattr(handler, "batch", None)
        if batch is not None:
            batch.flush()
        fanout = getattr(handler, "fanout", None)
        if fanout is not None:
            fanout.flush()

    def received(self) -> list[Any]:
        """The frames the node wrote since the last call."""
        data = self.transport.value()
        self.transport.clear()
        return self.decoder.feed(data)

    def of_type(self, cls: type) -> list[Any]:
        """The frames of one class the node wrote since the last call (others dropped)."""
        return [f for f in self.received() if isinstance(f, cls)]

    @property
    def closing(self) -> bool:
        """Whether the node closed (or is closing) this connection."""
        return bool(self.transport.disconnecting)

    def lose(self) -> None:
        """Drop the connection from the client's side (then the reactor turns)."""
        self.conn.connectionLost(Failure(ConnectionDone()))
        self.turn()


class Node:
    """A NodeCore on a memory store with users alice, bob and carol; alone in its process
    unless given a ``forwarder`` of a hub joining it to others."""

    def __init__(self, node_id: str = "n1", clock: Clock | None = None,
                 store: MemoryStore | None = None,
                 sessions: LocalSessionRegistry | None = None,
                 forwarder: MemoryForwarder | None = None, **kwargs: Any) -> None:
        self.clock = clock if clock is not None else Clock()
        if clock is None:
            self.clock.advance(EPOCH)
        if store is None:
            store = MemoryStore()
            for user in USERS:
                store.create_user(user, "hash", 0)
        self.store = store
        self.sessions = sessions if sessions is not None else LocalSessionRegistry()
        if forwarder is None:
            forwarder = ForwarderHub().forwarder(node_id)
        self.forwarder = forwarder
        self.core = NodeCore(node_id, store, self.sessions, authenticate, self.clock,
                             forwarder=forwarder, **kwargs)

    def connect(self) -> FakeClient:
        """A new connection, no hello yet."""
        return FakeClient(self.core, self.clock, self.core.max_frame)

    def login(self, user: str) -> FakeClient:
        """A new connection that said hello and got welcome."""
        client = self.connect()
        client.send(F.Hello(v=1, token="t-" + user))
        got = client.received()
        assert len(got) == 1 and isinstance(got[0], F.Welcome), got
        return client


def envelope_json(payload: bytes) -> dict[str, Any]:
    """An envelope's bytes as plain JSON, for assertions: ``{"to": {user: [[type, seq,
    frame], ...]}, "skip": ...}``."""
    return json.loads(payload)


@implementer(ISessionRegistry)
class RemoteLikeRegistry:
    """A session registry answering only through Deferreds, as Redis does; it records every
    locate and fails them while ``failing`` is set."""

    def __init__(self) -> None:
        self.inner = LocalSessionRegistry()
        self.locates: list[list[str]] = []
        self.failing = False

    def add(self, user: str, session: str, node: str) -> Deferred[bool]:
        return self.inner.add(user, session, node)

    def remove(self, user: str, session: str) -> Deferred[bool]:
        return self.inner.remove(user, session)

    def locate(self, users: list[str]) -> Deferred[Any]:
        self.locates.append(list(users))
        if self.failing:
            return fail(errors.Unavailable("the registry does not answer"))
        return self.inner.locate(users)

    def online(self, user: str) -> Deferred[bool]:
        return self.inner.online(user)

    def refresh(self, node: str) -> Deferred[None]:
        return self.inner.refresh(node)

    def drop_node(self, node: str) -> Deferred[Any]:
        return self.inner.drop_node(node)


def joined_nodes(store: MemoryStore, sessions: Any,
                 count: int = 2) -> tuple[Clock, ForwarderHub, list[Node]]:
    """Nodes n1, n2, ... sharing one clock (set to EPOCH), a store and a session registry,
    joined by a ForwarderHub."""
    clock = Clock()
    clock.advance(EPOCH)
    hub = ForwarderHub()
    nodes = [Node(f"n{i}", clock, store, sessions, hub.forwarder(f"n{i}"))
             for i in range(1, count + 1)]
    return clock, hub, nodes


def contacts_store() -> MemoryStore:
    """A memory store with four users: alice and bob are contacts, alice asked carol."""
    store = MemoryStore()
    for user in ("alice", "bob", "carol", "dave"):
        store.create_user(user, "hash", 0)
    store.request_contact("alice", "bob")
    store.request_contact("bob", "alice")
    store.request_contact("alice", "carol")
    return store


def drain(*clients: FakeClient) -> None:
    """Forget what the clients were sent so far (presence of each other's logins)."""
    for client in clients:
        client.received()
