"""The store contract, run against :class:`dim.store.redis.RedisStore` on a real Redis.

Redis comes from ``DIM_REDIS`` (default ``redis://127.0.0.1:6379``); the tests fail when it
does not answer.  Every test uses its own key prefix and deletes its keys afterwards.
"""
from __future__ import annotations

import os
import uuid
from typing import Any

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from dim.errors import Unavailable
from dim.store.redis import RedisStore, check_reachable, open_redis
from tests.store_contract import TS, DurableStoreContractMixin
from tests.store_contract_people import DurablePeopleStoreContractMixin

REDIS_URL = os.environ.get("DIM_REDIS", "redis://127.0.0.1:6379")


@defer.inlineCallbacks
def delete_prefix(url: str, prefix: str):
    """Delete every key under ``prefix`` (test clean-up; nothing to do if Redis is down)."""
    from twisted.internet import reactor

    redis = open_redis(url, poolsize=1, connect_timeout=1.0)
    try:
        try:
            yield defer.ensureDeferred(check_reachable(redis, url, 1.0, reactor))
        except Unavailable:
            return
        cursor = "0"
        while True:
            cursor, keys = yield redis.scan(cursor, pattern=prefix + "*", count=1000)
            if keys:
                yield redis.delete(*keys)
            if str(cursor) == "0":
                break
    finally:
        yield redis.disconnect()


class RedisStoreContractTests(DurableStoreContractMixin, DurablePeopleStoreContractMixin,
                              TestCase):
    """RedisStore keeps every rule of the IStore contract and survives a reopen."""

    timeout = 20

    def setUp(self) -> None:
        self.prefix = f"dimtest:{uuid.uuid4().hex[:12]}:"
        self.addCleanup(delete_prefix, REDIS_URL, self.prefix)

    def makeStore(self) -> Any:
        return RedisStore.connect(REDIS_URL, prefix=self.prefix, timeout=2.0)

    def reopenStore(self) -> Any:
        return RedisStore.connect(REDIS_URL, prefix=self.prefix, timeout=2.0)


class RedisPrefixTestCase(TestCase):
    """A test whose stores share one fresh key prefix, deleted at the end."""

    timeout = 30

    def setUp(self) -> None:
        self.prefix = f"dimtest:{uuid.uuid4().hex[:12]}:"
        self.addCleanup(delete_prefix, REDIS_URL, self.prefix)

    @defer.inlineCallbacks
    def open(self):
        """A store (a node's connection) under the test's prefix, closed at the end."""
        store = yield RedisStore.connect(REDIS_URL, prefix=self.prefix, timeout=2.0)
        self.addCleanup(store.close)
        return store


class RedisStoreTests(RedisPrefixTestCase):
    """What is particular to the Redis store: two stores on one Redis, failures, scripts."""

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
        yield self.assertFailure(RedisStore.connect("redis://127.0.0.1:1", timeout=0.5),
                                 Unavailable)
        self.assertLess(reactor.seconds() - start, 3)
