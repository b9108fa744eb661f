"""Unread and mention counts per conversation, as the server keeps them: :class:`ConversationBook`.

The server computes every conversation's read pointer, unread count and mention count
(``GET /v1/conversations``), so every device of a user shows the same numbers.  The book
fetches them, then keeps them live until the next fetch:

- a message from someone else above the read pointer adds one unread (and one mention if it
  names this user in ``mentions``); an edit, recall or reaction adds nothing;
- a read pointer that moves (this device's :meth:`ConversationBook.mark_read`, or another
  device's ``read`` echo) clears what it covers at once.  The book does not know which of the
  fetched unread entries lie below a pointer that stops part way, so it counts them from the
  local cache and fetches again shortly to be exact;
- after reconnecting or a sync the client fetches again (:meth:`ConversationBook.refresh`).

Events that arrive while a fetch is under way are applied to the fetched state again: a
message above the conversation's newest fetched entry (``last``) is counted, one at or below
it was already counted by the server, so none is counted twice.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from dim.client.cache import ChatMessage, MessageCache
from dim.protocol import frames as F

log = Logger()

#: The entry kinds that count as unread (edits, recalls and reactions do not).
UNREAD_KINDS = frozenset(F.MESSAGE_KINDS)
#: How many conversations one fetch asks for (the contract's maximum).
FETCH_LIMIT = 200
#: How long a wanted fetch waits for others to join it, in seconds.
REFRESH_DELAY = 0.25
#: How many cached entries a read pointer that stops part way counts through.
ESTIMATE_LIMIT = 1000


@dataclass(frozen=True)
class UnreadChanged:
    """The unread or mention counts of some conversations changed: redraw them."""


@dataclass(frozen=True)
class ConversationCounts:
    """One conversation as the book knows it: its newest entry, read pointer and counts."""

    peer: str
    last_seq: int
    last_ts: int
    last_body: str
    read_seq: int
    unread: int
    mentions: int


@dataclass
class _State:
    """A conversation: what the last fetch said (``base_*``) plus what came since (``live``)."""

    peer: str
    read_seq: int = 0
    #: The newest entry when fetched: the server counted everything up to it.
    base_seq: int = 0
    base_unread: int = 0
    base_mentions: int = 0
    last_seq: int = 0
    last_ts: int = 0
    last_body: str = ""
    #: Unread entries counted since the fetch, by seq: whether each mentions this user.
    live: dict[int, bool] = field(default_factory=dict)

    def counts(self) -> ConversationCounts:
        return ConversationCounts(
            peer=self.peer, last_seq=self.last_seq, last_ts=self.last_ts,
            last_body=self.last_body, read_seq=self.read_seq,
            unread=self.base_unread + len(self.live),
            mentions=self.base_mentions + sum(self.live.values()))


def peer_of(item: dict[str, Any]) -> str | None:
    """The conversation key of one ``GET /v1/conversations`` item: the user, or ``#`` + id."""
    if isinstance(item.get("group"), str):
        return "#" + item["group"]
    return item["with"] if isinstance(item.get("with"), str) else None


def counts_unread(entry: ChatMessage, me: str) -> bool:
    """Whether ``entry`` counts as unread while above its conversation's read pointer."""
    return entry.sender != me and entry.kind in UNREAD_KINDS


class ConversationBook:
    """Every conversation's unread and mention counts, from the server, kept live.

    ``gateway`` answers ``conversations(limit)``; ``cache`` (optional) is read to count what
    a read pointer stopping part way clears; ``on_change`` is called whenever counts change.
    """

    def __init__(self, gateway: Any, me: str, clock: IReactorTime, *,
                 cache: MessageCache | None = None,
                 on_change: Callable[[], None] | None = None) -> None:
        self.gateway = gateway
        self.me = me
        self.clock = clock
        self.cache = cache
        self.on_change = on_change
        self._states: dict[str, _State] = {}
        #: Whether a fetch has succeeded (else the counts are only what came live).
        self.loaded = False
        #: The highest seq this device marked read, per conversation: applied again after a
        #: fetch the server answered before it took the mark.
        self._marked: dict[str, int] = {}
        self._fetching: Deferred[Any] | None = None
        self._again = False
        self._waiters: list[Deferred[bool]] = []
        #: Events seen while a fetch is under way, applied again to its answer.
        self._during: list[tuple[str, Any, int]] = []
        self._soon: IDelayedCall | None = None
        self._stopped = False

    # ------------------------------------------------------------ reading

    def conversations(self) -> list[ConversationCounts]:
        """Every conversation known, most recent activity first."""
        return sorted((s.counts() for s in self._states.values()),
                      key=lambda c: (-c.last_seq, c.peer))

    def counts(self, peer: str) -> ConversationCounts | None:
        """One conversation, if known."""
        state = self._states.get(peer)
        return state.counts() if state is not None else None

    def read_seq(self, peer: str) -> int:
        """How far ``peer``'s conversation is read (0 if unknown)."""
        state = self._states.get(peer)
        return max(state.read_seq if state else 0, self._marked.get(peer, 0))

    # ------------------------------------------------------------ fetching

    def refresh(self) -> Deferred[bool]:
        """Fetch every conversation's counts; fires True once the book holds the server's
        state (False if the fetch failed: the live counts stay).  A call while a fetch is
        under way waits for one more fetch after it."""
        d: Deferred[bool] = Deferred()
        self._waiters.append(d)
        if self._fetching is not None:
            self._again = True
        else:
            self._fetch()
        return d

    def refresh_soon(self, delay: float = REFRESH_DELAY) -> None:
        """Fetch after ``delay`` seconds, once for every call made until then."""
        if self._soon is None or not self._soon.active():
            self._soon = self.clock.callLater(delay, self._refresh_now)

    def _refresh_now(self) -> None:
        self._soon = None
        self.refresh()

    def stop(self) -> None:
        """Abandon the fetch in flight and fetch nothing more on a timer (the client is
        stopping); what is known stays."""
        self._stopped = True
        if self._soon is not None and self._soon.active():
            self._soon.cancel()
        self._soon = None
        if self._fetching is not None:
            self._fetching.cancel()

    def _fetch(self) -> None:
        self._stopped = False
        self._again = False
        self._during = []
        d = self.gateway.conversations(limit=FETCH_LIMIT)
        self._fetching = d
        d.addCallbacks(self._fetched, self._failed)

    def _fetched(self, answer: dict[str, Any]) -> None:
        states: dict[str, _State] = {}
        for item in answer.get("conversations", []):
            peer = peer_of(item)
            if peer is None:
                continue
            last = item.get("last") or {}
            seq = int(last.get("seq", 0))
            states[peer] = _State(peer=peer, read_seq=int(item.get("read_seq", 0)), base_seq=seq,
                                  base_unread=int(item.get("unread", 0)),
                                  base_mentions=int(item.get("mentions", 0)), last_seq=seq,
                                  last_ts=int(last.get("ts", 0)),
                                  last_body=str(last.get("body") or ""))
        # A conversation beyond the listed ones keeps what was known of it.
        for peer, state in self._states.items():
            states.setdefault(peer, state)
        self._states = states
        self.loaded = True
        self._settle(True)

    def _failed(self, f: Failure) -> None:
        if not self._stopped:
            log.info("could not fetch the conversations: {f}", f=f.getErrorMessage())
        self._again = self._again and not self._stopped
        self._settle(False)

    def _settle(self, fetched: bool) -> None:
        during, self._during = self._during, []
        self._fetching = None
        if fetched:
            for what, value, seq in during:
                if what == "entry":
                    self._count(value)
                else:
                    self._read(value, seq, estimate_only=True)
            for peer, seq in self._marked.items():
                self._read(peer, seq, estimate_only=True)
        if self._again:
            self._fetch()
        else:
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(fetched)
        self._changed()

    # ------------------------------------------------------------ live

    def message(self, entry: ChatMessage) -> None:
        """An inbox entry arrived (from anyone, this user's own included)."""
        if self._fetching is not None:
            self._during.append(("entry", entry, entry.seq))
        if self._count(entry):
            self._changed()

    def _count(self, entry: ChatMessage) -> bool:
        peer = entry.peer(self.me)
        state = self._states.setdefault(peer, _State(peer=peer))
        changed = False
        if entry.seq > state.last_seq:
            state.last_seq, state.last_ts, state.last_body = entry.seq, entry.ts, entry.body
            changed = True
        if (counts_unread(entry, self.me) and entry.seq > state.base_seq
                and entry.seq > self.read_seq(peer) and entry.seq not in state.live):
            state.live[entry.seq] = self.me in (entry.mentions or ())
            changed = True
        return changed

    def read(self, peer: str, seq: int) -> bool:
        """Another device of this user read ``peer``'s conversation up to ``seq``; True if
        that cleared anything here."""
        if self._fetching is not None:
            self._during.append(("read", peer, seq))
        changed = self._read(peer, seq)
        if changed:
            self._changed()
        return changed

    def mark_read(self, peer: str, seq: int) -> bool:
        """This device shows ``peer``'s conversation up to ``seq``; True if the read pointer
        moves (so the node should be told)."""
        if seq <= self.read_seq(peer):
            return False
        self._marked[peer] = seq
        self.read(peer, seq)
        return True

    def _read(self, peer: str, seq: int, estimate_only: bool = False) -> bool:
        state = self._states.setdefault(peer, _State(peer=peer))
        if seq <= state.read_seq:
            return False
        before = state.counts()
        old, state.read_seq = state.read_seq, seq
        state.live = {s: m for s, m in state.live.items() if s > seq}
        if seq >= state.base_seq:
            state.base_unread = state.base_mentions = 0
        elif state.base_unread:
            # Which fetched unread entries lie at or below seq is known only from the cache;
            # the server knows exactly, so ask it again (unless this is that answer).
            unread, mentioned = self._cached_between(peer, old, seq)
            state.base_unread = max(0, state.base_unread - unread)
            state.base_mentions = max(0, state.base_mentions - mentioned)
            if not estimate_only:
                self.refresh_soon()
        return state.counts() != before

    def _cached_between(self, peer: str, after: int, upto: int) -> tuple[int, int]:
        """How many cached unread entries, and mentions, ``peer`` has in (after, upto]."""
        if self.cache is None:
            return 0, 0
        entries = [m for m in self.cache.history(peer, upto + 1, ESTIMATE_LIMIT)
                   if m.seq > after and counts_unread(m, self.me)]
        return len(entries), sum(1 for m in entries if self.me in (m.mentions or ()))

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()
