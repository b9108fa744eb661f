"""The SQLite store against the shared contract of profiles, contacts, groups and files."""
from __future__ import annotations

import os
import sqlite3

from twisted.internet import defer, reactor
from twisted.trial import unittest

from dim.store.sqlite import SQLiteStore
from tests.store_contract import TS
from tests.store_contract_people import attachment


class SQLiteStorePeopleTests(unittest.TestCase):
    """What is particular to the SQLite store's people, groups and files."""

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp() + ".db")
        os.makedirs(os.path.dirname(self.path), exist_ok=True)

    def open(self) -> SQLiteStore:
        """A store over the test's file, closed when the test ends."""
        store = SQLiteStore(self.path, reactor)
        self.addCleanup(store.close)
        return store

    @defer.inlineCallbacks
    def test_users_from_before_profiles(self):
        """Users written before the profile tables existed get the default profile."""
        conn = sqlite3.connect(self.path)
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
                     " password_hash TEXT NOT NULL, created INTEGER NOT NULL,"
                     " last_seq INTEGER NOT NULL DEFAULT 0,"
                     " acked_seq INTEGER NOT NULL DEFAULT 0,"
                     " read_seq INTEGER NOT NULL DEFAULT 0)")
        conn.execute("INSERT INTO users (name, password_hash, created) VALUES ('old', 'h', 0)")
        conn.commit()
        conn.close()
        store = self.open()
        profile = yield store.get_profile("old")
        self.assertEqual(("old", "", None), (profile.name, profile.status, profile.avatar))
        self.assertEqual(["old"], [p.user for p in (yield store.search_users("OL", 5))])

    @defer.inlineCallbacks
    def test_malformed_group_ids(self):
        """Strings that only look like a group's id find no group."""
        store = self.open()
        yield store.create_user("alice", "h", TS)
        group = yield store.create_group("alice", "g", [], TS)
        self.assertEqual("1", group.id)
        for text in ("01", "0x1", " 1", "1 ", "1_0", "+1", "A", "", "f" * 40, "\uff11"):
            self.assertIsNone((yield store.get_group(text)), text)
        self.assertEqual(group, (yield store.get_group("1")))

    @defer.inlineCallbacks
    def test_file_access_found_by_index(self):
        """Who received a file is looked up through the messages' file index, not a scan."""
        store = self.open()
        plan = yield store._submit(lambda cursor: cursor.execute(
            "EXPLAIN QUERY PLAN SELECT 1 FROM messages m WHERE m.file IS NOT NULL"
            " AND json_extract(m.file, '$.id') = ?", ("f1",)).fetchall())
        self.assertIn("messages_by_file", " ".join(str(row) for row in plan))

    @defer.inlineCallbacks
    def test_file_access_with_sends_in_flight(self):
        """Messages with files stored together in one batch each grant their recipients."""
        store = self.open()
        users = [f"u{n}" for n in range(20)]
        for user in users:
            yield store.create_user(user, "h", TS)
        sends = [store.store_message(user, "c", [users[(n + 1) % 20]], None, "", "file",
                                     attachment(f"f{n}"), TS) for n, user in enumerate(users)]
        yield defer.gatherResults(sends)
        for n in range(len(users)):
            self.assertTrue((yield store.may_read_file(users[(n + 1) % 20], f"f{n}")))
            self.assertFalse((yield store.may_read_file(users[(n + 2) % 20], f"f{n}")))
