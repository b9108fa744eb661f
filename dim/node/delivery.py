"""What a node does with its clients' frames: sessions, sending, delivery, acks, sync.

:class:`NodeCore` is the handler every :class:`~dim.node.connection.ClientConnection` of a
node hands its frames to.  It authenticates ``hello``, stores ``send`` (to a user or a group,
text or a file) through the :class:`~dim.store.interface.IStore`, pushes ``msg`` to every
session of every recipient and to the sender's other sessions (local ones directly, remote
ones through the :class:`~dim.cluster.interface.IForwarder`, one envelope per node), sends
each ``msg`` once more if it is not acknowledged within ``retransmit_after`` seconds, turns
``ack`` into ``delivered`` and ``read`` into ``read`` for the sender, answers ``sync`` from
the inbox, passes ``typing`` on (throttled, never stored), and tells a user's mutual
contacts when its first session comes and its last one goes (``presence``).  It is also the
:class:`~dim.cluster.interface.IPusher` of its process (:meth:`NodeCore.push`).

Envelopes between nodes are plain dicts::

    {"t": "frames", "to": {user: [frame_dict, ...]}, "skip": session_id_or_None}

and mean: write these frames to every session of each user on this node, except ``skip``.
"""
from __future__ import annotations

import secrets
from collections import deque
from typing import Any, Callable, Iterable, Union

import msgspec
from twisted.internet.defer import (Deferred, DeferredList, FirstError, gatherResults,
                                    maybeDeferred, succeed)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from dim import errors
from dim.cluster.interface import IForwarder, IPusher, ISessionRegistry, SessionRef
from dim.node import metrics
from dim.node.connection import ClientConnection
from dim.node.throttle import Throttle, Verdict
from dim.protocol import codec
from dim.protocol import frames as F
from dim.store.interface import (Contact, FileRecord, Group, InboxEntry, IStore, Receipt,
                                 SendResult, StoredMessage)

_log = Logger()

#: Seconds between ``goaway`` and closing the connections on shutdown.
SHUTDOWN_GRACE = 1.0
#: Seconds after the grace before connections that did not close are aborted.
DRAIN_TIMEOUT = 5.0
#: A tolerance for float arithmetic when comparing due times.
_EPSILON = 1e-6

# An item to push: the encoded frame, its type, and its seq when it is a msg to track.
_Push = tuple[bytes, str, "int | None"]
# What may be delivered: a typed frame, or a plain JSON object with a "type" (from push()).
Outgoing = Union[F._Frame, dict[str, Any]]
# A send waiting for its checks, and the Deferred its connection waits on.
_QueuedSend = tuple[F.Send, "Deferred[None]"]


def message_frame(message: StoredMessage, seq: int, delivered: bool = False,
                  read: bool = False) -> F.Msg:
    """The ``msg`` frame of a stored message at ``seq`` of some inbox."""
    to = message.to
    if to is None and message.group is None:
        to = message.sender  # a message to oneself is stored with no other recipient
    file = msgspec.convert(message.file, F.FileRef) if message.file is not None else None
    return F.Msg(mid=message.mid, id=message.id, from_=message.sender, ts=message.ts, seq=seq,
                 to=to, group=message.group, body=message.body, kind=message.kind, file=file,
                 delivered=delivered, read=read)


class Session:
    """One authenticated connection of a user: what it was sent and has yet to acknowledge.

    Pushed ``msg`` frames wait in a queue in the order they were sent; one timer per session
    fires when the oldest is due and writes every due frame once more, then forgets it.  An
    ack empties the queue but leaves the timer, which then fires for nothing.
    Until ``welcome`` is sent, pushes are held back and written after it.
    """

    __slots__ = ("conn", "user", "id", "ready", "_held", "_pending", "_timer", "_acked",
                 "_clock", "_after", "typing", "sends", "checking", "draining", "read_seq")

    def __init__(self, conn: ClientConnection, user: str, session_id: str,
                 clock: IReactorTime, retransmit_after: float) -> None:
        self.conn = conn
        self.user = user
        self.id = session_id
        self.ready = False
        #: Pushes held back until ``welcome`` (None once started, or while none are held).
        self._held: list[_Push] | None = None
        #: Tracked ``msg`` frames (due time, seq, data), oldest first; made on the first one
        #: (an empty deque costs about 760 bytes, and idle sessions never track any).
        self._pending: deque[tuple[float, int, bytes]] | None = None
        self._timer: IDelayedCall | None = None
        self._acked = 0
        self._clock = clock
        self._after = retransmit_after
        #: The limit on this session's ``typing`` frames (made on the first one).
        self.typing: Throttle | None = None
        #: Sends that wait for a check (group, file) or behind one, in the order they came
        #: (made on the first such send: an empty deque costs 600 bytes a session).
        self.sends: deque[_QueuedSend] | None = None
        #: Whether the head of ``sends`` is being checked.
        self.checking = False
        #: Whether ``sends`` is being worked through (guards against recursion).
        self.draining = False
        #: The highest seq this session said it has read.
        self.read_seq = 0

    def start(self) -> None:
        """``welcome`` was sent: write what was held back."""
        self.ready = True
        held, self._held = self._held, None
        if held:
            for item in held:
                self.push(*item)

    def push(self, data: bytes, frame_type: str, seq: int | None) -> None:
        """Write one encoded frame; track it for retransmission if it is a ``msg``."""
        if not self.ready:
            if self._held is None:
                self._held = []
            self._held.append((data, frame_type, seq))
            return
        conn = self.conn
        if not conn.is_open:
            return
        conn.write_encoded(data, frame_type)
        if seq is not None and seq > self._acked:
            pending = self._pending
            if pending is None:
                pending = self._pending = deque()
            pending.append((self._clock.seconds() + self._after, seq, data))
            if self._timer is None:
                self._timer = self._clock.callLater(self._after, self._due)

    def acknowledge(self, seq: int) -> None:
        """The client has every seq <= ``seq``: never send those again."""
        if seq <= self._acked:
            return
        self._acked = seq
        pending = self._pending
        if not pending:
            return
        if pending[-1][1] <= seq and all(s <= seq for _, s, _ in pending):
            self._pending = None  # made again by the next tracked msg
        else:
            self._pending = deque(p for p in pending if p[1] > seq)
        # The timer is left to fire and find nothing due: at a steady rate of messages this
        # keeps one timer per session alive instead of making and cancelling one per message.

    @property
    def unacknowledged(self) -> list[int]:
        """The seqs that will be sent once more if no ack comes (for tests)."""
        return [seq for _, seq, _ in self._pending or ()]

    def close(self) -> None:
        """The connection is gone: forget everything and cancel the timer."""
        self.ready = False
        self._held = None
        if self._pending:
            self._pending.clear()
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _due(self) -> None:
        self._timer = None
        now = self._clock.seconds()
        pending = self._pending
        if pending is None:
            return
        conn = self.conn
        while pending and pending[0][0] <= now + _EPSILON:
            _, seq, data = pending.popleft()
            if conn.is_open:
                conn.write_encoded(data, "msg")
                metrics.count("retransmits")
        if pending and conn.is_open:
            self._timer = self._clock.callLater(max(pending[0][0] - now, 0.0), self._due)
        elif pending:
            pending.clear()


@implementer(IPusher)
class NodeCore:
    """The node's handling of client frames, shared by all its connections.

    ``typing_limit`` makes each session's :class:`~dim.node.throttle.Throttle` for
    ``typing`` frames.
    """

    def __init__(self, node_id: str, store: IStore, sessions: ISessionRegistry,
                 authenticate: Callable[[str], Deferred[str]], clock: IReactorTime,
                 heartbeat: int = 30, max_frame: int = F.DEFAULT_MAX_FRAME,
                 forwarder: IForwarder | None = None, retransmit_after: float = 4.0,
                 shutdown_grace: float = SHUTDOWN_GRACE,
                 drain_timeout: float = DRAIN_TIMEOUT,
                 typing_limit: Callable[[], Throttle] = Throttle) -> None:
        self.node_id = node_id
        self.store = store
        self.sessions = sessions
        self.authenticate = authenticate
        self.clock = clock
        self.heartbeat = heartbeat
        #: How long a ``pong`` may wait for the store's ``last_seq`` (see :meth:`on_ping`).
        self.pong_wait = min(1.0, heartbeat / 2)
        self.max_frame = max_frame
        self.forwarder = forwarder
        self.retransmit_after = retransmit_after
        self.shutdown_grace = shutdown_grace
        self.drain_timeout = drain_timeout
        self.typing_limit = typing_limit
        # A registry in this process answers at once: ask it without a Deferred.
        self._locate_now: Callable[[Iterable[str]], dict[str, list[SessionRef]]] | None = \
            getattr(sessions, "locate_now", None)
        # Deliveries waiting for the one registry look-up of this reactor turn.
        self._to_locate: list[tuple[dict[str, list[Outgoing]], str | None,
                                    Deferred[None]]] = []
        self._locate_call: IDelayedCall | None = None
        #: Registry look-ups made for deliveries (for tests and metrics).
        self.locates = 0
        #: Every open connection, authenticated or not.
        self.connections: set[ClientConnection] = set()
        #: user -> {session id: Session} for the sessions on this node.
        self.local: dict[str, dict[str, Session]] = {}
        self._closing: str | None = None
        self._drained: Deferred[None] | None = None
        self._pending_removals: set[Deferred[Any]] = set()
        self._close_call: IDelayedCall | None = None
        self._abort_call: IDelayedCall | None = None
        if forwarder is not None:
            forwarder.set_receiver(self.receive_envelope)

    # ------------------------------------------------------------------ connections

    def connection_made(self, conn: ClientConnection) -> None:
        """Count a new connection; turn it away if the node is shutting down."""
        if self._closing is not None:
            conn.sendFrame(F.Goaway(reason=self._closing))
            conn.close()
            return
        self.connections.add(conn)
        metrics.count("connections_opened")

    def connection_lost(self, conn: ClientConnection) -> None:
        """Forget a connection, its timers and its session."""
        if conn in self.connections:
            self.connections.discard(conn)
            metrics.count("connections_closed")
        session: Session | None = conn.session
        if session is not None:
            conn.session = None
            self._drop_session(session)
        if self._drained is not None and not self.connections:
            self._finish_drain()

    def _drop_session(self, session: Session) -> None:
        session.close()
        mine = self.local.get(session.user)
        if mine is not None and mine.get(session.id) is session:
            del mine[session.id]
            if not mine:
                del self.local[session.user]
        d = maybeDeferred(self.sessions.remove, session.user, session.id)
        d.addCallback(self._removed, session.user)
        d.addErrback(lambda f: _log.failure("unregistering session {s} failed", f, s=session.id))
        if not d.called or d.paused:
            # Still waiting, on the registry or on telling the contacts: a drain waits too.
            self._pending_removals.add(d)
            d.addBoth(self._removal_done, d)

    def _removed(self, last: bool, user: str) -> Deferred[None] | None:
        """The registry forgot a session: if it was the user's last, tell its contacts.

        A node shutting down with no other node to forward to tells nobody: every session
        it could reach is closing too (and the store may be closing beside it).
        """
        if last and (self._closing is None or self.forwarder is not None):
            return self.announce(user, False)
        return None

    def _removal_done(self, result: object, d: Deferred[Any]) -> object:
        self._pending_removals.discard(d)
        return result

    def connection_count(self) -> int:
        """How many connections are open."""
        return len(self.connections)

    def refresh_sessions(self) -> Deferred[Any]:
        """Renew this node's sessions in the registry (called every heartbeat)."""
        d = maybeDeferred(self.sessions.refresh, self.node_id)
        d.addErrback(lambda f: _log.failure("renewing sessions failed", f))
        return d

    # ------------------------------------------------------------------ hello

    def on_hello(self, conn: ClientConnection, frame: F.Hello) -> Deferred[None]:
        """Authenticate the token, register the session, then send ``welcome``."""
        if self._closing is not None:
            conn.close()
            return succeed(None)
        d = maybeDeferred(self.authenticate, frame.token)
        d.addCallback(self._authenticated, conn)
        return d

    def _authenticated(self, user: str, conn: ClientConnection) -> Deferred[None] | None:
        if not conn.is_open:
            return None
        session = Session(conn, user, secrets.token_hex(8), self.clock, self.retransmit_after)
        conn.session = session
        # Registered locally first, so nothing stored from here on can miss this session;
        # what arrives before welcome is held back by the session.
        self.local.setdefault(user, {})[session.id] = session
        d = maybeDeferred(self.sessions.add, user, session.id, self.node_id)
        d.addCallback(self._added, user)
        d.addCallback(self._welcome, conn, session)
        d.addErrback(self._hello_failed, conn, session)
        return d

    def _added(self, first: bool, user: str) -> Deferred[int]:
        """The registry holds the session: tell the contacts if it is the user's first one
        (without waiting for that), then look up ``last_seq`` for ``welcome``."""
        if first:
            self.announce(user, True)
        return self.store.last_seq(user)

    def _welcome(self, last_seq: int, conn: ClientConnection, session: Session) -> None:
        if conn.session is not session or not conn.is_open:
            return
        conn.welcome(F.Welcome(user=session.user, node=self.node_id, heartbeat=self.heartbeat,
                               max_frame=self.max_frame, last_seq=last_seq))
        session.start()

    def _hello_failed(self, failure: Failure, conn: ClientConnection,
                      session: Session) -> Failure:
        if conn.session is session:
            conn.session = None
            self._drop_session(session)
        return failure

    # ------------------------------------------------------------------ send

    def on_send(self, conn: ClientConnection, frame: F.Send) -> Deferred[None]:
        """Store a message, answer ``sent``, push ``msg`` to everyone else who should get it.

        The store is called in the order the session sent its messages: a plain text send
        goes to the store at once; a send that needs a look-up first (a group's members, a
        file's record) waits in the session's queue, and so does every send behind it.
        """
        session: Session = conn.session
        if frame.group is None and frame.file is None and not session.sends:
            to = frame.to
            return self._store(session, frame, [] if to == session.user else [to], None, None)
        done: Deferred[None] = Deferred()
        if session.sends is None:
            session.sends = deque()
        session.sends.append((frame, done))
        self._drain_sends(session)
        return done

    def _drain_sends(self, session: Session) -> None:
        """Work through the session's queued sends, in order, until one must wait."""
        if session.draining:
            return
        session.draining = True
        try:
            sends: deque[_QueuedSend] = session.sends  # type: ignore[assignment]
            while sends and not session.checking:
                frame, done = sends[0]
                if frame.group is None and frame.file is None:
                    sends.popleft()
                    to = frame.to
                    self._store(session, frame, [] if to == session.user else [to], None,
                                None).chainDeferred(done)
                    continue
                session.checking = True
                checked = self._check_send(session.user, frame)
                checked.addBoth(self._send_checked, session, frame, done)
        finally:
            session.draining = False

    def _send_checked(self, checked: tuple[list[str], str | None, dict[str, Any] | None]
                      | Failure, session: Session, frame: F.Send, done: Deferred[None]) -> None:
        session.checking = False
        session.sends.popleft()  # type: ignore[union-attr]
        if isinstance(checked, Failure):
            done.errback(checked)
        else:
            self._store(session, frame, *checked).chainDeferred(done)
        self._drain_sends(session)

    def _check_send(self, user: str, frame: F.Send) -> Deferred[
            tuple[list[str], str | None, dict[str, Any] | None]]:
        """The recipients, group and file dict of a send to a group or with a file, once
        the group and file are looked up and found right for this sender."""
        lookups: list[Deferred[Any]] = []
        if frame.group is not None:
            lookups.append(maybeDeferred(self.store.get_group, frame.group))
        if frame.file is not None:
            lookups.append(maybeDeferred(self.store.get_file, frame.file.id))
        d = _gather(lookups)

        def check(found: list[Any]) -> tuple[list[str], str | None, dict[str, Any] | None]:
            if frame.group is not None:
                group: Group | None = found.pop(0)
                recipients = _recipients_in(group, user, frame.group, frame.id)
            else:
                recipients = [] if frame.to == user else [frame.to]  # type: ignore[list-item]
            file = None
            if frame.file is not None:
                file = _checked_file(found.pop(0), frame.file, user, frame.id)
            return recipients, frame.group, file

        d.addCallback(check)
        return d

    def _store(self, session: Session, frame: F.Send, recipients: list[str],
               group: str | None, file: dict[str, Any] | None) -> Deferred[None]:
        started = self.clock.seconds()
        d = maybeDeferred(self.store.store_message, session.user, frame.id, recipients, group,
                          frame.body or "", frame.kind, file, int(started * 1000))
        d.addCallback(self._stored, session, started)
        return d

    def _stored(self, result: SendResult, session: Session, started: float) -> None:
        message = result.message
        sender = session.user
        conn = session.conn
        conn.sendFrame(F.Sent(id=message.id, mid=message.mid, seq=result.seqs[sender],
                              ts=message.ts))
        metrics.SEND_LATENCY.observe(self.clock.seconds() - started)
        if result.duplicate:
            return
        # One frame is built; each inbox's copy differs only in its seq.
        frame = message_frame(message, result.seqs[sender])
        replace = msgspec.structs.replace
        targets: dict[str, list[Outgoing]] = {
            user: [frame if user == sender else replace(frame, seq=seq)]
            for user, seq in result.seqs.items()}
        self.deliver(targets, skip=session.id)

    # ------------------------------------------------------------------ ack

    def on_ack(self, conn: ClientConnection, frame: F.Ack) -> Deferred[None]:
        """Stop retransmitting up to ``seq``, record the ack, tell senders ``delivered``."""
        session: Session = conn.session
        session.acknowledge(frame.seq)
        d = self.store.ack(session.user, frame.seq)
        d.addCallback(self._acked, session.user)
        return d

    def _acked(self, receipts: list[Receipt], user: str) -> None:
        if not receipts:
            return
        targets: dict[str, list[Outgoing]] = {}
        for receipt in receipts:
            targets.setdefault(receipt.sender, []).append(
                F.Delivered(id=receipt.id, mid=receipt.mid, by=user))
        self.deliver(targets)

    # ------------------------------------------------------------------ read

    def on_read(self, conn: ClientConnection, frame: F.Read) -> Deferred[None] | None:
        """Record that the user has read up to ``seq`` (and so received it): ``delivered``
        and ``read`` to the senders, ``read {seq}`` to the user's other sessions.  A seq
        this session already said it read changes nothing and tells nobody."""
        session: Session = conn.session
        session.acknowledge(frame.seq)
        if frame.seq <= session.read_seq:
            return None
        session.read_seq = frame.seq
        user = session.user
        # Reading implies receiving, and a client may read without acking first: the ack
        # is recorded here so its senders still hear ``delivered`` before ``read``.
        d = _gather([self.store.ack(user, frame.seq), self.store.read(user, frame.seq)])
        d.addCallback(self._read, user, frame.seq, session.id)
        return d

    def _read(self, receipts: list[list[Receipt]], user: str, seq: int, skip: str) -> None:
        delivered, read = receipts
        targets: dict[str, list[Outgoing]] = {}
        for receipt in delivered:
            targets.setdefault(receipt.sender, []).append(
                F.Delivered(id=receipt.id, mid=receipt.mid, by=user))
        for receipt in read:
            targets.setdefault(receipt.sender, []).append(
                F.ReadNotice(id=receipt.id, mid=receipt.mid, by=user))
        targets.setdefault(user, []).append(F.ReadNotice(seq=seq, by=user))
        self.deliver(targets, skip=skip)

    # ------------------------------------------------------------------ typing

    def on_typing(self, conn: ClientConnection, frame: F.Typing) -> Deferred[None] | None:
        """Pass ``typing`` on to the person or the group's other members; never stored.

        Frames over the session's limit are dropped; a flood that goes on gets one
        ``rate_limited``.
        """
        session: Session = conn.session
        limit = session.typing
        if limit is None:
            limit = session.typing = self.typing_limit()
        verdict = limit.check(self.clock.seconds())
        if verdict is not Verdict.ADMIT:
            metrics.count("typing_dropped")
            if verdict is Verdict.FLOOD:
                raise errors.RateLimited("typing is sent too often; extra frames are dropped")
            return None
        user = session.user
        if frame.to is not None:
            to = frame.to
            d = maybeDeferred(self.store.user_exists, to)

            def to_user(exists: bool) -> None:
                if not exists:
                    raise errors.NotFound(f"no such user: {to}")
                self.deliver({to: [F.TypingNotice(from_=user, to=to)]}, skip=session.id)

            d.addCallback(to_user)
            return d
        group_id: str = frame.group  # type: ignore[assignment]
        d = maybeDeferred(self.store.get_group, group_id)

        def to_group(group: Group | None) -> None:
            members = _recipients_in(group, user, group_id, None)
            notice = F.TypingNotice(from_=user, group=group_id)
            self.deliver({member: [notice] for member in members})

        d.addCallback(to_group)
        return d

    # ------------------------------------------------------------------ presence

    def announce(self, user: str, online: bool) -> Deferred[None]:
        """Push ``presence`` of ``user`` to every session of each of its mutual contacts."""
        d = maybeDeferred(self.store.contacts, user)

        def push(contacts: list[Contact]) -> Deferred[None] | None:
            presence = F.Presence(user=user, online=online)
            targets: dict[str, list[Outgoing]] = {
                c.user: [presence] for c in contacts if c.pending is None}
            return self.deliver(targets) if targets else None

        d.addCallback(push)
        d.addErrback(lambda f: _log.failure("telling {user}'s contacts of presence failed", f,
                                            user=user))
        return d

    # ------------------------------------------------------------------ sync

    def on_ping(self, conn: ClientConnection, frame: F.Ping) -> None:
        """Answer ``pong`` with the user's inbox ``last_seq``: a client that missed a ``msg``
        (its notification lost between nodes) sees the gap and syncs.  A heartbeat must not
        wait on the store, so if it does not answer within ``pong_wait`` the pong goes
        without ``last_seq``."""
        timer = self.clock.callLater(self.pong_wait, conn.pong)

        def answer(seq: object) -> None:
            if timer.active():
                timer.cancel()
                conn.pong(seq if isinstance(seq, int) else None)

        d = maybeDeferred(self.store.last_seq, conn.session.user)
        d.addBoth(answer)

    def on_sync(self, conn: ClientConnection, frame: F.Sync) -> Deferred[None]:
        """Answer with the inbox entries after ``after``, then ``synced``."""
        session: Session = conn.session
        d = self.store.fetch(session.user, frame.after, frame.limit)
        d.addCallback(self._synced, conn, frame)
        return d

    def _synced(self, page: tuple[list[InboxEntry], int], conn: ClientConnection,
                frame: F.Sync) -> None:
        entries, last_seq = page
        out: list[F._Frame] = [message_frame(e.message, e.seq, e.delivered, e.read)
                               for e in entries]
        more = bool(entries) and entries[-1].seq < last_seq
        out.append(F.Synced(after=frame.after, last_seq=last_seq, more=more))
        conn.send_frames(out)

    # ------------------------------------------------------------------ delivery

    def deliver(self, targets: dict[str, list[Outgoing]],
                skip: str | None = None) -> Deferred[None]:
        """Write frames to every session of each user, here or on other nodes, but ``skip``.

        Local sessions get them at once; the registry is asked once for all the users, and
        each other node holding some of their sessions gets one envelope.  Fires once every
        envelope is handed over (failures are logged, not raised).
        """
        local = self.local
        for user, frames in targets.items():
            mine = local.get(user)
            if mine and (len(mine) > 1 or skip not in mine):
                self._push_local(mine, [_encoded(f) for f in frames], skip)
        if self.forwarder is None:
            return succeed(None)
        if self._locate_now is not None:
            return self._forward(self._locate_now(targets), targets, skip)
        # A shared registry costs a round trip per look-up: every delivery of this reactor
        # turn waits for one look-up of all their users, made on the next turn.
        done: Deferred[None] = Deferred()
        self._to_locate.append((targets, skip, done))
        if self._locate_call is None:
            self._locate_call = self.clock.callLater(0, self._locate_batch)
        return done

    def _locate_batch(self) -> None:
        """Look up the sessions of every user of the waiting deliveries at once, then forward
        each delivery in the order it was made."""
        self._locate_call = None
        batch, self._to_locate = self._to_locate, []
        if not batch:
            return
        users: dict[str, None] = {}
        for targets, _, _ in batch:
            users.update(dict.fromkeys(targets))
        self.locates += 1
        metrics.count("session_lookups")
        d = maybeDeferred(self.sessions.locate, list(users))

        def forward(located: dict[str, list[SessionRef]]) -> None:
            for targets, skip, done in batch:
                self._forward(located, targets, skip).chainDeferred(done)

        def failed(failure: Failure) -> None:
            _log.failure("locating sessions to forward to failed", failure)
            for _, _, done in batch:
                done.callback(None)

        d.addCallbacks(forward, failed)

    def push(self, targets: dict[str, list[dict[str, Any]]]) -> Deferred[None]:
        """Send each user's frames (plain JSON objects with a string ``type``) to all of its
        online sessions, here and on other nodes (:class:`IPusher` for one process, and for
        whatever runs beside a node)."""
        clean: dict[str, list[Outgoing]] = {}
        for user, frames in targets.items():
            good = [f for f in frames if isinstance(f, dict) and isinstance(f.get("type"), str)]
            if len(good) != len(frames):
                _log.warn("push: dropping frames without a type for {user}", user=user)
            if good:
                clean[user] = good
        return self.deliver(clean) if clean else succeed(None)

    def _push_local(self, sessions: dict[str, Session], items: list[_Push],
                    skip: str | None) -> None:
        for session in list(sessions.values()):
            if session.id == skip:
                continue
            for item in items:
                session.push(*item)

    def _forward(self, located: dict[str, list[SessionRef]],
                 targets: dict[str, list[Outgoing]], skip: str | None) -> Deferred[None]:
        by_node: dict[str, dict[str, list[dict[str, Any]]]] = {}
        me = self.node_id
        for user, frames in targets.items():
            refs = located.get(user)
            if not refs or not frames:
                continue
            plain: list[dict[str, Any]] | None = None
            for ref in refs:
                if ref.node == me or ref.session == skip:
                    continue
                node_frames = by_node.setdefault(ref.node, {})
                if user not in node_frames:
                    if plain is None:
                        plain = [f if isinstance(f, dict) else f.to_dict() for f in frames]
                    node_frames[user] = plain
        if not by_node:
            return succeed(None)
        assert self.forwarder is not None
        handed: list[Deferred[Any]] = []
        for node, to in by_node.items():
            envelope = {"t": "frames", "to": to, "skip": skip}
            metrics.count("envelopes_out")
            d = maybeDeferred(self.forwarder.forward, node, _encode_envelope(envelope))
            d.addCallbacks(_nothing, _forward_failed, errbackArgs=(node,))
            handed.append(d)
        if len(handed) == 1:
            return handed[0]
        return DeferredList(handed).addCallback(_nothing)

    def receive_envelope(self, payload: bytes) -> None:
        """Deliver an envelope from another node (JSON bytes) to the sessions here."""
        metrics.count("envelopes_in")
        try:
            envelope = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            _log.warn("ignoring an envelope that is not JSON: {env!r}", env=payload[:200])
            return
        if not isinstance(envelope, dict) or envelope.get("t") != "frames":
            _log.warn("ignoring an envelope of unknown kind: {env!r}", env=envelope)
            return
        to = envelope.get("to")
        skip = envelope.get("skip")
        if not isinstance(to, dict):
            _log.warn("ignoring an envelope without 'to': {env!r}", env=envelope)
            return
        for user, frames in to.items():
            mine = self.local.get(user)
            if not mine or not isinstance(frames, list):
                continue
            items = [_encoded(frame) for frame in frames
                     if isinstance(frame, dict) and isinstance(frame.get("type"), str)]
            self._push_local(mine, items, skip)

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, reason: str = "shutdown") -> Deferred[None]:
        """Send ``goaway`` to every connection, close them after a grace, unregister them.

        Fires once every connection is gone and its session unregistered; connections still
        open ``drain_timeout`` seconds after the grace are aborted.
        """
        if self._drained is not None:
            return _chain(self._drained)
        self._closing = reason
        goaway = F.Goaway(reason=reason)
        for conn in list(self.connections):
            conn.sendFrame(goaway)
        self._drained = Deferred()
        if not self.connections:
            self._finish_drain()
            return _chain(self._drained)
        self._close_call = self.clock.callLater(self.shutdown_grace, self._close_all)
        self._abort_call = self.clock.callLater(self.shutdown_grace + self.drain_timeout,
                                                self._abort_all)
        return _chain(self._drained)

    def _close_all(self) -> None:
        for conn in list(self.connections):
            conn.close()

    def _abort_all(self) -> None:
        for conn in list(self.connections):
            conn.abort()
        # A transport that does not report its loss is forgotten all the same.
        for conn in list(self.connections):
            conn.connectionLost(Failure(errors.Unavailable("aborted on shutdown")))

    def _finish_drain(self) -> None:
        for name in ("_close_call", "_abort_call"):
            call = getattr(self, name, None)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        drained = self._drained
        if drained is None or drained.called:
            return
        removals = list(self._pending_removals)
        if removals:
            DeferredList(removals, consumeErrors=True).addCallback(
                lambda _: drained.callback(None))
        else:
            drained.callback(None)


def _encoded(frame: Outgoing) -> _Push:
    if isinstance(frame, dict):
        ftype = frame["type"]
        seq = frame.get("seq") if ftype == "msg" else None
        return codec.encode_payload(frame), ftype, seq if type(seq) is int else None
    seq = frame.seq if type(frame) is F.Msg else None
    return codec.encode(frame), F.frame_type(frame), seq


_encode_envelope = msgspec.json.Encoder().encode


def _nothing(_: object) -> None:
    return None


def _forward_failed(failure: Failure, node: str) -> None:
    _log.failure("forwarding to node {node} failed", failure, node=node)


def _gather(lookups: list[Deferred[Any]]) -> Deferred[list[Any]]:
    """All results in order, or the first failure itself (not wrapped in FirstError)."""
    d = gatherResults(lookups, consumeErrors=True)

    def unwrap(failure: Failure) -> Failure:
        if failure.check(FirstError):
            return failure.value.subFailure
        return failure

    d.addErrback(unwrap)
    return d


def _recipients_in(group: Group | None, user: str, group_id: str,
                   ref: str | None) -> list[str]:
    """Every member of the group but ``user``; NotFound for no group, Forbidden for a
    non-member."""
    if group is None:
        raise errors.NotFound(f"no such group: {group_id}", ref=ref)
    members = group.members
    if user not in members:
        raise errors.Forbidden(f"not a member of group {group_id}", ref=ref)
    return [m for m in members if m != user]


def _checked_file(record: FileRecord | None, file: F.FileRef, user: str,
                  ref: str) -> dict[str, Any]:
    """The ``file`` of a message, once the record shows the sender uploaded it as described."""
    if record is None:
        raise errors.BadRequest(f"no such file: {file.id}", ref=ref)
    if record.owner != user:
        raise errors.BadRequest(f"file {file.id} was not uploaded by {user}", ref=ref)
    for field in ("name", "size", "mime"):
        if getattr(record, field) != getattr(file, field):
            raise errors.BadRequest(f"the file's {field} does not match file {file.id}",
                                    ref=ref)
    return {"id": record.id, "name": record.name, "size": record.size, "mime": record.mime}


def _chain(d: Deferred[None]) -> Deferred[None]:
    """A new Deferred that fires when ``d`` does, so callers cannot disturb ``d``."""
    out: Deferred[None] = Deferred()
    d.addBoth(lambda r: (out.callback(None), r)[1])
    return out
