"""The migration of Redis data written before conversations and file grants (schema 1).

Each test writes one history twice on a real Redis: the way the store did at schema 1 (its
own scripts, :mod:`tests.fakes.redis_v1`) under one prefix, and through today's store under
another.  After :func:`dim.store.redis_schema.migrate` the first must read exactly as the
second: conversations, read pointers, unread counts, history, search and who may read a file,
and it must go on the same way after more reads, sends and recalls.
"""
from __future__ import annotations

import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from dim.store.interface import ChangeOp
from dim.store.redis import LuaScripts, RedisStore, open_redis
from dim.store.redis_schema import SCHEMA_VERSION, SCRIPTS, migrate, schema_version
from tests.fakes.redis import REDIS_URL, delete_prefix
from tests.fakes.redis_v1 import LegacyRedisWriter
from tests.integration.services import require_redis

USERS = ("alice", "bob", "carol", "dave")
PHOTO = {"id": "f1", "name": "p.png", "size": 3, "mime": "image/png"}

#: The history: (sender, client id, recipients, body, group, file).
SENDS: list[tuple[str, str, list[str], str, str | None, dict[str, Any] | None]] = [
    ("bob", "b1", ["alice"], "hi alice", None, None),
    ("carol", "c1", ["alice"], "Hello from carol", None, None),
    ("bob", "b2", ["alice"], "a photo", None, PHOTO),
    ("alice", "a1", ["bob"], "hi bob, 你好", None, None),
    ("carol", "c2", ["alice", "bob"], "group hello", "g1", None),
    ("bob", "b3", ["alice", "carol"], "the photo again", "g1", PHOTO),
    ("bob", "b4", ["alice"], "later, 图书馆", None, None),
    ("alice", "a2", ["alice"], "a note to self", None, None),
    ("dave", "d1", ["bob"], "unrelated", None, None),
]
#: Marks after the sends: (user, ack up to, read up to).
MARKS = [("alice", 8, 4), ("bob", 5, 2), ("carol", 3, 3)]


class RedisMigrationTests(TestCase):
    """Legacy data, migrated, reads and changes as data written by today's store."""

    timeout = 60

    def setUp(self) -> None:
        require_redis()
        run = uuid.uuid4().hex[:12]
        self.old_prefix = f"dimtest:{run}:old:"
        self.new_prefix = f"dimtest:{run}:new:"
        for prefix in (self.old_prefix, self.new_prefix):
            self.addCleanup(delete_prefix, REDIS_URL, prefix)

    @defer.inlineCallbacks
    def open(self, prefix: str):
        """Today's store under ``prefix``, closed at the end."""
        store = yield RedisStore.connect(REDIS_URL, prefix=prefix, timeout=2.0, clock=reactor)
        self.addCleanup(store.close)
        return store

    @defer.inlineCallbacks
    def write_legacy(self):
        """The history written as the schema-1 store wrote it; a store on it."""
        redis = open_redis(REDIS_URL, poolsize=1)
        self.addCleanup(redis.disconnect)
        old = LegacyRedisWriter(redis, self.old_prefix)
        for user in USERS:
            yield defer.Deferred.fromCoroutine(old.create_user(user))
        for sender, cid, rcpts, body, group, file in SENDS:
            yield defer.Deferred.fromCoroutine(old.send(
                sender, cid, rcpts, body, group, file, "image" if file else "text"))
        for user, acked, read in MARKS:
            yield defer.Deferred.fromCoroutine(old.ack(user, acked))
            yield defer.Deferred.fromCoroutine(old.read(user, read))
        store = yield self.open(self.old_prefix)
        return store

    @defer.inlineCallbacks
    def write_today(self):
        """The same history through today's store."""
        store = yield self.open(self.new_prefix)
        for user in USERS:
            yield store.create_user(user, "hash", 1)
        for sender, cid, rcpts, body, group, file in SENDS:
            yield store.store_message(sender, cid, rcpts, group, body,
                                      "image" if file else "text", file, 1_700_000_000_000)
        for user, acked, read in MARKS:
            yield store.ack(user, acked)
            yield store.read(user, read)
        return store

    @defer.inlineCallbacks
    def view(self, store: RedisStore):
        """What every user sees: conversations, each one's history, searches, files."""
        out: dict[str, Any] = {}
        for user in USERS:
            convs = yield store.conversations(user, 50)
            out[user, "convs"] = [(c.conv, c.read_seq, c.unread, c.mentions, c.last.seq,
                                   c.last.message.id) for c in convs]
            for c in convs:
                entries, more = yield store.fetch_conversation(user, c.conv, 0, None, 50)
                out[user, "history", c.conv] = [
                    (e.seq, e.message, e.delivered, e.read) for e in entries]
                back, _ = yield store.fetch_conversation(user, c.conv, 0, c.last.seq, 1)
                out[user, "before", c.conv] = [e.seq for e in back]
                for q in ("hello", "你好", "图书馆", "photo", "zz"):
                    found = yield store.search_messages(user, q, c.conv, 20)
                    out[user, "search", c.conv, q] = [e.seq for e in found]
            for q in ("hello", "HI", "图书馆", "note"):
                found = yield store.search_messages(user, q, None, 20)
                out[user, "search", q] = [e.seq for e in found]
            out[user, "file"] = yield store.may_read_file(user, "f1")
            out[user, "last"] = yield store.last_seq(user)
        return out

    @defer.inlineCallbacks
    def assert_same(self, old: RedisStore, new: RedisStore):
        """Both stores read the same for every user."""
        seen_old = yield self.view(old)
        seen_new = yield self.view(new)
        self.assertEqual(seen_new, seen_old)
        return seen_old

    @defer.inlineCallbacks
    def go_on(self, store: RedisStore):
        """More of the history, after the upgrade: reads, a send, recalls."""
        out = []
        out.append((yield store.read_conversation("alice", "#g1", 5)))
        out.append((yield store.store_message("carol", "c3", ["alice"], None, "and hello again",
                                              "text", None, 1)).seqs)
        out.append((yield store.read_conversation("alice", "carol", 99)))
        out.append((yield store.read("bob", 6)))
        b2 = (yield store.fetch("alice", 2, 1))[0][0].message.mid
        out.append((yield store.change_message(ChangeOp(
            sender="bob", client_id="r1", kind="recall", ref=b2, ts=2))).seqs)
        return out

    @defer.inlineCallbacks
    def recall_group_photo(self, store: RedisStore):
        """Bob recalls the group message with the photo (the last message giving it)."""
        b3 = (yield store.fetch("alice", 5, 1))[0][0].message.mid
        yield store.change_message(ChangeOp(sender="bob", client_id="r2", kind="recall",
                                            ref=b3, ts=3))

    @defer.inlineCallbacks
    def test_migrated_data_reads_as_written_today(self):
        """After the migration, conversations, read pointers, unread counts, history,
        search and file access are what today's store has for the same history; and they
        stay so through more reads, a send and recalls."""
        old = yield self.write_legacy()
        new = yield self.write_today()
        self.assertEqual(1, (yield defer.Deferred.fromCoroutine(schema_version(old))))
        before = yield defer.Deferred.fromCoroutine(migrate(old))
        self.assertEqual((1, SCHEMA_VERSION),
                         (before, (yield defer.Deferred.fromCoroutine(schema_version(old)))))
        seen = yield self.assert_same(old, new)
        self.assertEqual([("alice", 0, 0, 0, 8, "a2"), ("bob", 4, 1, 0, 7, "b4"),
                          ("#g1", 0, 2, 0, 6, "b3"), ("carol", 4, 0, 0, 2, "c1")],
                         seen["alice", "convs"])
        self.assertEqual([5, 2], seen["alice", "search", "hello"])
        self.assertEqual([7], seen["alice", "search", "bob", "图书馆"])
        self.assertTrue(seen["carol", "file"])
        self.assertEqual((yield self.go_on(new)), (yield self.go_on(old)))
        seen = yield self.assert_same(old, new)
        self.assertTrue(seen["alice", "file"])  # the group message still gives it
        self.assertEqual([("carol", 9, 0), ("#g1", 5, 1)],
                         [(c, r, u) for c, r, u, _, _, _ in seen["alice", "convs"]
                          if c in ("#g1", "carol")])
        for store in (old, new):
            yield self.recall_group_photo(store)
        seen = yield self.assert_same(old, new)
        # no file record names an uploader here, so no one keeps it
        self.assertEqual([False] * 4, [seen[u, "file"] for u in USERS])

    @defer.inlineCallbacks
    def test_cut_short_then_run_again(self):
        """A migration cut off after a batch of each step goes on where it was when run
        again, counting nothing twice; running it once more changes nothing."""
        old = yield self.write_legacy()
        new = yield self.write_today()
        scripts = LuaScripts(old.redis, self.old_prefix, SCRIPTS)
        yield defer.Deferred.fromCoroutine(scripts.run("conversations", 3, *USERS))
        yield defer.Deferred.fromCoroutine(scripts.run("grants", 1, 4))
        self.assertEqual(1, (yield defer.Deferred.fromCoroutine(schema_version(old))))
        before = yield defer.Deferred.fromCoroutine(migrate(old, batch=2))
        self.assertEqual(1, before)
        first = yield self.assert_same(old, new)
        again = yield defer.Deferred.fromCoroutine(migrate(old, batch=2))
        self.assertEqual(SCHEMA_VERSION, again)
        yield old.redis.delete(self.old_prefix + "schema")
        yield defer.Deferred.fromCoroutine(migrate(old))
        self.assertEqual(first, (yield self.assert_same(old, new)))
        self.assertEqual((yield self.go_on(new)), (yield self.go_on(old)))
        for store in (old, new):
            yield self.recall_group_photo(store)
        seen = yield self.assert_same(old, new)
        self.assertEqual([False] * 4, [seen[u, "file"] for u in USERS])

    @defer.inlineCallbacks
    def test_data_of_today_is_left_alone(self):
        """Data written by today's store (or none at all) is only stamped with the version:
        every conversation and file grant stays as it was."""
        new = yield self.write_today()
        seen = yield self.view(new)
        self.assertEqual(1, (yield defer.Deferred.fromCoroutine(migrate(new))))
        self.assertEqual(seen, (yield self.view(new)))
        yield self.go_on(new)
        self.assertTrue((yield new.may_read_file("alice", "f1")))
        yield self.recall_group_photo(new)
        self.assertFalse((yield new.may_read_file("alice", "f1")))
        self.assertEqual(SCHEMA_VERSION,
                         (yield defer.Deferred.fromCoroutine(schema_version(new))))
        empty = yield self.open(self.old_prefix)
        self.assertEqual(1, (yield defer.Deferred.fromCoroutine(migrate(empty))))
        self.assertEqual(SCHEMA_VERSION, (yield defer.Deferred.fromCoroutine(migrate(empty))))
