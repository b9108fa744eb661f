"""The SQLite store against the shared store contract, plus its group commit and shutdown."""
from __future__ import annotations

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from dim.errors import Internal, NotFound
from dim.store.sqlite import SQLiteStore
from tests.store_contract import TS, DurableStoreContractMixin


class SQLiteStoreContractTests(DurableStoreContractMixin, unittest.TestCase):
    """SQLiteStore honours every rule of the store contract, across reopening too."""

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp() + ".db")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)

    def makeStore(self) -> SQLiteStore:
        """A new store in a fresh file."""
        return SQLiteStore(self.path, reactor)

    def reopenStore(self) -> SQLiteStore:
        """A new store over the same file."""
        return SQLiteStore(self.path, reactor)


class SQLiteStoreTests(unittest.TestCase):
    """What is particular to the SQLite store: batching, durability settings, shutdown."""

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp() + ".db")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.store = SQLiteStore(self.path, reactor)
        self.addCleanup(self.store.close)

    @defer.inlineCallbacks
    def test_wal_and_full_sync(self):
        """The file is in WAL mode, synced in full on commit, with the tables DIM needs."""
        synchronous = yield self.store._submit(
            lambda cursor: cursor.execute("PRAGMA synchronous").fetchone()[0], writes=False)
        self.assertEqual(2, synchronous)
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual("wal", conn.execute("PRAGMA journal_mode").fetchone()[0])
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.assertTrue({"users", "messages", "inbox", "revoked"} <= tables)

    @defer.inlineCallbacks
    def test_group_commit(self):
        """Many calls in flight share a few transactions, and all are stored."""
        yield self.store.create_user("alice", "h", TS)
        yield self.store.create_user("bob", "h", TS)
        before = self.store.batches
        calls = [self.store.store_message("alice", f"c{n}", ["bob"], None, "x", "text", None,
                                          TS) for n in range(500)]
        results = yield defer.gatherResults(calls)
        self.assertEqual(list(range(1, 501)), [r.seqs["bob"] for r in results])
        self.assertLess(self.store.batches - before, 50)

    @defer.inlineCallbacks
    def test_failure_in_batch_keeps_others(self):
        """A failing call in a batch leaves no rows and does not undo its neighbours."""
        yield self.store.create_user("alice", "h", TS)
        good = self.store.store_message("alice", "a", ["alice"], None, "x", "text", None, TS)
        bad = self.store.store_message("alice", "b", ["ghost"], None, "x", "text", None, TS)
        also = self.store.store_message("alice", "c", ["alice"], None, "x", "text", None, TS)
        self.assertEqual({"alice": 1}, (yield good).seqs)
        yield self.assertFailure(bad, NotFound)
        self.assertEqual({"alice": 2}, (yield also).seqs)
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(2, conn.execute("SELECT count(*) FROM messages").fetchone()[0])

    @defer.inlineCallbacks
    def test_close_drains_queue(self):
        """close() lets every queued call finish first; later calls fail with Internal."""
        yield self.store.create_user("alice", "h", TS)
        calls = [self.store.store_message("alice", f"c{n}", ["alice"], None, "x", "text",
                                          None, TS) for n in range(100)]
        closed = self.store.close()
        late = self.store.last_seq("alice")
        yield closed
        results = yield defer.gatherResults(calls)
        self.assertEqual(100, results[-1].seqs["alice"])
        yield self.assertFailure(late, Internal)
        self.assertFalse(self.store._thread.is_alive())
        again = SQLiteStore(self.path, reactor)
        self.addCleanup(again.close)
        self.assertEqual(100, (yield again.last_seq("alice")))
