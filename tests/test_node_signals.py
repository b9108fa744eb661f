"""Tests of the node's part-2 signals: read marks, typing, presence and push()."""
from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dim.cluster.interface import IPusher
from dim.cluster.local import LocalSessionRegistry
from dim.protocol import frames as F
from tests.fakes.node import (EPOCH, FakeClient, ForwarderHub, Node, contacts_store, drain,
                                      RemoteLikeRegistry, joined_nodes)

USERS = ("alice", "bob", "carol", "dave")


def types(frames: list[Any]) -> list[type]:
    """The classes of some frames, in order."""
    return [type(f) for f in frames]


class ReadTests(SynchronousTestCase):
    """read marks the inbox read, tells the senders and the reader's other sessions."""

    def setUp(self) -> None:
        self.node = Node(store=contacts_store())
        self.alice = self.node.login("alice")
        self.alice2 = self.node.login("alice")
        self.bob = self.node.login("bob")
        self.bob2 = self.node.login("bob")
        self.alice.send(F.Send(id="m1", to="bob", body="one"))
        self.alice.send(F.Send(id="m2", to="bob", body="two"))
        self.sent = self.alice.of_type(F.Sent)
        drain(self.alice2, self.bob, self.bob2)

    def test_read_after_ack(self) -> None:
        """An acked message read later gives the sender one read per message, no delivered."""
        self.bob.send(F.Ack(seq=2))
        self.assertEqual(types(self.alice.received()), [F.Delivered, F.Delivered])
        self.alice2.received()
        self.bob.send(F.Read(seq=2))
        expected = [F.ReadNotice(id="m1", mid=self.sent[0].mid, by="bob"),
                    F.ReadNotice(id="m2", mid=self.sent[1].mid, by="bob")]
        self.assertEqual(self.alice.received(), expected)
        self.assertEqual(self.alice2.received(), expected)

    def test_read_implies_delivered(self) -> None:
        """A read with no ack first gives delivered, then read, for each message."""
        self.bob.send(F.Read(seq=1))
        self.assertEqual(self.alice.received(),
                         [F.Delivered(id="m1", mid=self.sent[0].mid, by="bob"),
                          F.ReadNotice(id="m1", mid=self.sent[0].mid, by="bob")])
        self.assertTrue(self.successResultOf(self.node.store.fetch("alice", 0, 10))[0][0].read)

    def test_other_sessions_told(self) -> None:
        """The reader's other sessions get read {seq, by}; the reading session gets nothing."""
        self.bob.send(F.Read(seq=2))
        self.assertEqual(self.bob2.received(), [F.ReadNotice(seq=2, by="bob")])
        self.assertEqual(self.bob.received(), [])

    def test_self_read_of_own_messages(self) -> None:
        """The sender reading its own sent messages tells its other sessions and nobody else."""
        self.alice.send(F.Read(seq=2))
        self.assertEqual(self.alice2.received(), [F.ReadNotice(seq=2, by="alice")])
        self.assertEqual(self.bob.received(), [])
        self.assertEqual(self.alice.received(), [])

    def test_read_cancels_retransmit(self) -> None:
        """Reading acknowledges: nothing up to seq is sent again on this session."""
        self.assertEqual(self.node.core.local["bob"][self.bob.conn.session.id].unacknowledged,
                         [1, 2])
        self.bob.send(F.Read(seq=2))
        self.node.clock.advance(5)
        self.assertEqual(self.bob.of_type(F.Msg), [])
        self.assertEqual(len(self.bob2.of_type(F.Msg)), 2)  # bob2 did not ack: resent

    def test_read_again_says_nothing(self) -> None:
        """Reading the same or a lower seq again tells nobody anything."""
        self.bob.send(F.Read(seq=2))
        drain(self.alice, self.bob2)
        self.bob.send(F.Read(seq=2))
        self.bob.send(F.Read(seq=1))
        self.bob.send(F.Read(seq=0))
        self.assertEqual(self.alice.received(), [])
        self.assertEqual(self.bob2.received(), [])

    def test_other_session_reads_again(self) -> None:
        """A second session reading what the first read gives the sender nothing new, and
        tells the first session its seq."""
        self.bob.send(F.Read(seq=2))
        drain(self.alice, self.bob2)
        self.bob2.send(F.Read(seq=2))
        self.assertEqual(self.alice.received(), [])
        self.assertEqual(self.bob.received(), [F.ReadNotice(seq=2, by="bob")])

    def test_read_across_nodes(self) -> None:
        """A read on one node reaches the sender and the reader's sessions on another."""
        clock = Clock()
        clock.advance(EPOCH)
        store, sessions, hub = contacts_store(), LocalSessionRegistry(), ForwarderHub()
        n1 = Node("n1", clock, store, sessions, hub.forwarder("n1"))
        n2 = Node("n2", clock, store, sessions, hub.forwarder("n2"))
        alice, bob1, bob2 = n1.login("alice"), n1.login("bob"), n2.login("bob")
        drain(alice, bob1, bob2)
        alice.send(F.Send(id="m1", to="bob", body="hi"))
        [sent] = alice.received()
        bob1.received(), bob2.received()
        bob2.send(F.Read(seq=1))
        self.assertEqual(alice.received(), [F.Delivered(id="m1", mid=sent.mid, by="bob"),
                                            F.ReadNotice(id="m1", mid=sent.mid, by="bob")])
        self.assertEqual(bob1.received(), [F.ReadNotice(seq=1, by="bob")])
        self.assertEqual(bob2.received(), [])


class TypingTests(SynchronousTestCase):
    """typing reaches the person or the group's other members, throttled, never stored."""

    def setUp(self) -> None:
        self.node = Node(store=contacts_store())
        self.group = self.successResultOf(
            self.node.store.create_group("alice", "team", ["bob", "carol"], 0))
        self.alice = self.node.login("alice")
        self.alice2 = self.node.login("alice")
        self.bob = self.node.login("bob")
        self.bob2 = self.node.login("bob")
        self.carol = self.node.login("carol")
        self.dave = self.node.login("dave")
        drain(self.alice, self.alice2, self.bob, self.bob2, self.carol, self.dave)

    def test_to_user(self) -> None:
        """typing {to} reaches every session of the recipient and nobody else."""
        self.alice.send(F.Typing(to="bob"))
        notice = [F.TypingNotice(from_="alice", to="bob")]
        self.assertEqual(self.bob.received(), notice)
        self.assertEqual(self.bob2.received(), notice)
        for c in (self.alice, self.alice2, self.carol, self.dave):
            self.assertEqual(c.received(), [])
        self.assertEqual(self.successResultOf(self.node.store.last_seq("bob")), 0)

    def test_to_group(self) -> None:
        """typing {group} reaches the other members' sessions, not the typer's, not others."""
        self.bob.send(F.Typing(group=self.group.id))
        notice = [F.TypingNotice(from_="bob", group=self.group.id)]
        for c in (self.alice, self.alice2, self.carol):
            self.assertEqual(c.received(), notice)
        for c in (self.bob, self.bob2, self.dave):
            self.assertEqual(c.received(), [])

    def test_unknown_user(self) -> None:
        """typing to a user that does not exist gets not_found."""
        self.alice.send(F.Typing(to="nobody"))
        [err] = self.alice.received()
        self.assertEqual(err.code, "not_found")

    def test_unknown_group(self) -> None:
        """typing in a group that does not exist gets not_found."""
        self.alice.send(F.Typing(group="nope"))
        [err] = self.alice.received()
        self.assertEqual(err.code, "not_found")

    def test_not_a_member(self) -> None:
        """typing in a group one is not in gets forbidden and reaches nobody."""
        self.dave.send(F.Typing(group=self.group.id))
        [err] = self.dave.received()
        self.assertEqual(err.code, "forbidden")
        self.assertEqual(self.alice.received(), [])

    def test_burst_then_dropped(self) -> None:
        """A burst of typing frames passes three; the rest are dropped without an error."""
        for _ in range(10):
            self.alice.send(F.Typing(to="bob"))
        self.assertEqual(len(self.bob.received()), 3)
        self.assertEqual(self.alice.received(), [])

    def test_sustained_one_a_second(self) -> None:
        """One typing frame a second always passes."""
        for _ in range(30):
            self.alice.send(F.Typing(to="bob"))
            self.node.clock.advance(1)
        self.assertEqual(len(self.bob.received()), 30)
        self.assertEqual(self.alice.received(), [])

    def test_flood_gets_one_rate_limited(self) -> None:
        """A persistent flood gets exactly one rate_limited; peers see only the allowed rate."""
        for _ in range(500):
            self.alice.send(F.Typing(to="bob"))
            self.node.clock.advance(0.01)  # 100 a second for 5 s
        errs = self.alice.received()
        self.assertEqual([e.code for e in errs], ["rate_limited"])
        self.assertLessEqual(len(self.bob.received()), 3 + 5)

    def test_limit_is_per_user(self) -> None:
        """A user's sessions share one limit; another user's typing still passes."""
        for _ in range(10):
            self.alice.send(F.Typing(to="bob"))
        self.bob.received()
        self.alice2.send(F.Typing(to="bob"))
        self.assertEqual(self.bob.received(), [])
        self.carol.send(F.Typing(to="bob"))
        self.assertEqual(self.bob.received(), [F.TypingNotice(from_="carol", to="bob")])

    def test_typing_across_nodes(self) -> None:
        """typing reaches the recipient's session on another node."""
        clock = Clock()
        clock.advance(EPOCH)
        store, sessions, hub = contacts_store(), LocalSessionRegistry(), ForwarderHub()
        n1 = Node("n1", clock, store, sessions, hub.forwarder("n1"))
        n2 = Node("n2", clock, store, sessions, hub.forwarder("n2"))
        alice, bob = n1.login("alice"), n2.login("bob")
        drain(alice, bob)
        alice.send(F.Typing(to="bob"))
        self.assertEqual(bob.received(), [F.TypingNotice(from_="alice", to="bob")])


class PresenceTests(SynchronousTestCase):
    """presence goes to mutual contacts on a user's first session and after its last."""

    def setUp(self) -> None:
        self.store, self.sessions = contacts_store(), LocalSessionRegistry()
        self.clock, self.hub, (self.n1, self.n2) = joined_nodes(self.store, self.sessions)

    def test_first_session_online(self) -> None:
        """A user's first session tells every session of each mutual contact, on any node."""
        bob1, bob2 = self.n1.login("bob"), self.n2.login("bob")
        carol, dave = self.n1.login("carol"), self.n2.login("dave")
        self.n1.login("alice")
        online = [F.Presence(user="alice", online=True)]
        self.assertEqual(bob1.received(), online)
        self.assertEqual(bob2.received(), online)
        self.assertEqual(carol.received(), [])  # a pending request is not a contact
        self.assertEqual(dave.received(), [])

    def test_later_sessions_say_nothing(self) -> None:
        """A second session, on either node, sends no presence."""
        bob = self.n1.login("bob")
        self.n1.login("alice")
        bob.received()
        self.n2.login("alice")
        self.n1.login("alice")
        self.assertEqual(bob.received(), [])

    def test_last_session_offline(self) -> None:
        """Only the last of several sessions going away sends online false."""
        bob = self.n2.login("bob")
        a1, a2, a3 = self.n1.login("alice"), self.n1.login("alice"), self.n2.login("alice")
        bob.received()
        a1.lose()
        a3.lose()
        self.assertEqual(bob.received(), [])
        a2.lose()
        self.assertEqual(bob.received(), [F.Presence(user="alice", online=False)])

    def test_online_again(self) -> None:
        """Coming back after going offline sends online true again."""
        bob = self.n1.login("bob")
        self.n2.login("alice").lose()
        bob.received()
        self.n1.login("alice")
        self.assertEqual(bob.received(), [F.Presence(user="alice", online=True)])

    def test_contact_side(self) -> None:
        """Presence follows contacts both ways: bob's coming is told to alice."""
        alice = self.n1.login("alice")
        self.n2.login("bob")
        self.assertEqual(alice.received(), [F.Presence(user="bob", online=True)])

    def test_no_contacts_no_envelope(self) -> None:
        """A user with no mutual contacts sends nothing anywhere."""
        self.n2.login("dave")
        self.n1.login("dave").lose()
        self.assertEqual(self.hub.log, [])

    def test_shutdown_tells_contacts(self) -> None:
        """A node shutting down tells the contacts of its users that went offline."""
        bob = self.n2.login("bob")
        self.n1.login("alice")
        bob.received()
        d = self.n1.core.shutdown()
        self.clock.advance(1)
        for conn in list(self.n1.core.connections):
            conn.connectionLost(None)
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertIn(F.Presence(user="alice", online=False), bob.received())

    def test_shutdown_waits_for_presence(self) -> None:
        """With a registry answering through Deferreds, a node's drain ends only once the
        offline presence of its users was handed to the other node."""
        sessions, hub = RemoteLikeRegistry(), ForwarderHub()
        n1 = Node("n1", self.clock, self.store, sessions, hub.forwarder("n1"))
        n2 = Node("n2", self.clock, self.store, sessions, hub.forwarder("n2"))
        bob = n2.login("bob")
        n1.login("alice")
        self.clock.advance(0)
        self.assertEqual(bob.received(), [F.Presence(user="alice", online=True)])
        d = n1.core.shutdown()
        self.clock.advance(1)
        for conn in list(n1.core.connections):
            conn.connectionLost(None)
        self.assertNoResult(d)
        self.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(bob.received(), [F.Presence(user="alice", online=False)])

    def test_lone_node_shutdown_asks_nothing(self) -> None:
        """A node alone in its process shutting down does not look up contacts (all its
        sessions are closing, and its store may be closing beside it)."""
        node = Node(store=contacts_store())
        node.login("bob")
        node.login("alice")
        asked: list[str] = []
        real = node.store.contacts
        node.store.contacts = lambda user: (asked.append(user), real(user))[1]  # type: ignore
        d = node.core.shutdown()
        node.clock.advance(1)
        for conn in list(node.core.connections):
            conn.connectionLost(None)
        self.successResultOf(d)
        self.assertEqual(asked, [])
        self.assertEqual(len(node.sessions), 0)


class PushTests(SynchronousTestCase):
    """push() writes typed frames to every session of the users, here and elsewhere."""

    def setUp(self) -> None:
        self.store, self.sessions = contacts_store(), LocalSessionRegistry()
        self.clock, self.hub, (self.n1, self.n2) = joined_nodes(self.store, self.sessions)

    def test_is_a_pusher(self) -> None:
        """NodeCore provides IPusher."""
        self.assertTrue(verifyObject(IPusher, self.n1.core))

    def test_push_everywhere(self) -> None:
        """A notify pushed on n1 reaches the user's sessions on n1 and n2, others skipped."""
        bob1, bob2, carol = self.n1.login("bob"), self.n2.login("bob"), self.n2.login("carol")
        d = self.n1.core.push({"bob": [F.Notify(event="contact_request", from_="alice")],
                               "dave": [F.Notify(event="group_changed", group="g")]})
        self.assertNoResult(d)  # envelopes leave at the end of the reactor turn
        self.clock.advance(0)
        self.successResultOf(d)
        expected = [F.Notify(event="contact_request", from_="alice")]
        self.assertEqual(bob1.received(), expected)
        self.assertEqual(bob2.received(), expected)
        self.assertEqual(carol.received(), [])
        self.assertEqual(len(self.hub.log), 1)

    def test_push_alone(self) -> None:
        """A node alone in its process writes a push to its own sessions at once; the push
        fires at the end of the turn, with nothing forwarded."""
        node = Node(store=contacts_store())
        bob = node.login("bob")
        d = node.core.push({"bob": [F.Presence(user="alice", online=True)]})
        self.assertEqual(bob.received(), [F.Presence(user="alice", online=True)])
        node.clock.advance(0)
        self.successResultOf(d)
        self.assertEqual(node.forwarder.hub.log, [])

    def test_push_waits_for_welcome(self) -> None:
        """A push to a session not yet welcomed is written after welcome."""
        node = Node(store=contacts_store())
        client = FakeClient(node.core, node.clock)
        held = node.core.local  # the session is registered before welcome is sent
        client.send(F.Hello(v=1, token="t-bob"))
        self.assertIn("bob", held)
        node.core.push({"bob": [F.Notify(event="contact_added", user="x")]})
        self.assertEqual(types(client.received())[-1], F.Notify)

