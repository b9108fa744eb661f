"""Tests of NodeCore on one node: hello, send, msg, ack, delivered, sync, retransmit, goaway."""
from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail
from twisted.trial.unittest import SynchronousTestCase

from dim.node.throttle import Limit, Limits, UserLimiter
from dim.protocol import codec
from dim.protocol import frames as F
from tests.fakes.node import EPOCH, Node

TS = int(EPOCH * 1000)


def send(i: Any, to: str = "bob", body: str | None = None) -> F.Send:
    """A text send with id ``m<i>``."""
    return F.Send(id=f"m{i}", to=to, body=body if body is not None else f"hello {i}")


class HelloTests(SynchronousTestCase):
    """hello authenticates, registers the session and answers welcome."""

    def setUp(self) -> None:
        self.node = Node(heartbeat=20, max_frame=32768)

    def test_welcome(self) -> None:
        """welcome names the user, node, heartbeat, max_frame and last_seq."""
        client = self.node.connect()
        client.send(F.Hello(v=1, token="t-alice", device="laptop"))
        self.assertEqual(client.received(), [F.Welcome(user="alice", node="n1", heartbeat=20,
                                                       max_frame=32768, last_seq=0)])
        self.assertTrue(self.successResultOf(self.node.sessions.online("alice")))

    def test_last_seq(self) -> None:
        """last_seq is the highest seq in the user's inbox."""
        self.node.store.store_message("alice", "x1", ["bob"], None, "a", "text", None, 1)
        self.node.store.store_message("bob", "x2", ["alice"], None, "b", "text", None, 2)
        client = self.node.connect()
        client.send(F.Hello(v=1, token="t-bob"))
        [welcome] = client.received()
        self.assertEqual(welcome.last_seq, 2)

    def test_bad_token(self) -> None:
        """A refused token gets unauthorized, closes, and registers nothing."""
        client = self.node.connect()
        client.send(F.Hello(v=1, token="forged"))
        [err] = client.received()
        self.assertEqual(err.code, "unauthorized")
        self.assertTrue(client.closing)
        self.assertEqual(len(self.node.sessions), 0)

    def test_hello_twice(self) -> None:
        """hello after welcome gets bad_request."""
        client = self.node.login("alice")
        client.send(F.Hello(v=1, token="t-alice"))
        [err] = client.received()
        self.assertEqual(err.code, "bad_request")
        self.assertEqual(len(self.node.sessions), 1)

    def test_lost_unregisters(self) -> None:
        """Losing the connection removes the session from the registry."""
        client = self.node.login("alice")
        client.lose()
        self.assertFalse(self.successResultOf(self.node.sessions.online("alice")))
        self.assertEqual(self.node.core.local, {})
        self.assertEqual(self.node.core.connection_count(), 0)

    def test_lost_during_authentication(self) -> None:
        """A connection lost while its token is checked never gets a session."""
        pending: Deferred[str] = Deferred()
        self.node.core.authenticate = lambda token: pending
        client = self.node.connect()
        client.send(F.Hello(v=1, token="t-alice"))
        client.lose()
        pending.callback("alice")
        self.assertEqual(len(self.node.sessions), 0)
        self.assertEqual(self.node.core.local, {})

    def test_push_held_until_welcome(self) -> None:
        """A msg stored while hello is in progress is written after welcome, never before."""
        pending: Deferred[int] = Deferred()
        real_last_seq = self.node.store.last_seq
        self.node.store.last_seq = lambda user: pending
        bob = self.node.connect()
        bob.send(F.Hello(v=1, token="t-bob"))
        self.node.store.last_seq = real_last_seq
        alice = self.node.login("alice")
        alice.send(send(1))
        self.assertEqual(bob.received(), [])
        pending.callback(0)
        welcome, msg = bob.received()
        self.assertIsInstance(welcome, F.Welcome)
        self.assertEqual((msg.id, msg.seq), ("m1", 1))

    def test_registry_failure(self) -> None:
        """A failing session registry gets internal and leaves no local session behind."""
        self.node.sessions.add = lambda *a: fail(RuntimeError("redis down"))
        client = self.node.connect()
        client.send(F.Hello(v=1, token="t-alice"))
        [err] = client.received()
        self.assertEqual(err.code, "internal")
        self.assertEqual(self.node.core.local, {})
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class SendTests(SynchronousTestCase):
    """send stores, answers sent, and pushes msg to everyone else concerned."""

    def setUp(self) -> None:
        self.node = Node()
        self.alice = self.node.login("alice")
        self.bob = self.node.login("bob")

    def test_send_sent_msg(self) -> None:
        """The sender gets sent with its seq; the recipient gets msg with its own seq."""
        self.node.store.store_message("bob", "pre", ["carol"], None, "x", "text", None, 1)
        self.alice.send(send(1))
        [sent] = self.alice.received()
        self.assertEqual(sent, F.Sent(id="m1", mid=sent.mid, seq=1, ts=TS))
        [msg] = self.bob.received()
        self.assertEqual(msg, F.Msg(mid=sent.mid, id="m1", from_="alice", to="bob",
                                    body="hello 1", kind="text", ts=TS, seq=2))

    def test_unknown_recipient(self) -> None:
        """A send to a user that does not exist gets not_found with ref."""
        self.alice.send(send(1, to="nobody"))
        [err] = self.alice.received()
        self.assertEqual((err.code, err.ref), ("not_found", "m1"))
        self.assertFalse(self.alice.closing)

    def test_bad_fields(self) -> None:
        """Missing or contradictory fields get bad_request with ref."""
        self.alice.send({"type": "send", "id": "m1", "body": "x"})
        self.alice.send({"type": "send", "id": "m2", "to": "bob", "group": "g", "body": "x"})
        self.alice.send({"type": "send", "id": "", "to": "bob", "body": "x"})
        self.alice.send({"type": "send", "id": "m4", "to": "bob", "body": 5})
        codes = [(e.code, e.ref) for e in self.alice.received()]
        self.assertEqual(codes, [("bad_request", "m1"), ("bad_request", "m2"),
                                 ("bad_request", ""), ("bad_request", "m4")])

    def test_unknown_type(self) -> None:
        """A frame type the node does not know gets unknown_type; the connection stays."""
        self.alice.send({"type": "launch", "id": "r1"})
        [err] = self.alice.received()
        self.assertEqual((err.code, err.ref), ("unknown_type", "r1"))
        self.alice.send(send(1))
        self.assertIsInstance(self.alice.received()[0], F.Sent)

    def test_too_large(self) -> None:
        """A body over 16 KiB gets too_large; nothing is stored."""
        self.alice.send(send(1, body="x" * (16 * 1024 + 1)))
        [err] = self.alice.received()
        self.assertEqual((err.code, err.ref), ("too_large", "m1"))
        self.assertEqual(self.successResultOf(self.node.store.last_seq("alice")), 0)

    def test_group_not_found(self) -> None:
        """A send to a group that does not exist gets not_found with the send's id."""
        self.alice.send(F.Send(id="g1", group="friends", body="hi"))
        [err] = self.alice.received()
        self.assertEqual((err.code, err.ref), ("not_found", "g1"))

    def test_unknown_file(self) -> None:
        """An image send pointing at no uploaded file gets bad_request with the send's id."""
        self.alice.send(F.Send(id="f1", to="bob", kind="image", body="",
                               file=F.FileRef(id="x", name="a.png", size=1, mime="image/png")))
        [err] = self.alice.received()
        self.assertEqual((err.code, err.ref), ("bad_request", "f1"))
        self.assertIn("no such file", err.message)

    def test_duplicate(self) -> None:
        """A repeated id gets the same sent again and nothing is pushed again."""
        self.alice.send(send(1))
        [first] = self.alice.received()
        self.bob.received()
        self.alice.send(send(1, body="changed"))
        self.assertEqual(self.alice.received(), [first])
        self.assertEqual(self.bob.received(), [])
        self.assertEqual(self.successResultOf(self.node.store.last_seq("bob")), 1)

    def test_multi_device(self) -> None:
        """With three sessions of the sender, the other two get msg with the sender's seq."""
        alice2 = self.node.login("alice")
        alice3 = self.node.login("alice")
        bob2 = self.node.login("bob")
        self.node.store.store_message("carol", "pre", ["bob"], None, "x", "text", None, 1)
        self.alice.send(send(1))
        [sent] = self.alice.received()
        self.assertIsInstance(sent, F.Sent)
        for other in (alice2, alice3):
            [msg] = other.received()
            self.assertEqual((msg.id, msg.seq, msg.from_, msg.to), ("m1", 1, "alice", "bob"))
        for b in (self.bob, bob2):
            [msg] = b.received()
            self.assertEqual((msg.id, msg.seq), ("m1", 2))

    def test_self_message(self) -> None:
        """A message to oneself is one inbox entry; the other sessions get msg."""
        alice2 = self.node.login("alice")
        self.alice.send(send(1, to="alice"))
        [sent] = self.alice.received()
        self.assertEqual(sent.seq, 1)
        [msg] = alice2.received()
        self.assertEqual((msg.seq, msg.from_, msg.to), (1, "alice", "alice"))
        self.assertEqual(self.successResultOf(self.node.store.last_seq("alice")), 1)
        self.assertEqual(self.bob.received(), [])

    def test_order_of_pipelined_sends(self) -> None:
        """100 sends written in one go are stored, answered and pushed in order."""
        data = b"".join(codec.encode(send(i)) for i in range(100))
        self.alice.send(data)
        sents = self.alice.received()
        self.assertEqual([s.id for s in sents], [f"m{i}" for i in range(100)])
        self.assertEqual([s.seq for s in sents], list(range(1, 101)))
        msgs = self.bob.received()
        self.assertEqual([(m.id, m.seq) for m in msgs], [(f"m{i}", i + 1) for i in range(100)])

    def test_order_with_slow_store(self) -> None:
        """The store is called in frame order even while earlier stores are pending."""
        calls: list[str] = []
        pending: list[Deferred[Any]] = []
        real = self.node.store.store_message

        def slow(sender: str, client_id: str, *rest: Any) -> Deferred[Any]:
            calls.append(client_id)
            d: Deferred[Any] = Deferred()
            pending.append((d, real(sender, client_id, *rest)))
            return d

        self.node.store.store_message = slow
        for i in range(5):
            self.alice.send(send(i))
        self.assertEqual(calls, [f"m{i}" for i in range(5)])
        for d, stored in reversed(pending):
            d.callback(self.successResultOf(stored))
        self.assertEqual(sorted(s.seq for s in self.alice.of_type(F.Sent)), [1, 2, 3, 4, 5])

    def test_store_failure(self) -> None:
        """A failing store call gets internal for that send; the connection lives on."""
        self.node.store.store_message = lambda *a: fail(RuntimeError("disk on fire"))
        self.alice.send(send(1))
        [err] = self.alice.received()
        self.assertEqual((err.code, err.ref), ("internal", "m1"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(self.alice.closing)
        self.alice.send(F.Ping())
        self.assertEqual(self.alice.received(), [F.Pong(last_seq=0)])

    def test_offline_recipient(self) -> None:
        """A send to an offline user is stored and reaches the user by sync later."""
        self.alice.send(send(1, to="carol"))
        self.assertIsInstance(self.alice.received()[0], F.Sent)
        carol = self.node.login("carol")
        carol.send(F.Sync(after=0))
        msg, synced = carol.received()
        self.assertEqual((msg.id, msg.seq), ("m1", 1))
        self.assertEqual(synced, F.Synced(after=0, last_seq=1, more=False))


class AckTests(SynchronousTestCase):
    """ack stops retransmission and tells the sender delivered."""

    def setUp(self) -> None:
        self.node = Node()
        self.clock = self.node.clock
        self.alice = self.node.login("alice")
        self.alice2 = self.node.login("alice")
        self.bob = self.node.login("bob")

    def test_cumulative_ack_delivered(self) -> None:
        """One ack for three messages gives three delivered to every session of the sender."""
        for i in range(3):
            self.alice.send(send(i))
        sent = self.alice.of_type(F.Sent)
        self.alice2.received()
        self.bob.received()
        self.bob.send(F.Ack(seq=3))
        self.assertEqual(self.bob.received(), [])
        expected = [F.Delivered(id=s.id, mid=s.mid, by="bob") for s in sent]
        self.assertEqual(self.alice.received(), expected)
        self.assertEqual(self.alice2.received(), expected)

    def test_ack_again_changes_nothing(self) -> None:
        """A repeated ack gives no second delivered."""
        self.alice.send(send(1))
        self.bob.send(F.Ack(seq=1))
        self.alice.received()
        self.bob.send(F.Ack(seq=1))
        self.assertEqual(self.alice.received(), [])

    def test_own_messages_ack(self) -> None:
        """Acking one's own sent messages produces no delivered."""
        self.alice.send(send(1))
        self.alice.received()
        self.alice2.send(F.Ack(seq=1))
        self.assertEqual(self.alice.received(), [])
        self.assertEqual(self.alice2.of_type(F.Delivered), [])

    def test_retransmit_once(self) -> None:
        """An unacknowledged msg is sent once more at 4 s, then never again."""
        self.alice.send(send(1))
        [msg] = self.bob.received()
        self.clock.advance(3.9)
        self.assertEqual(self.bob.received(), [])
        self.clock.advance(0.1)
        self.assertEqual(self.bob.received(), [msg])
        self.clock.advance(60)
        self.assertEqual(self.bob.received(), [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_no_retransmit_after_ack(self) -> None:
        """An acknowledged msg is not sent again, and its timer is gone."""
        self.alice.send(send(1))
        self.bob.received()
        self.alice2.received()
        self.bob.send(F.Ack(seq=1))
        self.clock.advance(10)
        self.assertEqual(self.bob.received(), [])
        # alice2 never acked its copy: it gets it once more
        [again] = self.alice2.of_type(F.Msg)
        self.assertEqual(again.id, "m1")
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_partial_ack(self) -> None:
        """An ack up to 2 of 3 leaves only the third to retransmit, at its own time."""
        self.alice.send(send(1))
        self.clock.advance(1)
        self.alice.send(send(2))
        self.alice.send(send(3))
        self.bob.received()
        self.bob.send(F.Ack(seq=2))
        self.clock.advance(3)
        self.assertEqual(self.bob.received(), [])
        self.clock.advance(1)
        self.assertEqual([m.seq for m in self.bob.received()], [3])

    def test_retransmits_staggered(self) -> None:
        """Messages pushed at different times are each resent 4 s after their push."""
        self.alice.send(send(1))
        self.clock.advance(2)
        self.alice.send(send(2))
        self.bob.received()
        self.clock.advance(2)
        self.assertEqual([m.seq for m in self.bob.received()], [1])
        self.clock.advance(2)
        self.assertEqual([m.seq for m in self.bob.received()], [2])

    def test_no_timer_after_connection_lost(self) -> None:
        """Losing a connection cancels its retransmission timer."""
        self.alice.send(send(1))
        self.bob.lose()
        self.alice2.lose()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idle_session_holds_no_queue(self) -> None:
        """A session that was never pushed a msg, or has had every msg acknowledged, holds no
        retransmission queue; one made again later still retransmits."""
        session = self.bob.conn.session
        self.assertIsNone(session._pending)
        self.alice.send(send(1))
        self.bob.received()
        self.assertIsNotNone(session._pending)
        self.bob.send(F.Ack(seq=1))
        self.assertIsNone(session._pending)
        self.assertEqual(session.unacknowledged, [])
        self.alice.send(send(2))
        [msg] = self.bob.received()
        self.assertEqual(session.unacknowledged, [2])
        self.clock.advance(4)
        self.assertEqual(self.bob.received(), [msg])

    def test_ack_store_failure(self) -> None:
        """A failing ack store call gets internal; the connection lives on."""
        self.node.store.ack = lambda *a: fail(RuntimeError("boom"))
        self.bob.send(F.Ack(seq=1))
        [err] = self.bob.received()
        self.assertEqual(err.code, "internal")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertFalse(self.bob.closing)

    def test_delivered_to_offline_sender_is_in_sync(self) -> None:
        """When the sender is offline, the delivered mark shows in its sync."""
        self.alice.send(send(1))
        self.alice.lose()
        self.alice2.lose()
        self.bob.send(F.Ack(seq=1))
        alice = self.node.login("alice")
        alice.send(F.Sync(after=0))
        msg, _ = alice.received()
        self.assertTrue(msg.delivered)


class PongTests(SynchronousTestCase):
    """ping is answered by pong with the inbox's last_seq, and never waits long for it."""

    def setUp(self) -> None:
        self.node = Node(heartbeat=10)

    def test_pong_has_last_seq(self) -> None:
        """last_seq is the highest seq of the user's inbox, messages sent by the user too."""
        alice = self.node.login("alice")
        alice.send(F.Ping())
        self.assertEqual(alice.received(), [F.Pong(last_seq=0)])
        self.node.store.store_message("bob", "x1", ["alice"], None, "a", "text", None, 1)
        alice.received()
        alice.send(send(1))
        alice.received()
        alice.send(F.Ping())
        self.assertEqual(alice.received(), [F.Pong(last_seq=2)])

    def test_slow_store_plain_pong(self) -> None:
        """A store that does not answer within pong_wait gets a pong without last_seq; its late
        answer writes nothing more."""
        alice = self.node.login("alice")
        slow: Deferred[int] = Deferred()
        self.node.store.last_seq = lambda user: slow
        alice.send(F.Ping())
        self.assertEqual(alice.received(), [])
        self.node.clock.advance(self.node.core.pong_wait)
        self.assertEqual(alice.received(), [F.Pong()])
        slow.callback(3)
        self.assertEqual(alice.received(), [])

    def test_failing_store_plain_pong(self) -> None:
        """A failing store gets a pong without last_seq at once, and nothing is logged as an
        error (the store's outage is reported where it matters)."""
        alice = self.node.login("alice")
        self.node.store.last_seq = lambda user: fail(RuntimeError("no store"))
        alice.send(F.Ping())
        self.assertEqual(alice.received(), [F.Pong()])
        self.assertFalse(alice.closing)
        self.assertEqual(self.flushLoggedErrors(RuntimeError), [])
        self.node.clock.advance(5)
        self.assertEqual(alice.received(), [])

    def test_pong_wait_bounded_by_heartbeat(self) -> None:
        """pong_wait is at most 1 s, and half the heartbeat when that is shorter."""
        self.assertEqual(self.node.core.pong_wait, 1.0)
        self.assertEqual(Node(heartbeat=1).core.pong_wait, 0.5)

    def test_connection_closed_while_waiting(self) -> None:
        """A connection lost while its pong waits for the store gets nothing written."""
        alice = self.node.login("alice")
        slow: Deferred[int] = Deferred()
        self.node.store.last_seq = lambda user: slow
        alice.send(F.Ping())
        alice.lose()
        slow.callback(1)
        self.assertEqual(alice.received(), [])


class SyncTests(SynchronousTestCase):
    """sync pages through the user's own inbox."""

    def setUp(self) -> None:
        self.node = Node()
        for i in range(5):
            self.node.store.store_message("alice", f"m{i}", ["bob"], None, f"b{i}", "text",
                                          None, 1000 + i)
        self.node.store.store_message("carol", "c1", ["alice"], None, "secret", "text",
                                      None, 2000)
        self.bob = self.node.login("bob")

    def test_paging(self) -> None:
        """Pages of 2 come with more=true until the last one."""
        self.bob.send(F.Sync(after=0, limit=2))
        *msgs, synced = self.bob.received()
        self.assertEqual([m.seq for m in msgs], [1, 2])
        self.assertEqual(synced, F.Synced(after=0, last_seq=5, more=True))
        self.bob.send(F.Sync(after=2, limit=2))
        *msgs, synced = self.bob.received()
        self.assertEqual([m.seq for m in msgs], [3, 4])
        self.assertTrue(synced.more)
        self.bob.send(F.Sync(after=4, limit=2))
        *msgs, synced = self.bob.received()
        self.assertEqual([(m.seq, m.id, m.body, m.from_, m.to) for m in msgs],
                         [(5, "m4", "b4", "alice", "bob")])
        self.assertEqual(synced, F.Synced(after=4, last_seq=5, more=False))

    def test_nothing_after(self) -> None:
        """A sync past the end answers synced alone."""
        self.bob.send(F.Sync(after=5))
        self.assertEqual(self.bob.received(), [F.Synced(after=5, last_seq=5, more=False)])

    def test_default_limit(self) -> None:
        """sync without limit returns everything up to 100."""
        self.bob.send({"type": "sync", "after": 0})
        frames = self.bob.received()
        self.assertEqual(len(frames), 6)

    def test_only_own_inbox(self) -> None:
        """sync never returns another user's messages."""
        self.bob.send(F.Sync(after=0, limit=1000))
        bodies = [m.body for m in self.bob.of_type(F.Msg)]
        self.assertNotIn("secret", bodies)

    def test_flags(self) -> None:
        """Acknowledged messages come with delivered=true."""
        self.bob.send(F.Ack(seq=2))
        alice = self.node.login("alice")
        alice.send(F.Sync(after=0, limit=3))
        msgs = alice.of_type(F.Msg)
        self.assertEqual([m.delivered for m in msgs], [True, True, False])

    def test_sync_not_retransmitted(self) -> None:
        """msg frames answering sync are not retransmitted."""
        self.bob.send(F.Sync(after=0))
        self.bob.received()
        self.node.clock.advance(10)
        self.assertEqual(self.bob.received(), [])

    def test_fetch_failure(self) -> None:
        """A failing fetch gets internal; the connection lives on."""
        self.node.store.fetch = lambda *a: fail(RuntimeError("boom"))
        self.bob.send(F.Sync(after=0))
        [err] = self.bob.received()
        self.assertEqual(err.code, "internal")
        self.flushLoggedErrors(RuntimeError)


class ShutdownTests(SynchronousTestCase):
    """shutdown says goaway, closes after a grace and unregisters every session."""

    def setUp(self) -> None:
        self.node = Node(shutdown_grace=1.0, drain_timeout=5.0)
        self.clock = self.node.clock

    def test_goaway_then_close(self) -> None:
        """Every connection gets goaway, then is closed after the grace."""
        a = self.node.login("alice")
        b = self.node.connect()
        d = self.node.core.shutdown("restart")
        self.assertEqual(a.received(), [F.Goaway(reason="restart")])
        self.assertEqual(b.received(), [F.Goaway(reason="restart")])
        self.assertFalse(a.closing)
        self.clock.advance(1)
        self.assertTrue(a.closing and b.closing)
        self.assertNoResult(d)
        a.lose()
        b.lose()
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(self.node.sessions), 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_abort_stuck(self) -> None:
        """Connections that do not close are aborted after the drain timeout."""
        a = self.node.login("alice")
        d = self.node.core.shutdown("shutdown")
        self.clock.advance(6)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(len(self.node.sessions), 0)
        self.assertEqual(self.node.core.connection_count(), 0)
        self.assertTrue(a.transport.disconnecting)

    def test_no_connections(self) -> None:
        """With no connection, shutdown fires at once."""
        self.assertIsNone(self.successResultOf(self.node.core.shutdown()))

    def test_new_connection_turned_away(self) -> None:
        """A connection arriving during shutdown gets goaway and is closed."""
        self.node.login("alice")
        self.node.core.shutdown("shutdown")
        late = self.node.connect()
        self.assertEqual(late.received(), [F.Goaway(reason="shutdown")])
        self.assertTrue(late.closing)

    def test_waits_for_unregistration(self) -> None:
        """shutdown fires only after the registry has forgotten the sessions."""
        a = self.node.login("alice")
        pending: Deferred[bool] = Deferred()
        self.node.sessions.remove = lambda user, session: pending
        d = self.node.core.shutdown()
        a.lose()
        self.assertNoResult(d)
        pending.callback(True)
        self.successResultOf(d)


class IsolationTests(SynchronousTestCase):
    """A misbehaving connection does not disturb others."""

    def test_oversize_frame(self) -> None:
        """A frame over max_frame closes that connection; the others keep chatting."""
        node = Node()
        alice = node.login("alice")
        bob = node.login("bob")
        alice2 = node.login("alice")
        alice2.send(b"\x00\x01\x00\x01" + b"{" * 100)
        [err] = alice2.received()
        self.assertEqual(err.code, "frame_too_large")
        self.assertTrue(alice2.closing)
        alice2.lose()
        alice.send(send(1))
        self.assertIsInstance(alice.received()[0], F.Sent)
        self.assertEqual([m.id for m in bob.received()], ["m1"])

    def test_junk_and_flood(self) -> None:
        """Junk closes only its connection; a flood of sends does not delay another user."""
        # Every send of the flood is stored: a limit high enough not to refuse any.
        node = Node(limiter=UserLimiter(Limits({"send": Limit(1e6, 1000)})))
        alice = node.login("alice")
        bob = node.login("bob")
        junk = node.login("carol")
        junk.send(b"\x00\x00\x00\x05nope!")
        self.assertTrue(junk.closing)
        alice.send(b"".join(codec.encode(send(i)) for i in range(500)))
        bob.send(F.Ping())
        self.assertEqual(bob.of_type(F.Pong), [F.Pong(last_seq=500)])
        self.assertFalse(bob.closing or alice.closing)


class HostileFrameTests(SynchronousTestCase):
    """Frames built to break the decoder or the store get the contract's errors."""

    def setUp(self) -> None:
        self.node = Node()
        self.alice = self.node.login("alice")

    def test_sync_after_beyond_64_bits(self) -> None:
        """sync.after = 2^63 is bad_request; the connection stays and the next sync works."""
        self.alice.send({"type": "sync", "after": 2**63})
        self.alice.send(F.Sync(after=0))
        frames = self.alice.received()
        self.assertEqual(frames[0].code, "bad_request")
        self.assertIsInstance(frames[-1], F.Synced)
        self.assertFalse(self.alice.closing)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_deeply_nested_json(self) -> None:
        """990 levels of nesting: the send before it is stored, then bad_frame and close."""
        nested = b'{"type":"ping","x":' + b"[" * 990 + b"]" * 990 + b"}"
        self.alice.send(codec.encode(send(1))
                        + len(nested).to_bytes(4, "big") + nested)
        frames = self.alice.received()
        self.assertIsInstance(frames[0], F.Sent)
        self.assertEqual(frames[1].code, "bad_frame")
        self.assertTrue(self.alice.closing)
        self.assertEqual(self.flushLoggedErrors(), [])


class SendLimitTests(SynchronousTestCase):
    """send is limited per user: over the limit, rate_limited with retry_after, nothing stored."""

    def setUp(self) -> None:
        self.node = Node()
        self.alice = self.node.login("alice")
        self.bob = self.node.login("bob")
        self.carol = self.node.login("carol")

    def test_flood_is_refused_and_not_stored(self) -> None:
        """Of 2,000 sends at once some get rate_limited (ref, retry_after) and are not stored."""
        for i in range(2000):
            self.alice.send(send(i))
        frames = self.alice.received()
        sent = [f for f in frames if isinstance(f, F.Sent)]
        refused = [f for f in frames if isinstance(f, F.Error)]
        self.assertEqual(len(sent) + len(refused), 2000)
        self.assertGreaterEqual(len(sent), 50)
        self.assertGreater(len(refused), 1500)
        self.assertEqual({e.code for e in refused}, {"rate_limited"})
        self.assertEqual(refused[0].ref, f"m{len(sent)}")
        self.assertGreater(refused[0].retry_after, 0)
        self.assertLessEqual(refused[0].retry_after, 1)
        # Only what was answered sent is in bob's inbox.
        self.assertEqual(self.successResultOf(self.node.store.last_seq("bob")), len(sent))
        self.assertEqual(len(self.bob.of_type(F.Msg)), len(sent))

    def test_other_users_unaffected(self) -> None:
        """While alice is refused, carol's send to bob is stored and delivered."""
        for i in range(500):
            self.alice.send(send(i))
        self.assertEqual(self.alice.of_type(F.Error)[-1].code, "rate_limited")
        self.bob.received()
        self.carol.send(F.Send(id="c1", to="bob", body="hi"))
        [sent] = self.carol.received()
        self.assertIsInstance(sent, F.Sent)
        [msg] = self.bob.received()
        self.assertEqual((msg.from_, msg.body), ("carol", "hi"))

    def test_after_retry_after(self) -> None:
        """A send waiting retry_after seconds passes again; the limit spans all sessions."""
        for i in range(200):
            self.alice.send(send(i))
        err = self.alice.of_type(F.Error)[-1]
        other = self.node.login("alice")
        other.send(F.Send(id="x1", to="bob", body="from another session"))
        self.assertEqual([f.code for f in other.of_type(F.Error)], ["rate_limited"])
        self.node.clock.advance(err.retry_after)
        other.send(F.Send(id="x2", to="bob", body="later"))
        self.assertEqual([f.id for f in other.of_type(F.Sent)], ["x2"])

    def test_operator_limit(self) -> None:
        """A limit given to the node replaces the default."""
        node = Node(limiter=UserLimiter(Limits({"send": Limit(1.0, 2)})))
        alice = node.login("alice")
        for i in range(3):
            alice.send(send(i))
        self.assertEqual([type(f) for f in alice.received()], [F.Sent, F.Sent, F.Error])
