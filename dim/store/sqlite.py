"""DIM's embedded store: one SQLite file, written by one thread with group commit.

Every call becomes an operation on a queue.  A dedicated writer thread owns the connection:
it takes every operation waiting (up to ``batch_limit``), runs them in one transaction,
commits once (WAL, ``synchronous=FULL``: durable when it returns) and only then hands the
results back to the reactor thread, in call order, with one ``callFromThread`` per batch.
Reads take the same queue, so they see every write called before them.

Messages are the hot path.  A run of consecutive ``store_message`` calls in a batch is
written with a constant number of statements, whatever its length: one query finds which
``(sender, client_id)`` exist already, then one ``INSERT ... SELECT FROM json_each(?)`` each
for the messages and the inbox rows and one ``UPDATE ... FROM json_each(?)`` for the users'
``last_seq``.  Few statements mean little Python per message and few releases of the GIL,
which the reactor thread wants too.  Each user's ``last_seq`` lives in the ``users`` table
and the writer thread caches it (and user ids, and the last message id), so a message takes
its seqs without a query.

An operation that fails never leaves partial rows.  Operations check before they write, so a
:class:`dim.errors.DimError` (say, ``NotFound`` for an unknown recipient) fails that one call
alone and takes no seq.  Any failure after a write (or from SQLite itself) rolls the whole
transaction back, empties the caches and runs the batch again the careful way, each
operation in its own SAVEPOINT, so only the failing one is lost.  Seqs have no gaps.
"""
from __future__ import annotations

import json
import os
import queue
import sqlite3
import threading
from typing import Any, NamedTuple, cast
from collections.abc import Callable

import msgspec
from twisted.internet import defer
from twisted.python import log
from twisted.python.failure import Failure
from zope.interface import implementer

from dim.errors import BadRequest, Conflict, Internal, NotFound, TooLarge
from dim.store.interface import (UNREAD_KINDS, AckOp, Contact, Conversation, FileRecord,
                                 Group, InboxEntry, IStore, Profile, Receipt, SendOp,
                                 SendResult, StoredMessage, StoreOp, conversation_of,
                                 sender_conversation, ChangeOp, check_change, found_by,
                                 react)

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
    members TEXT NOT NULL,
    extra TEXT,
    UNIQUE (sender, client_id)
);
CREATE TABLE IF NOT EXISTS inbox (
    user INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    message INTEGER NOT NULL,
    conv TEXT,
    PRIMARY KEY (user, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revoked (
    jti TEXT PRIMARY KEY,
    expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS revoked_by_expiry ON revoked (expires);
CREATE TABLE IF NOT EXISTS token_epochs (
    name TEXT PRIMARY KEY,
    epoch INTEGER NOT NULL,
    kept TEXT
) WITHOUT ROWID;
PRAGMA user_version = 1;
"""

#: Per-conversation state (see :func:`dim.store.interface.conversation_of` for ``conv``):
#: the newest seq, the read pointer and the unread counts, kept up to date by every store
#: and read so that neither scales with the inbox.  ``inbox.conv`` indexes the entries.
CONVERSATION_SCHEMA = """
CREATE TABLE IF NOT EXISTS convs (
    user INTEGER NOT NULL,
    conv TEXT NOT NULL,
    last INTEGER NOT NULL,
    read_seq INTEGER NOT NULL DEFAULT 0,
    unread INTEGER NOT NULL DEFAULT 0,
    mentions INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, conv)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS convs_by_last ON convs (user, last);
CREATE INDEX IF NOT EXISTS inbox_by_conv ON inbox (user, conv, seq);
CREATE TABLE IF NOT EXISTS mentioned (
    user INTEGER NOT NULL,
    conv TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (user, conv, seq)
) WITHOUT ROWID;
"""

#: The current bodies of messages (text, image and file; not recalled), for search: FTS5
#: with the trigram tokenizer finds any substring of 3 characters or more, in any script,
#: case-insensitive.  Shorter queries scan the inbox.
SEARCH_SCHEMA = """
CREATE VIRTUAL TABLE message_text USING fts5(body, tokenize='trigram');
INSERT INTO message_text (rowid, body)
SELECT id, body FROM messages WHERE kind IN ('text', 'image', 'file') AND body != ''
AND (extra IS NULL OR NOT coalesce(extra ->> '$.recalled', 0));
"""

#: The conversation key of message ``m`` in the inbox of user ``u`` (SQL of
#: :func:`dim.store.interface.conversation_of`).
_CONV_KEY = """(CASE WHEN m.grp IS NOT NULL THEN '#' || m.grp WHEN m.sender != u.name
THEN m.sender ELSE coalesce(m.to_user, u.name) END)"""

#: Fills in ``inbox.conv`` and ``convs`` for a file written before conversations existed.
_MIGRATE_CONVERSATIONS = f"""
UPDATE inbox SET conv = (SELECT {_CONV_KEY} FROM messages m, users u
                         WHERE m.id = inbox.message AND u.id = inbox.user);
INSERT OR REPLACE INTO convs (user, conv, last, read_seq, unread)
SELECT i.user, i.conv, max(i.seq), u.read_seq,
       sum(i.seq > u.read_seq AND m.sender != u.name AND m.kind IN ('text', 'image', 'file'))
FROM inbox i JOIN users u ON u.id = i.user JOIN messages m ON m.id = i.message
GROUP BY i.user, i.conv;
"""


def private_file(path: str) -> None:
    """Make sure the database file exists with mode 0600 (SQLite gives its -wal and -shm
    files the database's mode), unless it is in memory."""
    if path == ":memory:" or path.startswith("file:"):
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        try:
            os.chmod(path + suffix, 0o600)
        except FileNotFoundError:
            pass

#: Whether every recipient of message ``m`` acknowledged (read) it.  ``members`` holds
#: ``[user id, seq, is a recipient]`` for every inbox that got the message.  An entry is
#: read once its conversation's read pointer passed it, and acknowledged once read too.
_ALL_MARKED = f"""NOT EXISTS (SELECT 1 FROM json_each(m.members) AS r JOIN users AS u
                 ON u.id = r.value ->> 0 WHERE r.value ->> 2 AND {{mark}} < r.value ->> 1
                 AND coalesce((SELECT c.read_seq FROM convs c WHERE c.user = u.id
                               AND c.conv = {_CONV_KEY}), 0) < r.value ->> 1)"""

_FETCH_COLUMNS = f"""
SELECT i.seq, m.id, m.client_id, m.sender, m.ts, m.to_user, m.grp, m.body, m.kind, m.file,
       {_ALL_MARKED.format(mark="u.acked_seq")}, {_ALL_MARKED.format(mark="0")}, m.extra
FROM inbox i JOIN messages m ON m.id = i.message
"""

_FETCH = _FETCH_COLUMNS + "WHERE i.user = ? AND i.seq > ? ORDER BY i.seq LIMIT ?"

#: Entries newly covered by an ack or read of the whole inbox: those (old, new] of user ?1
#: that no conversation read covered (they were acknowledged and read then).
_COVERED = """
SELECT i.seq, m.id, m.client_id, m.sender, m.kind, i.conv FROM inbox i
JOIN messages m ON m.id = i.message
WHERE i.user = ?1 AND i.seq > ?2 AND i.seq <= ?3
AND i.seq > coalesce((SELECT c.read_seq FROM convs c WHERE c.user = ?1
                      AND c.conv = i.conv), 0)
ORDER BY i.seq
"""

#: A whole-inbox read of user ?1 from ?2 to ?3 moves the read pointer of every conversation
#: with entries in that range up to ?3 (the unread counts were lowered entry by entry).
_READ_CONVS = """
UPDATE convs SET read_seq = max(read_seq, ?3)
WHERE user = ?1 AND conv IN (SELECT conv FROM inbox WHERE user = ?1 AND seq > ?2
                             AND seq <= ?3)
"""
_LOWER_UNREAD = """
UPDATE convs SET unread = unread - j.value ->> 1 FROM json_each(?2) AS j
WHERE convs.user = ?1 AND convs.conv = j.value ->> 0
"""

_STOP = object()

#: A call run on the writer thread: it gets the cursor and returns the call's result.
Operation = Callable[[sqlite3.Cursor], Any]

_KNOWN = """
SELECT m.sender, m.client_id FROM json_each(?) AS j CROSS JOIN messages AS m
WHERE m.sender = j.value ->> 0 AND m.client_id = j.value ->> 1
"""
_INSERT_MESSAGES = """
INSERT INTO messages (id, sender, client_id, ts, to_user, grp, body, kind, file, members,
                      extra)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5,
       value ->> 6, value ->> 7, value ->> 8, value -> 9, value ->> 10 FROM json_each(?)
"""
_INSERT_MESSAGE = """
INSERT INTO messages (id, sender, client_id, ts, to_user, grp, body, kind, file, members,
                      extra)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_INBOX = """
INSERT INTO inbox (user, seq, message, conv)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?)
"""
#: ``[user id, conv, seq, unread]`` rows: the conversation's newest seq and added unread.
_UPSERT_CONVS = """
INSERT INTO convs (user, conv, last, unread)
SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3 FROM json_each(?) WHERE true
ON CONFLICT (user, conv) DO UPDATE SET last = max(last, excluded.last),
                                       unread = unread + excluded.unread
"""
_UPDATE_SEQS = """
UPDATE users SET last_seq = j.value ->> 1 FROM json_each(?) AS j WHERE users.id = j.value ->> 0
"""


#: Above every seq: the upper bound of a conversation fetch without ``before``.
MAX_SEQ = 2**63 - 1


def mid_of(message_id: int) -> str:
    """The short public id of the message with row id ``message_id``."""
    return format(message_id, "x")


class _Send(NamedTuple):
    """The arguments of one store_message call, waiting for the writer thread."""

    sender: str
    client_id: str
    recipients: tuple[str, ...]
    group: str | None
    body: str
    kind: str
    file: dict[str, Any] | None
    file_text: str | None
    ts: int
    reply_to: str | None = None
    mentions: list[str] | None = None
    #: More fields of the stored message (an edit's ``ref``, a reaction's ``on``).
    more: dict[str, Any] | None = None


class _Batch:
    """The one Deferred of an :meth:`SQLiteStore.apply` call, fired once every operation of
    the batch has an outcome."""

    __slots__ = ("deferred", "outcomes", "waiting")

    def __init__(self, size: int) -> None:
        self.deferred: defer.Deferred[list[Any]] = defer.Deferred()
        self.outcomes: list[Any] = [None] * size
        self.waiting = size
        if not size:
            self.deferred.callback([])

    def settle(self, index: int, outcome: Any) -> None:
        """Record one operation's outcome (a result or a Failure)."""
        self.outcomes[index] = outcome
        self.waiting -= 1
        if not self.waiting:
            self.deferred.callback(self.outcomes)


class _Slot:
    """Where the writer thread's result of one batch operation goes: it takes the place of
    a Deferred in the queue (``callback``/``errback``), at the cost of none."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: _Batch, index: int) -> None:
        self.batch = batch
        self.index = index

    def callback(self, value: Any) -> None:
        self.batch.settle(self.index, value)

    def errback(self, failure: Failure) -> None:
        self.batch.settle(self.index, failure)


def _dumps(value: Any) -> str:
    """Compact JSON text, as stored (a message's ``file``)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


_batch_encode = msgspec.json.Encoder().encode


def _batch_json(value: Any) -> str:
    """Compact JSON for json_each: the same text as :func:`_dumps` for the lists of
    tuples, ints, bools, None and strings of a batch (NUL as ``\u0000``), at a fraction of
    the cost.  A lone surrogate raises UnicodeEncodeError here rather than at binding."""
    return _batch_encode(value).decode()


@implementer(IStore)
class SQLiteStore:
    """An :class:`IStore` in one SQLite file at ``path``, safe against a killed process.

    ``reactor`` (default: the global one) receives the results via ``callFromThread`` and
    gives the time for purging expired revocations.  At most ``batch_limit`` operations share
    one transaction.
    """

    def __init__(self, path: str, reactor: Any, batch_limit: int = 4000,
                 start: bool = True) -> None:
        self._reactor = reactor
        self._path = path
        self._batch_limit = batch_limit
        self._conn: sqlite3.Connection | None = None
        #: Writer-thread caches: user ids by name, last seqs by user id, the last message id.
        self._uids: dict[str, int] = {}
        self._seqs: dict[int, int] = {}
        self._last_message: int | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closing = False
        self._closed = False
        self._close_waiters: list[defer.Deferred[None]] = []
        #: Transactions committed and operations run: for measuring the group commit.
        self.batches = 0
        self.operations = 0
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    def start(self) -> None:
        """Open the file and start the writer thread; calls made before wait in the queue.

        A process that forks after making the store (twistd daemonizing after makeService)
        passes ``start=False`` and calls this when its service starts: neither a thread nor
        an SQLite connection survives a fork.  A bad path fails here, at once.
        """
        if self._thread is not None:
            return
        private_file(self._path)
        self._conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.execute("PRAGMA cache_size=-65536")
        self._conn.executescript(SCHEMA)
        self._conn.executescript(PEOPLE_SCHEMA)
        if "extra" not in [row[1] for row in self._conn.execute(
                "PRAGMA table_info(messages)")]:
            self._conn.execute("ALTER TABLE messages ADD COLUMN extra TEXT")
        columns = [row[1] for row in self._conn.execute("PRAGMA table_info(inbox)")]
        if "conv" not in columns:
            self._conn.executescript("BEGIN; ALTER TABLE inbox ADD COLUMN conv TEXT;"
                                     + CONVERSATION_SCHEMA + _MIGRATE_CONVERSATIONS
                                     + "COMMIT;")
        self._conn.executescript(CONVERSATION_SCHEMA)
        if not self._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'message_text'"
                                  ).fetchone():
            self._conn.executescript("BEGIN;" + SEARCH_SCHEMA + "COMMIT;")
        self._cursor = self._conn.cursor()
        self._thread = threading.Thread(target=self._run, name=f"sqlite-store {self._path}",
                                        daemon=True)
        self._thread.start()

    # -- the reactor side ------------------------------------------------------------------

    def _submit(self, operation: Operation | _Send) -> defer.Deferred[Any]:
        """Queue ``operation`` for the writer thread; a Deferred of its result."""
        if self._closing:
            return defer.fail(Internal("the store is closed"))
        d: defer.Deferred[Any] = defer.Deferred()
        self._queue.put((d, operation))
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
        cast(threading.Thread, self._thread).join()
        self._closed = True
        waiters, self._close_waiters = self._close_waiters, []
        for d in waiters:
            d.callback(None)

    def close(self) -> defer.Deferred[None]:
        """Run and commit everything queued, close the file and end the writer thread."""
        d: defer.Deferred[None] = defer.Deferred()
        if self._closed or (self._thread is None and not self._closing):
            self._closing = self._closed = True  # never started: nothing to flush
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
            cast(sqlite3.Connection, self._conn).close()
        except sqlite3.Error:
            log.err(None, "closing the SQLite store")
        self._reactor.callFromThread(self._finished)

    def _execute(self, batch: list[tuple[defer.Deferred[Any], Operation | _Send]]
                 ) -> list[tuple[defer.Deferred[Any], bool, Any]]:
        """Run one batch in one transaction and commit; every call's outcome, in order."""
        try:
            results = self._attempt(batch, careful=False)
            if results is None:
                self._rollback()
                results = self._attempt(batch, careful=True)
            self._cursor.execute("COMMIT")
        except Exception:
            log.err(None, "SQLite store transaction failed")
            self._rollback()
            error = Failure(Internal("the store failed to write"))
            return [(d, False, error) for d, _ in batch]
        self.batches += 1
        self.operations += len(batch)
        return cast(list[tuple[defer.Deferred[Any], bool, Any]], results)

    def _attempt(self, batch: list[tuple[defer.Deferred[Any], Operation | _Send]],
                 careful: bool) -> list[tuple[defer.Deferred[Any], bool, Any]] | None:
        """Run the batch in a new transaction, not committed yet.

        The fast way runs consecutive messages together and every other call alone, and
        returns None at the first failure it cannot pin on one call without a partial write.
        The careful way runs each call in its own SAVEPOINT.
        """
        cursor = self._cursor
        conn = cast(sqlite3.Connection, self._conn)
        results: list[tuple[defer.Deferred[Any], bool, Any]] = []
        cursor.execute("BEGIN")
        at, end = 0, len(batch)
        while at < end:
            d, operation = batch[at]
            if type(operation) is _Send:
                until = at + 1
                if not careful:
                    while until < end and type(batch[until][1]) is _Send:
                        until += 1
                run = batch[at:until]
                if careful:
                    cursor.execute("SAVEPOINT op")
                done = len(results)
                try:
                    self._store_run(cast(list[tuple[defer.Deferred[Any], _Send]], run), results)
                except Exception:
                    if not careful:
                        return None
                    del results[done:]
                    cursor.execute("ROLLBACK TO op")
                    cursor.execute("RELEASE op")
                    self._forget()
                    results.append((d, False, Failure()))
                else:
                    if careful:
                        cursor.execute("RELEASE op")
                at = until
                continue
            at += 1
            if careful:
                cursor.execute("SAVEPOINT op")
            changes = conn.total_changes
            try:
                value = cast(Operation, operation)(cursor)
            except Exception:
                failure = Failure()
                if careful:
                    cursor.execute("ROLLBACK TO op")
                    cursor.execute("RELEASE op")
                    self._forget()
                elif (failure.check(sqlite3.Error) or conn.total_changes != changes
                      or not conn.in_transaction):
                    return None
                results.append((d, False, failure))
            else:
                if careful:
                    cursor.execute("RELEASE op")
                results.append((d, True, value))
        return results

    def _store_run(self, run: list[tuple[defer.Deferred[Any], _Send]],
                   results: list[tuple[defer.Deferred[Any], bool, Any]]) -> None:
        """Store consecutive messages with a few statements; append each one's outcome.

        An unknown recipient fails its message alone (nothing written for it); anything
        raised means the run is broken and the transaction must be rolled back.
        """
        cursor = self._cursor
        uids = self._uids
        seq_cache = self._seqs
        known = set(cursor.execute(_KNOWN, (_batch_json([send[:2] for _, send in run]),)))
        if self._last_message is None:
            self._last_message = cursor.execute(
                "SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
        message_id = self._last_message
        fresh: dict[tuple[str, str], SendResult] = {}
        message_rows: list[tuple[Any, ...]] = []
        nul_rows: list[tuple[Any, ...]] = []
        inbox_rows: list[tuple[int, int, int, str]] = []
        conv_rows: list[tuple[int, str, int, int]] = []
        mention_rows: list[tuple[int, str, int]] = []
        text_rows: list[tuple[int, str]] = []
        changed: dict[int, int] = {}
        for d, send in run:
            (sender, client_id, recipients, group, body, kind, file, file_text, ts, reply_to,
             mentions, more) = send
            key = (sender, client_id)
            earlier = fresh.get(key)
            if earlier is not None:
                results.append((d, True, SendResult(message=earlier.message,
                                                    seqs=dict(earlier.seqs), duplicate=True)))
                continue
            if key in known or (("\0" in client_id or "\0" in sender) and cursor.execute(
                    "SELECT 1 FROM messages WHERE sender = ? AND client_id = ?",
                    key).fetchone()):
                results.append((d, True, self._original(cursor, sender, client_id)))
                continue
            if len(recipients) == 1:
                members: tuple[str, ...] = ((sender,) if recipients[0] == sender
                                            else (sender, recipients[0]))
            else:
                members = tuple(dict.fromkeys((sender, *recipients)))
            member_uids = []
            for name in members:
                uid = uids.get(name)
                if uid is None:
                    uid = self._uid(cursor, name)
                    if uid is None:
                        break
                member_uids.append(uid)
            else:
                if reply_to is not None and not self._may_reply(
                        cursor, reply_to, sender, member_uids[0],
                        sender_conversation(sender, list(recipients), group)):
                    results.append((d, False, Failure(BadRequest(
                        "reply_to must be a message of this conversation", ref=client_id))))
                    continue
                extra = _extra(reply_to, mentions, more)
                message_id += 1
                if body and kind in UNREAD_KINDS:
                    text_rows.append((message_id, body))
                seqs = {}
                marks = []
                to = recipients[0] if group is None and recipients else None
                countable = kind in UNREAD_KINDS
                for name, uid in zip(members, member_uids):
                    seq = seq_cache.get(uid)
                    if seq is None:
                        seq = cursor.execute("SELECT last_seq FROM users WHERE id = ?",
                                             (uid,)).fetchone()[0]
                    seq = seqs[name] = changed[uid] = seq_cache[uid] = seq + 1
                    conv = ("#" + group if group is not None
                            else sender if name != sender else to or sender)
                    inbox_rows.append((uid, seq, message_id, conv))
                    conv_rows.append((uid, conv, seq, int(countable and name != sender)))
                    if countable and mentions and name in mentions and name != sender:
                        mention_rows.append((uid, conv, seq))
                    marks.append((uid, seq, name in recipients))
                row = (message_id, sender, client_id, ts, to, group, body, kind, file_text,
                       marks, extra)
                if ("\0" in body or "\0" in client_id or "\0" in kind or "\0" in sender
                        or (group and "\0" in group) or (to and "\0" in to)):
                    # JSON would carry a NUL, but ->> cuts the text there: bind it plainly.
                    nul_rows.append(row[:9] + (_batch_json(marks), extra))
                else:
                    message_rows.append(row)
                result = SendResult(message=StoredMessage(
                    mid=format(message_id, "x"), id=client_id, sender=sender, ts=ts, to=to,
                    group=group, body=body, kind=kind, file=file, reply_to=reply_to,
                    mentions=mentions, **(more or {})), seqs=seqs)
                fresh[key] = result
                results.append((d, True, result))
                continue
            results.append((d, False, Failure(NotFound(f"no such user: {name}",
                                                       ref=client_id))))
        if nul_rows:
            cursor.executemany(_INSERT_MESSAGE, nul_rows)
        if inbox_rows:
            if message_rows:
                cursor.execute(_INSERT_MESSAGES, (_batch_json(message_rows),))
            cursor.execute(_INSERT_INBOX, (_batch_json(inbox_rows),))
            cursor.execute(_UPSERT_CONVS, (_batch_json(conv_rows),))
            if text_rows:
                cursor.executemany("INSERT INTO message_text (rowid, body) VALUES (?, ?)",
                                   text_rows)
            if mention_rows:
                cursor.executemany("INSERT INTO mentioned (user, conv, seq) VALUES (?, ?, ?)",
                                   mention_rows)
            cursor.execute(_UPDATE_SEQS, (_batch_json(list(changed.items())),))
            self._last_message = message_id

    def change_message(self, op: ChangeOp) -> defer.Deferred[SendResult]:
        """Store an edit, recall or reaction and change the original's current state."""
        return self._submit(lambda cursor: self._change(cursor, op))

    def _change(self, cursor: sqlite3.Cursor, op: ChangeOp) -> SendResult:
        """The writer-thread side of :meth:`change_message`: every check, then the writes."""
        sender = op.sender
        if cursor.execute("SELECT 1 FROM messages WHERE sender = ? AND client_id = ?",
                          (sender, op.client_id)).fetchone():
            return self._original(cursor, sender, op.client_id)
        uid = self._uid(cursor, sender)
        row = None
        if uid is not None and 0 < len(op.ref) <= 15 and all(
                c in "0123456789abcdef" for c in op.ref):
            row = cursor.execute(
                "SELECT id, client_id, sender, ts, to_user, grp, body, kind, file, extra,"
                " members FROM messages WHERE id = ? AND EXISTS (SELECT 1 FROM"
                " json_each(members) r WHERE r.value ->> 0 = ?)",
                (int(op.ref, 16), uid)).fetchone()
        if row is None:
            raise NotFound(f"no message {op.ref} in your inbox", ref=op.client_id)
        original = _message(row[:9], row[9])
        check_change(original, op)
        holders = [name for (name,) in cursor.execute(
            "SELECT u.name FROM json_each(?) r JOIN users u ON u.id = r.value ->> 0"
            " ORDER BY r.key", (row[10],)) if name != sender]
        more: dict[str, Any] = {"ref": op.ref}
        if op.kind == "reaction":
            more["on"] = op.on
        outcome: list[tuple[Any, bool, Any]] = []
        self._store_run([(None, _Send(  # type: ignore[list-item]
            sender, op.client_id, tuple(holders), original.group,
            op.body if op.kind != "recall" else "", op.kind, None, None, op.ts,
            more=more))], outcome)
        result: SendResult = outcome[0][2]
        message_id = row[0]
        if op.kind == "edit":
            cursor.execute("UPDATE message_text SET body = ? WHERE rowid = ?",
                           (op.body, message_id))
            cursor.execute("UPDATE messages SET body = ?, extra = json_set(coalesce(extra,"
                           " '{}'), '$.edited', ?) WHERE id = ?", (op.body, op.ts, message_id))
        elif op.kind == "recall":
            cursor.execute("DELETE FROM message_text WHERE rowid = ?", (message_id,))
            cursor.execute("UPDATE messages SET body = '', file = NULL, extra = json_set("
                           "coalesce(extra, '{}'), '$.recalled', json('true')) WHERE id = ?",
                           (message_id,))
        else:
            extra = json.loads(row[9]) if row[9] else {}
            reactions = react(original.reactions, op.body, sender, op.on)
            if reactions is None:
                extra.pop("reactions", None)
            else:
                extra["reactions"] = reactions
            cursor.execute("UPDATE messages SET extra = ? WHERE id = ?",
                           (_dumps(extra) if extra else None, message_id))
        return result

    def search_messages(self, user: str, text: str, conv: str | None,
                        limit: int) -> defer.Deferred[list[InboxEntry]]:
        """The user's entries whose current body contains ``text``, newest first.

        With 3 characters or more, the trigram index picks the candidate messages and the
        user's inbox (or the conversation's index) is walked from its newest entry, keeping
        those; a shorter ``text`` is looked for in every entry so walked.  Every candidate is
        checked again with :func:`found_by`, so case folding is Python's."""
        needle = text.casefold()

        def operation(cursor: sqlite3.Cursor) -> list[InboxEntry]:
            uid = self._uid(cursor, user)
            if uid is None or limit <= 0:
                return []
            where = "WHERE i.user = ?"
            args: list[Any] = [uid]
            if conv is not None:
                where += " AND i.conv = ?"
                args.append(conv)
            if len(text) >= 3:
                where += (" AND i.message IN (SELECT rowid FROM message_text"
                          " WHERE message_text MATCH ?)")
                args.append('"' + text.replace('"', '""') + '"')
            found: list[InboxEntry] = []
            for row in cursor.execute(_FETCH_COLUMNS + where + " ORDER BY i.seq DESC", args):
                message = _message(row[1:10], row[12])
                if found_by(message, needle):
                    found.append(InboxEntry(seq=row[0], message=message,
                                            delivered=bool(row[10]), read=bool(row[11])))
                    if len(found) >= limit:
                        break
            return found
        return self._submit(operation)

    def _may_reply(self, cursor: sqlite3.Cursor, reply_to: str, sender: str, sender_uid: int,
                   conv: str) -> bool:
        """Whether message ``reply_to`` is in the sender's inbox, in conversation ``conv``."""
        if not (0 < len(reply_to) <= 15 and all(c in "0123456789abcdef" for c in reply_to)):
            return False
        row = cursor.execute(
            "SELECT sender, to_user, grp, EXISTS (SELECT 1 FROM json_each(members) r"
            " WHERE r.value ->> 0 = ?) FROM messages WHERE id = ?",
            (sender_uid, int(reply_to, 16))).fetchone()
        if row is None or not row[3]:
            return False
        original = StoredMessage(mid=reply_to, id="", sender=row[0], ts=0, to=row[1],
                                 group=row[2])
        return conversation_of(original, sender) == conv

    def _forget(self) -> None:
        """Drop every cached thing that a rollback may have made wrong."""
        self._uids.clear()
        self._seqs.clear()
        self._last_message = None

    def _rollback(self) -> None:
        """Roll the open transaction back, if any, and forget what it wrote."""
        self._forget()
        if cast(sqlite3.Connection, self._conn).in_transaction:
            try:
                self._cursor.execute("ROLLBACK")
            except sqlite3.Error:
                log.err(None, "rolling back the SQLite store")

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
        return self._submit(operation)

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
        return self._submit(lambda cursor: self._uid(cursor, user) is not None)

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
        return self._submit(operation)

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
            "SELECT 1 FROM revoked WHERE jti = ?", (jti,)).fetchone() is not None)

    def token_epoch(self, user: str) -> defer.Deferred[tuple[int, str | None]]:
        """The user's token epoch and the token id its last bump kept."""
        def operation(cursor: sqlite3.Cursor) -> tuple[int, str | None]:
            row = cursor.execute("SELECT epoch, kept FROM token_epochs WHERE name = ?",
                                 (user,)).fetchone()
            return (int(row[0]), row[1]) if row else (0, None)
        return self._submit(operation)

    def bump_token_epoch(self, user: str, keep: str) -> defer.Deferred[int]:
        """A new token epoch for ``user``, keeping the token id ``keep``."""
        def operation(cursor: sqlite3.Cursor) -> int:
            row = cursor.execute(
                "INSERT INTO token_epochs (name, epoch, kept) VALUES (?, 1, ?)"
                " ON CONFLICT (name) DO UPDATE SET epoch = epoch + 1, kept = excluded.kept"
                " RETURNING epoch", (user, keep)).fetchone()
            return int(row[0])
        return self._submit(operation)

    # -- messages --------------------------------------------------------------------------

    def store_message(self, sender: str, client_id: str, recipients: list[str],
                      group: str | None, body: str, kind: str, file: dict[str, Any] | None,
                      ts: int, reply_to: str | None = None,
                      mentions: list[str] | None = None) -> defer.Deferred[SendResult]:
        """Store one message in the sender's inbox and every recipient's, durably."""
        file_text = None
        if file is not None:
            try:
                file_text = _dumps(file)
            except (TypeError, ValueError):
                return defer.fail(BadRequest("file is not a JSON object", ref=client_id))
        return self._submit(_Send(sender, client_id, tuple(recipients), group, body, kind,
                                  file, file_text, ts, reply_to, mentions))

    def apply(self, ops: list[StoreOp]) -> defer.Deferred[list[Any]]:
        """Run a batch of sends and acks in order, with one Deferred (see IStore.apply).

        The operations join the writer's queue like single calls, so they share its
        transactions (and commits) with everything else queued meanwhile."""
        batch = _Batch(len(ops))
        if self._closing:
            failure = Failure(Internal("the store is closed"))
            for i in range(len(ops)):
                batch.settle(i, failure)
            return batch.deferred
        put = self._queue.put
        for i, op in enumerate(ops):
            slot = _Slot(batch, i)
            if type(op) is AckOp and op.conv is not None:
                user, conv, seq = op.user, op.conv, op.seq
                put((slot, lambda cursor, user=user, conv=conv, seq=seq:
                     self._read_conversation(cursor, user, conv, seq)))
            elif type(op) is ChangeOp:
                put((slot, lambda cursor, op=op: self._change(cursor, op)))
            elif type(op) is SendOp:
                file_text = None
                if op.file is not None:
                    try:
                        file_text = _dumps(op.file)
                    except (TypeError, ValueError):
                        slot.errback(Failure(BadRequest("file is not a JSON object",
                                                        ref=op.client_id)))
                        continue
                put((slot, _Send(op.sender, op.client_id, tuple(op.recipients), op.group,
                                 op.body, op.kind, op.file, file_text, op.ts, op.reply_to,
                                 op.mentions)))
            else:
                put((slot, self._ack_operation(cast(AckOp, op))))
        return batch.deferred

    def _ack_operation(self, op: AckOp) -> Operation:
        """The writer-thread operation of an AckOp: ``(delivered, read)`` receipts."""
        user, seq = op.user, op.seq
        if op.read:
            return lambda cursor: (self._advance(cursor, user, seq, read=False),
                                   self._advance(cursor, user, seq, read=True))
        return lambda cursor: (self._advance(cursor, user, seq, read=False), [])

    def _original(self, cursor: sqlite3.Cursor, sender: str, client_id: str) -> SendResult:
        """The SendResult of the message ``(sender, client_id)`` stored earlier."""
        row = cursor.execute(
            "SELECT id, client_id, sender, ts, to_user, grp, body, kind, file, members, extra"
            " FROM messages WHERE sender = ? AND client_id = ?", (sender, client_id)).fetchone()
        seqs = dict(cursor.execute(
            "SELECT u.name, r.value ->> 1 FROM json_each(?) AS r JOIN users AS u"
            " ON u.id = r.value ->> 0", (row[9],)).fetchall())
        return SendResult(message=_message(row[:9], row[10]), seqs=seqs, duplicate=True)

    def fetch(self, user: str, after: int,
              limit: int) -> defer.Deferred[tuple[list[InboxEntry], int]]:
        """``(entries, last_seq)``: up to ``limit`` entries with seq > ``after``."""
        def operation(cursor: sqlite3.Cursor) -> tuple[list[InboxEntry], int]:
            uid = self._uid(cursor, user)
            if uid is None:
                return [], 0
            last = cursor.execute("SELECT last_seq FROM users WHERE id = ?",
                                  (uid,)).fetchone()[0]
            entries = [InboxEntry(seq=row[0], message=_message(row[1:10], row[12]),
                                  delivered=bool(row[10]), read=bool(row[11]))
                       for row in cursor.execute(_FETCH, (uid, after, max(limit, 0)))]
            return entries, last
        return self._submit(operation)

    def last_seq(self, user: str) -> defer.Deferred[int]:
        """The highest seq in the user's inbox (0 when empty or unknown)."""
        return self._submit(lambda cursor: self._mark(cursor, user, "last_seq"))

    def acked_seq(self, user: str) -> defer.Deferred[int]:
        """The highest seq the user acknowledged (0 when none)."""
        return self._submit(lambda cursor: self._mark(cursor, user, "acked_seq"))

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
        receipts = []
        lowered: dict[str, int] = {}
        for at, message_id, client_id, sender, kind, conv in cursor.execute(
                _COVERED, (uid, old, new)).fetchall():
            if read and sender != user and kind in UNREAD_KINDS:
                lowered[conv] = lowered.get(conv, 0) + 1
            if sender != user:
                receipts.append(Receipt(mid=mid_of(message_id), id=client_id, sender=sender,
                                        seq=at))
        if read:
            cursor.execute("UPDATE users SET read_seq = ? WHERE id = ?", (new, uid))
            if lowered:
                cursor.execute(_LOWER_UNREAD, (uid, _batch_json(list(lowered.items()))))
            cursor.execute(_READ_CONVS, (uid, old, new))
        return receipts

    def read_conversation(self, user: str, conv: str, seq: int) -> defer.Deferred[
            tuple[list[Receipt], list[Receipt], int]]:
        """Read one conversation up to ``seq``; ``(delivered, read, new pointer or 0)``."""
        return self._submit(lambda cursor: self._read_conversation(cursor, user, conv, seq))

    def _read_conversation(self, cursor: sqlite3.Cursor, user: str, conv: str,
                           seq: int) -> tuple[list[Receipt], list[Receipt], int]:
        """The writer-thread side of :meth:`read_conversation`."""
        row = cursor.execute(
            "SELECT u.id, u.acked_seq, c.read_seq, c.last FROM users u JOIN convs c"
            " ON c.user = u.id WHERE u.name = ? AND c.conv = ?", (user, conv)).fetchone()
        if row is None:
            return [], [], 0
        uid, acked, old, last = row
        new = min(seq, last)
        if new <= old:
            return [], [], 0
        delivered: list[Receipt] = []
        read: list[Receipt] = []
        lowered = 0
        for at, message_id, client_id, sender, kind in cursor.execute(
                "SELECT i.seq, m.id, m.client_id, m.sender, m.kind FROM inbox i"
                " JOIN messages m ON m.id = i.message WHERE i.user = ? AND i.conv = ?"
                " AND i.seq > ? AND i.seq <= ? ORDER BY i.seq",
                (uid, conv, old, new)).fetchall():
            if sender == user:
                continue
            lowered += kind in UNREAD_KINDS
            receipt = Receipt(mid=mid_of(message_id), id=client_id, sender=sender, seq=at)
            if at > acked:
                delivered.append(receipt)
            read.append(receipt)
        cursor.execute("UPDATE convs SET read_seq = ?, unread = unread - ?"
                       " WHERE user = ? AND conv = ?", (new, lowered, uid, conv))
        return delivered, read, new

    def fetch_conversation(self, user: str, conv: str, after: int, before: int | None,
                           limit: int) -> defer.Deferred[tuple[list[InboxEntry], bool]]:
        """Entries of one conversation, in seq order, and whether more remain."""
        def operation(cursor: sqlite3.Cursor) -> tuple[list[InboxEntry], bool]:
            uid = self._uid(cursor, user)
            if uid is None or limit <= 0:
                return [], False
            order = "ASC" if before is None else "DESC"
            rows = cursor.execute(
                _FETCH_COLUMNS + "WHERE i.user = ? AND i.conv = ? AND i.seq > ?"
                f" AND i.seq < ? ORDER BY i.seq {order} LIMIT ?",
                (uid, conv, after, MAX_SEQ if before is None else before,
                 limit + 1)).fetchall()
            more = len(rows) > limit
            rows = rows[:limit] if before is None else rows[:limit][::-1]
            return [InboxEntry(seq=row[0], message=_message(row[1:10], row[12]),
                               delivered=bool(row[10]), read=bool(row[11]))
                    for row in rows], more
        return self._submit(operation)

    def conversations(self, user: str, limit: int) -> defer.Deferred[list[Conversation]]:
        """The user's conversations, most recent activity first, at most ``limit``."""
        def operation(cursor: sqlite3.Cursor) -> list[Conversation]:
            uid = self._uid(cursor, user)
            if uid is None:
                return []
            rows = cursor.execute(
                "SELECT conv, last, read_seq, unread, (SELECT count(*) FROM mentioned n"
                " WHERE n.user = c.user AND n.conv = c.conv AND n.seq > c.read_seq)"
                " FROM convs c WHERE user = ?"
                " ORDER BY last DESC LIMIT ?", (uid, max(limit, 0))).fetchall()
            out = []
            for conv, last, read_seq, unread, mentions in rows:
                entry = cursor.execute(_FETCH, (uid, last - 1, 1)).fetchone()
                out.append(Conversation(
                    conv=conv,
                    last=InboxEntry(seq=entry[0], message=_message(entry[1:10], entry[12]),
                                    delivered=bool(entry[10]), read=bool(entry[11])),
                    read_seq=read_seq, unread=unread, mentions=mentions))
            return out
        return self._submit(operation)

    # -- people ----------------------------------------------------------------------------

    def get_profile(self, user: str) -> defer.Deferred[Profile | None]:
        """The user's profile (the user name as display name until one is set), or None."""
        def operation(cursor: sqlite3.Cursor) -> Profile | None:
            row = cursor.execute(_PROFILE + " WHERE u.name = ?", (user,)).fetchone()
            return _profile(row) if row else None
        return self._submit(operation)

    def update_profile(self, user: str, changes: dict[str, Any]) -> defer.Deferred[Profile]:
        """Apply the given keys of ``changes`` to the profile; NotFound for an unknown user."""
        def operation(cursor: sqlite3.Cursor) -> Profile:
            row = cursor.execute(_PROFILE + " WHERE u.name = ?", (user,)).fetchone()
            if row is None:
                raise NotFound(f"no such user: {user}")
            profile = _profile(row)
            for key in ("name", "status", "avatar"):
                if key in changes:
                    setattr(profile, key, changes[key])
            cursor.execute(
                "INSERT INTO profiles (user, name, name_fold, status, avatar)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (user) DO UPDATE SET name = excluded.name,"
                " name_fold = excluded.name_fold, status = excluded.status,"
                " avatar = excluded.avatar",
                (row[0], profile.name, profile.name.casefold(), profile.status,
                 profile.avatar))
            return profile
        return self._submit(operation)

    def search_users(self, text: str, limit: int) -> defer.Deferred[list[Profile]]:
        """Profiles whose user or display name contains ``text`` (any case), name order.

        It scans every user name (LIKE folds ASCII, and user names are ASCII) and every
        display name that was set: about 30 ms of the writer thread for 50,000 users.
        """
        needle = text.casefold()
        pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace(
            "_", "\\_") + "%"
        return self._submit(lambda cursor: [_profile(row) for row in cursor.execute(
            _SEARCH, (pattern, needle, max(limit, 0)))])

    def request_contact(self, user: str, other: str) -> defer.Deferred[Contact]:
        """``user`` asks for ``other``: pending, or mutual if ``other`` had asked already."""
        if user == other:
            return defer.fail(BadRequest("a user cannot be its own contact"))

        def operation(cursor: sqlite3.Cursor) -> Contact:
            uid, oid = self._uids_of(cursor, [user, other])
            row = cursor.execute("SELECT pending FROM contacts WHERE user = ? AND other = ?",
                                 (uid, oid)).fetchone()
            if row is None:
                cursor.executemany(
                    "INSERT INTO contacts (user, other, pending) VALUES (?, ?, ?)",
                    [(uid, oid, "out"), (oid, uid, "in")])
                return Contact(user=other, pending="out")
            if row[0] == "in":
                cursor.execute("UPDATE contacts SET pending = NULL"
                               " WHERE (user = ?1 AND other = ?2) OR (user = ?2 AND other = ?1)",
                               (uid, oid))
                return Contact(user=other, pending=None)
            return Contact(user=other, pending=row[0])
        return self._submit(operation)

    def contacts(self, user: str) -> defer.Deferred[list[Contact]]:
        """Every contact and pending request of ``user``, in user-name order."""
        return self._submit(lambda cursor: [
            Contact(user=name, pending=pending) for name, pending in cursor.execute(
                "SELECT o.name, c.pending FROM users u JOIN contacts c ON c.user = u.id"
                " JOIN users o ON o.id = c.other WHERE u.name = ? ORDER BY o.name", (user,))])

    def remove_contact(self, user: str, other: str) -> defer.Deferred[bool]:
        """Drop the contact or request between the two, either way; whether there was one."""
        def operation(cursor: sqlite3.Cursor) -> bool:
            uid, oid = self._uid(cursor, user), self._uid(cursor, other)
            if uid is None or oid is None:
                return False
            cursor.execute("DELETE FROM contacts WHERE (user = ?1 AND other = ?2)"
                           " OR (user = ?2 AND other = ?1)", (uid, oid))
            return cursor.rowcount > 0
        return self._submit(operation)

    # -- groups ----------------------------------------------------------------------------

    def create_group(self, owner: str, name: str, members: list[str],
                     ts: int) -> defer.Deferred[Group]:
        """Make a group with the owner first and no duplicates; NotFound for unknown users."""
        everyone = list(dict.fromkeys([owner, *members]))

        def operation(cursor: sqlite3.Cursor) -> Group:
            uids = self._uids_of(cursor, everyone)
            (gid,), = cursor.execute(
                "INSERT INTO groups (name, owner, created) VALUES (?, ?, ?) RETURNING id",
                (name, uids[0], ts)).fetchall()
            cursor.executemany("INSERT INTO group_members (grp, user) VALUES (?, ?)",
                               [(gid, uid) for uid in uids])
            return Group(id=group_id_of(gid), name=name, owner=owner, members=everyone)
        return self._submit(operation)

    def get_group(self, group_id: str) -> defer.Deferred[Group | None]:
        """The group, or None."""
        gid = _group_row(group_id)
        return self._submit(lambda cursor: None if gid is None else _group(cursor, gid))

    def groups_of(self, user: str) -> defer.Deferred[list[Group]]:
        """The groups ``user`` is a member of, oldest group first."""
        def operation(cursor: sqlite3.Cursor) -> list[Group]:
            gids = cursor.execute(
                "SELECT m.grp FROM users u JOIN group_members m ON m.user = u.id"
                " WHERE u.name = ? ORDER BY m.grp", (user,)).fetchall()
            return [cast(Group, _group(cursor, gid)) for (gid,) in gids]
        return self._submit(operation)

    def rename_group(self, group_id: str, name: str) -> defer.Deferred[Group]:
        """Rename the group; NotFound if there is none."""
        gid = _group_row(group_id)

        def operation(cursor: sqlite3.Cursor) -> Group:
            if gid is not None:
                cursor.execute("UPDATE groups SET name = ? WHERE id = ?", (name, gid))
                if cursor.rowcount:
                    return cast(Group, _group(cursor, gid))
            raise NotFound(f"no such group: {group_id}")
        return self._submit(operation)

    def add_group_members(self, group_id: str, users: list[str],
                          limit: int) -> defer.Deferred[Group]:
        """Add the users not yet in; NotFound for unknowns, TooLarge past ``limit``."""
        gid = _group_row(group_id)

        def operation(cursor: sqlite3.Cursor) -> Group:
            group = None if gid is None else _group(cursor, gid)
            if group is None:
                raise NotFound(f"no such group: {group_id}")
            new = [user for user in dict.fromkeys(users) if user not in group.members]
            uids = self._uids_of(cursor, new)
            if len(group.members) + len(new) > limit:
                raise TooLarge(f"a group has at most {limit} members")
            cursor.executemany("INSERT INTO group_members (grp, user) VALUES (?, ?)",
                               [(gid, uid) for uid in uids])
            group.members.extend(new)
            return group
        return self._submit(operation)

    def remove_group_member(self, group_id: str,
                            user: str) -> defer.Deferred[Group | None]:
        """Remove a member, handing ownership on or deleting the group when it empties."""
        gid = _group_row(group_id)

        def operation(cursor: sqlite3.Cursor) -> Group | None:
            group = None if gid is None else _group(cursor, gid)
            if group is None:
                raise NotFound(f"no such group: {group_id}")
            if user not in group.members:
                raise NotFound(f"{user} is not a member of {group_id}")
            uid = self._uid(cursor, user)
            cursor.execute("DELETE FROM group_members WHERE grp = ? AND user = ?", (gid, uid))
            group.members.remove(user)
            if not group.members:
                cursor.execute("DELETE FROM groups WHERE id = ?", (gid,))
                return None
            if group.owner == user:
                group.owner = group.members[0]
                cursor.execute("UPDATE groups SET owner = ? WHERE id = ?",
                               (self._uid(cursor, group.owner), gid))
            return group
        return self._submit(operation)

    # -- files -----------------------------------------------------------------------------

    def add_file(self, record: FileRecord) -> defer.Deferred[None]:
        """Keep an uploaded file's metadata."""
        def operation(cursor: sqlite3.Cursor) -> None:
            cursor.execute("INSERT OR REPLACE INTO files (id, owner, name, size, mime, sha256,"
                           " ts) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (record.id, record.owner, record.name, record.size, record.mime,
                            record.sha256, record.ts))
        return self._submit(operation)

    def get_file(self, file_id: str) -> defer.Deferred[FileRecord | None]:
        """The file's metadata, or None."""
        def operation(cursor: sqlite3.Cursor) -> FileRecord | None:
            row = cursor.execute("SELECT id, owner, name, size, mime, sha256, ts FROM files"
                                 " WHERE id = ?", (file_id,)).fetchone()
            return None if row is None else FileRecord(
                id=row[0], owner=row[1], name=row[2], size=row[3], mime=row[4],
                sha256=row[5], ts=row[6])
        return self._submit(operation)

    def may_read_file(self, user: str, file_id: str) -> defer.Deferred[bool]:
        """Whether ``user`` uploaded the file, received it in a message, or it is an avatar.

        Who received it is read from the messages themselves: every message keeps the ids
        of the users whose inbox got it, and an index finds the messages by file id.
        """
        def operation(cursor: sqlite3.Cursor) -> bool:
            uid = self._uid(cursor, user)
            return bool(cursor.execute(_MAY_READ, (file_id, user, -1 if uid is None else uid)
                                       ).fetchone()[0])
        return self._submit(operation)

    def _uids_of(self, cursor: sqlite3.Cursor, users: list[str]) -> list[int]:
        """The row ids of ``users``; NotFound naming the first unknown one."""
        uids = []
        for user in users:
            uid = self._uid(cursor, user)
            if uid is None:
                raise NotFound(f"no such user: {user}")
            uids.append(uid)
        return uids


def _message(row: tuple[Any, ...], extra: str | None = None) -> StoredMessage:
    """A StoredMessage from (id, client_id, sender, ts, to_user, grp, body, kind, file) and
    the ``extra`` JSON (reply_to, mentions) when there is one."""
    message_id, client_id, sender, ts, to, group, body, kind, file = row
    message = StoredMessage(mid=mid_of(message_id), id=client_id, sender=sender, ts=ts, to=to,
                            group=group, body=body, kind=kind,
                            file=None if file is None else json.loads(file))
    if extra is not None:
        for key, value in json.loads(extra).items():
            setattr(message, key, value)
    return message


def _extra(reply_to: str | None, mentions: list[str] | None,
           more: dict[str, Any] | None = None) -> str | None:
    """The ``extra`` JSON of a message: what only some messages carry, or None."""
    extra: dict[str, Any] = dict(more or {})
    if reply_to is not None:
        extra["reply_to"] = reply_to
    if mentions:
        extra["mentions"] = mentions
    return _dumps(extra) if extra else None


#: Profiles, contacts, groups and files.  A user without a ``profiles`` row has the default
#: profile.  ``group_members`` row ids grow with every join, so they give the join order.
#: Who may read a file because it reached their inbox is found from ``messages`` (by file
#: id, through ``messages_by_file``) and their ``members``.
PEOPLE_SCHEMA = """
CREATE TABLE IF NOT EXISTS profiles (
    user INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    name_fold TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT '',
    avatar TEXT
);
CREATE INDEX IF NOT EXISTS profiles_by_avatar ON profiles (avatar) WHERE avatar IS NOT NULL;
CREATE TABLE IF NOT EXISTS contacts (
    user INTEGER NOT NULL,
    other INTEGER NOT NULL,
    pending TEXT,
    PRIMARY KEY (user, other)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS groups (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    owner INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS group_members (
    id INTEGER PRIMARY KEY,
    grp INTEGER NOT NULL,
    user INTEGER NOT NULL,
    UNIQUE (grp, user)
);
CREATE INDEX IF NOT EXISTS group_members_by_user ON group_members (user, grp);
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    size INTEGER NOT NULL,
    mime TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    ts INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_file ON messages (json_extract(file, '$.id'))
    WHERE file IS NOT NULL;
"""

_PROFILE = """
SELECT u.id, u.name, coalesce(p.name, u.name), coalesce(p.status, ''), p.avatar
FROM users u LEFT JOIN profiles p ON p.user = u.id
"""

#: Users whose name is LIKE ?1 or whose display name (folded) contains ?2, at most ?3.
_SEARCH = r"""
WITH hits (name) AS (
    SELECT name FROM users WHERE name LIKE ?1 ESCAPE '\'
    UNION SELECT u.name FROM profiles p CROSS JOIN users u ON u.id = p.user
          WHERE instr(p.name_fold, ?2)
    ORDER BY 1 LIMIT ?3)
SELECT u.id, u.name, coalesce(p.name, u.name), coalesce(p.status, ''), p.avatar
FROM hits h CROSS JOIN users u ON u.name = h.name LEFT JOIN profiles p ON p.user = u.id
ORDER BY u.name
"""

_MAY_READ = """
SELECT EXISTS (SELECT 1 FROM files WHERE id = ?1 AND owner = ?2)
    OR EXISTS (SELECT 1 FROM profiles WHERE avatar = ?1)
    OR EXISTS (SELECT 1 FROM messages m, json_each(m.members) r
               WHERE m.file IS NOT NULL AND json_extract(m.file, '$.id') = ?1
               AND r.value ->> 0 = ?3)
"""


def group_id_of(row_id: int) -> str:
    """The public id of the group with row id ``row_id``."""
    return format(row_id, "x")


def _group_row(group_id: str) -> int | None:
    """The row id a public group id stands for, or None if it is not one."""
    if (not isinstance(group_id, str) or not 0 < len(group_id) <= 15
            or group_id[0] == "0" or group_id.strip("0123456789abcdef")):
        return None
    return int(group_id, 16)


def _profile(row: tuple[Any, ...]) -> Profile:
    """A Profile from a row of ``_PROFILE``."""
    return Profile(user=row[1], name=row[2], status=row[3], avatar=row[4])


def _group(cursor: sqlite3.Cursor, gid: int) -> Group | None:
    """The group with row id ``gid``, its members in join order, or None."""
    row = cursor.execute("SELECT g.name, u.name FROM groups g JOIN users u ON u.id = g.owner"
                         " WHERE g.id = ?", (gid,)).fetchone()
    if row is None:
        return None
    members = [name for (name,) in cursor.execute(
        "SELECT u.name FROM group_members m JOIN users u ON u.id = m.user WHERE m.grp = ?"
        " ORDER BY m.id", (gid,))]
    return Group(id=group_id_of(gid), name=row[0], owner=row[1], members=members)
