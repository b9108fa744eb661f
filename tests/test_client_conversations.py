"""The client core's conversation calls over the session: read one conversation, edit,
recall and react, and the read echo of one conversation from another device."""
from __future__ import annotations

from dim import errors
from dim.client import conversations as C
from dim.client import events as E
from dim.client.cache import MessageCache
from dim.protocol import frames as F
from tests.fakes.client import NODE1, NodeSide, SessionTestCase, msg, sending


class ConversationCallTests(SessionTestCase):
    """Edit, recall and react are writes like sends; reading a conversation is queued."""

    def test_frames_and_their_sent(self) -> None:
        """edit, recall and react go out as those frames; each Deferred fires with its sent,
        and no MessageStatus speaks of them (they are not messages of their own)."""
        session, reactor, _, events, side = self.connect()
        side.received()
        edited = session.edit("m1", "fixed", id="e-1")
        recalled = session.recall("m2", id="r-1")
        reacted = session.react("m3", "👍", on=False)
        react_id = next(iter(session.changes.keys() - {"e-1", "r-1"}))
        self.assertEqual(side.received(), [
            F.Edit(id="e-1", mid="m1", body="fixed"), F.Recall(id="r-1", mid="m2"),
            F.React(id=react_id, mid="m3", emoji="👍", on=False)])
        side.send(F.Sent(id="e-1", mid="m10", seq=1, ts=7), F.Sent(id="r-1", mid="m11", seq=2,
                                                                   ts=8))
        sent = self.successResultOf(edited)
        self.assertEqual((sent.id, sent.mid, sent.seq, sent.ts), ("e-1", "m10", 1, 7))
        self.assertEqual(self.successResultOf(recalled).mid, "m11")
        self.assertNoResult(reacted)
        self.assertEqual((session.changes["e-1"].state, session.changes[react_id].state),
                         (E.SENT, E.SENDING))
        self.assertEqual(events.of(E.MessageStatus), [])
        self.assertEqual(session.last_seq, 2)

    def test_refused_before_sending(self) -> None:
        """An empty edit, a bad emoji, a bad mid or no conversation are refused at once."""
        session, reactor, _, events, side = self.connect()
        side.received()
        self.assertRaises(errors.BadRequest, session.edit, "m1", "  ")
        self.assertRaises(errors.TooLarge, session.edit, "m1", "x" * (16 * 1024 + 1))
        self.assertRaises(errors.BadRequest, session.react, "m1", "x" * 17)
        self.assertRaises(errors.BadRequest, session.react, "m1", "")
        self.assertRaises(errors.BadRequest, session.recall, "")
        self.assertRaises(errors.BadRequest, session.read_conversation, 1)
        self.assertRaises(errors.BadRequest, session.read_conversation, 1, with_="b", group="g")
        self.assertEqual(side.received(), [])

    def test_offline_changes_are_queued(self) -> None:
        """Offline, edit, recall and react wait in the outbox, in order, and fire after."""
        session, reactor, _, events, side = self.connect(answers=[NODE1])
        side.lose()
        edited = session.edit("m1", "fixed", id="e-1")
        reacted = session.react("m1", "🎉", id="x-1")
        reactor.advance(20)
        self.assertNoResult(edited)
        side2 = NodeSide(reactor)
        side2.welcome()
        self.assertEqual([f for f in side2.received() if not isinstance(f, F.Ack)], [
            F.Edit(id="e-1", mid="m1", body="fixed"),
            F.React(id="x-1", mid="m1", emoji="🎉", on=True)])
        side2.send(F.Sent(id="e-1", mid="m5", seq=5, ts=1), F.Sent(id="x-1", mid="m6", seq=6,
                                                                   ts=1))
        self.assertEqual(self.successResultOf(edited).seq, 5)
        self.assertEqual(self.successResultOf(reacted).seq, 6)

    def test_change_resent_then_timed_out(self) -> None:
        """An unanswered change is written again after 4 s with the same id, then fails."""
        session, reactor, _, events, side = self.connect()
        side.received()
        d = session.recall("m1", id="r-1")
        reactor.advance(4)
        self.assertEqual(side.received(), [F.Recall(id="r-1", mid="m1")] * 2)
        reactor.advance(4)
        self.failureResultOf(d, E.SendTimedOut)
        self.assertEqual(session.changes["r-1"].state, E.FAILED)
        again = session.retry("r-1")
        self.assertEqual(side.received(), [F.Recall(id="r-1", mid="m1")])
        side.send(F.Sent(id="r-1", mid="m2", seq=1, ts=1))
        self.assertEqual(self.successResultOf(again).mid, "m2")

    def test_change_refused(self) -> None:
        """An error naming an edit fails it with the contract's code; rate_limited waits."""
        session, reactor, _, events, side = self.connect()
        side.received()
        edited = session.edit("m1", "x", id="e-1")
        reacted = session.react("m1", "👍", id="x-1")
        self.assertEqual(len(side.received()), 2)
        side.send(F.Error(code="forbidden", message="not yours", ref="e-1"),
                  F.Error(code="rate_limited", message="slow", ref="x-1", retry_after=1))
        self.assertTrue(self.failureResultOf(edited, E.SendRefused).check(errors.Forbidden))
        self.assertNoResult(reacted)
        reactor.advance(1)
        self.assertEqual(side.received(), [F.React(id="x-1", mid="m1", emoji="👍", on=True)])
        side.send(F.Sent(id="x-1", mid="m2", seq=1, ts=1))
        self.assertEqual(self.successResultOf(reacted).id, "x-1")

    def test_own_change_listed_by_sync_counts_as_sent(self) -> None:
        """An own edit listed by sync before its sent fires its Deferred."""
        session, reactor, _, events, side = self.connect()
        d = session.edit("m1", "fixed", id="e-1")
        side.send(msg(1, sender="alice", body="fixed", id="e-1", kind="edit"))
        self.assertEqual(self.successResultOf(d).mid, "m1")
        self.assertEqual(session.changes["e-1"].state, E.SENT)

    def test_read_conversation_now_and_forward_only(self) -> None:
        """A read of one conversation is written at once, and only forward."""
        session, reactor, _, events, side = self.connect()
        side.received()
        self.assertTrue(session.read_conversation(4, with_="bob"))
        self.assertFalse(session.read_conversation(4, with_="bob"))
        self.assertFalse(session.read_conversation(3, with_="bob"))
        self.assertTrue(session.read_conversation(2, group="g1"))
        self.assertEqual(side.received(), [F.Read(seq=4, with_="bob"), F.Read(seq=2, group="g1")])

    def test_read_conversation_offline_is_queued_highest_only(self) -> None:
        """Offline, only the highest read per conversation waits, and goes after welcome."""
        session, reactor, _, events, side = self.connect(answers=[NODE1])
        side.lose()
        self.assertFalse(session.read_conversation(3, with_="bob"))
        self.assertFalse(session.read_conversation(5, with_="bob"))
        self.assertFalse(session.read_conversation(4, with_="bob"))
        self.assertFalse(session.read_conversation(2, group="g1"))
        reactor.advance(1)
        side2 = NodeSide(reactor)
        side2.welcome()
        self.assertEqual([f for f in side2.received() if isinstance(f, F.Read)],
                         [F.Read(seq=5, with_="bob"), F.Read(seq=2, group="g1")])
        self.assertFalse(session.read_conversation(5, with_="bob"))

    def test_read_on_another_device_is_not_claimed_again(self) -> None:
        """After the echo of a read from another device, a lower one here writes nothing."""
        session, reactor, _, events, side = self.connect()
        side.received()
        side.send(F.ReadNotice(seq=6, by="alice", with_="bob"))
        self.assertFalse(session.read_conversation(6, with_="bob"))
        self.assertTrue(session.read_conversation(7, with_="bob"))
        self.assertEqual([f for f in side.received() if isinstance(f, F.Read)],
                         [F.Read(seq=7, with_="bob")])

    def test_conversation_echo_is_not_a_whole_inbox_read(self) -> None:
        """A read echo naming a conversation is reported as such and clears nothing else."""
        cache = MessageCache(":memory:", "alice")
        session, reactor, _, events, side = self.connect(cache=cache)
        side.send(msg(1), msg(2), msg(3, sender="carol"))
        side.send(F.ReadNotice(seq=3, by="alice", with_="carol"))
        self.assertEqual(events.of(E.ReadUpTo), [])
        self.assertEqual(events.of(C.ConversationReadUpTo),
                         [C.ConversationReadUpTo(3, with_="carol")])
        self.assertEqual({c.peer: c.unread for c in cache.conversations()}["bob"], 2)
        side.send(F.ReadNotice(seq=3, by="bob", with_="alice"))
        self.assertEqual(1, len(events.of(C.ConversationReadUpTo)))


class ReplyMentionSendTests(SessionTestCase):
    """send carries reply_to and mentions, also when it is written again."""

    def test_send_with_reply_and_mentions(self) -> None:
        """The send frame carries both; mentions outside a group are refused at once."""
        session, reactor, _, events, side = self.connect()
        side.received()
        out = sending(session, None, "hi @bob", group="g1", reply_to="m9",
                           mentions=["bob", "bob", "carol"])
        [frame] = side.received()
        self.assertEqual((frame.reply_to, frame.mentions), ("m9", ["bob", "carol"]))
        self.assertEqual(frame.id, out.id)
        self.assertRaises(errors.BadRequest, session.send, "bob", "x", mentions=["bob"])
