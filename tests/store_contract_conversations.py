"""The conversation part of the IStore contract: read pointers per conversation and the
server's unread counts.  Mixed into every store's contract test case, next to
:class:`tests.store_contract.StoreContractMixin` (whose fixtures it uses)."""
from __future__ import annotations

from typing import Any

from twisted.internet import defer

from dim.store.interface import AckOp, Receipt


class ConversationStoreContractMixin:
    """Tests every rule of per-conversation read state; needs the store fixtures."""

    @defer.inlineCallbacks
    def counts(self, store: Any, user: str):
        """``{conv: (read_seq, unread, last seq)}`` of ``user``'s conversations, in order."""
        convs = yield store.conversations(user, 50)
        return [(c.conv, c.read_seq, c.unread, c.last.seq) for c in convs]

    @defer.inlineCallbacks
    def test_conversations_newest_first_with_unread(self):
        """Each peer and group is one conversation, newest activity first, unread counted."""
        store = yield self.store("alice", "bob", "carol")
        yield self.send(store, "bob", "b1", "alice")
        yield self.send(store, "carol", "c1", "alice")
        yield self.send(store, "bob", "b2", "alice")
        yield self.send(store, "alice", "a1", "carol")
        yield self.send(store, "carol", "g1", ["alice", "bob"], group="G")
        self.assertEqual([("#G", 0, 1, 5), ("carol", 0, 1, 4), ("bob", 0, 2, 3)],
                         (yield self.counts(store, "alice")))
        self.assertEqual([("#G", 0, 0, 3), ("alice", 0, 1, 2)],
                         (yield self.counts(store, "carol")))
        convs = yield store.conversations("alice", 1)
        self.assertEqual(["#G"], [c.conv for c in convs])
        self.assertEqual("g1", convs[0].last.message.id)
        self.assertEqual([], (yield store.conversations("nobody", 10)))

    @defer.inlineCallbacks
    def test_message_to_oneself_is_own_conversation(self):
        """A message to oneself is in the conversation with oneself, and never unread."""
        store = yield self.store("alice")
        yield self.send(store, "alice", "n1", "alice")
        self.assertEqual([("alice", 0, 0, 1)], (yield self.counts(store, "alice")))

    @defer.inlineCallbacks
    def test_read_conversation_leaves_others_unread(self):
        """Reading one conversation clears its unread entries only, with their receipts."""
        store = yield self.store("alice", "bob", "carol")
        b1 = yield self.send(store, "bob", "b1", "alice")
        yield self.send(store, "carol", "c1", "alice")
        b2 = yield self.send(store, "bob", "b2", "alice")
        delivered, read, moved = yield store.read_conversation("alice", "bob", 99)
        expected = [Receipt(mid=b1.message.mid, id="b1", sender="bob", seq=1),
                    Receipt(mid=b2.message.mid, id="b2", sender="bob", seq=3)]
        self.assertEqual((expected, expected, 3), (delivered, read, moved))
        self.assertEqual([("bob", 3, 0, 3), ("carol", 0, 1, 2)],
                         (yield self.counts(store, "alice")))
        entry = yield self.entry(store, "bob", 1)
        self.assertTrue(entry.read and entry.delivered)
        entry = yield self.entry(store, "carol", 1)
        self.assertFalse(entry.read or entry.delivered)

    @defer.inlineCallbacks
    def test_read_pointer_only_moves_forward(self):
        """A lower or equal conversation read changes nothing and says so."""
        store = yield self.store("alice", "bob")
        yield self.send(store, "bob", "b1", "alice")
        yield self.send(store, "bob", "b2", "alice")
        self.assertEqual(1, (yield store.read_conversation("alice", "bob", 1))[2])
        self.assertEqual(([], [], 0), (yield store.read_conversation("alice", "bob", 1)))
        self.assertEqual(([], [], 0), (yield store.read_conversation("alice", "bob", 0)))
        self.assertEqual([("bob", 1, 1, 2)], (yield self.counts(store, "alice")))
        self.assertEqual(([], [], 0), (yield store.read_conversation("alice", "zed", 5)))
        self.assertEqual(([], [], 0), (yield store.read_conversation("nobody", "bob", 5)))

    @defer.inlineCallbacks
    def test_read_after_ack_gives_no_delivered(self):
        """Entries acked before a conversation read give read receipts, no delivered ones."""
        store = yield self.store("alice", "bob")
        b1 = yield self.send(store, "bob", "b1", "alice")
        yield store.ack("alice", 1)
        delivered, read, moved = yield store.read_conversation("alice", "bob", 1)
        self.assertEqual([], delivered)
        self.assertEqual([Receipt(mid=b1.message.mid, id="b1", sender="bob", seq=1)], read)
        self.assertEqual([], (yield store.ack("alice", 1)))

    @defer.inlineCallbacks
    def test_whole_inbox_read_after_conversation_read(self):
        """A whole-inbox read skips what a conversation read covered and clears the rest."""
        store = yield self.store("alice", "bob", "carol")
        yield self.send(store, "bob", "b1", "alice")
        c1 = yield self.send(store, "carol", "c1", "alice")
        yield store.read_conversation("alice", "bob", 1)
        self.assertEqual([Receipt(mid=c1.message.mid, id="c1", sender="carol", seq=2)],
                         (yield store.ack("alice", 2)))
        receipts = yield store.read("alice", 2)
        self.assertEqual([Receipt(mid=c1.message.mid, id="c1", sender="carol", seq=2)],
                         receipts)
        self.assertEqual([("carol", 2, 0, 2), ("bob", 2, 0, 1)],
                         (yield self.counts(store, "alice")))
        self.assertEqual(([], [], 0), (yield store.read_conversation("alice", "carol", 2)))

    @defer.inlineCallbacks
    def test_whole_inbox_read_moves_pointers(self):
        """A whole-inbox read up to a seq reads every conversation up to it."""
        store = yield self.store("alice", "bob", "carol")
        yield self.send(store, "bob", "b1", "alice")
        yield self.send(store, "carol", "c1", "alice")
        yield self.send(store, "bob", "b2", "alice")
        yield store.read("alice", 2)
        self.assertEqual([("bob", 2, 1, 3), ("carol", 2, 0, 2)],
                         (yield self.counts(store, "alice")))
        yield self.send(store, "carol", "c2", "alice")
        self.assertEqual([("carol", 2, 1, 4), ("bob", 2, 1, 3)],
                         (yield self.counts(store, "alice")))

    @defer.inlineCallbacks
    def test_group_read_per_member(self):
        """A group message is read when every member read the group conversation."""
        store = yield self.store("alice", "bob", "carol")
        yield self.send(store, "alice", "g1", ["bob", "carol"], group="G")
        yield self.send(store, "alice", "d1", "bob")
        yield store.read_conversation("bob", "#G", 1)
        self.assertFalse((yield self.entry(store, "alice", 1)).read)
        delivered, read, moved = yield store.read_conversation("carol", "#G", 9)
        self.assertEqual((1, 1, 1), (len(delivered), len(read), moved))
        self.assertTrue((yield self.entry(store, "alice", 1)).read)
        self.assertFalse((yield self.entry(store, "alice", 2)).read)
        self.assertEqual([("alice", 0, 1, 2), ("#G", 1, 0, 1)],
                         (yield self.counts(store, "bob")))

    @defer.inlineCallbacks
    def test_apply_conversation_read(self):
        """apply runs a conversation read in batch order, after the sends before it."""
        store = yield self.store("alice", "bob")
        outcomes = yield store.apply([
            self.send_op("bob", "b1", "alice"), self.send_op("bob", "b2", "alice"),
            AckOp(user="alice", seq=2, read=True, conv="bob")])
        self.assertEqual(2, len(outcomes[2][1]))
        self.assertEqual(2, outcomes[2][2])
        self.assertEqual([("bob", 2, 0, 2)], (yield self.counts(store, "alice")))

    @defer.inlineCallbacks
    def test_fetch_conversation_pages(self):
        """A conversation's entries come alone, oldest first after a seq, or newest first
        below ``before`` (in seq order), with whether more remain."""
        store = yield self.store("alice", "bob", "carol")
        for n in range(5):
            yield self.send(store, "bob", f"b{n}", "alice")
            yield self.send(store, "carol", f"c{n}", "alice")
        entries, more = yield store.fetch_conversation("alice", "bob", 0, None, 3)
        self.assertEqual(([1, 3, 5], True), ([e.seq for e in entries], more))
        self.assertEqual(["b0", "b1", "b2"], [e.message.id for e in entries])
        entries, more = yield store.fetch_conversation("alice", "bob", 5, None, 3)
        self.assertEqual(([7, 9], False), ([e.seq for e in entries], more))
        entries, more = yield store.fetch_conversation("alice", "carol", 0, 99, 2)
        self.assertEqual(([8, 10], True), ([e.seq for e in entries], more))
        entries, more = yield store.fetch_conversation("alice", "carol", 0, 8, 2)
        self.assertEqual(([4, 6], True), ([e.seq for e in entries], more))
        entries, more = yield store.fetch_conversation("alice", "carol", 0, 4, 5)
        self.assertEqual(([2], False), ([e.seq for e in entries], more))
        entries, more = yield store.fetch_conversation("alice", "carol", 0, 1, 5)
        self.assertEqual(([], False), (entries, more))
        self.assertEqual(([], False),
                         (yield store.fetch_conversation("alice", "zed", 0, None, 5)))
        self.assertEqual(([], False),
                         (yield store.fetch_conversation("nobody", "bob", 0, 9, 5)))

    @defer.inlineCallbacks
    def test_fetch_conversation_marks(self):
        """Fetched conversation entries carry their delivered and read marks."""
        store = yield self.store("alice", "bob")
        yield self.send(store, "alice", "a1", "bob")
        yield self.send(store, "alice", "a2", "bob")
        yield store.read_conversation("bob", "alice", 1)
        entries, _ = yield store.fetch_conversation("alice", "bob", 0, None, 5)
        self.assertEqual([(True, True), (False, False)],
                         [(e.delivered, e.read) for e in entries])

    @defer.inlineCallbacks
    def test_reply_in_same_conversation(self):
        """A reply names a message of the same conversation and is kept with it."""
        store = yield self.store("alice", "bob")
        first = yield self.send(store, "bob", "b1", "alice")
        mid = first.message.mid
        reply = yield store.store_message("alice", "a1", ["bob"], None, "re", "text", None,
                                          1, reply_to=mid)
        self.assertEqual(mid, reply.message.reply_to)
        for user, seq in (("alice", 2), ("bob", 2)):
            entry = yield self.entry(store, user, seq)
            self.assertEqual(mid, entry.message.reply_to)
        again = yield store.store_message("alice", "a1", ["bob"], None, "re", "text", None,
                                          1, reply_to=mid)
        self.assertTrue(again.duplicate)
        self.assertEqual(mid, again.message.reply_to)

    @defer.inlineCallbacks
    def test_bad_reply_stores_nothing(self):
        """A reply to an unknown mid, one from another conversation or one not in the
        sender's inbox is BadRequest, and nothing is stored."""
        from dim.errors import BadRequest
        store = yield self.store("alice", "bob", "carol")
        to_carol = yield self.send(store, "alice", "a0", "carol")
        bob_carol = yield self.send(store, "bob", "b0", "carol")
        for client_id, mid in (("x1", "zzzz"), ("x2", to_carol.message.mid),
                               ("x3", bob_carol.message.mid), ("x4", "")):
            failure = yield self.assertFailure(
                store.store_message("alice", client_id, ["bob"], None, "re", "text", None,
                                    1, reply_to=mid), BadRequest)
            self.assertEqual(client_id, failure.ref)
        self.assertEqual(([], 1), (yield store.fetch("alice", 1, 10)))
        self.assertEqual(1, (yield store.last_seq("bob")))

    @defer.inlineCallbacks
    def test_mentions_counted_while_unread(self):
        """A group message mentioning a member counts in that member's mentions until read."""
        store = yield self.store("alice", "bob", "carol")
        sent = yield store.store_message("alice", "g1", ["bob", "carol"], "G", "hi @bob",
                                         "text", None, 1, mentions=["bob"])
        self.assertEqual(["bob"], sent.message.mentions)
        yield store.store_message("alice", "g2", ["bob", "carol"], "G", "hi", "text", None, 2)
        bob = (yield store.conversations("bob", 5))[0]
        carol = (yield store.conversations("carol", 5))[0]
        self.assertEqual((2, 1), (bob.unread, bob.mentions))
        self.assertEqual((2, 0), (carol.unread, carol.mentions))
        self.assertEqual(["bob"], (yield self.entry(store, "carol", 1)).message.mentions)
        yield store.read_conversation("bob", "#G", 1)
        bob = (yield store.conversations("bob", 5))[0]
        self.assertEqual((1, 0), (bob.unread, bob.mentions))

    def send_op(self, sender: str, client_id: str, to: str) -> Any:
        """A SendOp of one text message."""
        from dim.store.interface import SendOp
        return SendOp(sender=sender, client_id=client_id, recipients=[to], body="x",
                      ts=1)


class DurableConversationStoreContractMixin(ConversationStoreContractMixin):
    """The conversation contract, plus what a durable store keeps over a reopen."""

    @defer.inlineCallbacks
    def test_reopen_keeps_read_state(self):
        """Read pointers and unread counts survive a reopen."""
        store = yield self.store("alice", "bob", "carol")
        yield self.send(store, "bob", "b1", "alice")
        yield self.send(store, "carol", "c1", "alice")
        yield self.send(store, "bob", "b2", "alice")
        yield store.read_conversation("alice", "bob", 1)
        store = yield self.reopen(store)
        self.assertEqual([("bob", 1, 1, 3), ("carol", 0, 1, 2)],
                         (yield self.counts(store, "alice")))


class ChangeStoreContractMixin:
    """Tests every rule of edit, recall and react in the store; needs the store fixtures."""

    def change(self, store: Any, sender: str, client_id: str, kind: str, ref: str,
               body: str = "", on: bool = True, ts: int = 5) -> Any:
        """One change_message call."""
        from dim.store.interface import ChangeOp
        return store.change_message(ChangeOp(sender=sender, client_id=client_id, kind=kind,
                                             ref=ref, body=body, on=on, ts=ts))

    @defer.inlineCallbacks
    def test_edit(self):
        """An edit is a new entry in both inboxes; the original shows the new body."""
        store = yield self.store("alice", "bob")
        sent = yield self.send(store, "alice", "a1", "bob", body="helo")
        mid = sent.message.mid
        result = yield self.change(store, "alice", "e1", "edit", mid, "hello", ts=77)
        self.assertEqual({"alice": 2, "bob": 2}, result.seqs)
        entry = yield self.entry(store, "bob", 2)
        self.assertEqual(("edit", mid, "hello", "alice", "bob"),
                         (entry.message.kind, entry.message.ref, entry.message.body,
                          entry.message.sender, entry.message.to))
        for user in ("alice", "bob"):
            original = (yield self.entry(store, user, 1)).message
            self.assertEqual(("hello", 77), (original.body, original.edited))
        again = yield self.change(store, "alice", "e1", "edit", mid, "other")
        self.assertEqual((True, result.message.mid, result.seqs),
                         (again.duplicate, again.message.mid, again.seqs))
        self.assertEqual(2, (yield store.last_seq("bob")))
        conv = (yield store.conversations("bob", 5))[0]
        self.assertEqual((2, 1), (conv.last.seq, conv.unread))

    @defer.inlineCallbacks
    def test_bad_changes_change_nothing(self):
        """Unknown or unreachable mids are NotFound; someone else's message, a non-text
        edit and any change of a recalled message are Forbidden; nothing is stored."""
        from dim.errors import Forbidden, NotFound
        store = yield self.store("alice", "bob", "carol")
        text = (yield self.send(store, "alice", "a1", "bob")).message.mid
        image = (yield self.send(store, "alice", "a2", "bob",
                                 file={"id": "f", "name": "n", "size": 1,
                                       "mime": "image/png"})).message.mid
        other = (yield self.send(store, "carol", "c1", "alice")).message.mid
        for sender, kind, ref, error in (
                ("alice", "edit", "zzzz", NotFound), ("carol", "react", text, NotFound),
                ("bob", "edit", text, Forbidden), ("bob", "recall", text, Forbidden),
                ("alice", "edit", image, Forbidden), ("bob", "recall", other, NotFound)):
            yield self.assertFailure(self.change(store, sender, "x", kind, ref, "b"), error)
        yield self.change(store, "alice", "r1", "recall", text)
        for kind in ("edit", "recall", "reaction"):
            yield self.assertFailure(self.change(store, "alice", "y" + kind, kind, text, "b"),
                                     Forbidden)
        self.assertEqual(3, (yield store.last_seq("bob")))
        self.assertEqual(1, (yield store.last_seq("carol")))

    @defer.inlineCallbacks
    def test_recall(self):
        """A recalled message has no body and no file, and its file is no longer readable
        by its recipients (its uploader still reads it)."""
        store = yield self.store("alice", "bob")
        from dim.store.interface import FileRecord
        yield store.add_file(FileRecord(id="f1", owner="alice", name="n", size=1,
                                        mime="image/png", sha256="x", ts=1))
        sent = yield self.send(store, "alice", "a1", "bob", body="look",
                               file={"id": "f1", "name": "n", "size": 1, "mime": "image/png"})
        self.assertTrue((yield store.may_read_file("bob", "f1")))
        result = yield self.change(store, "alice", "r1", "recall", sent.message.mid)
        self.assertEqual(2, result.seqs["bob"])
        original = (yield self.entry(store, "bob", 1)).message
        self.assertTrue(original.recalled)
        from dim.store.interface import entry_frame
        frame = entry_frame((yield self.entry(store, "bob", 1)))
        self.assertEqual(("", None, True), (frame.body, frame.file, frame.recalled))
        self.assertFalse((yield store.may_read_file("bob", "f1")))
        self.assertTrue((yield store.may_read_file("alice", "f1")))
        self.assertEqual("recall", (yield self.entry(store, "bob", 2)).message.kind)

    @defer.inlineCallbacks
    def test_recall_keeps_file_given_by_another_message(self):
        """A recall takes a file away only from the users it was the last message, not
        recalled, to give it to: the same file in another message keeps it readable."""
        from dim.store.interface import FileRecord
        store = yield self.store("alice", "bob", "carol", "dave")
        yield store.add_file(FileRecord(id="f1", owner="alice", name="n", size=1,
                                        mime="image/png", sha256="x", ts=1))
        file = {"id": "f1", "name": "n", "size": 1, "mime": "image/png"}
        first = yield self.send(store, "alice", "a1", "bob", file=file)
        second = yield self.send(store, "alice", "a2", ["bob", "carol"], group="G",
                                 file=file)
        passed_on = yield self.send(store, "carol", "c1", "dave", file=file)

        @defer.inlineCallbacks
        def readers():
            found = []
            for user in ("alice", "bob", "carol", "dave"):
                if (yield store.may_read_file(user, "f1")):
                    found.append(user)
            return found

        self.assertEqual(["alice", "bob", "carol", "dave"], (yield readers()))
        yield self.change(store, "alice", "r1", "recall", first.message.mid)
        self.assertEqual(["alice", "bob", "carol", "dave"], (yield readers()))
        yield self.change(store, "alice", "r2", "recall", second.message.mid)
        self.assertEqual(["alice", "carol", "dave"], (yield readers()))
        yield self.change(store, "carol", "r3", "recall", passed_on.message.mid)
        self.assertEqual(["alice"], (yield readers()))
        yield self.change(store, "alice", "r2", "recall", second.message.mid)
        self.assertEqual(["alice"], (yield readers()))

    @defer.inlineCallbacks
    def test_reactions(self):
        """Anyone holding the message reacts; reactions add, remove and are not unread."""
        store = yield self.store("alice", "bob", "carol")
        sent = yield self.send(store, "alice", "g1", ["bob", "carol"], group="G")
        mid = sent.message.mid
        yield store.read("alice", 1)
        yield self.change(store, "bob", "x1", "reaction", mid, "👍")
        yield self.change(store, "carol", "x2", "reaction", mid, "👍")
        yield self.change(store, "carol", "x3", "reaction", mid, "🎉")
        result = yield self.change(store, "carol", "x4", "reaction", mid, "🎉", on=False)
        self.assertEqual({"alice": 5, "bob": 5, "carol": 5}, result.seqs)
        entry = yield self.entry(store, "alice", 5)
        self.assertEqual(("reaction", "🎉", False, "G"),
                         (entry.message.kind, entry.message.body, entry.message.on,
                          entry.message.group))
        original = (yield self.entry(store, "alice", 1)).message
        self.assertEqual({"👍": ["bob", "carol"]}, original.reactions)
        conv = (yield store.conversations("alice", 5))[0]
        self.assertEqual((5, 0), (conv.last.seq, conv.unread))


class SearchStoreContractMixin:
    """Tests every rule of message search in the store; needs the store fixtures."""

    @defer.inlineCallbacks
    def test_search(self):
        """Search is case-insensitive, finds any substring in any script, newest first,
        only in the user's own inbox, with current bodies, never recalled."""
        from dim.store.interface import ChangeOp
        store = yield self.store("alice", "bob", "carol")
        yield self.send(store, "bob", "b1", "alice", body="Hello World")
        yield self.send(store, "alice", "a1", "bob", body="東京で会いましょう")
        yield self.send(store, "carol", "c1", "bob", body="hello bob, not alice's")
        yield self.send(store, "carol", "c2", "alice", body="ΣΊΣΥΦΟΣ hello again")
        gone = yield self.send(store, "carol", "c3", "alice", body="hello, recalled")
        fix = yield self.send(store, "bob", "b2", "alice", body="typo")
        yield store.change_message(ChangeOp(sender="bob", client_id="e1", kind="edit",
                                            ref=fix.message.mid, body="fixed HELLO", ts=9))
        yield store.change_message(ChangeOp(sender="carol", client_id="r1", kind="recall",
                                            ref=gone.message.mid, ts=9))
        found = yield store.search_messages("alice", "hello", None, 20)
        self.assertEqual(["b2", "c2", "b1"], [e.message.id for e in found])
        self.assertEqual(["a1"], [e.message.id for e in
                                  (yield store.search_messages("alice", "京で会", None, 20))])
        self.assertEqual(["a1"], [e.message.id for e in
                                  (yield store.search_messages("alice", "東", None, 20))])
        self.assertEqual(["c2"], [e.message.id for e in
                                  (yield store.search_messages("alice", "σίσυφος", None, 5))])
        self.assertEqual(["b2", "b1"], [e.message.id for e in
                                        (yield store.search_messages("alice", "LL", "bob",
                                                                     20))])
        self.assertEqual(["b2"], [e.message.id for e in
                                  (yield store.search_messages("alice", "hello", None, 1))])
        self.assertEqual([], (yield store.search_messages("alice", "typo", None, 20)))
        self.assertEqual([], (yield store.search_messages("alice", "recalled", None, 20)))
        self.assertEqual([], (yield store.search_messages("alice", "hello", "zed", 20)))
        self.assertEqual([], (yield store.search_messages("nobody", "hello", None, 20)))
        found = yield store.search_messages("alice", "o w", None, 20)
        self.assertEqual([(1, "b1")], [(e.seq, e.message.id) for e in found])

    @defer.inlineCallbacks
    def test_search_group_and_self(self):
        """A group conversation and the conversation with oneself are searched alone."""
        store = yield self.store("alice", "bob")
        yield self.send(store, "alice", "n1", "alice", body="note to self")
        yield self.send(store, "bob", "g1", ["alice"], group="G", body="group note")
        yield self.send(store, "bob", "d1", "alice", body="direct note")
        for conv, ids in (("#G", ["g1"]), ("alice", ["n1"]), ("bob", ["d1"]),
                          (None, ["d1", "g1", "n1"])):
            found = yield store.search_messages("alice", "note", conv, 20)
            self.assertEqual(ids, [e.message.id for e in found])
