"""Tests of delivery between two NodeCores joined by an in-memory forwarder."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dim import errors
from dim.cluster import envelope as E
from dim.cluster.local import LocalSessionRegistry
from dim.protocol import codec
from dim.protocol import frames as F
from dim.store.memory import MemoryStore
from tests.fakes.node import (USERS, ForwarderHub, Node, RemoteLikeRegistry,
                                      envelope_json, joined_nodes)


class ForwardingTests(SynchronousTestCase):
    """Messages, delivered receipts and retransmissions cross nodes as envelopes."""

    def setUp(self) -> None:
        store = MemoryStore()
        for user in USERS:
            store.create_user(user, "hash", 0)
        self.clock, self.hub, (self.n1, self.n2) = joined_nodes(store, LocalSessionRegistry())

    def test_msg_across(self) -> None:
        """A send on n1 reaches the recipient on n2 with the recipient's seq."""
        alice = self.n1.login("alice")
        bob = self.n2.login("bob")
        alice.send(F.Send(id="m1", to="bob", body="hi"))
        [sent] = alice.received()
        [msg] = bob.received()
        self.assertEqual((msg.mid, msg.id, msg.from_, msg.to, msg.seq, msg.body),
                         (sent.mid, "m1", "alice", "bob", 1, "hi"))

    def test_one_envelope_per_node(self) -> None:
        """Sessions of sender and recipient on one remote node share one envelope."""
        alice = self.n1.login("alice")
        self.n2.login("bob")
        self.n2.login("bob")
        self.n2.login("alice")
        alice.send(F.Send(id="m1", to="bob", body="hi"))
        self.assertEqual(len(self.hub.log), 1)
        source, target, payload = self.hub.log[0]
        [part] = envelope_json(payload)["parts"]
        self.assertEqual((source, target), ("n1", "n2"))
        self.assertEqual(set(part["to"]), {"alice", "bob"})
        [[kind, seq, frame]] = part["to"]["bob"]
        self.assertEqual((kind, seq, frame["seq"], frame["body"]), ("msg", 1, 1, "hi"))
        self.assertEqual(part["to"]["alice"][0][2]["seq"], 1)

    def test_senders_other_sessions_across(self) -> None:
        """The sender's sessions on the other node get msg; the sending one gets sent only."""
        alice = self.n1.login("alice")
        alice_n1 = self.n1.login("alice")
        alice_n2 = self.n2.login("alice")
        alice.send(F.Send(id="m1", to="carol", body="hi"))
        self.assertEqual([type(f) for f in alice.received()], [F.Sent])
        self.assertEqual([m.id for m in alice_n1.of_type(F.Msg)], ["m1"])
        self.assertEqual([m.id for m in alice_n2.of_type(F.Msg)], ["m1"])

    def test_no_envelope_when_all_local(self) -> None:
        """Nothing is forwarded when every session is on the sending node."""
        alice = self.n1.login("alice")
        self.n1.login("bob")
        alice.send(F.Send(id="m1", to="bob", body="hi"))
        self.assertEqual(self.hub.log, [])

    def test_delivered_across(self) -> None:
        """An ack on n2 gives delivered to the sender's sessions on both nodes."""
        alice = self.n1.login("alice")
        alice_n2 = self.n2.login("alice")
        bob = self.n2.login("bob")
        alice.send(F.Send(id="m1", to="bob", body="hi"))
        [sent] = alice.received()
        alice_n2.received()
        bob.received()
        bob.send(F.Ack(seq=1))
        expected = [F.Delivered(id="m1", mid=sent.mid, by="bob")]
        self.assertEqual(alice.received(), expected)
        self.assertEqual(alice_n2.received(), expected)

    def test_forwarded_msg_retransmitted(self) -> None:
        """A msg that came in an envelope is retransmitted once, unless acknowledged."""
        alice = self.n1.login("alice")
        bob = self.n2.login("bob")
        bob2 = self.n2.login("bob")
        alice.send(F.Send(id="m1", to="bob", body="hi"))
        [msg] = bob.received()
        bob2.received()
        bob2.send(F.Ack(seq=1))
        self.clock.advance(4)
        self.assertEqual(bob.received(), [msg])
        self.assertEqual(bob2.of_type(F.Msg), [])
        self.clock.advance(10)
        self.assertEqual(bob.received(), [])

    def test_order_across(self) -> None:
        """Many sends arrive on the other node in the order they were sent."""
        alice = self.n1.login("alice")
        bob = self.n2.login("bob")
        for i in range(50):
            alice.send(F.Send(id=f"m{i}", to="bob", body=str(i)))
        self.assertEqual([m.seq for m in bob.received()], list(range(1, 51)))

    def test_bad_envelopes_ignored(self) -> None:
        """Envelopes that do not decode, or are of the wrong shape, are logged and dropped;
        the node goes on."""
        bob = self.n2.login("bob")
        receive = self.n2.core.fanout.receive
        for payload in (b"not json", b'{"t": "other"}', b'{"parts": 5}',
                        b'{"parts": [{"to": 5}]}',
                        b'{"parts": [{"to": {"bob": [5, {"no": "type"}]}}]}',
                        b'{"parts": [{"to": {"bob": "x"}}]}',
                        b'{"parts": [{"to": {"bob": [["msg", "one", {}]]}}]}'):
            receive(payload)
        self.assertEqual(bob.received(), [])
        receive(b'{"parts": [{"to": {"bob": [["delivered", null, {"type": "delivered",'
                b' "id": "x", "mid": "1", "by": "carol"}]]}}]}')
        self.assertEqual(bob.received(), [F.Delivered(id="x", mid="1", by="carol")])

    def test_skip(self) -> None:
        """An envelope's skip session gets nothing."""
        bob = self.n2.login("bob")
        bob2 = self.n2.login("bob")
        frame = F.Delivered(id="x", mid="1", by="carol")
        self.n2.core.fanout.receive(E.encode(E.Envelope(parts=[E.Part(
            to={"bob": [E.item(frame)]}, skip=bob.conn.session.id)])))
        self.assertEqual(bob.received(), [])
        self.assertEqual(bob2.received(), [F.Delivered(id="x", mid="1", by="carol")])

    def test_forward_failure_logged(self) -> None:
        """A failing forward is logged; the sender still gets sent."""
        alice = self.n1.login("alice")
        self.n2.login("bob")
        self.hub.failing["n2"] = RuntimeError("kafka down")
        alice.send(F.Send(id="m1", to="bob", body="hi"))
        self.assertEqual([type(f) for f in alice.received()], [F.Sent])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_lost_forward_found_by_ping(self) -> None:
        """A msg whose envelope was lost reaches its recipient after the recipient's next
        ping: the pong's last_seq shows the gap and a sync brings the message."""
        alice = self.n1.login("alice")
        bob = self.n2.login("bob")
        self.hub.hold()
        alice.send(F.Send(id="m1", to="bob", body="hi"))
        self.hub.held = []  # the envelope is lost
        self.hub.release()
        self.assertEqual(bob.received(), [])
        bob.send(F.Ping())
        self.assertEqual(bob.received(), [F.Pong(last_seq=1)])
        bob.send(F.Sync(after=0))
        msg, synced = bob.received()
        self.assertEqual((msg.id, msg.seq, msg.body, synced.last_seq), ("m1", 1, "hi", 1))


class LocateBatchTests(SynchronousTestCase):
    """With a registry that answers through Deferreds (Redis), the deliveries of one reactor
    turn share one look-up, and each is forwarded in the order it was made."""

    def setUp(self) -> None:
        store = MemoryStore()
        for user in USERS:
            store.create_user(user, "hash", 0)
        self.sessions = RemoteLikeRegistry()
        self.clock, self.hub, (self.n1, self.n2) = joined_nodes(store, self.sessions)

    def test_one_lookup_per_turn(self) -> None:
        """Ten sends in one turn cause one locate; the recipient gets all, in order."""
        alice, carol = self.n1.login("alice"), self.n1.login("carol")
        bob = self.n2.login("bob")
        self.sessions.locates.clear()
        for i in range(5):  # all in one reactor turn
            alice.conn.dataReceived(codec.encode(F.Send(id=f"a{i}", to="bob", body=str(i))))
            carol.conn.dataReceived(codec.encode(F.Send(id=f"c{i}", to="bob", body=str(i))))
        self.assertEqual(bob.received(), [])
        self.clock.advance(0)
        self.assertEqual(len(self.sessions.locates), 1)
        self.assertEqual(sorted(self.sessions.locates[0]), ["alice", "bob", "carol"])
        self.assertEqual([m.seq for m in bob.of_type(F.Msg)], list(range(1, 11)))
        self.assertEqual(self.n1.core.locates, 1)
        self.clock.advance(0)
        self.assertEqual(len(self.sessions.locates), 1)  # nothing left to look up

    def test_next_turn_next_lookup(self) -> None:
        """Deliveries made after a batch was looked up make a new look-up."""
        alice, bob = self.n1.login("alice"), self.n2.login("bob")
        self.sessions.locates.clear()
        alice.send(F.Send(id="m1", to="bob", body="1"))
        self.clock.advance(0)
        alice.send(F.Send(id="m2", to="bob", body="2"))
        self.clock.advance(0)
        self.assertEqual(len(self.sessions.locates), 2)
        self.assertEqual([m.id for m in bob.of_type(F.Msg)], ["m1", "m2"])

    def test_failed_lookup(self) -> None:
        """A failed look-up is logged, the deliveries' Deferreds fire, the message stays in
        the inbox (sync finds it) and local sessions got it at once."""
        alice, alice1, bob = self.n1.login("alice"), self.n1.login("alice"), self.n2.login("bob")
        self.sessions.failing = True
        alice.conn.dataReceived(codec.encode(F.Send(id="m1", to="bob", body="lost envelope")))
        self.n1.core.batch.flush()
        d = self.n1.core.deliver({"bob": [F.Notify(event="x")]})
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(len(self.flushLoggedErrors(errors.Unavailable)), 1)
        self.assertEqual([m.id for m in alice1.of_type(F.Msg)], ["m1"])
        self.assertEqual(bob.received(), [])
        self.sessions.failing = False
        bob.send(F.Sync(after=0))
        self.assertEqual([m.id for m in bob.of_type(F.Msg)], ["m1"])

    def test_local_registry_needs_no_lookup(self) -> None:
        """A registry in this process (locate_now) is asked directly, with no look-up
        Deferred."""
        hub = ForwarderHub()
        sessions = LocalSessionRegistry()
        n1 = Node("n1", self.clock, self.n1.store, sessions, hub.forwarder("n1"))
        n2 = Node("n2", self.clock, self.n1.store, sessions, hub.forwarder("n2"))
        alice, bob = n1.login("alice"), n2.login("bob")
        alice.send(F.Send(id="m1", to="bob", body="now"))
        self.assertEqual([m.id for m in bob.of_type(F.Msg)], ["m1"])
        self.assertEqual(n1.core.locates, 0)
