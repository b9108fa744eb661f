"""The node's part-2 rules on the real SQLite store: groups, files, read marks, presence,
typing.  The store answers from its writer thread, so these tests run on the reactor and
wait for frames; the node's own timers run on a Clock that is never advanced."""
from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.trial import unittest

from dim.cluster.local import ForwarderHub, LocalSessionRegistry
from dim.node.delivery import NodeCore
from dim.protocol import frames as F
from dim.store.interface import FileRecord
from dim.store.sqlite import SQLiteStore
from tests.fakes.node import EPOCH, FakeClient, authenticate

USERS = ("alice", "bob", "carol", "dave")


class SQLiteNodeTests(unittest.TestCase):
    """Group, file, read, presence and typing flows with the SQLite store behind the node."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        path = os.path.abspath(self.mktemp() + ".db")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.store = SQLiteStore(path, reactor)
        self.addCleanup(self.store.close)
        for user in USERS:
            yield self.store.create_user(user, "hash", 0)
        yield self.store.request_contact("alice", "bob")
        yield self.store.request_contact("bob", "alice")
        self.group = yield self.store.create_group("alice", "team", ["bob", "carol"], 0)
        yield self.store.add_file(FileRecord(id="f1", owner="alice", name="a.png", size=3,
                                             mime="image/png", sha256="0" * 64, ts=0))
        self.clock = Clock()
        self.clock.advance(EPOCH)
        self.core = NodeCore("n1", self.store, LocalSessionRegistry(), authenticate,
                             self.clock, forwarder=ForwarderHub().forwarder("n1"))
        self.clients: list[FakeClient] = []
        self.addCleanup(self._close_all)

    def _close_all(self) -> None:
        for client in self.clients:
            client.lose()

    async def frames(self, client: FakeClient, n: int, kind: type | None = None,
                     timeout: float = 5.0) -> list[Any]:
        """Wait until ``client`` has been sent ``n`` frames (of ``kind``, others dropped)."""
        got: list[Any] = []
        waited = 0.0
        while len(got) < n:
            got += [f for f in client.received() if kind is None or isinstance(f, kind)]
            if len(got) >= n:
                break
            if waited > timeout:
                self.fail(f"only {got!r} of {n} frames arrived")
            await task.deferLater(reactor, 0.005, lambda: None)
            self.clock.advance(0)  # the node's reactor turns, on its own clock
            waited += 0.005
        return got

    async def login(self, user: str) -> FakeClient:
        """A welcomed session of ``user``."""
        client = FakeClient(self.core, self.clock)
        self.clients.append(client)
        client.send(F.Hello(v=1, token="t-" + user))
        await self.frames(client, 1, F.Welcome)
        return client

    async def settle(self) -> None:
        """Let the store answer what is in flight."""
        for _ in range(5):
            await task.deferLater(reactor, 0.02, lambda: None)

    async def test_group_send_read_and_presence(self) -> None:
        """Presence on login, a group message at each member's seq, delivered and read per
        member, and sync showing the marks."""
        bob = await self.login("bob")
        alice = await self.login("alice")
        self.assertEqual(await self.frames(bob, 1, F.Presence),
                         [F.Presence(user="alice", online=True)])
        carol = await self.login("carol")
        # carol's inbox gets one message first, so her seq of the group message differs.
        await self.store.store_message("carol", "x", ["dave"], None, "b", "text", None, 1)
        alice.send(F.Send(id="g1", group=self.group.id, body="hello team"))
        [sent] = await self.frames(alice, 1, F.Sent)
        [to_bob] = await self.frames(bob, 1, F.Msg)
        [to_carol] = await self.frames(carol, 1, F.Msg)
        self.assertEqual((to_bob.group, to_bob.seq, to_carol.seq), (self.group.id, 1, 2))
        bob.send(F.Read(seq=1))
        carol.send(F.Read(seq=2))
        marks = await self.frames(alice, 4)
        self.assertEqual(sorted((type(f).__name__, f.by) for f in marks),
                         [("Delivered", "bob"), ("Delivered", "carol"),
                          ("ReadNotice", "bob"), ("ReadNotice", "carol")])
        alice.send(F.Sync(after=0))
        [msg] = await self.frames(alice, 1, F.Msg)
        self.assertEqual((msg.mid, msg.delivered, msg.read), (sent.mid, True, True))
        bob.lose()
        self.assertEqual(await self.frames(alice, 1, F.Presence),
                         [F.Presence(user="bob", online=False)])

    async def test_group_errors_and_typing(self) -> None:
        """A non-member gets forbidden, an unknown group not_found; typing reaches members."""
        dave = await self.login("dave")
        bob = await self.login("bob")
        dave.send(F.Send(id="d1", group=self.group.id, body="let me in"))
        dave.send(F.Send(id="d2", group="nope", body="?"))
        errs = await self.frames(dave, 2, F.Error)
        self.assertEqual([(e.code, e.ref) for e in errs], [("forbidden", "d1"),
                                                          ("not_found", "d2")])
        carol = await self.login("carol")
        carol.send(F.Typing(group=self.group.id))
        self.assertEqual(await self.frames(bob, 1, F.TypingNotice),
                         [F.TypingNotice(from_="carol", group=self.group.id)])

    async def test_file_sends(self) -> None:
        """A valid image reaches the recipient with its file, who may then read it; a wrong
        size gets bad_request and stores nothing."""
        alice = await self.login("alice")
        bob = await self.login("bob")
        await self.settle()
        alice.received()
        good = F.FileRef(id="f1", name="a.png", size=3, mime="image/png")
        alice.send(F.Send(id="i1", to="bob", kind="image", body="", file=good))
        [msg] = await self.frames(bob, 1, F.Msg)
        self.assertEqual((msg.kind, msg.file), ("image", good))
        self.assertTrue(await self.store.may_read_file("bob", "f1"))
        bad = F.FileRef(id="f1", name="a.png", size=4, mime="image/png")
        alice.send(F.Send(id="i2", to="bob", kind="image", body="", file=bad))
        frames = await self.frames(alice, 2)
        self.assertEqual([type(f) for f in frames], [F.Sent, F.Error])
        self.assertEqual((frames[1].code, frames[1].ref), ("bad_request", "i2"))
        self.assertEqual(await self.store.last_seq("bob"), 1)
