"""The shared contract of every :class:`dim.store.interface.IStore`.

A test case mixes :class:`StoreContractMixin` into a ``twisted.trial.unittest.TestCase`` and
provides ``makeStore()`` (a store, or a Deferred firing with one, empty and ready).  Durable
stores mix in :class:`DurableStoreContractMixin` instead and also provide ``reopenStore()``:
a new store over the same data as the last one made (the mixin closes the old one first).
"""
from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from dim.errors import Conflict, NotFound
from dim.store.interface import AckOp, InboxEntry, IStore, Receipt, SendOp, SendResult

TS = 1_700_000_000_000


class StoreFixtures:
    """What every store contract test needs: a fresh store, reopening it, storing a message.

    Subclasses provide ``makeStore()``, and durable stores ``reopenStore()``.
    """

    def makeStore(self) -> Any:
        """A new, empty store (or a Deferred firing with one)."""
        raise NotImplementedError

    def reopenStore(self) -> Any:
        """A new store over the same data as the last one made (or a Deferred of one)."""
        raise NotImplementedError

    @defer.inlineCallbacks
    def store(self, *users: str):
        """A new store holding ``users``, closed when the test ends."""
        store = yield defer.maybeDeferred(self.makeStore)
        self.addCleanup(store.close)
        for user in users:
            yield store.create_user(user, "hash-" + user, TS)
        return store

    @defer.inlineCallbacks
    def reopen(self, store: Any):
        """Close ``store`` and open it again."""
        yield store.close()
        again = yield defer.maybeDeferred(self.reopenStore)
        self.addCleanup(again.close)
        return again

    def send(self, store: Any, sender: str, client_id: str, to: str | list[str],
             body: str = "hi", group: str | None = None, kind: str | None = None,
             file: dict[str, Any] | None = None) -> defer.Deferred[SendResult]:
        """Store one message from ``sender`` to ``to`` (a user, or a list for a group); a
        message with a ``file`` is an image unless ``kind`` says otherwise."""
        recipients = [to] if isinstance(to, str) else list(to)
        return store.store_message(sender, client_id, recipients, group, body,
                                   kind or ("image" if file else "text"), file, TS)


class StoreContractMixin(StoreFixtures):
    """Tests every rule of the IStore message contract; subclasses provide ``makeStore()``."""

    @defer.inlineCallbacks
    def seqs(self, store: Any, user: str):
        """Every seq in ``user``'s inbox, fetched in pages of 3."""
        seqs: list[int] = []
        after = 0
        while True:
            entries, last = yield store.fetch(user, after, 3)
            if not entries:
                return seqs, last
            seqs.extend(entry.seq for entry in entries)
            after = entries[-1].seq

    @defer.inlineCallbacks
    def entry(self, store: Any, user: str, seq: int):
        """The entry at ``seq`` of ``user``'s inbox."""
        entries, _ = yield store.fetch(user, seq - 1, 1)
        self.assertEqual([seq], [entry.seq for entry in entries])
        return entries[0]

    # -- the interface and users -----------------------------------------------------------

    @defer.inlineCallbacks
    def test_provides_interface(self):
        """The store provides IStore in full."""
        store = yield self.store()
        self.assertTrue(verifyObject(IStore, store))

    @defer.inlineCallbacks
    def test_create_user_conflict(self):
        """Creating a user whose name is taken fails with Conflict and keeps the first."""
        store = yield self.store("alice")
        yield self.assertFailure(store.create_user("alice", "other", TS), Conflict)
        self.assertEqual("hash-alice", (yield store.get_password_hash("alice")))

    @defer.inlineCallbacks
    def test_password_hash(self):
        """get_password_hash returns the stored hash, None for an unknown user; set replaces."""
        store = yield self.store("alice")
        self.assertEqual("hash-alice", (yield store.get_password_hash("alice")))
        self.assertIsNone((yield store.get_password_hash("bob")))
        yield store.set_password_hash("alice", "new")
        self.assertEqual("new", (yield store.get_password_hash("alice")))

    @defer.inlineCallbacks
    def test_user_exists(self):
        """user_exists is true for created users only; names are case-sensitive."""
        store = yield self.store("alice")
        self.assertTrue((yield store.user_exists("alice")))
        self.assertFalse((yield store.user_exists("bob")))
        self.assertFalse((yield store.user_exists("Alice")))

    @defer.inlineCallbacks
    def test_list_users(self):
        """list_users gives names with the prefix in name order, at most limit."""
        store = yield self.store("bob", "alice", "al", "albert", "carol", "Alf")
        self.assertEqual(["Alf", "al", "albert", "alice", "bob", "carol"],
                         (yield store.list_users("", 100)))
        self.assertEqual(["al", "albert", "alice"], (yield store.list_users("al", 10)))
        self.assertEqual(["al", "albert"], (yield store.list_users("al", 2)))
        self.assertEqual(["carol"], (yield store.list_users("c", 10)))
        self.assertEqual([], (yield store.list_users("d", 10)))
        self.assertEqual([], (yield store.list_users("", 0)))

    @defer.inlineCallbacks
    def test_revoked_tokens(self):
        """A revoked token id is revoked; any other is not."""
        store = yield self.store()
        self.assertFalse((yield store.is_revoked("jti-1")))
        yield store.revoke_token("jti-1", 4_000_000_000)
        self.assertTrue((yield store.is_revoked("jti-1")))
        self.assertFalse((yield store.is_revoked("jti-2")))

    @defer.inlineCallbacks
    def test_token_epochs(self):
        """A user's token epoch starts at 0 and each bump raises it and keeps one token id."""
        store = yield self.store()
        self.assertEqual((0, None), tuple((yield store.token_epoch("alice"))))
        self.assertEqual(1, (yield store.bump_token_epoch("alice", "jti-a")))
        self.assertEqual((1, "jti-a"), tuple((yield store.token_epoch("alice"))))
        self.assertEqual(2, (yield store.bump_token_epoch("alice", "jti-b")))
        self.assertEqual((2, "jti-b"), tuple((yield store.token_epoch("alice"))))
        self.assertEqual((0, None), tuple((yield store.token_epoch("bob"))))

    # -- storing messages ------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_store_one_to_one(self):
        """A one-to-one message lands in both inboxes at seq 1 with every field kept."""
        store = yield self.store("alice", "bob")
        result = yield self.send(store, "alice", "c1", "bob", body="héllo")
        self.assertIsInstance(result, SendResult)
        self.assertFalse(result.duplicate)
        self.assertEqual({"alice": 1, "bob": 1}, result.seqs)
        message = result.message
        self.assertIsInstance(message.mid, str)
        self.assertTrue(0 < len(message.mid) <= 32)
        self.assertEqual(("c1", "alice", "bob", None, "héllo", "text", None, TS),
                         (message.id, message.sender, message.to, message.group,
                          message.body, message.kind, message.file, message.ts))
        for user in ("alice", "bob"):
            entries, last = yield store.fetch(user, 0, 10)
            self.assertEqual(1, last)
            self.assertEqual([InboxEntry(seq=1, message=message)], entries)

    @defer.inlineCallbacks
    def test_mids_unique(self):
        """Every stored message gets its own mid."""
        store = yield self.store("alice", "bob")
        mids = set()
        for n in range(20):
            result = yield self.send(store, "alice", f"c{n}", "bob")
            mids.add(result.message.mid)
        self.assertEqual(20, len(mids))

    @defer.inlineCallbacks
    def test_seqs_count_per_user(self):
        """Each inbox numbers its own entries 1, 2, 3 whoever sends."""
        store = yield self.store("alice", "bob", "carol")
        r1 = yield self.send(store, "alice", "a1", "bob")
        r2 = yield self.send(store, "carol", "c1", "bob")
        r3 = yield self.send(store, "bob", "b1", "alice")
        r4 = yield self.send(store, "alice", "a2", "carol")
        self.assertEqual({"alice": 1, "bob": 1}, r1.seqs)
        self.assertEqual({"carol": 1, "bob": 2}, r2.seqs)
        self.assertEqual({"bob": 3, "alice": 2}, r3.seqs)
        self.assertEqual({"alice": 3, "carol": 2}, r4.seqs)
        self.assertEqual(3, (yield store.last_seq("alice")))
        self.assertEqual(3, (yield store.last_seq("bob")))
        self.assertEqual(2, (yield store.last_seq("carol")))
        self.assertEqual(0, (yield store.last_seq("nobody")))

    @defer.inlineCallbacks
    def test_message_to_oneself(self):
        """A message to oneself makes one entry."""
        store = yield self.store("alice")
        result = yield self.send(store, "alice", "c1", "alice")
        self.assertEqual({"alice": 1}, result.seqs)
        self.assertEqual("alice", result.message.to)
        self.assertEqual(([1], 1), (yield self.seqs(store, "alice")))

    @defer.inlineCallbacks
    def test_group_message(self):
        """A group message lands once in every member's inbox, each at its own seq."""
        store = yield self.store("alice", "bob", "carol", "dave")
        yield self.send(store, "carol", "x", "dave")
        result = yield self.send(store, "alice", "g1", ["bob", "carol", "dave"], group="G")
        self.assertEqual({"alice": 1, "bob": 1, "carol": 2, "dave": 2}, result.seqs)
        self.assertIsNone(result.message.to)
        self.assertEqual("G", result.message.group)
        for user, seq in result.seqs.items():
            entry = yield self.entry(store, user, seq)
            self.assertEqual(result.message, entry.message)

    @defer.inlineCallbacks
    def test_any_text_kept(self):
        """Bodies, ids and kinds come back exactly, whatever characters they hold."""
        store = yield self.store("alice", "bob")
        bodies = ['quote " backslash \\ slash / newline \n tab \t', "nul \x00 and \x01",
                  "emoji \U0001F600 accents \u00e9\u00e8 cjk \u4e2d", "", "x" * 16384,
                  '{"not": "json"} [1, 2]', "\u2028\u2029 \ud7ff \ufffd"]
        for n, body in enumerate(bodies):
            yield self.send(store, "alice", f'id "{n}" \\', "bob", body=body,
                            kind=f"kind-\u00e9-{n}")
        entries, _ = yield store.fetch("bob", 0, 100)
        self.assertEqual(bodies, [e.message.body for e in entries])
        self.assertEqual([f'id "{n}" \\' for n in range(len(bodies))],
                         [e.message.id for e in entries])
        self.assertEqual([f"kind-\u00e9-{n}" for n in range(len(bodies))],
                         [e.message.kind for e in entries])
        first = yield self.send(store, "alice", "nul\x00id", "bob")
        again = yield self.send(store, "alice", "nul\x00id", "bob")
        self.assertEqual((False, True), (first.duplicate, again.duplicate))
        self.assertEqual(first.seqs, again.seqs)
        self.assertEqual("nul\x00id", again.message.id)

    @defer.inlineCallbacks
    def test_file_kept(self):
        """A message's file dict and kind are returned as stored."""
        store = yield self.store("alice", "bob")
        file = {"id": "f1", "name": "cat.png", "size": 1234, "mime": "image/png"}
        result = yield self.send(store, "alice", "c1", "bob", body="", kind="image",
                                 file=file)
        self.assertEqual(file, result.message.file)
        entry = yield self.entry(store, "bob", 1)
        self.assertEqual(file, entry.message.file)
        self.assertEqual("image", entry.message.kind)

    @defer.inlineCallbacks
    def test_duplicate(self):
        """The same (sender, client_id) again writes nothing and returns the original."""
        store = yield self.store("alice", "bob")
        first = yield self.send(store, "alice", "c1", "bob", body="one")
        yield self.send(store, "alice", "c2", "bob")
        again = yield self.send(store, "alice", "c1", "bob", body="changed")
        self.assertTrue(again.duplicate)
        self.assertEqual(first.message, again.message)
        self.assertEqual({"alice": 1, "bob": 1}, again.seqs)
        self.assertEqual(([1, 2], 2), (yield self.seqs(store, "bob")))
        third = yield self.send(store, "alice", "c3", "bob")
        self.assertEqual({"alice": 3, "bob": 3}, third.seqs)

    @defer.inlineCallbacks
    def test_duplicate_of_group_message(self):
        """A repeated group send returns every member's original seq."""
        store = yield self.store("alice", "bob", "carol")
        first = yield self.send(store, "alice", "g", ["bob", "carol"], group="G")
        again = yield self.send(store, "alice", "g", ["bob"], group="G")
        self.assertTrue(again.duplicate)
        self.assertEqual(first.seqs, again.seqs)
        self.assertEqual(1, (yield store.last_seq("carol")))

    @defer.inlineCallbacks
    def test_client_id_is_per_sender(self):
        """Two senders may use the same client id for different messages."""
        store = yield self.store("alice", "bob")
        first = yield self.send(store, "alice", "c1", "bob")
        second = yield self.send(store, "bob", "c1", "alice")
        self.assertFalse(second.duplicate)
        self.assertNotEqual(first.message.mid, second.message.mid)
        self.assertEqual({"alice": 2, "bob": 2}, second.seqs)

    @defer.inlineCallbacks
    def test_unknown_recipient(self):
        """An unknown recipient fails with NotFound (ref = client id) and writes nothing."""
        store = yield self.store("alice", "bob", "carol")
        yield self.send(store, "alice", "c0", "bob")
        failure = yield self.assertFailure(
            self.send(store, "alice", "c1", ["bob", "nobody", "carol"], group="G"), NotFound)
        self.assertEqual("c1", failure.ref)
        yield self.assertFailure(self.send(store, "alice", "c2", "nobody"), NotFound)
        self.assertEqual(1, (yield store.last_seq("alice")))
        self.assertEqual(1, (yield store.last_seq("bob")))
        self.assertEqual(0, (yield store.last_seq("carol")))
        later = yield self.send(store, "alice", "c1", ["bob", "carol"], group="G")
        self.assertFalse(later.duplicate)
        self.assertEqual({"alice": 2, "bob": 2, "carol": 1}, later.seqs)
        self.assertEqual(([1, 2], 2), (yield self.seqs(store, "alice")))

    @defer.inlineCallbacks
    def test_failed_id_reusable_in_flight(self):
        """A client id whose send failed is free again, even for a call already in flight."""
        store = yield self.store("alice", "bob")
        failed = self.send(store, "alice", "c1", "ghost")
        stored = self.send(store, "alice", "c1", "bob")
        again = self.send(store, "alice", "c1", "bob", body="other")
        yield self.assertFailure(failed, NotFound)
        first, second = (yield stored), (yield again)
        self.assertFalse(first.duplicate)
        self.assertTrue(second.duplicate)
        self.assertEqual(first.message, second.message)
        self.assertEqual({"alice": 1, "bob": 1}, second.seqs)

    @defer.inlineCallbacks
    def test_no_gaps_with_failures_in_flight(self):
        """Sends in flight together, some failing, leave every inbox without gaps."""
        store = yield self.store("alice", "bob", "carol")
        calls = []
        for n in range(30):
            to = ["bob", "ghost"] if n % 4 == 1 else (["carol"] if n % 3 else ["bob"])
            calls.append(self.send(store, "alice", f"c{n}", to, group="G" if n % 4 == 1
                                   else None))
            calls.append(self.send(store, "carol", f"c{n % 7}", "bob"))
        results = yield defer.DeferredList(calls, consumeErrors=True)
        failures = [value for ok, value in results if not ok]
        self.assertEqual(8, len(failures))
        for failure in failures:
            failure.trap(NotFound)
        for user in ("alice", "bob", "carol"):
            seqs, last = yield self.seqs(store, user)
            self.assertEqual(list(range(1, last + 1)), seqs)
        self.assertEqual(22, (yield store.last_seq("alice")))
        self.assertEqual(7 + 14, (yield store.last_seq("carol")))

    @defer.inlineCallbacks
    def test_call_order_kept(self):
        """Messages sent without waiting are stored in call order, seqs ascending."""
        store = yield self.store("alice", "bob")
        calls = [self.send(store, "alice", f"c{n}", "bob", body=str(n)) for n in range(50)]
        results = yield defer.gatherResults(calls)
        self.assertEqual(list(range(1, 51)), [r.seqs["bob"] for r in results])
        entries, last = yield store.fetch("bob", 0, 100)
        self.assertEqual(50, last)
        self.assertEqual([str(n) for n in range(50)], [e.message.body for e in entries])

    @defer.inlineCallbacks
    def test_apply_batch_in_order(self):
        """apply runs sends and acks in order with one outcome each; a failing op fails
        alone and takes no seq; a duplicate inside the batch is a duplicate."""
        store = yield self.store("alice", "bob", "carol")
        ops = [SendOp(sender="alice", client_id=f"c{n}", recipients=["bob"], body=str(n),
                      ts=TS) for n in range(5)]
        ops.insert(2, SendOp(sender="alice", client_id="bad", recipients=["ghost"], ts=TS))
        ops.append(SendOp(sender="alice", client_id="c1", recipients=["bob"], body="again",
                          ts=TS))
        ops.append(AckOp(user="bob", seq=2))
        ops.append(SendOp(sender="carol", client_id="k1", recipients=["bob"], ts=TS))
        ops.append(AckOp(user="bob", seq=6, read=True))
        outcomes = yield store.apply(ops)
        self.assertEqual(len(ops), len(outcomes))
        sends = [o for o in outcomes[:7]]
        self.assertIsInstance(sends[2], Failure)
        sends[2].trap(NotFound)
        self.assertEqual("bad", sends[2].value.ref)
        stored = [o for i, o in enumerate(sends) if i not in (2, 6)]
        self.assertEqual([1, 2, 3, 4, 5], [r.seqs["bob"] for r in stored])
        self.assertTrue(sends[6].duplicate)
        self.assertEqual(sends[1].message.mid, sends[6].message.mid)
        delivered, read = outcomes[7]
        self.assertEqual((["c0", "c1"], []), ([r.id for r in delivered], read))
        self.assertEqual(6, outcomes[8].seqs["bob"])
        delivered, read = outcomes[9]
        self.assertEqual(["c2", "c3", "c4", "k1"], [r.id for r in delivered])
        self.assertEqual(["c0", "c1", "c2", "c3", "c4", "k1"], [r.id for r in read])
        entries, last = yield store.fetch("bob", 0, 100)
        self.assertEqual((list(range(1, 7)), 6), ([e.seq for e in entries], last))
        self.assertEqual(["0", "1", "2", "3", "4", "hi"][:5],
                         [e.message.body for e in entries][:5])
        self.assertEqual(6, (yield store.acked_seq("bob")))
        self.assertEqual([], (yield store.apply([])))

    @defer.inlineCallbacks
    def test_fetch_after_and_limit(self):
        """fetch returns entries with seq > after, in order, at most limit, and last_seq."""
        store = yield self.store("alice", "bob")
        for n in range(7):
            yield self.send(store, "alice", f"c{n}", "bob", body=str(n))
        entries, last = yield store.fetch("bob", 2, 3)
        self.assertEqual(7, last)
        self.assertEqual([3, 4, 5], [e.seq for e in entries])
        self.assertEqual(["2", "3", "4"], [e.message.body for e in entries])
        self.assertEqual(([], 7), (yield store.fetch("bob", 7, 10)))
        self.assertEqual(([], 0), (yield store.fetch("nobody", 0, 10)))

    # -- acks and reads --------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_ack_receipts(self):
        """An ack returns receipts for newly covered messages other users sent, in order."""
        store = yield self.store("alice", "bob", "carol")
        m1 = yield self.send(store, "alice", "a1", "bob")
        yield self.send(store, "bob", "b1", "alice")
        m3 = yield self.send(store, "carol", "k1", "bob")
        m4 = yield self.send(store, "alice", "a2", "bob")
        receipts = yield store.ack("bob", 3)
        self.assertEqual([Receipt(mid=m1.message.mid, id="a1", sender="alice", seq=1),
                          Receipt(mid=m3.message.mid, id="k1", sender="carol", seq=3)],
                         receipts)
        self.assertEqual(3, (yield store.acked_seq("bob")))
        self.assertEqual([], (yield store.ack("bob", 3)))
        self.assertEqual([], (yield store.ack("bob", 1)))
        self.assertEqual(3, (yield store.acked_seq("bob")))
        receipts = yield store.ack("bob", 4)
        self.assertEqual([Receipt(mid=m4.message.mid, id="a2", sender="alice", seq=4)],
                         receipts)

    @defer.inlineCallbacks
    def test_ack_clamped_to_last_seq(self):
        """An ack above last_seq acks up to last_seq only; later messages still get receipts."""
        store = yield self.store("alice", "bob")
        yield self.send(store, "alice", "a1", "bob")
        self.assertEqual(1, len((yield store.ack("bob", 100))))
        self.assertEqual(1, (yield store.acked_seq("bob")))
        m2 = yield self.send(store, "alice", "a2", "bob")
        self.assertEqual([Receipt(mid=m2.message.mid, id="a2", sender="alice", seq=2)],
                         (yield store.ack("bob", 100)))
        self.assertEqual(0, (yield store.acked_seq("nobody")))
        self.assertEqual([], (yield store.ack("nobody", 5)))

    @defer.inlineCallbacks
    def test_delivered_one_to_one(self):
        """A one-to-one message is delivered, in both inboxes, once its recipient acks it."""
        store = yield self.store("alice", "bob")
        yield self.send(store, "alice", "a1", "bob")
        self.assertFalse((yield self.entry(store, "alice", 1)).delivered)
        yield store.ack("alice", 1)
        self.assertFalse((yield self.entry(store, "alice", 1)).delivered)
        yield store.ack("bob", 1)
        self.assertTrue((yield self.entry(store, "alice", 1)).delivered)
        self.assertTrue((yield self.entry(store, "bob", 1)).delivered)
        self.assertFalse((yield self.entry(store, "bob", 1)).read)

    @defer.inlineCallbacks
    def test_delivered_to_oneself(self):
        """A message to oneself is delivered once its user acks it (and makes no receipt)."""
        store = yield self.store("alice")
        yield self.send(store, "alice", "a1", "alice")
        self.assertFalse((yield self.entry(store, "alice", 1)).delivered)
        self.assertEqual([], (yield store.ack("alice", 1)))
        self.assertTrue((yield self.entry(store, "alice", 1)).delivered)

    @defer.inlineCallbacks
    def test_delivered_group_of_three(self):
        """A message to three recipients is delivered only when all three acked it."""
        store = yield self.store("alice", "bob", "carol", "dave")
        yield self.send(store, "bob", "x", "carol")
        result = yield self.send(store, "alice", "g1", ["bob", "carol", "dave"], group="G")
        mid = result.message.mid
        for user in ("bob", "carol"):
            receipts = yield store.ack(user, result.seqs[user])
            self.assertEqual([Receipt(mid=mid, id="g1", sender="alice",
                                      seq=result.seqs[user])],
                             [r for r in receipts if r.mid == mid])
            for member, seq in result.seqs.items():
                self.assertFalse((yield self.entry(store, member, seq)).delivered)
        yield store.ack("dave", 1)
        for member, seq in result.seqs.items():
            entry = yield self.entry(store, member, seq)
            self.assertTrue(entry.delivered)
            self.assertFalse(entry.read)

    @defer.inlineCallbacks
    def test_read_receipts_and_implied_ack(self):
        """read returns read receipts, acks up to seq too, and returns no ack receipts."""
        store = yield self.store("alice", "bob")
        m1 = yield self.send(store, "alice", "a1", "bob")
        yield self.send(store, "bob", "b1", "alice")
        m3 = yield self.send(store, "alice", "a2", "bob")
        receipts = yield store.read("bob", 2)
        self.assertEqual([Receipt(mid=m1.message.mid, id="a1", sender="alice", seq=1)],
                         receipts)
        self.assertEqual(2, (yield store.acked_seq("bob")))
        self.assertEqual([], (yield store.ack("bob", 2)))
        entry = yield self.entry(store, "alice", 1)
        self.assertTrue(entry.delivered and entry.read)
        self.assertEqual([], (yield store.read("bob", 1)))
        self.assertEqual([Receipt(mid=m3.message.mid, id="a2", sender="alice", seq=3)],
                         (yield store.read("bob", 99)))
        self.assertEqual(3, (yield store.acked_seq("bob")))
        self.assertEqual([], (yield store.read("nobody", 5)))

    @defer.inlineCallbacks
    def test_read_after_ack(self):
        """Reading what was already acked still returns its read receipts."""
        store = yield self.store("alice", "bob")
        m1 = yield self.send(store, "alice", "a1", "bob")
        self.assertEqual(1, len((yield store.ack("bob", 1))))
        self.assertEqual([Receipt(mid=m1.message.mid, id="a1", sender="alice", seq=1)],
                         (yield store.read("bob", 1)))

    @defer.inlineCallbacks
    def test_read_group_of_three(self):
        """A message to three recipients is read only when all three read it."""
        store = yield self.store("alice", "bob", "carol", "dave")
        result = yield self.send(store, "alice", "g1", ["bob", "carol", "dave"], group="G")
        yield store.read("bob", 1)
        yield store.read("carol", 1)
        entry = yield self.entry(store, "alice", 1)
        self.assertFalse(entry.read)
        self.assertFalse(entry.delivered)
        receipts = yield store.read("dave", 1)
        self.assertEqual([Receipt(mid=result.message.mid, id="g1", sender="alice", seq=1)],
                         receipts)
        for member in result.seqs:
            entry = yield self.entry(store, member, 1)
            self.assertTrue(entry.read and entry.delivered)

    @defer.inlineCallbacks
    def test_close_twice(self):
        """close may be called more than once."""
        store = yield self.store()
        yield store.close()
        yield store.close()


class DurableStoreContractMixin(StoreContractMixin):
    """The contract plus persistence; subclasses also provide ``reopenStore()``."""

    @defer.inlineCallbacks
    def test_reopen_keeps_everything(self):
        """Users, messages, seqs, acks, reads, dedup and revocations survive a reopen."""
        store = yield self.store("alice", "bob", "carol")
        yield store.set_password_hash("carol", "rehashed")
        yield store.revoke_token("jti-1", 4_000_000_000)
        m1 = yield self.send(store, "alice", "a1", "bob", file={"id": "f", "size": 3})
        yield self.send(store, "alice", "g1", ["bob", "carol"], group="G")
        yield store.ack("bob", 2)
        yield store.read("bob", 1)
        store = yield self.reopen(store)
        self.assertEqual("hash-alice", (yield store.get_password_hash("alice")))
        self.assertEqual("rehashed", (yield store.get_password_hash("carol")))
        self.assertEqual(["alice", "bob", "carol"], (yield store.list_users("", 10)))
        yield self.assertFailure(store.create_user("bob", "x", TS), Conflict)
        self.assertTrue((yield store.is_revoked("jti-1")))
        self.assertEqual(2, (yield store.acked_seq("bob")))
        entries, last = yield store.fetch("alice", 0, 10)
        self.assertEqual(2, last)
        self.assertEqual(m1.message, entries[0].message)
        self.assertEqual((True, True), (entries[0].delivered, entries[0].read))
        self.assertEqual((False, False), (entries[1].delivered, entries[1].read))
        again = yield self.send(store, "alice", "a1", "bob")
        self.assertTrue(again.duplicate)
        self.assertEqual(m1.message, again.message)
        self.assertEqual(m1.seqs, again.seqs)
        later = yield self.send(store, "carol", "k1", "bob")
        self.assertEqual({"carol": 2, "bob": 3}, later.seqs)
        self.assertNotIn(later.message.mid, {m1.message.mid, entries[1].message.mid})
        receipts = yield store.ack("carol", 2)
        self.assertEqual(["g1"], [r.id for r in receipts])
        self.assertTrue((yield self.entry(store, "alice", 2)).delivered)
