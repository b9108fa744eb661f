"""The store batch of a reactor turn: every send, ack and read in one store call."""
from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase

from dim.cluster.local import LocalSessionRegistry
from dim.protocol import codec
from dim.protocol import frames as F
from dim.store.memory import MemoryStore
from tests.fakes.node import USERS, Node, envelope_json, joined_nodes


def _feed(client: Any, frames: list[F._Frame]) -> None:
    """Frames arriving in one read of the socket, in one reactor turn (no batch flush)."""
    client.conn.dataReceived(codec.encode_many(frames))


class CountingStore(MemoryStore):
    """A memory store that records every apply call."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[Any]] = []

    def apply(self, ops: list[Any]) -> Any:
        self.batches.append(list(ops))
        return super().apply(ops)


class BatchTests(SynchronousTestCase):
    """One apply per reactor turn, in frame order, failing cleanly."""

    def setUp(self) -> None:
        self.store = CountingStore()
        for user in USERS:
            self.store.create_user(user, "hash", 0)
        self.node = Node(store=self.store)
        self.alice = self.node.login("alice")
        self.bob = self.node.login("bob")
        self.carol = self.node.login("carol")
        self.store.batches.clear()

    def test_a_turn_of_sends_is_one_store_call(self) -> None:
        """N sends from several connections in one turn reach the store as one apply, in
        arrival order; sent and msg follow for each."""
        _feed(self.alice, [F.Send(id=f"a{i}", to="bob", body=str(i)) for i in range(10)])
        _feed(self.carol, [F.Send(id=f"c{i}", to="bob", body=str(i)) for i in range(5)])
        _feed(self.bob, [F.Ack(seq=0)])
        self.assertEqual(self.store.batches, [])
        self.node.clock.advance(0)
        [batch] = self.store.batches
        self.assertEqual([getattr(op, "client_id", "ack") for op in batch],
                         [f"a{i}" for i in range(10)] + [f"c{i}" for i in range(5)] + ["ack"])
        self.assertEqual([s.seq for s in self.alice.of_type(F.Sent)], list(range(1, 11)))
        self.assertEqual([m.seq for m in self.bob.of_type(F.Msg)], list(range(1, 16)))
        self.assertEqual(self.node.core.batch.batches, 1)

    def test_acks_and_reads_share_the_batch(self) -> None:
        """Acks and reads of one turn join the same store call as the sends."""
        self.alice.send(F.Send(id="m1", to="bob", body="x"))
        self.store.batches.clear()
        _feed(self.alice, [F.Send(id="m2", to="bob", body="y")])
        _feed(self.bob, [F.Ack(seq=1)])
        _feed(self.carol, [F.Send(id="k1", to="alice", body="z")])
        _feed(self.alice, [F.Read(seq=1)])
        self.node.clock.advance(0)
        [batch] = self.store.batches
        self.assertEqual([type(op).__name__ for op in batch],
                         ["SendOp", "AckOp", "SendOp", "AckOp"])
        self.assertTrue(batch[3].read)
        self.assertEqual([d.id for d in self.alice.of_type(F.Delivered)], ["m1"])

    def test_failed_batch_fails_each_send(self) -> None:
        """A store that fails the whole batch gives each send internal with its ref; no msg
        goes out, the connections live on, and the next turn's batch is stored."""
        self.store.apply = lambda ops: fail(RuntimeError("disk gone"))  # type: ignore
        _feed(self.alice, [F.Send(id="m1", to="bob", body="x"),
                           F.Send(id="m2", to="carol", body="y")])
        self.node.clock.advance(0)
        errors = self.alice.of_type(F.Error)
        self.assertEqual([(e.code, e.ref) for e in errors], [("internal", "m1"),
                                                            ("internal", "m2")])
        self.assertEqual(self.bob.of_type(F.Msg), [])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        del self.store.apply
        self.alice.send(F.Send(id="m1", to="bob", body="again"))
        [sent] = self.alice.of_type(F.Sent)
        self.assertEqual((sent.id, sent.seq), ("m1", 1))
        self.assertFalse(self.alice.closing)

    def test_one_failing_send_fails_alone(self) -> None:
        """A send to an unknown user in the batch gets not_found; the others are stored."""
        _feed(self.alice, [F.Send(id="m1", to="bob", body="x"),
                           F.Send(id="m2", to="nobody", body="y"),
                           F.Send(id="m3", to="bob", body="z")])
        self.node.clock.advance(0)
        frames = self.alice.received()
        self.assertEqual([(type(f).__name__, getattr(f, "id", None) or f.ref)
                          for f in frames],
                         [("Sent", "m1"), ("Error", "m2"), ("Sent", "m3")])
        self.assertEqual([s.seq for s in frames if isinstance(s, F.Sent)], [1, 2])

    def test_requests_in_flight_until_stored(self) -> None:
        """Batched sends count as requests in flight until the store answers them."""
        pending: list[Deferred[Any]] = []
        real = MemoryStore.apply

        def slow(ops: list[Any]) -> Deferred[Any]:
            d: Deferred[Any] = Deferred()
            pending.append(d)
            d.addCallback(lambda _: real(self.store, ops))
            return d

        self.store.apply = slow  # type: ignore[method-assign]
        _feed(self.alice, [F.Send(id=f"m{i}", to="bob", body="x") for i in range(3)])
        self.node.clock.advance(0)
        self.assertEqual(self.alice.conn._in_flight, 3)
        pending[0].callback(None)
        self.assertEqual(self.alice.conn._in_flight, 0)
        self.assertEqual(len(self.alice.of_type(F.Sent)), 3)


class BatchAcrossNodesTests(SynchronousTestCase):
    """A turn's messages to another node's users leave in one envelope per node."""

    def test_one_envelope_per_node_per_turn(self) -> None:
        """Ten sends to users on another node in one turn make one envelope, seqs in order."""
        store = MemoryStore()
        for user in USERS:
            store.create_user(user, "hash", 0)
        clock, hub, (n1, n2) = joined_nodes(store, LocalSessionRegistry())
        alice = n1.login("alice")
        bob = n2.login("bob")
        _feed(alice, [F.Send(id=f"m{i}", to="bob", body=str(i)) for i in range(10)])
        clock.advance(0)
        self.assertEqual(len(hub.log), 1)
        [(_, target, payload)] = hub.log
        self.assertEqual(target, "n2")
        [part] = envelope_json(payload)["parts"]
        self.assertEqual([item[1] for item in part["to"]["bob"]], list(range(1, 11)))
        self.assertEqual([m.seq for m in bob.of_type(F.Msg)], list(range(1, 11)))
