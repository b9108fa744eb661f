"""The client core's conversation calls over the session: read one conversation, edit,
recall and react, and the read echo of one conversation from another device."""
from __future__ import annotations

from dim import errors
from dim.client import conversations as C
from dim.client import events as E
from dim.client.cache import MessageCache
from dim.protocol import frames as F
from tests.fakes.client import SessionTestCase, msg


class ConversationCallTests(SessionTestCase):
    """The calls write the contract's frames, only when connected."""

    def test_frames(self) -> None:
        """read with a conversation, edit, recall and react go out as those frames."""
        session, reactor, _, events, side = self.connect()
        side.received()
        self.assertTrue(C.read_conversation(session, 4, with_="bob"))
        edit_id = C.edit(session, "m1", "fixed")
        recall_id = C.recall(session, "m2")
        react_id = C.react(session, "m3", "👍", on=False)
        self.assertEqual(side.received(), [
            F.Read(seq=4, with_="bob"), F.Edit(id=edit_id, mid="m1", body="fixed"),
            F.Recall(id=recall_id, mid="m2"),
            F.React(id=react_id, mid="m3", emoji="👍", on=False)])
        self.assertEqual(3, len({edit_id, recall_id, react_id}))

    def test_refused_before_sending(self) -> None:
        """An empty edit, a bad emoji or no conversation are refused at once."""
        session, reactor, _, events, side = self.connect()
        self.assertRaises(errors.BadRequest, C.edit, session, "m1", "  ")
        self.assertRaises(errors.BadRequest, C.react, session, "m1", "x" * 17)
        self.assertRaises(errors.BadRequest, C.read_conversation, session, 1)

    def test_offline_writes_nothing(self) -> None:
        """Offline, the calls write nothing and say so."""
        session, reactor, _, events, side = self.connect()
        session.stop()
        self.assertFalse(C.read_conversation(session, 4, group="g1"))
        self.assertIsNone(C.edit(session, "m1", "x"))

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
        out = session.send(None, "hi @bob", group="g1", reply_to="m9",
                           mentions=["bob", "bob", "carol"])
        [frame] = side.received()
        self.assertEqual((frame.reply_to, frame.mentions), ("m9", ["bob", "carol"]))
        self.assertEqual(frame.id, out.id)
        self.assertRaises(errors.BadRequest, session.send, "bob", "x", mentions=["bob"])
