"""The client core against a scripted node: MemoryReactorClock, StringTransport, no network.

The helpers at the top (:class:`EventRecorder`, :class:`RouteScript`, :class:`NodeSide`) are
meant to be reused: ``EventRecorder.wait_for`` also works on the real reactor against a running
``dim``.
"""
from __future__ import annotations



from dim import errors
from dim.client import events as E
from dim.client import session as S
from dim.client.cache import MessageCache
from dim.protocol import frames as F
from tests.fakes.client import NODE1, NodeSide, SessionTestCase, msg, sending
from tests.fakes.client import RouteScript

NODE2 = {"id": "n2", "host": "127.0.0.1", "port": 9001}


class ConnectTests(SessionTestCase):
    """Connecting, hello/welcome and the heartbeat."""

    def test_hello_then_connected(self) -> None:
        """The first frame is hello with the token and device; welcome makes it connected."""
        session, reactor, _, events = self.make()
        session.start(NODE1)
        self.assertEqual(reactor.tcpClients[0][:2], ("127.0.0.1", 9000))
        side = NodeSide(reactor)
        (hello,) = side.received()
        self.assertEqual((hello.v, hello.token, hello.device), (1, "tok", "dim-chat"))
        self.assertEqual(session.state, E.CONNECTING)
        side.send(F.Welcome(user="alice", node="n1", heartbeat=30, max_frame=65536, last_seq=0))
        self.assertEqual(session.state, E.CONNECTED)
        (connected,) = events.of(E.Connected)
        self.assertEqual(connected.node.id, "n1")

    def test_start_without_node_routes(self) -> None:
        """Started with no node, the session asks the gateway for one."""
        session, reactor, gateway, _ = self.make([NODE2])
        session.start()
        self.assertEqual(gateway.calls, [[]])
        self.assertEqual(reactor.tcpClients[0][1], 9001)

    def test_ping_after_heartbeat_of_silence(self) -> None:
        """With nothing written for H seconds the client pings, and not before."""
        session, reactor, _, _, side = self.connect()
        reactor.advance(29)
        self.assertEqual(side.types(), [])
        reactor.advance(1.5)
        self.assertEqual(side.types(), ["ping"])

    def test_writing_postpones_ping(self) -> None:
        """A write resets the ping timer."""
        session, reactor, _, _, side = self.connect()
        reactor.advance(20)
        out = sending(session, "bob", "hi")
        side.send(F.Sent(id=out.id, mid="m1", seq=1, ts=1))
        side.received()
        reactor.advance(20)
        self.assertNotIn("ping", side.types())
        reactor.advance(11)
        self.assertIn("ping", side.types())

    def test_dead_after_two_heartbeats_of_silence(self) -> None:
        """Hearing nothing for 2H makes the connection dead and a reconnect is scheduled."""
        session, reactor, gateway, events, side = self.connect(answers=[NODE2])
        reactor.advance(59)
        side.send(F.Pong())
        reactor.advance(59)
        self.assertEqual(events.of(E.Disconnected), [])
        reactor.advance(1.5)
        (gone,) = events.of(E.Disconnected)
        self.assertIn("60", gone.reason)
        self.assertTrue(side.transport.disconnecting or side.transport.disconnected)
        self.assertEqual(session.state, E.RECONNECTING)
        self.assertEqual(len(events.of(E.Reconnecting)), 1)

    def test_no_welcome_is_dead(self) -> None:
        """A node that never answers hello is given up after 10 s."""
        session, reactor, _, events = self.make([NODE2])
        session.start(NODE1)
        NodeSide(reactor)
        reactor.advance(10.5)
        self.assertEqual(len(events.of(E.Disconnected)), 1)


class SeqTests(SessionTestCase):
    """Seq bookkeeping: duplicates, gaps, sync paging and acks."""

    def test_duplicate_seq_shown_once(self) -> None:
        """A msg arriving twice (retransmission) is reported once."""
        session, reactor, _, events, side = self.connect()
        side.send(msg(1))
        side.send(msg(1))
        side.send(msg(2), msg(1), msg(2))
        self.assertEqual([e.entry.seq for e in events.of(E.MessageReceived)], [1, 2])
        self.assertEqual(session.last_seq, 2)

    def test_gap_triggers_sync(self) -> None:
        """A msg with seq > last + 1 makes the client sync from its last contiguous seq."""
        session, reactor, _, events, side = self.connect()
        side.send(msg(1))
        side.received()
        side.send(msg(3))
        syncs = [f for f in side.received() if isinstance(f, F.Sync)]
        self.assertEqual([s.after for s in syncs], [1])
        self.assertEqual(session.last_seq, 1)
        side.send(msg(2), msg(3), F.Synced(after=1, last_seq=3, more=False))
        self.assertEqual(session.last_seq, 3)
        self.assertEqual([e.entry.seq for e in events.of(E.MessageReceived)], [1, 3, 2])
        self.assertEqual(len(events.of(E.SyncFinished)), 1)

    def test_welcome_last_seq_above_own_syncs(self) -> None:
        """welcome.last_seq above the client's own makes it sync from its own."""
        session, reactor, _, _ = self.make(last_seq=4)
        session.start(NODE1)
        side = NodeSide(reactor)
        side.welcome(last_seq=7)
        (sync,) = [f for f in side.received() if isinstance(f, F.Sync)]
        self.assertEqual(sync.after, 4)

    def test_welcome_at_own_seq_does_not_sync(self) -> None:
        """welcome.last_seq equal to the client's own needs no sync."""
        session, reactor, _, _ = self.make(last_seq=4)
        session.start(NODE1)
        side = NodeSide(reactor)
        side.welcome(last_seq=4)
        self.assertNotIn("sync", side.types())

    def test_pong_above_own_seq_syncs(self) -> None:
        """A pong whose last_seq is above the client's (a msg never came) starts a sync; the
        message arrives once."""
        session, reactor, _, events, side = self.connect()
        side.send(msg(1))
        side.received()
        side.send(F.Pong(last_seq=2))
        (sync,) = [f for f in side.received() if isinstance(f, F.Sync)]
        self.assertEqual(sync.after, 1)
        side.send(msg(2), F.Synced(after=1, last_seq=2, more=False))
        self.assertEqual(session.last_seq, 2)
        self.assertEqual([e.entry.seq for e in events.of(E.MessageReceived)], [1, 2])

    def test_pong_at_own_seq_or_without_seq_does_not_sync(self) -> None:
        """A pong at the client's seq, below it (the client is ahead of a slow answer) or
        without last_seq asks for nothing."""
        session, reactor, _, _, side = self.connect()
        side.send(msg(1), msg(2))
        side.received()
        side.send(F.Pong(last_seq=2), F.Pong(last_seq=1), F.Pong())
        self.assertNotIn("sync", side.types())

    def test_sync_pages_until_more_is_false(self) -> None:
        """A synced with more=true is followed by another sync from the new last seq."""
        session, reactor, _, events, side = self.connect(last_seq=5)
        self.assertEqual([f.after for f in side.received() if isinstance(f, F.Sync)], [0])
        side.send(msg(1), msg(2), msg(3), F.Synced(after=0, last_seq=5, more=True))
        self.assertEqual([f.after for f in side.received() if isinstance(f, F.Sync)], [3])
        side.send(msg(4), msg(5), F.Synced(after=3, last_seq=5, more=False))
        self.assertEqual([f for f in side.received() if isinstance(f, F.Sync)], [])
        self.assertEqual(session.last_seq, 5)
        self.assertEqual(events.of(E.SyncFinished), [E.SyncFinished(5)])

    def test_sync_refused_by_error_is_asked_again(self) -> None:
        """An error answering a sync (no ref) releases it; the sync is asked again 1 s later."""
        session, reactor, _, events, side = self.connect(last_seq=5)
        self.assertEqual([f.after for f in side.received() if isinstance(f, F.Sync)], [0])
        side.send(F.Error(code="internal", message="the store failed"))
        self.assertEqual([f for f in side.received() if isinstance(f, F.Sync)], [])
        reactor.advance(S.SYNC_RETRY)
        self.assertEqual([f.after for f in side.received() if isinstance(f, F.Sync)], [0])
        side.send(msg(1), msg(2), msg(3), msg(4), msg(5),
                  F.Synced(after=0, last_seq=5, more=False))
        self.assertEqual(session.last_seq, 5)
        self.assertEqual(events.of(E.SyncFinished), [E.SyncFinished(5)])

    def test_unanswered_sync_is_asked_again(self) -> None:
        """A sync with no answer for SYNC_TIMEOUT is sent again; an answered one is not."""
        session, reactor, _, _, side = self.connect(last_seq=2)
        self.assertEqual([f.after for f in side.received() if isinstance(f, F.Sync)], [0])
        reactor.advance(S.SYNC_TIMEOUT)
        self.assertEqual([f.after for f in side.received() if isinstance(f, F.Sync)], [0])
        side.send(msg(1), msg(2), F.Synced(after=0, last_seq=2, more=False))
        side.received()
        reactor.advance(S.SYNC_TIMEOUT * 2)
        self.assertEqual([f for f in side.received() if isinstance(f, F.Sync)], [])

    def test_ack_is_cumulative_and_coalesced(self) -> None:
        """An idle client acks at once; within 50 ms of an ack the next one waits, once."""
        session, reactor, _, _, side = self.connect()
        side.send(msg(1), msg(2))
        self.assertEqual([f.seq for f in side.received() if isinstance(f, F.Ack)], [2])
        reactor.advance(0.01)
        side.send(msg(3))
        reactor.advance(0.01)
        side.send(msg(4))
        self.assertEqual([f for f in side.received() if isinstance(f, F.Ack)], [])
        reactor.advance(0.04)
        self.assertEqual([f.seq for f in side.received() if isinstance(f, F.Ack)], [4])

    def test_ack_stops_at_gap(self) -> None:
        """The ack covers only the contiguous seqs, not those past a gap."""
        session, reactor, _, _, side = self.connect()
        side.send(msg(1), msg(3))
        self.assertEqual([f.seq for f in side.received() if isinstance(f, F.Ack)], [1])

    def test_duplicate_is_acked_again(self) -> None:
        """A retransmitted msg is acked again (the first ack may have been lost)."""
        session, reactor, _, _, side = self.connect()
        side.send(msg(1))
        side.received()
        reactor.advance(1)
        side.send(msg(1))
        self.assertEqual([f.seq for f in side.received() if isinstance(f, F.Ack)], [1])

    def test_own_sent_fills_the_seq(self) -> None:
        """The seq of a sent counts as handled, so the next msg is not a gap."""
        session, reactor, _, events, side = self.connect()
        out = sending(session, "bob", "hi")
        side.received()
        side.send(F.Sent(id=out.id, mid="m1", seq=1, ts=1))
        side.send(msg(2))
        self.assertNotIn("sync", side.types())
        self.assertEqual(session.last_seq, 2)

    def test_cache_receives_messages_and_seq(self) -> None:
        """Received messages and the contiguous seq go to the cache; a new session starts there."""
        cache = MessageCache(":memory:", "alice")
        session, reactor, _, _, side = self.connect(cache=cache)
        side.send(msg(1), msg(2))
        self.assertEqual(cache.last_seq, 2)
        self.assertEqual([m.body for m in cache.history("bob")], ["hello 1", "hello 2"])
        again = S.ClientSession(RouteScript(), reactor, "alice", "tok", cache=cache)
        self.assertEqual(again.last_seq, 2)


class SendTests(SessionTestCase):
    """Sending: states, resend, failure, retry, delivered marks."""

    def test_sent_then_delivered(self) -> None:
        """A message goes sending -> sent -> delivered, with an event for each."""
        session, reactor, _, events, side = self.connect()
        out = sending(session, "bob", "hi")
        (send,) = side.received()
        self.assertEqual((send.id, send.to, send.body), (out.id, "bob", "hi"))
        side.send(F.Sent(id=out.id, mid="m1", seq=1, ts=5))
        self.assertEqual((out.state, out.mid, out.seq), (E.SENT, "m1", 1))
        side.send(F.Delivered(id=out.id, mid="m1", by="bob"))
        self.assertEqual(out.state, E.DELIVERED)
        self.assertEqual([e.state for e in events.of(E.MessageStatus)],
                         [E.SENDING, E.SENT, E.DELIVERED])
        self.assertEqual(events.of(E.Delivered), [E.Delivered(out.id, "m1", "bob")])

    def test_resend_once_then_failed_then_retry(self) -> None:
        """No sent in 4 s: the same send again; 4 s more: failed; retry sends the same id."""
        session, reactor, _, events, side = self.connect()
        out = sending(session, "bob", "hi")
        self.assertEqual([f.id for f in side.received()], [out.id])
        reactor.advance(3.9)
        self.assertEqual(side.received(), [])
        reactor.advance(0.2)
        self.assertEqual([f.id for f in side.received() if isinstance(f, F.Send)], [out.id])
        self.assertEqual(out.state, E.SENDING)
        reactor.advance(4)
        self.assertEqual(out.state, E.FAILED)
        self.assertEqual([f for f in side.received() if isinstance(f, F.Send)], [])
        self.assertEqual(events.of(E.MessageStatus)[-1].state, E.FAILED)
        session.retry(out.id)
        self.assertEqual(out.state, E.SENDING)
        self.assertEqual([f.id for f in side.received() if isinstance(f, F.Send)], [out.id])
        side.send(F.Sent(id=out.id, mid="m1", seq=1, ts=5))
        self.assertEqual(out.state, E.SENT)

    def test_sent_in_time_stops_resend(self) -> None:
        """A sent within 4 s means no second send and no failure."""
        session, reactor, _, _, side = self.connect()
        out = sending(session, "bob", "hi")
        side.received()
        reactor.advance(3)
        side.send(F.Sent(id=out.id, mid="m1", seq=1, ts=5))
        reactor.advance(10)
        self.assertEqual([f for f in side.received() if isinstance(f, F.Send)], [])
        self.assertEqual(out.state, E.SENT)

    def test_error_with_ref_fails_the_message(self) -> None:
        """An error naming a send's id (say not_found) marks that message failed at once."""
        session, reactor, _, events, side = self.connect()
        out = sending(session, "nobody", "hi")
        side.send(F.Error(code="not_found", message="no such user", ref=out.id))
        self.assertEqual(out.state, E.FAILED)
        self.assertIn("not_found", out.error)
        self.assertEqual(events.of(E.ServerError)[0].code, "not_found")

    def test_rate_limited_sends_go_again_at_the_nodes_pace(self) -> None:
        """Refused sends go again retry_after apart, in order, never failing for it."""
        session, reactor, _, events, side = self.connect()
        out = [sending(session, "bob", f"line {i}") for i in range(5)]
        self.assertEqual(len(side.received()), 5)
        side.send(F.Sent(id=out[0].id, mid="m0", seq=1, ts=5),
                  *[F.Error(code="rate_limited", message="slow down", ref=m.id,
                            retry_after=0.5) for m in out[1:]])
        resent: list[str] = []
        for _ in range(4):
            reactor.advance(0.5)
            [again] = [f for f in side.received() if isinstance(f, F.Send)]
            resent.append(again.id)
            if len(resent) < 3:  # refused once more: it goes to the back of the line
                side.send(F.Error(code="rate_limited", message="slow down", ref=again.id,
                                  retry_after=0.5))
            else:
                side.send(F.Sent(id=again.id, mid=again.id, seq=len(resent), ts=5))
        self.assertEqual(resent, [m.id for m in out[1:]])
        for _ in range(4):
            reactor.advance(0.5)
            for frame in side.received():
                if isinstance(frame, F.Send):
                    side.send(F.Sent(id=frame.id, mid=frame.id, seq=9, ts=5))
        self.assertEqual([m.state for m in out], [E.SENT] * 5)
        self.assertNotIn(E.FAILED, [e.state for e in events.of(E.MessageStatus)])

    def test_ids_are_unique(self) -> None:
        """Ids differ between messages and between sessions."""
        a, _, _, _ = self.make()
        b, _, _, _ = self.make()
        ids = {a.new_id() for _ in range(1000)} | {b.new_id() for _ in range(1000)}
        self.assertEqual(len(ids), 2000)
        self.assertTrue(all(1 <= len(i) <= 64 and i.isascii() for i in ids))

    def test_own_message_seen_by_sync_counts_as_sent(self) -> None:
        """Our own message listed by sync (its sent was lost) is marked sent, not shown again."""
        session, reactor, _, events, side = self.connect()
        out = sending(session, "bob", "hi")
        side.send(msg(2), F.Msg(mid="m1", id=out.id, from_="alice", to="bob", ts=3, seq=1,
                                body="hi", kind="text", delivered=True))
        self.assertEqual(out.state, E.DELIVERED)
        self.assertEqual([e.entry.seq for e in events.of(E.MessageReceived)], [2])

    def test_delivered_from_another_device(self) -> None:
        """A delivered for a message sent from another device is reported by mid."""
        session, reactor, _, events, side = self.connect()
        side.send(F.Delivered(id="other", mid="m9", by="bob"))
        self.assertEqual(events.of(E.Delivered), [E.Delivered("other", "m9", "bob")])

    def test_oversized_body_is_refused_locally(self) -> None:
        """A body over 16 KiB raises TooLarge without touching the wire."""
        session, reactor, _, _, side = self.connect()
        self.assertRaises(errors.TooLarge, session.send, "bob", "x" * (16 * 1024 + 1))
        self.assertEqual(side.received(), [])


class ReconnectTests(SessionTestCase):
    """Losing the node: backoff, routing elsewhere, outbox, resync."""

    def test_backoff_full_jitter_bounds(self) -> None:
        """Delays are rng * min(8, 0.5 * 2^(attempt-1)): 0 with rng 0, the cap with rng 1."""
        self.assertEqual([S.full_jitter(n, lambda: 1.0) for n in range(1, 10)],
                         [0.5, 1, 2, 4, 8, 8, 8, 8, 8])
        self.assertEqual(S.full_jitter(5, lambda: 0.0), 0)
        self.assertEqual(S.full_jitter(1000, lambda: 0.999), 0.999 * 8)

    def test_backoff_grows_while_routing_fails(self) -> None:
        """Each failed route schedules the next attempt with a larger (jittered) delay."""
        draws = iter([1.0, 0.5, 1.0, 0.25])
        session, reactor, gateway, events = self.make(
            [errors.Unavailable(), errors.Unavailable(), errors.Unavailable(), NODE2],
            rng=lambda: next(draws))
        session.start()
        for _ in range(3):
            reactor.advance(30)
        got = [(e.attempt, e.in_seconds) for e in events.of(E.Reconnecting)]
        self.assertEqual(got, [(1, 0.5), (2, 0.5), (3, 2.0)])
        self.assertEqual(reactor.tcpClients[-1][1], 9001)

    def test_reconnect_now_skips_the_wait(self) -> None:
        """reconnect_now during the backoff wait routes at once, and the wait is cancelled."""
        session, reactor, gateway, events = self.make([errors.Unavailable(), NODE2],
                                                      rng=lambda: 1.0)
        session.start()
        self.assertEqual(session.state, E.RECONNECTING)
        self.assertEqual(len(gateway.calls), 1)
        self.assertTrue(session.reconnect_now())
        self.assertEqual(len(gateway.calls), 2)
        self.assertEqual(reactor.tcpClients[-1][1], 9001)
        self.assertEqual([c for c in reactor.getDelayedCalls() if c.active()], [])

    def test_reconnect_excludes_failed_node(self) -> None:
        """After losing node n1 the route asks to exclude n1, then connects where told."""
        session, reactor, gateway, events, side = self.connect(answers=[NODE2])
        side.lose()
        self.assertEqual(session.state, E.RECONNECTING)
        (rec,) = events.of(E.Reconnecting)
        self.assertTrue(0 <= rec.in_seconds <= 0.5)
        reactor.advance(rec.in_seconds)
        self.assertEqual(gateway.calls, [["n1"]])
        self.assertEqual(reactor.tcpClients[-1][1], 9001)
        side2 = NodeSide(reactor)
        side2.welcome("n2")
        self.assertEqual(session.node.id, "n2")
        self.assertEqual(session.state, E.CONNECTED)

    def test_no_node_but_the_failed_one_routes_again_without_exclusion(self) -> None:
        """If excluding the failed node leaves none, the route is asked again without it."""
        session, reactor, gateway, _, side = self.connect(answers=[errors.Unavailable(), NODE1])
        side.lose()
        reactor.advance(1)
        self.assertEqual(gateway.calls, [["n1"], []])
        self.assertEqual(len(reactor.tcpClients), 2)

    def test_goaway_reconnects_elsewhere(self) -> None:
        """A goaway closes the connection and routes excluding that node."""
        session, reactor, gateway, events, side = self.connect(answers=[NODE2])
        side.send(F.Goaway(reason="shutdown"))
        self.assertTrue(side.transport.disconnecting or side.transport.disconnected)
        reactor.advance(1)
        self.assertEqual(gateway.calls, [["n1"]])

    def test_outbox_flushed_after_reconnect(self) -> None:
        """Messages in flight or typed offline are sent after reconnecting, with the same ids."""
        session, reactor, gateway, events, side = self.connect(answers=[NODE2])
        inflight = sending(session, "bob", "one")
        side.lose()
        offline = sending(session, "bob", "two")
        self.assertEqual(offline.state, E.SENDING)
        reactor.advance(10)  # longer than the send timeouts: offline messages do not fail
        self.assertEqual(inflight.state, E.SENDING)
        side2 = NodeSide(reactor)
        side2.welcome("n2")
        sends = [f for f in side2.received() if isinstance(f, F.Send)]
        self.assertEqual([(f.id, f.body) for f in sends],
                         [(inflight.id, "one"), (offline.id, "two")])

    def test_resync_from_last_seq_after_reconnect(self) -> None:
        """After reconnecting, a welcome above the client's seq syncs from where it was."""
        session, reactor, gateway, events, side = self.connect(answers=[NODE2])
        side.send(msg(1), msg(2))
        side.lose()
        reactor.advance(1)
        side2 = NodeSide(reactor)
        side2.welcome("n2", last_seq=5)
        (sync,) = [f for f in side2.received() if isinstance(f, F.Sync)]
        self.assertEqual(sync.after, 2)
        side2.send(msg(2), msg(3), msg(4), msg(5), F.Synced(after=2, last_seq=5, more=False))
        self.assertEqual([e.entry.seq for e in events.of(E.MessageReceived)], [1, 2, 3, 4, 5])

    def test_attempts_reset_after_welcome(self) -> None:
        """A successful welcome starts the backoff from attempt 1 again."""
        session, reactor, gateway, events, side = self.connect(answers=[NODE2, NODE1])
        side.lose()
        reactor.advance(1)
        side2 = NodeSide(reactor)
        side2.welcome("n2")
        self.assertEqual([e.attempt for e in events.of(E.Reconnecting)], [1])
        side2.lose()
        self.assertEqual([e.attempt for e in events.of(E.Reconnecting)], [1, 1])

    def test_refused_token_expires_the_session(self) -> None:
        """An unauthorized route stops reconnecting and reports SessionExpired."""
        session, reactor, gateway, events, side = self.connect(answers=[errors.Unauthorized()])
        side.lose()
        reactor.advance(1)
        self.assertEqual(len(events.of(E.SessionExpired)), 1)
        self.assertEqual(session.state, E.OFFLINE)
        reactor.advance(100)
        self.assertEqual(len(gateway.calls), 1)

    def test_stop_stays_offline(self) -> None:
        """stop() closes the connection and nothing reconnects."""
        session, reactor, gateway, events, side = self.connect(answers=[NODE2])
        session.stop()
        side.lose()
        reactor.advance(100)
        self.assertEqual(gateway.calls, [])
        self.assertEqual(session.state, E.OFFLINE)


class SendDeferredTests(SessionTestCase):
    """What send returns: a Deferred of the node's sent, with delivered, resend and failure."""

    def test_sent_fires_with_mid_and_seq_then_delivered(self) -> None:
        """The Deferred fires with the sent's id, mid, seq and ts; delivered on delivered."""
        session, reactor, _, events, side = self.connect()
        d = session.send("bob", "hi", id="c-1")
        self.assertEqual(events.of(E.MessageStatus)[-1], E.MessageStatus(
            "c-1", E.SENDING, session.outgoing["c-1"]))
        (frame,) = side.received()
        self.assertEqual((frame.id, frame.body), ("c-1", "hi"))
        self.assertNoResult(d)
        side.send(F.Sent(id="c-1", mid="m1", seq=1, ts=5))
        sent = self.successResultOf(d)
        self.assertEqual((sent.id, sent.mid, sent.seq, sent.ts), ("c-1", "m1", 1, 5))
        self.assertNoResult(sent.delivered)
        side.send(F.Delivered(id="c-1", mid="m1", by="bob"))
        self.assertIsNone(self.successResultOf(sent.delivered))
        self.assertEqual([e.state for e in events.of(E.MessageStatus)],
                         [E.SENDING, E.SENT, E.DELIVERED])

    def test_read_receipt_fires_delivered(self) -> None:
        """A read receipt (with no delivered before it) fires delivered too."""
        session, reactor, _, _, side = self.connect()
        d = session.send("bob", "hi", id="c-1")
        side.send(F.Sent(id="c-1", mid="m1", seq=1, ts=5))
        sent = self.successResultOf(d)
        side.send(F.ReadNotice(id="c-1", mid="m1", by="bob"))
        self.assertIsNone(self.successResultOf(sent.delivered))

    def test_delivered_known_from_sync_before_sent(self) -> None:
        """Its own message listed by sync as delivered fires the send, delivered already."""
        session, reactor, _, _, side = self.connect()
        d = session.send("bob", "hi", id="c-1")
        side.send(F.Msg(mid="m1", id="c-1", from_="alice", to="bob", ts=3, seq=1, body="hi",
                        kind="text", delivered=True))
        sent = self.successResultOf(d)
        self.assertEqual((sent.mid, sent.seq), ("m1", 1))
        self.assertIsNone(self.successResultOf(sent.delivered))

    def test_resend_after_four_seconds_with_the_same_id(self) -> None:
        """No sent in 4 s: the same send again; a sent then fires the Deferred."""
        session, reactor, _, _, side = self.connect()
        d = session.send("bob", "hi", id="c-1")
        side.received()
        reactor.advance(3.9)
        self.assertEqual(side.received(), [])
        reactor.advance(0.1)
        self.assertEqual([(f.id, f.body) for f in side.received() if isinstance(f, F.Send)],
                         [("c-1", "hi")])
        reactor.advance(3.9)
        self.assertNoResult(d)
        side.send(F.Sent(id="c-1", mid="m1", seq=1, ts=5))
        self.assertEqual(self.successResultOf(d).mid, "m1")
        reactor.advance(10)
        self.assertEqual(session.outgoing["c-1"].state, E.SENT)

    def test_timed_out_after_the_second_four_seconds(self) -> None:
        """Two writes 4 s apart and no sent 4 s after the second: SendTimedOut, and failed."""
        session, reactor, _, events, side = self.connect()
        d = session.send("bob", "hi", id="c-1")
        reactor.advance(4)
        reactor.advance(3.9)
        self.assertNoResult(d)
        reactor.advance(0.1)
        f = self.failureResultOf(d, E.SendTimedOut)
        self.assertEqual(f.value.id, "c-1")
        self.assertIn("no answer", str(f.value))
        self.assertEqual(events.of(E.MessageStatus)[-1].state, E.FAILED)
        self.assertEqual([f.id for f in side.received() if isinstance(f, F.Send)],
                         ["c-1", "c-1"])

    def test_retry_returns_a_fresh_deferred(self) -> None:
        """retry of a failed message writes the same id again; its Deferred fires on sent."""
        session, reactor, _, _, side = self.connect()
        first = session.send("bob", "hi", id="c-1")
        reactor.pump([4, 4])
        self.failureResultOf(first, E.SendTimedOut)
        side.received()
        again = session.retry("c-1")
        self.assertEqual([f.id for f in side.received() if isinstance(f, F.Send)], ["c-1"])
        side.send(F.Sent(id="c-1", mid="m1", seq=1, ts=5))
        self.assertEqual(self.successResultOf(again).seq, 1)
        self.assertEqual(self.successResultOf(session.retry("c-1")).mid, "m1")
        self.assertRaises(KeyError, session.retry, "never")

    def test_error_frame_fails_with_the_contracts_code(self) -> None:
        """An error naming the send fails its Deferred with SendRefused of that code."""
        session, reactor, _, events, side = self.connect()
        d = session.send("nobody", "hi", id="c-1")
        side.send(F.Error(code="not_found", message="no such user", ref="c-1"))
        f = self.failureResultOf(d, E.SendRefused)
        self.assertTrue(f.check(errors.NotFound))
        self.assertEqual((f.value.code, f.value.message, f.value.ref),
                         ("not_found", "no such user", "c-1"))
        self.assertEqual(session.outgoing["c-1"].state, E.FAILED)
        reactor.advance(10)
        self.assertEqual([f.id for f in side.received() if isinstance(f, F.Send)], ["c-1"])

    def test_unknown_error_code_is_still_a_refusal(self) -> None:
        """A code the client does not know fails the Deferred with a plain SendRefused."""
        session, reactor, _, _, side = self.connect()
        d = session.send("bob", "hi", id="c-1")
        side.send(F.Error(code="brand_new", message="new rule", ref="c-1"))
        self.assertEqual(self.failureResultOf(d, E.SendRefused).value.code, "brand_new")

    def test_rate_limited_keeps_the_deferred_pending(self) -> None:
        """A rate_limited refusal writes again after retry_after; the Deferred waits for it."""
        session, reactor, _, _, side = self.connect()
        d = session.send("bob", "hi", id="c-1")
        side.received()
        side.send(F.Error(code="rate_limited", message="slow down", ref="c-1", retry_after=2))
        reactor.advance(1.9)
        self.assertNoResult(d)
        self.assertEqual(side.received(), [])
        reactor.advance(0.1)
        self.assertEqual([f.id for f in side.received() if isinstance(f, F.Send)], ["c-1"])
        side.send(F.Sent(id="c-1", mid="m1", seq=1, ts=5))
        self.assertEqual(self.successResultOf(d).mid, "m1")

    def test_offline_send_is_queued_and_fires_after_connecting(self) -> None:
        """Sent before connecting, the message waits (no timeout) and goes after welcome."""
        session, reactor, _, events = self.make()
        d = session.send("bob", "hi", id="c-1")
        self.assertEqual(session.outgoing["c-1"].state, E.SENDING)
        reactor.advance(30)
        self.assertNoResult(d)
        session.start(NODE1)
        side = NodeSide(reactor)
        side.welcome()
        self.assertEqual([f.id for f in side.received() if isinstance(f, F.Send)], ["c-1"])
        side.send(F.Sent(id="c-1", mid="m1", seq=1, ts=5))
        self.assertEqual(self.successResultOf(d).id, "c-1")

    def test_in_flight_send_survives_a_reconnect(self) -> None:
        """A send whose connection dropped goes again, same id, and its Deferred fires."""
        session, reactor, _, _, side = self.connect(answers=[NODE2])
        d = session.send("bob", "hi", id="c-1")
        side.lose()
        reactor.advance(10)
        self.assertNoResult(d)
        side2 = NodeSide(reactor)
        side2.welcome("n2")
        self.assertEqual([f.id for f in side2.received() if isinstance(f, F.Send)], ["c-1"])
        side2.send(F.Sent(id="c-1", mid="m1", seq=1, ts=5))
        self.assertEqual(self.successResultOf(d).seq, 1)

    def test_an_id_used_again_answers_for_that_write(self) -> None:
        """A send with an id already used writes nothing new and fires with its sent."""
        session, reactor, _, events, side = self.connect()
        first = session.send("bob", "hi", id="c-1")
        again = session.send("bob", "hi", id="c-1")
        self.assertEqual(len(side.received()), 1)
        side.send(F.Sent(id="c-1", mid="m1", seq=1, ts=5))
        self.assertEqual(self.successResultOf(first), self.successResultOf(again))
        self.assertEqual(self.successResultOf(session.send("bob", "x", id="c-1")).mid, "m1")
        self.assertEqual(len(events.of(E.MessageStatus)), 2)  # sending, sent
        self.assertRaises(errors.BadRequest, session.send, "bob", "hi", id="")
        self.assertRaises(errors.BadRequest, session.send, "bob", "hi", id="x" * 65)

    def test_failure_nobody_waits_on_is_not_logged(self) -> None:
        """An ignored Deferred that timed out or was refused logs no unhandled error."""
        import gc
        session, reactor, _, _, side = self.connect()
        session.send("bob", "one", id="c-1")
        session.send("bob", "two", id="c-2")
        side.send(F.Error(code="forbidden", message="no", ref="c-2"))
        reactor.pump([4, 4])
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual([m.state for m in session.outgoing.values()], [E.FAILED, E.FAILED])

    def test_failure_a_caller_turned_into_another_is_logged(self) -> None:
        """A caller's chain that raises from the failure still has its error logged."""
        import gc
        session, reactor, _, _, side = self.connect()

        def broken(f: object) -> None:
            raise ValueError("a bug in the caller")
        session.send("bob", "one", id="c-1").addErrback(broken)
        reactor.pump([4, 4])
        gc.collect()
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class ExpiryAndStopTests(SessionTestCase):
    """What becomes of writes not stored yet when the token is refused, or on stop()."""

    def test_expiry_fails_every_write_not_stored(self) -> None:
        """A refused token fails the writes in flight with WriteExpired (an Unauthorized),
        after SessionExpired; a stored one keeps its Sent, and nothing is written again."""
        import gc
        session, reactor, _, events, side = self.connect()
        stored = session.send("bob", "one", id="c-0")
        side.send(F.Sent(id="c-0", mid="m0", seq=1, ts=5))
        sent = self.successResultOf(stored)
        inflight = session.send("bob", "two", id="c-1")
        edit = session.edit("m0", "one, fixed", id="e-1")
        side.received()
        side.send(F.Error(code="unauthorized", message="token expired"))
        for d, id in ((inflight, "c-1"), (edit, "e-1")):
            f = self.failureResultOf(d, E.WriteExpired)
            self.assertTrue(f.check(errors.Unauthorized))
            self.assertEqual((f.value.id, f.value.reason), (id, "token expired"))
            self.assertIn("token expired", f.value.message)
        self.assertEqual((session.outgoing["c-1"].state, session.changes["e-1"].state),
                         (E.FAILED, E.FAILED))
        self.assertEqual(session.outgoing["c-1"].error, "session expired: token expired")
        self.assertEqual(session.outgoing["c-0"].state, E.SENT)
        self.assertEqual(events.of(E.MessageStatus)[-1],
                         E.MessageStatus("c-1", E.FAILED, session.outgoing["c-1"]))
        told = [type(e) for e in events.events if isinstance(
            e, (E.SessionExpired, E.MessageStatus)) and getattr(e, "state", E.FAILED) == E.FAILED]
        self.assertEqual(told, [E.SessionExpired, E.MessageStatus])
        reactor.advance(100)
        self.assertEqual(side.received(), [])
        self.assertNoResult(sent.delivered)  # stored: a recipient may still receive it
        gc.collect()
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_expiry_on_route_fails_the_outbox(self) -> None:
        """Writes waiting offline (also one waiting out rate_limited) fail when the gateway
        refuses the token on reconnecting."""
        session, reactor, gateway, events, side = self.connect(
            answers=[errors.Unauthorized("token expired")])
        limited = session.send("bob", "one", id="c-1")
        side.send(F.Error(code="rate_limited", message="slow down", ref="c-1", retry_after=30))
        inflight = session.send("bob", "two", id="c-2")
        side.lose()
        queued = session.react("m9", "👍", id="r-1")
        self.assertNoResult(queued)
        reactor.advance(1)
        self.assertEqual(len(events.of(E.SessionExpired)), 1)
        for d in (limited, inflight, queued):
            self.failureResultOf(d, E.WriteExpired)
        self.assertEqual(session._outbox, [])
        self.assertEqual(session._send_timers, {})

    def test_write_on_an_expired_session_fails_until_started_again(self) -> None:
        """A write made after expiry fails at once; started again with a new token, retry
        writes it with the same id."""
        session, reactor, _, events, side = self.connect()
        side.send(F.Error(code="unauthorized", message="token expired"))
        d = session.send("bob", "late", id="c-1")
        self.failureResultOf(d, E.WriteExpired)
        self.assertEqual([e.state for e in events.of(E.MessageStatus)], [E.SENDING, E.FAILED])
        self.failureResultOf(session.retry("c-1"), E.WriteExpired)
        session.token = "new-tok"
        session.start(NODE1)
        side2 = NodeSide(reactor)
        side2.welcome()
        again = session.retry("c-1")
        self.assertEqual([f.id for f in side2.received() if isinstance(f, F.Send)], ["c-1"])
        side2.send(F.Sent(id="c-1", mid="m1", seq=1, ts=5))
        self.assertEqual(self.successResultOf(again).mid, "m1")

    def test_stop_keeps_writes_for_a_later_start(self) -> None:
        """stop() fails nothing: a write not stored yet waits, and goes after start()."""
        session, reactor, _, _, side = self.connect()
        d = session.send("bob", "hi", id="c-1")
        session.stop()
        queued = session.send("bob", "later", id="c-2")
        reactor.advance(100)
        self.assertNoResult(d)
        self.assertNoResult(queued)
        session.start(NODE1)
        side2 = NodeSide(reactor)
        side2.welcome()
        self.assertEqual([f.id for f in side2.received() if isinstance(f, F.Send)],
                         ["c-1", "c-2"])
        side2.send(F.Sent(id="c-1", mid="m1", seq=1, ts=5), F.Sent(id="c-2", mid="m2", seq=2, ts=6))
        self.assertEqual((self.successResultOf(d).seq, self.successResultOf(queued).seq), (1, 2))


class MemoryTests(SessionTestCase):
    """A long session remembers only its newest stored writes, and all it still needs."""

    def setUp(self) -> None:
        self.patch(S, "KEPT_WRITES", 2)

    def test_only_the_newest_stored_writes_are_kept(self) -> None:
        """Stored writes beyond the newest KEPT_WRITES (messages and changes together) are
        forgotten; failed and sending ones are kept, and a failed one can still be retried."""
        session, reactor, _, _, side = self.connect()
        session.send("nobody", "refused", id="c-0")
        side.send(F.Error(code="not_found", message="no such user", ref="c-0"))
        for seq, id in enumerate(["c-1", "c-2", "c-3"], 1):
            session.send("bob", id, id=id)
            side.send(F.Sent(id=id, mid=f"m{seq}", seq=seq, ts=seq),
                       F.Delivered(id=id, mid=f"m{seq}", by="bob"))
        session.react("m1", "👍", id="r-1")
        side.send(F.Sent(id="r-1", mid="m4", seq=4, ts=4))
        session.send("bob", "in flight", id="c-5")
        self.assertEqual(list(session.outgoing), ["c-0", "c-3", "c-5"])
        self.assertEqual(list(session.changes), ["r-1"])
        self.assertEqual(session._delivered, {"c-3"})
        self.assertEqual(session.outgoing["c-0"].state, E.FAILED)
        self.assertRaises(KeyError, session.retry, "c-1")
        side.received()
        session.retry("c-0")
        self.assertEqual([f.id for f in side.received() if isinstance(f, F.Send)], ["c-0"])

    def test_only_the_latest_failures_are_kept(self) -> None:
        """Of the failed writes, the KEPT_WRITES that failed last are kept (a retried one
        that failed again counts as a new failure); an older one is forgotten."""
        session, reactor, _, _, side = self.connect()
        for id in ("c-1", "c-2"):
            session.send("nobody", id, id=id)
            side.send(F.Error(code="not_found", message="no such user", ref=id))
        session.retry("c-1")
        side.send(F.Error(code="not_found", message="no such user", ref="c-1"))
        session.edit("m9", "fixed", id="e-3")
        side.send(F.Error(code="forbidden", message="not yours", ref="e-3"))
        self.assertEqual((list(session.outgoing), list(session.changes)), (["c-1"], ["e-3"]))
        self.assertRaises(KeyError, session.retry, "c-2")
        session.send("bob", "sending", id="c-4")
        reactor.advance(4)
        session.send("bob", "sending too", id="c-5")
        self.assertEqual(list(session.outgoing), ["c-1", "c-4", "c-5"])  # sending ones stay

    def test_a_long_session_stays_bounded(self) -> None:
        """Hundreds of writes, stored and delivered: only the newest are remembered."""
        session, reactor, _, events, side = self.connect()
        for seq in range(1, 301):
            session.send("bob", "hi", id=f"c-{seq}")
            side.send(F.Sent(id=f"c-{seq}", mid=f"m{seq}", seq=seq, ts=seq),
                      F.ReadNotice(id=f"c-{seq}", mid=f"m{seq}", by="bob"))
        self.assertEqual(list(session.outgoing), ["c-299", "c-300"])
        self.assertEqual(session.outgoing["c-300"].state, E.READ)
        self.assertEqual((len(session._stored), len(session._delivered)), (2, 2))
        self.assertEqual((session._delivery, session._forgotten, session._waiting), ({}, {}, {}))
        self.assertEqual(len(events.of(E.ReadReceipt)), 300)

    def test_a_forgotten_write_still_fires_delivered(self) -> None:
        """A Sent's delivered still fires when its write was forgotten before a recipient
        acknowledged it (and only for a receipt of its own mid); the event comes as ever."""
        session, reactor, _, events, side = self.connect()
        first = session.send("bob", "one", id="c-1")
        side.send(F.Sent(id="c-1", mid="m1", seq=1, ts=1))
        sent = self.successResultOf(first)
        for seq in (2, 3):
            session.send("bob", "more", id=f"c-{seq}")
            side.send(F.Sent(id=f"c-{seq}", mid=f"m{seq}", seq=seq, ts=seq))
        self.assertNotIn("c-1", session.outgoing)
        side.send(F.Delivered(id="c-1", mid="m9", by="bob"))
        self.assertNoResult(sent.delivered)
        side.send(F.ReadNotice(id="c-1", mid="m1", by="bob"))
        self.assertIsNone(self.successResultOf(sent.delivered))
        self.assertEqual(events.of(E.ReadReceipt), [E.ReadReceipt("c-1", "m1", "bob")])
        self.assertEqual((list(session._delivery), session._forgotten), (["c-2", "c-3"], {}))

    def test_a_forgotten_id_sent_again_is_answered_by_the_node(self) -> None:
        """Sending a forgotten id again writes it once more; the node's answer (the same
        stored message, ids being idempotent) fires it."""
        session, reactor, _, _, side = self.connect()
        for seq in (1, 2, 3):
            session.send("bob", "hi", id=f"c-{seq}")
            side.send(F.Sent(id=f"c-{seq}", mid=f"m{seq}", seq=seq, ts=seq))
        side.received()
        again = session.send("bob", "hi", id="c-1")
        self.assertEqual([f.id for f in side.received() if isinstance(f, F.Send)], ["c-1"])
        side.send(F.Sent(id="c-1", mid="m1", seq=1, ts=1))
        self.assertEqual(self.successResultOf(again).mid, "m1")


class ReceiptTests(SessionTestCase):
    """delivered and read receipts: on the write, in the cache, and as events."""

    def test_group_and_direct_receipts(self) -> None:
        """A group message is delivered (not read) when one member read it, and knows who
        received and read it; a direct one is read; a receipt for a message of another
        device is cached and told."""
        cache = MessageCache(":memory:", "alice")
        session, reactor, _, events, side = self.connect(cache=cache)
        session.send(None, "all", group="g1", id="c-1")
        session.send("bob", "hi", id="c-2")
        side.send(F.Sent(id="c-1", mid="m1", seq=1, ts=1), F.Sent(id="c-2", mid="m2", seq=2, ts=2),
                  F.Delivered(id="c-1", mid="m1", by="bob"),
                  F.ReadNotice(id="c-1", mid="m1", by="carol"),
                  F.ReadNotice(id="c-2", mid="m2", by="bob"),
                  F.Delivered(id="other", mid="m7", by="bob"))
        group, direct = session.outgoing["c-1"], session.outgoing["c-2"]
        self.assertEqual((group.state, group.delivered_by, group.read_by),
                         (E.DELIVERED, {"bob", "carol"}, {"carol"}))
        self.assertEqual((direct.state, direct.delivered_by, direct.read_by),
                         (E.READ, {"bob"}, {"bob"}))
        self.assertEqual(cache.receipts(["m1", "m2", "m7"]),
                         {"m1": ({"bob", "carol"}, {"carol"}), "m2": ({"bob"}, {"bob"}),
                          "m7": ({"bob"}, set())})
        self.assertEqual([e for e in events.events if isinstance(e, (E.Delivered, E.ReadReceipt))],
                         [E.Delivered("c-1", "m1", "bob"), E.ReadReceipt("c-1", "m1", "carol"),
                          E.ReadReceipt("c-2", "m2", "bob"), E.Delivered("other", "m7", "bob")])
