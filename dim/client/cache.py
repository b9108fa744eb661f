"""The client's local copy of its inbox, so a reopened chat shows history at once.

:class:`MessageCache` keeps every inbox message this client has seen, by seq, in one SQLite
file per gateway and user under the XDG data directory, together with the last contiguous seq
(where the next ``sync`` starts) and, per conversation, the seq the person has seen (for unread
counts).  It is small, local and synchronous: each call is one short SQLite statement.

Entries of kind edit, recall and reaction are kept at their seq (so the inbox has no holes)
but are not messages of their own: storing one changes the message it names (``ref``), and
history and the conversation list leave them out.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import dataclass
from typing import Any
from collections.abc import Iterable
from urllib.parse import urlsplit

import platformdirs

from dim.protocol import frames as F

APP_NAME = "dim-chat"

#: Kinds of inbox entry that change an earlier message instead of being one.
CHANGE_KINDS = frozenset(F.CHANGE_KINDS)
_CHANGE_KINDS_SQL = "(" + ", ".join(f"'{k}'" for k in F.CHANGE_KINDS) + ")"


@dataclass(frozen=True)
class ChatMessage:
    """One entry of this user's inbox, as the client shows and caches it.

    A message carries the state it is in now: ``edited`` (the ms timestamp of its last
    edit), ``recalled`` and ``reactions`` (``{emoji: [user, ...]}``).  An entry of one of
    :data:`CHANGE_KINDS` names the message it changes in ``ref`` (and a reaction adds or,
    with ``on`` false, removes the emoji in ``body``).
    """

    seq: int
    mid: str
    id: str
    sender: str
    ts: int
    to: str | None = None
    group: str | None = None
    body: str = ""
    kind: str = "text"
    delivered: bool = False
    read: bool = False
    #: The attached file of an "image" or "file" message: ``{id, name, size, mime}``.
    file: dict[str, Any] | None = None
    #: The mid of the message this one answers, and the group members it mentions.
    reply_to: str | None = None
    mentions: list[str] | None = None
    edited: int | None = None
    recalled: bool = False
    reactions: dict[str, list[str]] | None = None
    #: Of an edit, recall or reaction: the mid of the message changed, and add or remove.
    ref: str | None = None
    on: bool | None = None

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ChatMessage:
        """A message from its JSON form (a gateway listing or a ``msg`` frame's fields)."""
        file = obj.get("file")
        mentions = obj.get("mentions")
        reactions = obj.get("reactions")
        edited = obj.get("edited")
        on = obj.get("on")
        return cls(seq=int(obj["seq"]), mid=str(obj["mid"]), id=str(obj.get("id", "")),
                   sender=str(obj["from"]), ts=int(obj.get("ts", 0)), to=obj.get("to"),
                   group=obj.get("group"), body=obj.get("body") or "",
                   kind=obj.get("kind") or "text", delivered=bool(obj.get("delivered")),
                   read=bool(obj.get("read")), file=file if isinstance(file, dict) else None,
                   reply_to=obj.get("reply_to") or None,
                   mentions=[str(u) for u in mentions] if isinstance(mentions, list) else None,
                   edited=int(edited) if isinstance(edited, (int, float)) and edited else None,
                   recalled=obj.get("recalled") is True,
                   reactions=_reactions(reactions),
                   ref=obj.get("ref") or None, on=on if isinstance(on, bool) else None)

    @classmethod
    def from_frame(cls, frame: Any) -> ChatMessage:
        """A message from a ``msg`` frame (:class:`dim.protocol.frames.Msg`) or from one item
        of a listing (``sync`` answers and ``GET /v1/messages`` give the same fields), with
        everything of part 3 it carries."""
        if isinstance(frame, dict):
            return cls.from_json(frame)
        return cls.from_json(frame.to_dict())

    @property
    def is_change(self) -> bool:
        """Whether this entry changes another message (an edit, recall or reaction)."""
        return self.kind in CHANGE_KINDS

    def peer(self, me: str) -> str:
        """The conversation this message belongs to, seen by user ``me``."""
        return conversation_of(me, self.sender, self.to, self.group)


def _reactions(value: Any) -> dict[str, list[str]] | None:
    """Reactions as listed (``{emoji: [user, ...]}``), without empty ones; None if none."""
    if not isinstance(value, dict):
        return None
    found = {str(k): [str(u) for u in v] for k, v in value.items() if isinstance(v, list) and v}
    return found or None


def conversation_of(me: str, sender: str, to: str | None, group: str | None) -> str:
    """The conversation key of a message: the other user, or ``#`` + the group id."""
    if group is not None:
        return "#" + group
    if sender == me:
        return to or me
    return sender


@dataclass(frozen=True)
class Conversation:
    """One conversation in the list: the peer, its newest message, how many are unread and
    how many of those mention the person, and how far it is read."""

    peer: str
    last_seq: int
    last_ts: int
    last_body: str
    unread: int
    mentions: int = 0
    read_seq: int = 0


_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY, mid TEXT NOT NULL, id TEXT NOT NULL, sender TEXT NOT NULL,
    ts INTEGER NOT NULL, to_user TEXT, grp TEXT, body TEXT NOT NULL, kind TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0, read INTEGER NOT NULL DEFAULT 0,
    peer TEXT NOT NULL, file TEXT, reply_to TEXT, mentions TEXT, edited INTEGER,
    recalled INTEGER NOT NULL DEFAULT 0, reactions TEXT, ref TEXT, on_flag INTEGER);
CREATE INDEX IF NOT EXISTS messages_peer ON messages (peer, seq);
CREATE INDEX IF NOT EXISTS messages_mid ON messages (mid);
CREATE INDEX IF NOT EXISTS messages_ref ON messages (ref);
CREATE TABLE IF NOT EXISTS seen (peer TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS receipts (
    mid TEXT NOT NULL, by_user TEXT NOT NULL, read INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (mid, by_user));
"""

_COLUMNS = ("seq, mid, id, sender, ts, to_user, grp, body, kind, delivered, read, file, "
            "reply_to, mentions, edited, recalled, reactions, ref, on_flag")

#: Columns added since the first caches were written, with their SQL types.
_ADDED_COLUMNS = (("file", "TEXT"), ("reply_to", "TEXT"), ("mentions", "TEXT"),
                  ("edited", "INTEGER"), ("recalled", "INTEGER NOT NULL DEFAULT 0"),
                  ("reactions", "TEXT"), ("ref", "TEXT"), ("on_flag", "INTEGER"))

#: A message of its own (not an edit, recall or reaction of another).
_SHOWN = f"kind NOT IN {_CHANGE_KINDS_SQL}"

#: Unread: from someone else, after what the person saw of the conversation here, after what
#: any device of theirs reported read (``read_upto``), and not marked read by the server.
_UNREAD = (f"u.sender != ? AND u.read = 0 AND u.{_SHOWN} "
           "AND u.seq > COALESCE((SELECT s.seq FROM seen s WHERE s.peer = u.peer), 0) "
           "AND u.seq > COALESCE((SELECT CAST(value AS INTEGER) FROM meta "
           "WHERE key = 'read_upto'), 0)")


def default_cache_path(gateway_url: str, user: str) -> str:
    """Where the cache of ``user`` at ``gateway_url`` lives, under the XDG data directory."""
    parts = urlsplit(gateway_url)
    where = (parts.hostname or "local") + "_" + str(parts.port or "")
    digest = hashlib.sha256(gateway_url.encode()).hexdigest()[:8]
    return os.path.join(platformdirs.user_data_dir(APP_NAME), f"{where}-{digest}",
                        f"{user}.sqlite3")


class MessageCache:
    """The SQLite cache of one user's inbox (``path`` ``":memory:"`` keeps it in memory)."""

    def __init__(self, path: str, user: str) -> None:
        if path != ":memory:":
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self.path = path
        self.user = user
        self._db = sqlite3.connect(path)
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(messages)")}
        if columns:  # a cache written by an older client lacks the newer columns
            for name, sql_type in _ADDED_COLUMNS:
                if name not in columns:
                    self._db.execute(f"ALTER TABLE messages ADD COLUMN {name} {sql_type}")
        self._db.executescript(_SCHEMA)
        self._db.commit()

    @classmethod
    def open_for(cls, gateway_url: str, user: str) -> MessageCache:
        """The cache of ``user`` at ``gateway_url`` in its default place."""
        return cls(default_cache_path(gateway_url, user), user)

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    # ------------------------------------------------------------ messages

    def put(self, message: ChatMessage) -> bool:
        """Store one message; True if its seq was new.  A known seq only gains marks."""
        return self.put_many([message]) == 1

    def put_many(self, messages: Iterable[ChatMessage]) -> int:
        """Store several messages at once; returns how many seqs were new.

        A new edit, recall or reaction changes the message it names, if cached.  A known seq
        only gains marks, and the state a listing shows (a later edit, a recall, the
        reactions) when the listing has one.
        """
        new = 0
        with self._db:
            for m in messages:
                cur = self._db.execute(
                    f"INSERT OR IGNORE INTO messages ({_COLUMNS}, peer) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (m.seq, m.mid, m.id, m.sender, m.ts, m.to, m.group, m.body, m.kind,
                     int(m.delivered), int(m.read),
                     json.dumps(m.file) if m.file is not None else None, m.reply_to,
                     json.dumps(m.mentions) if m.mentions else None, m.edited, int(m.recalled),
                     json.dumps(m.reactions) if m.reactions else None, m.ref,
                     None if m.on is None else int(m.on), m.peer(self.user)))
                if cur.rowcount:
                    new += 1
                    if m.is_change:
                        self._apply(m)
                    else:
                        # Changes that came before the message itself (across a gap).
                        for change in self._changes_of(m.mid):
                            self._apply(change)
                    continue
                if m.delivered or m.read:
                    self._db.execute(
                        "UPDATE messages SET delivered = MAX(delivered, ?), read = MAX(read, ?) "
                        "WHERE seq = ?", (int(m.delivered), int(m.read), m.seq))
                if not m.is_change:
                    self._merge_state(m)
        return new

    def _changes_of(self, mid: str) -> list[ChatMessage]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE ref = ? AND kind IN {_CHANGE_KINDS_SQL} "
            "ORDER BY seq", (mid,)).fetchall()
        return [_row(r) for r in rows]

    def _original(self, mid: str) -> ChatMessage | None:
        row = self._db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE mid = ? AND {_SHOWN} LIMIT 1",
            (mid,)).fetchone()
        return _row(row) if row else None

    def _apply(self, change: ChatMessage) -> None:
        """Change the cached message ``change.ref`` by one edit, recall or reaction."""
        original = self._original(change.ref) if change.ref else None
        if original is None:
            return  # not cached yet: applied when it comes (or it comes already changed)
        if change.kind == "edit":
            if original.recalled or change.sender != original.sender \
                    or (original.edited or 0) > change.ts:
                return
            self._db.execute("UPDATE messages SET body = ?, edited = ? WHERE seq = ?",
                             (change.body, change.ts, original.seq))
        elif change.kind == "recall":
            if change.sender != original.sender:
                return
            self._db.execute("UPDATE messages SET recalled = 1, body = '', file = NULL "
                             "WHERE seq = ?", (original.seq,))
        else:
            reactions = react(original.reactions, change.body, change.sender,
                              change.on is not False)
            self._db.execute("UPDATE messages SET reactions = ? WHERE seq = ?",
                             (json.dumps(reactions) if reactions else None, original.seq))

    def _merge_state(self, listed: ChatMessage) -> None:
        """Take over what a listing of a known message shows of its current state."""
        if not (listed.edited or listed.recalled or listed.reactions):
            return
        known = self.get(listed.seq)
        if known is None or known.mid != listed.mid:
            return
        if listed.recalled and not known.recalled:
            self._db.execute("UPDATE messages SET recalled = 1, body = '', file = NULL "
                             "WHERE seq = ?", (known.seq,))
        elif listed.edited and not known.recalled and listed.edited > (known.edited or 0):
            self._db.execute("UPDATE messages SET body = ?, edited = ? WHERE seq = ?",
                             (listed.body, listed.edited, known.seq))
        if listed.reactions and listed.reactions != known.reactions:
            self._db.execute("UPDATE messages SET reactions = ? WHERE seq = ?",
                             (json.dumps(listed.reactions), known.seq))

    def message(self, mid: str) -> ChatMessage | None:
        """The message ``mid`` (not an edit, recall or reaction) in its current state."""
        return self._original(mid)

    def mark_delivered(self, mid: str) -> None:
        """Mark the message ``mid`` delivered."""
        with self._db:
            self._db.execute("UPDATE messages SET delivered = 1 WHERE mid = ?", (mid,))

    def mark_read(self, mid: str) -> None:
        """Mark the message ``mid`` read by its recipient (group messages are marked read only
        by a listing, once every member read them)."""
        with self._db:
            self._db.execute("UPDATE messages SET read = 1, delivered = 1 "
                             "WHERE mid = ? AND grp IS NULL", (mid,))

    def add_receipt(self, mid: str, by: str, read: bool) -> None:
        """Recipient ``by`` acknowledged (or read) the message ``mid``; kept so a group
        message's counts survive reopening the conversation and restarting."""
        with self._db:
            self._db.execute(
                "INSERT INTO receipts (mid, by_user, read) VALUES (?, ?, ?) "
                "ON CONFLICT(mid, by_user) DO UPDATE SET read = MAX(read, excluded.read)",
                (mid, by, int(read)))

    def receipts(self, mids: Iterable[str]) -> dict[str, tuple[set[str], set[str]]]:
        """For each of ``mids`` that has receipts: (delivered to, read by)."""
        found: dict[str, tuple[set[str], set[str]]] = {}
        wanted = list(dict.fromkeys(mids))
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            rows = self._db.execute(
                "SELECT mid, by_user, read FROM receipts WHERE mid IN "
                f"({','.join('?' * len(chunk))})", chunk).fetchall()
            for mid, by, read in rows:
                delivered, read_by = found.setdefault(mid, (set(), set()))
                delivered.add(by)
                if read:
                    read_by.add(by)
        return found

    def get(self, seq: int) -> ChatMessage | None:
        """The message at ``seq``, if cached."""
        row = self._db.execute(f"SELECT {_COLUMNS} FROM messages WHERE seq = ?", (seq,)).fetchone()
        return _row(row) if row else None

    def history(self, peer: str, before_seq: int | None = None,
                limit: int = 50) -> list[ChatMessage]:
        """Up to ``limit`` messages of one conversation below ``before_seq``, oldest first."""
        bound = before_seq if before_seq is not None else 2**62
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM messages WHERE peer = ? AND seq < ? AND {_SHOWN} "
            "ORDER BY seq DESC LIMIT ?",
            (peer, bound, limit)).fetchall()
        return [_row(r) for r in reversed(rows)]

    def first_missing(self, below: int | None = None) -> int | None:
        """The lowest seq (>= 1, below ``below``) this cache lacks, or None if it has them all."""
        row = self._db.execute(
            "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM messages WHERE seq = 1) "
            "UNION ALL SELECT MIN(m.seq + 1) FROM messages m WHERE NOT EXISTS "
            "(SELECT 1 FROM messages n WHERE n.seq = m.seq + 1)").fetchone()
        gap = row[0] if row else None
        if gap is None or (below is not None and gap >= below):
            return None
        return int(gap)

    # ------------------------------------------------------------ conversations

    def conversations(self) -> list[Conversation]:
        """Every conversation with its newest message and unread count, newest first."""
        rows = self._db.execute(
            "SELECT m.peer, m.seq, m.ts, m.body, "
            f" (SELECT COUNT(*) FROM messages u WHERE u.peer = m.peer AND {_UNREAD}) "
            "FROM messages m WHERE m.seq = (SELECT MAX(seq) FROM messages x "
            f"WHERE x.peer = m.peer AND x.{_SHOWN}) "
            "ORDER BY m.seq DESC", (self.user,)).fetchall()
        return [Conversation(peer=r[0], last_seq=r[1], last_ts=r[2], last_body=r[3], unread=r[4])
                for r in rows]

    def mark_seen(self, peer: str, seq: int | None = None) -> None:
        """The person has seen ``peer``'s conversation up to ``seq`` (default: all of it)."""
        if seq is None:
            row = self._db.execute("SELECT MAX(seq) FROM messages WHERE peer = ?", (peer,
                                                                                    )).fetchone()
            seq = row[0] or 0
        with self._db:
            self._db.execute(
                "INSERT INTO seen (peer, seq) VALUES (?, ?) "
                "ON CONFLICT(peer) DO UPDATE SET seq = MAX(seq, excluded.seq)", (peer, seq))

    @property
    def read_upto(self) -> int:
        """The seq up to which some device of this user reported everything read."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'read_upto'").fetchone()
        return int(row[0]) if row else 0

    def mark_read_upto(self, seq: int) -> bool:
        """Every device read up to ``seq``: those messages are no longer unread.  True if new."""
        if seq <= self.read_upto:
            return False
        with self._db:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('read_upto', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(seq),))
        return True

    # ------------------------------------------------------------ bookkeeping

    @property
    def last_seq(self) -> int:
        """The last contiguous seq the client has handled (where the next sync starts)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return int(row[0]) if row else 0

    @last_seq.setter
    def last_seq(self, seq: int) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES ('last_seq', ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (str(seq),))


def react(reactions: dict[str, list[str]] | None, emoji: str, user: str,
          on: bool) -> dict[str, list[str]] | None:
    """``reactions`` with ``user``'s ``emoji`` added (``on``) or removed; None if none left."""
    found = {k: list(v) for k, v in (reactions or {}).items()}
    users = found.setdefault(emoji, [])
    if on and user not in users:
        users.append(user)
    elif not on and user in users:
        users.remove(user)
    return {k: v for k, v in found.items() if v} or None


def _row(r: tuple[Any, ...]) -> ChatMessage:
    return ChatMessage(seq=r[0], mid=r[1], id=r[2], sender=r[3], ts=r[4], to=r[5], group=r[6],
                       body=r[7], kind=r[8], delivered=bool(r[9]), read=bool(r[10]),
                       file=json.loads(r[11]) if r[11] else None, reply_to=r[12],
                       mentions=json.loads(r[13]) if r[13] else None, edited=r[14],
                       recalled=bool(r[15]), reactions=json.loads(r[16]) if r[16] else None,
                       ref=r[17], on=None if r[18] is None else bool(r[18]))
