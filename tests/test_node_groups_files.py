"""Tests of group messages and file messages on the node, one node and across nodes."""
from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dim.protocol import frames as F
from dim.store.interface import FileRecord
from dim.store.memory import MemoryStore
from tests.fakes.node import (EPOCH, FakeClient, ForwarderHub, Node,
                                      RemoteLikeRegistry, joined_nodes)

USERS = ("alice", "bob", "carol", "dave")
PNG = FileRecord(id="f1", owner="alice", name="cat.png", size=1234, mime="image/png",
                 sha256="0" * 64, ts=0)
BOBS = FileRecord(id="f2", owner="bob", name="dog.png", size=99, mime="image/png",
                  sha256="1" * 64, ts=0)


def make_store(users: tuple[str, ...] = USERS) -> MemoryStore:
    """A memory store with the given users and two uploaded files (alice's f1, bob's f2)."""
    store = MemoryStore()
    for user in users:
        store.create_user(user, "hash", 0)
    store.add_file(PNG)
    store.add_file(BOBS)
    return store


def ref(record: FileRecord, **changes: Any) -> F.FileRef:
    """The FileRef a client would send for an uploaded file, with some fields changed."""
    fields = {"id": record.id, "name": record.name, "size": record.size, "mime": record.mime}
    fields.update(changes)
    return F.FileRef(**fields)


def drain(*clients: FakeClient) -> None:
    """Forget what the clients were sent so far."""
    for client in clients:
        client.received()


class CountingStore:
    """Wraps a store and counts calls by method name."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.store, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)

        return counted


class GroupSendTests(SynchronousTestCase):
    """send {group} stores one entry per member and pushes msg with each member's seq."""

    def setUp(self) -> None:
        self.node = Node(store=make_store())
        store = self.node.store
        self.group = self.successResultOf(store.create_group("alice", "team", ["bob", "carol"], 0))
        # Give the members different inbox lengths, so their seqs differ.
        store.store_message("bob", "x1", ["dave"], None, "a", "text", None, 1)
        store.store_message("carol", "x2", ["dave"], None, "b", "text", None, 2)
        store.store_message("carol", "x3", ["dave"], None, "c", "text", None, 3)
        self.alice = self.node.login("alice")
        self.alice2 = self.node.login("alice")
        self.bob = self.node.login("bob")
        self.carol = self.node.login("carol")
        self.carol2 = self.node.login("carol")
        self.dave = self.node.login("dave")
        drain(self.alice, self.alice2, self.bob, self.carol, self.carol2, self.dave)

    def send(self, client: FakeClient, i: int = 1, body: str = "hi all") -> None:
        """Send text ``body`` with id ``g<i>`` to the group."""
        client.send(F.Send(id=f"g{i}", group=self.group.id, body=body))

    def test_sent_and_msgs(self) -> None:
        """The sender gets sent; every member's session gets msg with group and its own seq."""
        self.send(self.alice)
        [sent] = self.alice.received()
        self.assertIsInstance(sent, F.Sent)
        self.assertEqual(sent.seq, 1)
        seqs = {}
        for name, client in (("alice2", self.alice2), ("bob", self.bob), ("carol", self.carol),
                             ("carol2", self.carol2)):
            [msg] = client.received()
            self.assertEqual((msg.mid, msg.id, msg.from_, msg.group, msg.to, msg.body),
                             (sent.mid, "g1", "alice", self.group.id, None, "hi all"))
            seqs[name] = msg.seq
        self.assertEqual(seqs, {"alice2": 1, "bob": 2, "carol": 3, "carol2": 3})
        self.assertEqual(self.dave.received(), [])

    def test_unknown_group(self) -> None:
        """A send to an unknown group gets not_found with the send's id; nothing is stored."""
        self.alice.send(F.Send(id="g1", group="nope", body="x"))
        [err] = self.alice.received()
        self.assertEqual((err.code, err.ref), ("not_found", "g1"))
        self.assertEqual(self.successResultOf(self.node.store.last_seq("alice")), 0)

    def test_not_a_member(self) -> None:
        """A non-member's send gets forbidden with its id; nothing is stored or pushed."""
        self.send(self.dave)
        [err] = self.dave.received()
        self.assertEqual((err.code, err.ref), ("forbidden", "g1"))
        self.assertEqual(self.successResultOf(self.node.store.last_seq("dave")), 3)
        self.assertEqual(self.bob.received(), [])

    def test_duplicate(self) -> None:
        """A repeated group send gets the same sent and pushes nothing again."""
        self.send(self.alice)
        [first] = self.alice.received()
        drain(self.bob, self.carol)
        self.send(self.alice, body="changed")
        self.assertEqual(self.alice.received(), [first])
        self.assertEqual(self.bob.received(), [])

    def test_delivered_per_member(self) -> None:
        """Each member's ack gives the sender one delivered naming that member."""
        self.send(self.alice)
        [sent] = self.alice.received()
        self.bob.send(F.Ack(seq=2))
        self.assertEqual(self.alice.received(), [F.Delivered(id="g1", mid=sent.mid, by="bob")])
        self.carol2.send(F.Ack(seq=3))
        self.assertEqual(self.alice.received(),
                         [F.Delivered(id="g1", mid=sent.mid, by="carol")])

    def test_read_per_member(self) -> None:
        """Each member's read gives the sender one read naming that member; sync shows read
        once every member has read."""
        self.send(self.alice)
        [sent] = self.alice.received()
        self.bob.send(F.Ack(seq=2))
        self.bob.send(F.Read(seq=2))
        self.assertEqual(self.alice.of_type(F.ReadNotice),
                         [F.ReadNotice(id="g1", mid=sent.mid, by="bob")])
        self.alice.send(F.Sync(after=0))
        self.assertFalse(self.alice.of_type(F.Msg)[0].read)
        self.carol.send(F.Read(seq=3))
        self.assertEqual(self.alice.received(),
                         [F.Delivered(id="g1", mid=sent.mid, by="carol"),
                          F.ReadNotice(id="g1", mid=sent.mid, by="carol")])
        self.alice.send(F.Sync(after=0))
        [msg] = self.alice.of_type(F.Msg)
        self.assertEqual((msg.group, msg.delivered, msg.read), (self.group.id, True, True))

    def test_removed_member(self) -> None:
        """A removed member keeps what it had and gets no new group messages."""
        self.send(self.alice, 1)
        drain(self.alice, self.bob, self.carol)
        self.node.store.remove_group_member(self.group.id, "carol")
        self.send(self.alice, 2, body="after")
        self.assertEqual([m.id for m in self.bob.of_type(F.Msg)], ["g2"])
        self.assertEqual(self.carol.received(), [])
        entries, last = self.successResultOf(self.node.store.fetch("carol", 0, 100))
        self.assertEqual((last, entries[-1].message.id), (3, "g1"))

    def test_removed_member_cannot_send(self) -> None:
        """A removed member's send to the group gets forbidden."""
        self.node.store.remove_group_member(self.group.id, "bob")
        self.send(self.bob)
        [err] = self.bob.received()
        self.assertEqual(err.code, "forbidden")

    def test_sync_has_group(self) -> None:
        """sync lists the group message with its group at the member's seq."""
        self.send(self.alice)
        drain(self.bob)
        self.bob.send(F.Sync(after=1))
        [msg] = self.bob.of_type(F.Msg)
        self.assertEqual((msg.seq, msg.group, msg.id), (2, self.group.id, "g1"))

    def test_order_kept_behind_lookup(self) -> None:
        """A text send after a group send whose group look-up is slow is stored after it."""
        real = self.node.store
        pending: list[tuple[Deferred[Any], str]] = []

        class SlowGroups:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def get_group(self, group_id: str) -> Deferred[Any]:
                d: Deferred[Any] = Deferred()
                pending.append((d, group_id))
                return d

        self.node.core.store = SlowGroups()  # type: ignore[assignment]
        self.send(self.alice, 1)
        self.alice.send(F.Send(id="t2", to="bob", body="after the group"))
        self.alice.send(F.Send(id="t3", to="bob", body="and this"))
        self.assertEqual(self.alice.received(), [])
        [(d, group_id)] = pending
        d.callback(self.successResultOf(real.get_group(group_id)))
        self.node.clock.advance(0)  # the reactor's next turn sends the store batch
        sent = self.alice.of_type(F.Sent)
        self.assertEqual([(s.id, s.seq) for s in sent], [("g1", 1), ("t2", 2), ("t3", 3)])

    def test_failed_check_lets_next_send_go(self) -> None:
        """A queued send that fails its check errors alone; the sends behind it are stored."""
        self.alice.send(F.Send(id="g1", group="nope", body="x"))
        self.alice.send(F.Send(id="t2", to="bob", body="y"))
        frames = self.alice.received()
        self.assertEqual([type(f) for f in frames], [F.Error, F.Sent])
        self.assertEqual((frames[0].ref, frames[1].id, frames[1].seq), ("g1", "t2", 1))

    def test_raising_store_does_not_stall(self) -> None:
        """A store that raises on a queued send gives internal; the next send is stored."""
        real = self.node.store
        raised: list[str] = []

        class RaisingOnce:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def apply(self, ops: list[Any]) -> Any:
                if not raised:
                    raised.append(ops[0].client_id)
                    raise RuntimeError("store broke")
                return real.apply(ops)

        self.node.core.store = RaisingOnce()  # type: ignore[assignment]
        self.send(self.alice, 1)
        self.alice.send(F.Send(id="t2", to="bob", body="next"))
        frames = self.alice.received()
        self.assertEqual([type(f) for f in frames], [F.Error, F.Sent])
        self.assertEqual((frames[0].code, frames[0].ref, frames[1].id), ("internal", "g1", "t2"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class GroupAcrossNodesTests(SynchronousTestCase):
    """Group messages reach members on every node, one envelope per node."""

    def setUp(self) -> None:
        self.store = make_store()
        self.sessions = RemoteLikeRegistry()
        self.clock, self.hub, (self.n1, self.n2, self.n3) = joined_nodes(
            self.store, self.sessions, 3)
        self.group = self.successResultOf(
            self.store.create_group("alice", "team", ["bob", "carol", "dave"], 0))

    def test_one_envelope_per_node(self) -> None:
        """Members spread over three nodes get msg; n1 forwards one envelope to n2 and n3."""
        alice, bob = self.n1.login("alice"), self.n2.login("bob")
        carol, dave, dave3 = self.n2.login("carol"), self.n3.login("dave"), self.n1.login("dave")
        self.sessions.locates.clear()
        alice.send(F.Send(id="g1", group=self.group.id, body="hi"))
        self.clock.advance(0)  # the registry is asked on the next reactor turn
        self.assertEqual(len(alice.of_type(F.Sent)), 1)
        for client in (bob, carol, dave, dave3):
            [msg] = client.of_type(F.Msg)
            self.assertEqual((msg.group, msg.seq), (self.group.id, 1))
        self.assertEqual(sorted(target for _, target, _ in self.hub.log), ["n2", "n3"])
        self.assertEqual(len(self.sessions.locates), 1)

    def test_delivered_across(self) -> None:
        """A member's ack on another node gives the sender delivered by that member."""
        alice, bob = self.n1.login("alice"), self.n2.login("bob")
        alice.send(F.Send(id="g1", group=self.group.id, body="hi"))
        [sent] = alice.of_type(F.Sent)
        bob.send(F.Ack(seq=1))
        self.clock.advance(0)
        self.assertEqual(alice.of_type(F.Delivered), [F.Delivered(id="g1", mid=sent.mid,
                                                                  by="bob")])


class LargeGroupTests(SynchronousTestCase):
    """A group of 500 fans out with one store call, one look-up and one envelope per node."""

    def test_500_members(self) -> None:
        """500 members on two nodes: one store_message, one get_group, one locate of all
        members, one envelope to the other node, every member's msg at its own seq."""
        names = tuple(f"u{i:03d}" for i in range(500))
        memory = make_store(names)
        # Members have inboxes of different lengths: u000 0 messages, u001 1, ... up to 9.
        for i, name in enumerate(names):
            for k in range(i % 10):
                memory.store_message(name, f"pre{k}", [], None, "x", "text", None, 1)
        group = self.successResultOf(memory.create_group(names[0], "all", list(names), 0))
        self.assertEqual(len(group.members), 500)
        clock = Clock()
        clock.advance(EPOCH)
        store = CountingStore(memory)
        sessions, hub = RemoteLikeRegistry(), ForwarderHub()
        n1 = Node("n1", clock, store, sessions, hub.forwarder("n1"))  # type: ignore[arg-type]
        n2 = Node("n2", clock, store, sessions, hub.forwarder("n2"))  # type: ignore[arg-type]
        clients = {name: (n1 if i % 2 else n2).login(name) for i, name in enumerate(names)}
        store.calls.clear()
        sessions.locates.clear()
        hub.log.clear()
        started = time.perf_counter()
        clients[names[0]].send(F.Send(id="big", group=group.id, body="to everyone"))
        clock.advance(0)
        took = time.perf_counter() - started
        self.assertEqual(store.calls, {"get_group": 1, "apply": 1})
        self.assertEqual(len(sessions.locates), 1)
        self.assertEqual(sorted(sessions.locates[0]), sorted(names))
        self.assertEqual([(src, dst) for src, dst, _ in hub.log], [("n2", "n1")])
        [sent] = clients[names[0]].of_type(F.Sent)
        self.assertEqual(sent.seq, 1)
        for i, name in enumerate(names[1:], start=1):
            [msg] = clients[name].of_type(F.Msg)
            self.assertEqual((msg.mid, msg.group, msg.seq), (sent.mid, group.id, i % 10 + 1))
        # Generous: the fan-out itself takes a few milliseconds; a stall would take seconds.
        self.assertLess(took, 2.0)


class FileSendTests(SynchronousTestCase):
    """send with kind image/file must point at a file the sender uploaded, as recorded."""

    def setUp(self) -> None:
        self.node = Node(store=make_store())
        self.alice = self.node.login("alice")
        self.bob = self.node.login("bob")

    def test_image_to_user(self) -> None:
        """A valid image send is stored with its file; the recipient's msg and sync carry
        it, and the recipient may now download the file."""
        self.alice.send(F.Send(id="i1", to="bob", kind="image", body="my cat", file=ref(PNG)))
        [sent] = self.alice.received()
        self.assertIsInstance(sent, F.Sent)
        [msg] = self.bob.received()
        self.assertEqual((msg.kind, msg.body, msg.file), ("image", "my cat", ref(PNG)))
        self.bob.send(F.Sync(after=0))
        [synced] = self.bob.of_type(F.Msg)
        self.assertEqual(synced.file, ref(PNG))
        self.assertTrue(self.successResultOf(self.node.store.may_read_file("bob", "f1")))

    def test_empty_caption(self) -> None:
        """A file send with no body is stored with an empty caption."""
        self.alice.send({"type": "send", "id": "i1", "to": "bob", "kind": "file",
                         "file": {"id": "f1", "name": "cat.png", "size": 1234,
                                  "mime": "image/png"}})
        self.assertIsInstance(self.alice.received()[0], F.Sent)
        [msg] = self.bob.received()
        self.assertEqual((msg.kind, msg.body), ("file", ""))

    def test_file_to_group(self) -> None:
        """A file send to a group reaches every member with the file."""
        group = self.successResultOf(self.node.store.create_group("alice", "t", ["bob"], 0))
        self.alice.send(F.Send(id="i1", group=group.id, kind="image", body="", file=ref(PNG)))
        [msg] = self.bob.of_type(F.Msg)
        self.assertEqual((msg.group, msg.file), (group.id, ref(PNG)))

    def test_file_to_group_not_member(self) -> None:
        """A file send to a group the sender is not in gets forbidden."""
        group = self.successResultOf(self.node.store.create_group("bob", "t", ["carol"], 0))
        self.alice.send(F.Send(id="i1", group=group.id, kind="image", body="", file=ref(PNG)))
        [err] = self.alice.received()
        self.assertEqual((err.code, err.ref), ("forbidden", "i1"))

    def assertRejected(self, file: F.FileRef, why: str) -> None:
        """The send gets bad_request naming ``why``, with ref i1; nothing is stored."""
        self.alice.send(F.Send(id="i1", to="bob", kind="image", body="", file=file))
        [err] = self.alice.received()
        self.assertEqual((err.code, err.ref), ("bad_request", "i1"))
        self.assertIn(why, err.message)
        self.assertEqual(self.successResultOf(self.node.store.last_seq("alice")), 0)
        self.assertEqual(self.bob.received(), [])

    def test_unknown_file(self) -> None:
        """A file id nobody uploaded is rejected."""
        self.assertRejected(ref(PNG, id="nope"), "no such file")

    def test_someone_elses_file(self) -> None:
        """A file another user uploaded is rejected."""
        self.assertRejected(ref(BOBS), "not uploaded by alice")

    def test_wrong_name(self) -> None:
        """A name that differs from the upload's is rejected."""
        self.assertRejected(ref(PNG, name="other.png"), "name")

    def test_wrong_size(self) -> None:
        """A size that differs from the upload's is rejected."""
        self.assertRejected(ref(PNG, size=1), "size")

    def test_wrong_mime(self) -> None:
        """A mime type that differs from the upload's is rejected."""
        self.assertRejected(ref(PNG, mime="text/plain"), "mime")

    def test_missing_file_field(self) -> None:
        """kind image without a file is rejected by the codec with the send's id."""
        self.alice.send({"type": "send", "id": "i1", "to": "bob", "kind": "image", "body": ""})
        [err] = self.alice.received()
        self.assertEqual((err.code, err.ref), ("bad_request", "i1"))
