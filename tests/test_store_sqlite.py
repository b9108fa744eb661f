"""The SQLite store against the shared store contract, plus its group commit and shutdown."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys

from twisted.internet import defer, reactor
from twisted.trial import unittest

from dim.errors import Internal, NotFound
from dim.store.sqlite import SQLiteStore
from tests.store_contract import TS, DurableStoreContractMixin
from tests.store_contract_conversations import (ChangeStoreContractMixin,
                                                SearchStoreContractMixin,
                                                DurableConversationStoreContractMixin)
from tests.store_contract_people import DurablePeopleStoreContractMixin


class SQLiteStoreContractTests(DurableStoreContractMixin, DurablePeopleStoreContractMixin,
                               DurableConversationStoreContractMixin, ChangeStoreContractMixin,
                               SearchStoreContractMixin, unittest.TestCase):
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
            lambda cursor: cursor.execute("PRAGMA synchronous").fetchone()[0])
        self.assertEqual(2, synchronous)
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual("wal", conn.execute("PRAGMA journal_mode").fetchone()[0])
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        self.assertTrue({"users", "messages", "inbox", "revoked"} <= tables)

    @defer.inlineCallbacks
    def test_file_without_conversations_migrated(self):
        """A file written before conversations existed gets its read state on open."""
        for user in ("alice", "bob", "carol"):
            yield self.store.create_user(user, "h", TS)
        for sender, cid in (("bob", "b1"), ("carol", "c1"), ("bob", "b2")):
            yield self.store.store_message(sender, cid, ["alice"], None, "x", "text", None,
                                           TS)
        yield self.store.read("alice", 1)
        yield self.store.close()
        conn = sqlite3.connect(self.path)
        conn.executescript("DROP INDEX inbox_by_conv; DROP TABLE convs;"
                           " ALTER TABLE inbox DROP COLUMN conv;")
        conn.close()
        self.store = SQLiteStore(self.path, reactor)
        self.addCleanup(self.store.close)
        convs = yield self.store.conversations("alice", 10)
        self.assertEqual([("bob", 1, 1, 3), ("carol", 1, 1, 2)],
                         [(c.conv, c.read_seq, c.unread, c.last.seq) for c in convs])
        entries, _ = yield self.store.fetch("bob", 0, 5)
        self.assertTrue(entries[0].read)

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
    def test_reads_see_earlier_calls(self):
        """A read called after a write sees it, even when both are in flight together."""
        yield self.store.create_user("alice", "h", TS)
        self.store.store_message("alice", "a", ["alice"], None, "x", "text", None, TS)
        fetched = self.store.fetch("alice", 0, 10)
        self.store.ack("alice", 1)
        acked = self.store.acked_seq("alice")
        self.store.store_message("alice", "b", ["alice"], None, "x", "text", None, TS)
        last = self.store.last_seq("alice")
        entries, last_then = yield fetched
        self.assertEqual(([1], 1), ([e.seq for e in entries], last_then))
        self.assertEqual(1, (yield acked))
        self.assertEqual(2, (yield last))

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

    @defer.inlineCallbacks
    def test_unexpected_failure_after_write_is_undone(self):
        """An operation that writes and then breaks leaves nothing, and its batch survives."""
        yield self.store.create_user("alice", "h", TS)

        def broken(cursor):
            cursor.execute("INSERT INTO users (name, password_hash, created)"
                           " VALUES ('mallory', 'h', 0)")
            raise RuntimeError("broken after a write")

        before = self.store.store_message("alice", "a", ["alice"], None, "x", "text", None,
                                          TS)
        bad = self.store._submit(broken)
        after = self.store.store_message("alice", "b", ["alice"], None, "x", "text", None,
                                         TS)
        self.assertEqual({"alice": 1}, (yield before).seqs)
        yield self.assertFailure(bad, RuntimeError)
        self.assertEqual({"alice": 2}, (yield after).seqs)
        self.assertFalse((yield self.store.user_exists("mallory")))
        more = yield self.store.store_message("alice", "c", ["alice"], None, "x", "text",
                                              None, TS)
        self.assertEqual({"alice": 3}, more.seqs)
        self.assertEqual([1, 2, 3], [e.seq for e in (yield self.store.fetch("alice", 0, 9))[0]])


#: A child process that stores messages without end and prints each one once it is acknowledged.
_WRITER = """
import sys
from twisted.internet import reactor
from dim.store.sqlite import SQLiteStore

store = SQLiteStore(sys.argv[1], reactor)
count = [0]

def sent(result, n):
    sys.stdout.write(f"{n} {result.seqs['bob']}\\n")
    sys.stdout.flush()

def send():
    for _ in range(200):
        n = count[0]
        count[0] += 1
        store.store_message("alice", f"c{n}", ["bob"], None, f"m{n}", "text", None, n
                            ).addCallback(sent, n)
    reactor.callLater(0.001, send)

def start():
    store.create_user("alice", "h", 0)
    store.create_user("bob", "h", 0)
    send()

reactor.callWhenRunning(start)
reactor.run()
"""


class SQLiteStoreCrashTests(unittest.TestCase):
    """A message acknowledged by the store survives the process being killed."""

    @defer.inlineCallbacks
    def test_acknowledged_survives_kill_9(self):
        """Every message whose Deferred fired is there, at its seq, after kill -9."""
        path = os.path.abspath(self.mktemp() + ".db")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        child = subprocess.Popen([sys.executable, "-c", _WRITER, path], cwd=root,
                                 stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": root})
        acknowledged = {}
        try:
            for line in child.stdout:
                n, seq = map(int, line.split())
                acknowledged[n] = seq
                if len(acknowledged) >= 3000:
                    break
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdout.close()
        self.assertEqual(3000, len(acknowledged))
        store = SQLiteStore(path, reactor)
        self.addCleanup(store.close)
        entries, last = yield store.fetch("bob", 0, 1_000_000)
        self.assertGreaterEqual(last, 3000)
        self.assertEqual(list(range(1, last + 1)), [entry.seq for entry in entries])
        stored = {int(entry.message.id[1:]): entry.seq for entry in entries}
        for n, seq in acknowledged.items():
            self.assertEqual(seq, stored.get(n))


class DeferredStartTests(unittest.TestCase):
    """A store made with start=False opens its file and thread only when started (after a
    daemonizing fork), and calls made before then wait for it."""

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp() + ".db")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)

    @defer.inlineCallbacks
    def test_calls_before_start_wait(self):
        """Nothing touches the file before start(); queued calls then complete in order."""
        store = SQLiteStore(self.path, reactor, start=False)
        self.addCleanup(store.close)
        self.assertFalse(os.path.exists(self.path))
        created = store.create_user("alice", "h", TS)
        sent = store.store_message("alice", "c1", ["alice"], None, "x", "text", None, TS)
        self.assertNoResult(created)
        store.start()
        yield created
        result = yield sent
        self.assertEqual(result.seqs, {"alice": 1})
        self.assertTrue(os.path.exists(self.path))

    def test_close_without_start(self):
        """Closing a store that never started fires at once and leaves no file."""
        store = SQLiteStore(self.path, reactor, start=False)
        self.successResultOf(store.close())
        self.assertFalse(os.path.exists(self.path))


class BatchJSONTests(unittest.TestCase):
    """The JSON a batch hands to json_each is the text the stored JSON always was."""

    def test_same_text_as_stored_json(self) -> None:
        """Rows of awkward text, ints, bools and None encode exactly as _dumps does."""
        from dim.store.sqlite import _batch_json, _dumps
        awkward = ['quote " backslash \\ slash / newline \n tab \t', "nul \x00 and \x01",
                   "\x7f\u2028\u2029\ufeff", "\u00e9\u6f22\U0001f600", "", "</script>"]
        rows = [(i, text, text, 1700000000000 + i, None, "g", text, "text", None,
                 [(1, i, True), (2, i + 1, False)]) for i, text in enumerate(awkward)]
        for value in (rows, [(1, 2, 3)], [[1, 5], [2, 9]], [("alice", "nul\x00id")]):
            self.assertEqual(_batch_json(value), _dumps(value))
