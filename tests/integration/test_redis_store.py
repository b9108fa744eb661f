"""The store contract, run against :class:`dim.store.redis.RedisStore` on a real Redis.

Redis comes from ``DIM_REDIS`` (default ``redis://127.0.0.1:6379``); the tests fail when it
does not answer.  Every test uses its own key prefix and deletes its keys afterwards.
"""
from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from dim.errors import NotFound, Unavailable
from dim.store.redis import RedisStore
from tests.store_contract import TS, DurableStoreContractMixin
from tests.store_contract_conversations import (ChangeStoreContractMixin,
                                                SearchStoreContractMixin,
                                                DurableConversationStoreContractMixin)
from tests.store_contract_people import DurablePeopleStoreContractMixin
from tests.fakes.redis import RedisPrefixTestCase, delete_prefix
from tests.fakes.redis import REDIS_URL


class RedisStoreContractTests(DurableStoreContractMixin, DurablePeopleStoreContractMixin,
                               DurableConversationStoreContractMixin, ChangeStoreContractMixin,
                               SearchStoreContractMixin, TestCase):
    """RedisStore keeps every rule of the IStore contract and survives a reopen."""

    timeout = 20

    def setUp(self) -> None:
        self.prefix = f"dimtest:{uuid.uuid4().hex[:12]}:"
        self.addCleanup(delete_prefix, REDIS_URL, self.prefix)

    def makeStore(self) -> Any:
        return RedisStore.connect(REDIS_URL, prefix=self.prefix, timeout=2.0, clock=reactor)

    def reopenStore(self) -> Any:
        return RedisStore.connect(REDIS_URL, prefix=self.prefix, timeout=2.0, clock=reactor)


class RedisStoreTests(RedisPrefixTestCase):
    """What is particular to the Redis store: two stores on one Redis, failures, scripts."""

    @defer.inlineCallbacks
    def test_search_scan_is_paged_and_bounded(self):
        """Search reads pages newest first and stops after search_scan_limit entries."""
        store = yield self.open()
        for user in ("alice", "bob", "carol"):
            yield store.create_user(user, "h", TS)
        for n in range(6):
            yield store.store_message("bob", f"b{n}", ["alice"], None, f"x{n}", "text", None,
                                      TS)
            yield store.store_message("carol", f"c{n}", ["alice"], None, f"x{n}", "text",
                                      None, TS)
        store.search_page_size = 2
        found = yield store.search_messages("alice", "x", None, 3)
        self.assertEqual(["c5", "b5", "c4"], [e.message.id for e in found])
        found = yield store.search_messages("alice", "x", "bob", 20)
        self.assertEqual([f"b{n}" for n in range(5, -1, -1)], [e.message.id for e in found])
        store.search_scan_limit = 4
        found = yield store.search_messages("alice", "x", "bob", 20)
        self.assertEqual(["b5", "b4", "b3", "b2"], [e.message.id for e in found])
        found = yield store.search_messages("alice", "x0", None, 20)
        self.assertEqual([], found)

    @defer.inlineCallbacks
    def test_two_nodes_one_inbox(self):
        """Two stores (two nodes) writing one inbox at once leave seqs 1..n without gaps."""
        a = yield self.open()
        b = yield self.open()
        for user in ("alice", "bob", "carol"):
            yield a.create_user(user, "h", TS)
        calls = []
        for n in range(200):
            calls.append(a.store_message("alice", f"a{n}", ["carol"], None, str(n), "text",
                                         None, TS))
            calls.append(b.store_message("bob", f"b{n}", ["carol"], None, str(n), "text",
                                         None, TS))
        results = yield defer.gatherResults(calls)
        seqs = sorted(r.seqs["carol"] for r in results)
        self.assertEqual(list(range(1, 401)), seqs)
        self.assertEqual(400, (yield b.last_seq("carol")))
        entries, _ = yield a.fetch("carol", 0, 1000)
        by_sender: dict[str, list[str]] = {}
        for e in entries:
            by_sender.setdefault(e.message.sender, []).append(e.message.body)
        self.assertEqual([str(n) for n in range(200)], by_sender["alice"])
        self.assertEqual([str(n) for n in range(200)], by_sender["bob"])

    @defer.inlineCallbacks
    def test_same_client_id_from_two_nodes(self):
        """The same (sender, id) sent through two nodes at once is stored exactly once."""
        a = yield self.open()
        b = yield self.open()
        for user in ("alice", "bob"):
            yield a.create_user(user, "h", TS)
        r1, r2 = yield defer.gatherResults([
            a.store_message("alice", "x", ["bob"], None, "hi", "text", None, TS),
            b.store_message("alice", "x", ["bob"], None, "hi", "text", None, TS)])
        self.assertEqual(r1.message, r2.message)
        self.assertEqual({False, True}, {r1.duplicate, r2.duplicate})
        self.assertEqual(1, (yield a.last_seq("bob")))

    @defer.inlineCallbacks
    def test_scripts_reloaded_after_flush(self):
        """After SCRIPT FLUSH (as after a Redis restart) the store reloads its scripts."""
        store = yield self.open()
        yield store.create_user("alice", "h", TS)
        yield store.redis.execute_command("SCRIPT", "FLUSH")
        yield store.create_user("bob", "h", TS)
        self.assertTrue((yield store.user_exists("bob")))

    @defer.inlineCallbacks
    def test_large_numbers_kept(self):
        """Timestamps and file sizes above 2**53 / cjson's precision come back exactly."""
        store = yield self.open()
        for user in ("alice", "bob"):
            yield store.create_user(user, "h", TS)
        file = {"id": "f", "size": 123456789012345678, "name": "ü\"x"}
        r = yield store.store_message("alice", "c", ["bob"], None, "b\u00e9\n\"", "file", file,
                                      1_764_175_406_123)
        entries, _ = yield store.fetch("bob", 0, 1)
        self.assertEqual(r.message, entries[0].message)
        self.assertEqual(file, entries[0].message.file)
        self.assertEqual(1_764_175_406_123, entries[0].message.ts)

    @defer.inlineCallbacks
    def test_numeric_user_names_stay_strings(self):
        """A user named '42' is listed as the string '42'."""
        store = yield self.open()
        yield store.create_user("42", "007", TS)
        self.assertEqual(["42"], (yield store.list_users("", 10)))
        self.assertEqual("007", (yield store.get_password_hash("42")))

    @defer.inlineCallbacks
    def test_durability_reported(self):
        """connect reads the server's AOF settings into durability."""
        store = yield self.open()
        self.assertIn(store.durability, {"fsync", "everysec", "none", "unknown"})

    @defer.inlineCallbacks
    def test_unreachable_fails_fast(self):
        """Connecting to a port where nothing listens fails with Unavailable, quickly."""
        from twisted.internet import reactor
        start = reactor.seconds()
        yield self.assertFailure(
            RedisStore.connect("redis://127.0.0.1:1", timeout=0.5, clock=reactor), Unavailable)
        self.assertLess(reactor.seconds() - start, 3)


class RedisBatchTests(RedisPrefixTestCase):
    """The per-turn batch on a real Redis: order, duplicates, failures that stay alone."""

    @defer.inlineCallbacks
    def users(self, store, *names: str):
        """Create the named users."""
        for name in names:
            yield store.create_user(name, "h", TS)

    @defer.inlineCallbacks
    def test_order_per_sender_in_and_across_batches(self):
        """Sends from several turns keep each sender's order in the inbox, in few calls."""
        from twisted.internet import reactor

        store = yield self.open()
        yield self.users(store, "alice", "bob", "carol")
        before = store._batcher.batches
        calls = []
        for turn in range(5):
            for n in range(40):
                for sender in ("alice", "bob"):
                    calls.append(store.store_message(sender, f"{turn}-{n}", ["carol"], None,
                                                     f"{turn}-{n}", "text", None, TS))
            yield task.deferLater(reactor, 0, lambda: None)
        results = yield defer.gatherResults(calls)
        self.assertLessEqual(store._batcher.batches - before, 5)
        entries, last = yield store.fetch("carol", 0, 1000)
        self.assertEqual(400, last)
        self.assertEqual(list(range(1, 401)), sorted(r.seqs["carol"] for r in results))
        for sender in ("alice", "bob"):
            bodies = [e.message.body for e in entries if e.message.sender == sender]
            self.assertEqual([f"{t}-{n}" for t in range(5) for n in range(40)], bodies)

    @defer.inlineCallbacks
    def test_duplicate_in_one_batch(self):
        """The same (sender, id) twice in one batch is stored once; the second is a duplicate."""
        store = yield self.open()
        yield self.users(store, "alice", "bob")
        r1, r2 = yield defer.gatherResults([
            store.store_message("alice", "x", ["bob"], None, "hi", "text", None, TS),
            store.store_message("alice", "x", ["bob"], None, "hi", "text", None, TS)])
        self.assertEqual((False, True), (r1.duplicate, r2.duplicate))
        self.assertEqual(r1.message, r2.message)
        self.assertEqual(r1.seqs, r2.seqs)
        self.assertEqual(1, (yield store.last_seq("bob")))

    @defer.inlineCallbacks
    def test_unknown_recipient_fails_alone(self):
        """In one batch, a send to an unknown user fails with NotFound, writes nothing, and
        the sends around it are stored with consecutive seqs."""
        store = yield self.open()
        yield self.users(store, "alice", "bob")
        d1 = store.store_message("alice", "1", ["bob"], None, "a", "text", None, TS)
        bad = store.store_message("alice", "2", ["nobody"], None, "b", "text", None, TS)
        d3 = store.store_message("alice", "3", ["bob"], None, "c", "text", None, TS)
        ack = store.ack("bob", 2)
        failure = yield self.assertFailure(bad, NotFound)
        self.assertEqual("2", failure.ref)
        r1, r3 = yield defer.gatherResults([d1, d3])
        self.assertEqual({"alice": 1, "bob": 1}, r1.seqs)
        self.assertEqual({"alice": 2, "bob": 2}, r3.seqs)
        receipts = yield ack
        self.assertEqual(["1", "3"], [r.id for r in receipts])
        self.assertEqual(2, (yield store.last_seq("alice")))
        entries, _ = yield store.fetch("bob", 0, 10)
        self.assertEqual(["a", "c"], [e.message.body for e in entries])
        # the failed id was not taken: sending it again to a real user stores it
        again = yield store.store_message("alice", "2", ["bob"], None, "b", "text", None, TS)
        self.assertFalse(again.duplicate)

    @defer.inlineCallbacks
    def test_group_fan_out_and_read_in_one_batch(self):
        """A group send in a batch reaches every member's inbox; a read in the same turn
        after it covers it."""
        store = yield self.open()
        yield self.users(store, "alice", "bob", "carol")
        group = yield store.create_group("alice", "g", ["bob", "carol"], TS)
        members = ["alice", "bob", "carol"]
        sent = store.store_message("alice", "g1", members, group.id, "hey", "text", None, TS)
        read = store.read("bob", 1)
        result = yield sent
        self.assertEqual({"alice": 1, "bob": 1, "carol": 1}, result.seqs)
        self.assertEqual(group.id, result.message.group)
        receipts = yield read
        self.assertEqual([("g1", "alice", 1)], [(r.id, r.sender, r.seq) for r in receipts])
        for user in members:
            entries, _ = yield store.fetch(user, 0, 10)
            self.assertEqual(["hey"], [e.message.body for e in entries])

    @defer.inlineCallbacks
    def test_batch_after_redis_lost_its_scripts(self):
        """A batch sent after SCRIPT FLUSH reloads the script and stores every send."""
        store = yield self.open()
        yield self.users(store, "alice", "bob")
        yield store.redis.execute_command("SCRIPT", "FLUSH")
        results = yield defer.gatherResults([
            store.store_message("alice", str(n), ["bob"], None, "x", "text", None, TS)
            for n in range(10)])
        self.assertEqual(list(range(1, 11)), [r.seqs["bob"] for r in results])
