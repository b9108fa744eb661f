"""The node on real loopback TCP: a raw client from the contract alone talks to NodeService.

These tests use the global reactor because they use real sockets; everything else about the
node is tested on StringTransport and Clock.
"""
from __future__ import annotations

import socket
import struct
from typing import Any

import msgspec
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.trial.unittest import TestCase

from dim.cluster.local import ForwarderHub, LocalSessionRegistry
from dim.node.delivery import NodeCore
from dim.node.service import NodeService
from dim.store.memory import MemoryStore
from tests.fakes.node import USERS, authenticate


class RawClient(protocol.Protocol):
    """A client written from the wire contract: 4-byte length, JSON object."""

    def __init__(self) -> None:
        self.buffer = b""
        self.frames: list[dict[str, Any]] = []
        self.waiting: list[tuple[str, defer.Deferred[dict[str, Any]]]] = []
        self.lost: defer.Deferred[None] = defer.Deferred()

    def send(self, obj: dict[str, Any]) -> None:
        payload = msgspec.json.encode(obj)
        self.transport.write(struct.pack(">I", len(payload)) + payload)

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 4:
            (n,) = struct.unpack(">I", self.buffer[:4])
            if len(self.buffer) < 4 + n:
                break
            frame = msgspec.json.decode(self.buffer[4:4 + n])
            self.buffer = self.buffer[4 + n:]
            self.frames.append(frame)
            self._check()

    def _check(self) -> None:
        for i, (ftype, d) in enumerate(self.waiting):
            for j, frame in enumerate(self.frames):
                if frame["type"] == ftype:
                    del self.frames[j]
                    del self.waiting[i]
                    d.callback(frame)
                    return self._check()

    def next(self, ftype: str) -> defer.Deferred[dict[str, Any]]:
        """Fires with the next frame of a type (within 5 s)."""
        d: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self.waiting.append((ftype, d))
        self._check()
        return d.addTimeout(5, reactor)

    def connectionLost(self, reason: Any = None) -> None:
        self.lost.callback(None)


class LoopbackTests(TestCase):
    """NodeService over real TCP on 127.0.0.1."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        store = MemoryStore()
        for user in USERS:
            yield store.create_user(user, "hash", 0)
        self.sessions = LocalSessionRegistry()
        self.core = NodeCore("n1", store, self.sessions, authenticate, reactor,
                             forwarder=ForwarderHub().forwarder("n1"), shutdown_grace=0.1,
                             drain_timeout=2.0)
        self.service = NodeService(self.core, "tcp:0:interface=127.0.0.1", reactor)
        self.service.startService()
        port = yield self.service.listening()
        self.port = port.getHost().port
        self.clients: list[RawClient] = []

    @defer.inlineCallbacks
    def tearDown(self) -> Any:
        if self.service.running:
            yield self.service.stopService()
        for c in self.clients:
            if c.transport is not None:
                c.transport.abortConnection()
            if not c.lost.called:
                yield c.lost

    @defer.inlineCallbacks
    def login(self, user: str) -> Any:
        client = RawClient()
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", self.port).connect(
            protocol.Factory.forProtocol(lambda: client))
        self.clients.append(client)
        client.send({"type": "hello", "v": 1, "token": "t-" + user})
        welcome = yield client.next("welcome")
        self.assertEqual(welcome["user"], user)
        return client

    @defer.inlineCallbacks
    def test_chain(self) -> Any:
        """send, sent, msg, ack and delivered over real sockets."""
        alice = yield self.login("alice")
        bob = yield self.login("bob")
        self.assertEqual(self.service.connection_count(), 2)
        alice.send({"type": "send", "id": "m1", "to": "bob", "body": "hi"})
        sent = yield alice.next("sent")
        msg = yield bob.next("msg")
        self.assertEqual((msg["mid"], msg["from"], msg["body"]), (sent["mid"], "alice", "hi"))
        bob.send({"type": "ack", "seq": msg["seq"]})
        delivered = yield alice.next("delivered")
        self.assertEqual(delivered, {"type": "delivered", "id": "m1", "mid": sent["mid"],
                                     "by": "bob"})

    @defer.inlineCallbacks
    def test_no_delay(self) -> Any:
        """Accepted connections have TCP_NODELAY set."""
        yield self.login("alice")
        [conn] = list(self.core.connections)
        sock = conn.transport.getHandle()
        self.assertTrue(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    @defer.inlineCallbacks
    def test_stop_says_goaway(self) -> Any:
        """stopService sends goaway, closes the connection and fires."""
        alice = yield self.login("alice")
        stopped = self.service.stopService()
        goaway = yield alice.next("goaway")
        self.assertEqual(goaway["reason"], "shutdown")
        yield alice.lost
        yield stopped
        self.assertEqual(self.service.connection_count(), 0)
        self.assertEqual(len(self.sessions), 0)
