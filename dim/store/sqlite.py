"""DIM's embedded store: one SQLite file, written by one thread with group commit.

Every call becomes an operation on a queue.  A dedicated writer thread owns the connection:
it takes every operation waiting (up to ``batch_limit``), runs them in one transaction, each
in its own SAVEPOINT so that a failing one (say, :class:`dim.errors.NotFound`) leaves no
partial rows, commits once (WAL, ``synchronous=FULL``: durable when it returns) and only then
hands the results back to the reactor thread, in call order.  Reads take the same queue, so
they see every write called before them.
"""
from __future__ import annotations

import json
import queue
import sqlite3
import threading
from typing import Any, Callable

from twisted.internet import defer
from twisted.python import log
from twisted.python.failure import Failure
from zope.interface import implementer

from dim.errors import Conflict, Internal, NotFound
from dim.store.interface import InboxEntry, IStore, Receipt, SendResult, StoredMessage
from dim.store.memory import base36

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    acked_seq INTEGER NOT NULL DEFAULT 0,
    read_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    sender TEXT NOT NULL,
    client_id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    to_user TEXT,
    grp TEXT,
    body TEXT NOT NULL,
    kind TEXT NOT NULL,
    file TEXT,
    UNIQUE (sender, client_id)
);
CREATE TABLE IF NOT EXISTS inbox (
    user INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    message INTEGER NOT NULL,
    recipient INTEGER NOT NULL,
    PRIMARY KEY (user, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS inbox_by_message ON inbox (message, recipient);
CREATE TABLE IF NOT EXISTS revoked (
    jti TEXT PRIMARY KEY,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS revoked_by_expiry ON revoked (expires);
"""

#: Whether every recipient of inbox row ``i`` acknowledged (read) it.
_ALL_MARKED = """NOT EXISTS (SELECT 1 FROM inbox r JOIN users u ON u.id = r.user
                 WHERE r.message = i.message AND r.recipient AND u.{mark} < r.seq)"""

_FETCH = f"""
SELECT i.seq, m.id, m.client_id, m.sender, m.ts, m.to_user, m.grp, m.body, m.kind, m.file,
       {_ALL_MARKED.format(mark="acked_seq")}, {_ALL_MARKED.format(mark="read_seq")}
FROM inbox i JOIN messages m ON m.id = i.message
WHERE i.user = ? AND i.seq > ? ORDER BY i.seq LIMIT ?
"""

_COVERED = """
SELECT i.seq, m.id, m.client_id, m.sender FROM inbox i JOIN messages m ON m.id = i.message
WHERE i.user = ? AND i.seq > ? AND i.seq <= ? AND m.sender != ? ORDER BY i.seq
"""

_STOP = object()

#: What an operation run on the writer thread looks like: it gets the cursor.
Operation = Callable[[sqlite3.Cursor], Any]


@implementer(IStore)
class SQLiteStore:
    """An :class:`IStore` in one SQLite file at ``path``, safe against a killed process.

    ``reactor`` (default: the global one) receives the results via ``callFromThread`` and
    gives the time for purging expired revocations.  At most ``batch_limit`` operations share
    one transaction.
    """

    def __init__(self, path: str, reactor: Any = None, batch_limit: int = 4000) -> None:
        if reactor is None:
            from twisted.internet import reactor  # noqa: the default, imported late
        self._reactor = reactor
        self._batch_limit = batch_limit
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA cache_size=-65536")
        self._conn.executescript(SCHEMA)
        self._uids: dict[str, int] = {}
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closing = False
        self._closed = False
        self._close_waiters: list[defer.Deferred[None]] = []
        #: Transactions committed and operations run: for measuring the group commit.
        self.batches = 0
        self.operations = 0
        self._thread = threading.Thread(target=self._run, name=f"sqlite-store {path}",
                                        daemon=True)
        self._thread.start()

    # -- the reactor side ------------------------------------------------------------------

    def _submit(self, operation: Operation, writes: bool = True) -> defer.Deferred[Any]:
        """Queue ``operation`` for the writer thread; a Deferred of its result."""
        if self._closing:
            return defer.fail(Internal("the store is closed"))
        d: defer.Deferred[Any] = defer.Deferred()
        self._queue.put((d, operation, writes))
        return d

    @staticmethod
    def _fire(results: list[tuple[defer.Deferred[Any], bool, Any]]) -> None:
        """Fire the Deferreds of one committed batch, in call order (on the reactor)."""
        for d, ok, value in results:
            if ok:
                d.callback(value)
            else:
                d.errback(value)

    def _finished(self) -> None:
        """The writer thread closed the connection: join it and fire every close()."""
        self._thread.join()
        self._closed = True
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)

    def close(self) -> defer.Deferred[None]:
        """Run and commit everything queued, close the file and end the writer thread."""
        d: defer.Deferred[None] = defer.Deferred()
        if self._closed:
            d.callback(None)
            return d
        self._close_waiters.append(d)
        if not self._closing:
            self._closing = True
            self._queue.put(_STOP)
        return d

    # -- the writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        """Take batches off the queue and run each in one transaction, until close()."""
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while len(batch) < self._batch_limit:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is _STOP:
                batch.pop()
                stop = True
            if batch:
                self._reactor.callFromThread(self._fire, self._execute(batch))
        try:
            self._conn.close()
        except sqlite3.Error:
            log.err(None, "closing the SQLite store")
        self._reactor.callFromThread(self._finished)

    def _execute(self, batch: list[tuple[defer.Deferred[Any], Operation, bool]]
                 ) -> list[tuple[defer.Deferred[Any], bool, Any]]:
        """Run one batch in one transaction; every operation's outcome, in order."""
        cursor = self._conn.cursor()
        results: list[tuple[defer.Deferred[Any], bool, Any]] = []
        try:
            cursor.execute("BEGIN")
            for d, operation, writes in batch:
                if writes:
                    cursor.execute("SAVEPOINT op")
                try:
                    value = operation(cursor)
                except Exception:
                    failure = Failure()
                    if writes:
                        cursor.execute("ROLLBACK TO op")
                        cursor.execute("RELEASE op")
                    results.append((d, False, failure))
                else:
                    if writes:
                        cursor.execute("RELEASE op")
                    results.append((d, True, value))
            cursor.execute("COMMIT")
        except Exception:
            failure = Failure()
            log.err(failure, "SQLite store transaction failed")
            self._uids.clear()
            try:
                self._conn.rollback()
            except sqlite3.Error:
                pass
            error = Failure(Internal("the store failed to write"))
            return [(d, False, error) for d, _, _ in batch]
        self.batches += 1
        self.operations += len(batch)
        return results

    def _uid(self, cursor: sqlite3.Cursor, user: str) -> int | None:
        """The row id of ``user``, or None (writer thread; users are never removed)."""
        uid = self._uids.get(user)
        if uid is None:
            row = cursor.execute("SELECT id FROM users WHERE name = ?", (user,)).fetchone()
            if row is None:
                return None
            uid = self._uids[user] = row[0]
        return uid

    # -- users -----------------------------------------------------------------------------

    def create_user(self, user: str, password_hash: str, ts: int) -> defer.Deferred[None]:
        """Add a user; fails with Conflict if the name is taken."""
        def operation(cursor: sqlite3.Cursor) -> None:
            row = cursor.execute(
                "INSERT INTO users (name, password_hash, created) VALUES (?, ?, ?)"
                " ON CONFLICT (name) DO NOTHING RETURNING id",
                (user, password_hash, ts)).fetchall()
            if not row:
                raise Conflict(f"user {user!r} exists")
            self._uids[user] = row[0][0]
        return self._submit(operation)

    def get_password_hash(self, user: str) -> defer.Deferred[str | None]:
        """The user's password hash, or None for an unknown user."""
        def operation(cursor: sqlite3.Cursor) -> str | None:
            row = cursor.execute("SELECT password_hash FROM users WHERE name = ?",
                                 (user,)).fetchone()
            return row[0] if row else None
        return self._submit(operation, writes=False)

    def set_password_hash(self, user: str, password_hash: str) -> defer.Deferred[None]:
        """Replace the user's password hash; NotFound for an unknown user."""
        def operation(cursor: sqlite3.Cursor) -> None:
            cursor.execute("UPDATE users SET password_hash = ? WHERE name = ?",
                           (password_hash, user))
            if cursor.rowcount != 1:
                raise NotFound(f"no such user: {user}")
        return self._submit(operation)

    def user_exists(self, user: str) -> defer.Deferred[bool]:
        """Whether the user exists."""
        return self._submit(lambda cursor: self._uid(cursor, user) is not None, writes=False)

    def list_users(self, prefix: str, limit: int) -> defer.Deferred[list[str]]:
        """User names starting with ``prefix``, in name order, at most ``limit``."""
        def operation(cursor: sqlite3.Cursor) -> list[str]:
            rows = cursor.execute(
                "SELECT name FROM users WHERE name >= ? ORDER BY name LIMIT ?",
                (prefix, limit)) if prefix else cursor.execute(
                "SELECT name FROM users ORDER BY name LIMIT ?", (limit,))
            names = []
            for (name,) in rows:
                if not name.startswith(prefix):
                    break
                names.append(name)
            return names
        return self._submit(operation, writes=False)

    # -- tokens ----------------------------------------------------------------------------

    def revoke_token(self, jti: str, expires: int) -> defer.Deferred[None]:
        """Mark a token id revoked until ``expires``; drops revocations already expired."""
        now = self._reactor.seconds()

        def operation(cursor: sqlite3.Cursor) -> None:
            cursor.execute("DELETE FROM revoked WHERE expires < ?", (now,))
            cursor.execute(
                "INSERT INTO revoked (jti, expires) VALUES (?, ?) ON CONFLICT (jti)"
                " DO UPDATE SET expires = max(expires, excluded.expires)", (jti, expires))
        return self._submit(operation)

    def is_revoked(self, jti: str) -> defer.Deferred[bool]:
        """Whether a token id was revoked (and not purged since its expiry)."""
        return self._submit(lambda cursor: cursor.execute(
            "SELECT 1 FROM revoked WHERE jti = ?", (jti,)).fetchone() is not None,
            writes=False)

    # -- messages --------------------------------------------------------------------------

    def store_message(self, sender: str, client_id: str, recipients: list[str],
                      group: str | None, body: str, kind: str, file: dict[str, Any] | None,
                      ts: int) -> defer.Deferred[SendResult]:
        """Store one message in the sender's inbox and every recipient's, durably."""
        to = recipients[0] if group is None and recipients else None
        file_text = None if file is None else json.dumps(file)
        members = list(dict.fromkeys([sender, *recipients]))
        targeted = set(recipients)

        def operation(cursor: sqlite3.Cursor) -> SendResult:
            inserted = cursor.execute(
                "INSERT INTO messages (sender, client_id, ts, to_user, grp, body, kind, file)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (sender, client_id) DO NOTHING"
                " RETURNING id", (sender, client_id, ts, to, group, body, kind, file_text)
            ).fetchall()
            if not inserted:
                return self._original(cursor, sender, client_id)
            message_id = inserted[0][0]
            uids = []
            for name in members:
                uid = self._uid(cursor, name)
                if uid is None:
                    raise NotFound(f"no such user: {name}", ref=client_id)
                uids.append(uid)
            seqs = {}
            for name, uid in zip(members, uids):
                seq = cursor.execute(
                    "UPDATE users SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
                    (uid,)).fetchall()[0][0]
                cursor.execute("INSERT INTO inbox VALUES (?, ?, ?, ?)",
                               (uid, seq, message_id, name in targeted))
                seqs[name] = seq
            message = StoredMessage(mid=base36(message_id), id=client_id, sender=sender,
                                    ts=ts, to=to, group=group, body=body, kind=kind, file=file)
            return SendResult(message=message, seqs=seqs)
        return self._submit(operation)

    def _original(self, cursor: sqlite3.Cursor, sender: str, client_id: str) -> SendResult:
        """The SendResult of the message ``(sender, client_id)`` stored earlier."""
        row = cursor.execute(
            "SELECT id, client_id, sender, ts, to_user, grp, body, kind, file FROM messages"
            " WHERE sender = ? AND client_id = ?", (sender, client_id)).fetchone()
        seqs = dict(cursor.execute(
            "SELECT u.name, i.seq FROM inbox i JOIN users u ON u.id = i.user"
            " WHERE i.message = ?", (row[0],)).fetchall())
        return SendResult(message=_message(row), seqs=seqs, duplicate=True)

    def fetch(self, user: str, after: int,
              limit: int) -> defer.Deferred[tuple[list[InboxEntry], int]]:
        """``(entries, last_seq)``: up to ``limit`` entries with seq > ``after``."""
        def operation(cursor: sqlite3.Cursor) -> tuple[list[InboxEntry], int]:
            uid = self._uid(cursor, user)
            if uid is None:
                return [], 0
            last = cursor.execute("SELECT last_seq FROM users WHERE id = ?",
                                  (uid,)).fetchone()[0]
            entries = [InboxEntry(seq=row[0], message=_message(row[1:10]),
                                  delivered=bool(row[10]), read=bool(row[11]))
                       for row in cursor.execute(_FETCH, (uid, after, max(limit, 0)))]
            return entries, last
        return self._submit(operation, writes=False)

    def last_seq(self, user: str) -> defer.Deferred[int]:
        """The highest seq in the user's inbox (0 when empty or unknown)."""
        return self._submit(lambda cursor: self._mark(cursor, user, "last_seq"), writes=False)

    def acked_seq(self, user: str) -> defer.Deferred[int]:
        """The highest seq the user acknowledged (0 when none)."""
        return self._submit(lambda cursor: self._mark(cursor, user, "acked_seq"), writes=False)

    def _mark(self, cursor: sqlite3.Cursor, user: str, column: str) -> int:
        """One of the user's counters (last_seq, acked_seq), 0 for an unknown user."""
        row = cursor.execute(f"SELECT {column} FROM users WHERE name = ?", (user,)).fetchone()
        return row[0] if row else 0

    def ack(self, user: str, seq: int) -> defer.Deferred[list[Receipt]]:
        """Acknowledge the user's inbox up to ``seq``; the receipts this newly makes."""
        return self._submit(lambda cursor: self._advance(cursor, user, seq, read=False))

    def read(self, user: str, seq: int) -> defer.Deferred[list[Receipt]]:
        """Mark the user's inbox read (and acked) up to ``seq``; the read receipts."""
        return self._submit(lambda cursor: self._advance(cursor, user, seq, read=True))

    def _advance(self, cursor: sqlite3.Cursor, user: str, seq: int,
                 read: bool) -> list[Receipt]:
        """Move the user's acked (and, with ``read``, read) seq up to ``seq`` (clamped) and
        list the newly covered messages that other users sent."""
        row = cursor.execute("SELECT id, last_seq, acked_seq, read_seq FROM users"
                             " WHERE name = ?", (user,)).fetchone()
        if row is None:
            return []
        uid, last, acked, was_read = row
        new = min(seq, last)
        if new > acked:
            cursor.execute("UPDATE users SET acked_seq = ? WHERE id = ?", (new, uid))
        old = was_read if read else acked
        if new <= old:
            return []
        if read:
            cursor.execute("UPDATE users SET read_seq = ? WHERE id = ?", (new, uid))
        return [Receipt(mid=base36(message_id), id=client_id, sender=sender, seq=at)
                for at, message_id, client_id, sender in cursor.execute(
                    _COVERED, (uid, old, new, user))]


def _message(row: tuple[Any, ...]) -> StoredMessage:
    """A StoredMessage from (id, client_id, sender, ts, to_user, grp, body, kind, file)."""
    message_id, client_id, sender, ts, to, group, body, kind, file = row
    return StoredMessage(mid=base36(message_id), id=client_id, sender=sender, ts=ts, to=to,
                         group=group, body=body, kind=kind,
                         file=None if file is None else json.loads(file))
