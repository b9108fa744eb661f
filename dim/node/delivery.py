"""What a node does with its clients' frames: sessions, sending, delivery, acks, sync.

:class:`NodeCore` is the handler every :class:`~dim.node.connection.ClientConnection` of a
node hands its frames to.  It authenticates ``hello``, stores ``send`` (to a user or a group,
text or a file) through the :class:`~dim.store.interface.IStore`, pushes ``msg`` to every
session of every recipient and to the sender's other sessions (local ones directly, remote
ones through the :class:`~dim.cluster.interface.IForwarder`, one envelope per node), sends
each ``msg`` once more if it is not acknowledged within ``retransmit_after`` seconds, turns
``ack`` into ``delivered`` and ``read`` into ``read`` for the sender, answers ``sync`` from
the inbox, passes ``typing`` on (throttled, never stored), and tells a user's mutual
contacts when its first session comes and its last one goes (``presence``).  Writing
frames to sessions, here and on other nodes, is :class:`~dim.node.fanout.Fanout`'s, which is
also the process's :class:`~dim.cluster.interface.IPusher`.
"""
from __future__ import annotations

import secrets
from collections import deque
from functools import partial
from typing import Any, cast
from collections.abc import Callable

import msgspec
from twisted.internet.defer import (Deferred, DeferredList, FirstError, gatherResults,
                                    maybeDeferred, succeed)
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from dim import errors
from dim.cluster.interface import IForwarder, IPusher, ISessionRegistry
from dim.node import metrics
from dim.node.connection import ClientConnection
from dim.node.batch import StoreBatcher
from dim.node.fanout import Fanout, Push
from dim.node.throttle import UserLimiter, Verdict
from dim.protocol import frames as F
from dim.store.interface import (AckOp, ChangeOp, Contact, FileRecord, Group, InboxEntry,
                                 IStore, Receipt, SendOp, SendResult, entry_frame,
                                 message_frame)

_log = Logger()

#: Seconds between ``goaway`` and closing the connections on shutdown.
SHUTDOWN_GRACE = 1.0
#: Seconds after the grace before connections that did not close are aborted.
DRAIN_TIMEOUT = 5.0
#: A tolerance for float arithmetic when comparing due times.
_EPSILON = 1e-6



class Session:
    """One authenticated connection of a user: what it was sent and has yet to acknowledge.

    Pushed ``msg`` frames wait in a queue in the order they were sent; one timer per session
    fires when the oldest is due and writes every due frame once more, then forgets it.  An
    ack empties the queue but leaves the timer, which then fires for nothing.
    Until ``welcome`` is sent, pushes are held back and written after it.
    """

    __slots__ = (
        "_acked",
        "_after",
        "_clock",
        "_held",
        "_pending",
        "_timer",
        "checking",
        "conn",
        "draining",
        "id",
        "read_seq",
        "ready",
        "sends",
        "user",
    )

    def __init__(self, conn: ClientConnection, user: str, session_id: str,
                 clock: IReactorTime, retransmit_after: float) -> None:
        self.conn = conn
        self.user = user
        self.id = session_id
        self.ready = False
        #: Pushes held back until ``welcome`` (None once started, or while none are held).
        self._held: list[Push] | None = None
        #: Tracked ``msg`` frames (due time, seq, data), oldest first; made on the first one
        #: (an empty deque costs about 760 bytes, and idle sessions never track any).
        self._pending: deque[tuple[float, int, bytes]] | None = None
        self._timer: IDelayedCall | None = None
        self._acked = 0
        self._clock = clock
        self._after = retransmit_after
        #: Sends that wait for a check (group, file) or behind one, in the order they came
        #: (made on the first such send: an empty deque costs 600 bytes a session).
        self.sends: deque[F.Send] | None = None
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
        if not conn.takes_pushes():
            if conn.is_open:
                # The client does not keep up: the frame stays in the inbox (a msg) or is a
                # hint it can do without; the next gap or pong.last_seq makes it sync.
                metrics.count("pushes_held_back")
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
            if conn.takes_pushes():
                conn.write_encoded(data, "msg")
                metrics.count("retransmits")
        if pending and conn.is_open:
            self._timer = self._clock.callLater(max(pending[0][0] - now, 0.0), self._due)
        elif pending:
            pending.clear()


@implementer(IPusher)
class NodeCore:
    """The node's handling of client frames, shared by all its connections.

    ``forwarder`` carries envelopes to the other nodes (the embedded ``dim`` gives the
    in-memory one of :mod:`dim.cluster.local`, alone in its process).  ``limiter`` holds
    the per-user rate limits (:mod:`dim.node.throttle`) that ``send`` and ``typing`` frames
    are checked against before anything else is done with them.
    """

    def __init__(self, node_id: str, store: IStore, sessions: ISessionRegistry,
                 authenticate: Callable[[str], Deferred[str]], clock: IReactorTime,
                 heartbeat: int = 30, max_frame: int = F.DEFAULT_MAX_FRAME, *,
                 forwarder: IForwarder, retransmit_after: float = 4.0,
                 shutdown_grace: float = SHUTDOWN_GRACE,
                 drain_timeout: float = DRAIN_TIMEOUT,
                 limiter: UserLimiter | None = None) -> None:
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
        self.limiter = limiter if limiter is not None else UserLimiter()
        #: Writes frames to sessions here and elsewhere; ``local`` is its map of this node's
        #: sessions.
        self.fanout: Fanout[Session] = Fanout(node_id, sessions, clock, forwarder)
        #: Gathers each reactor turn's sends, acks and reads into one store call.
        self.batch = StoreBatcher(lambda ops: self.store.apply(ops), clock)
        #: Every open connection, authenticated or not.
        self.connections: set[ClientConnection] = set()
        #: user -> {session id: Session} for the sessions on this node.
        self.local: dict[str, dict[str, Session]] = self.fanout.local
        self._closing: str | None = None
        self._drained: Deferred[None] | None = None
        self._pending_removals: set[Deferred[Any]] = set()
        self._close_call: IDelayedCall | None = None
        self._abort_call: IDelayedCall | None = None

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

        A node shutting down alone (no other node to forward to) tells nobody: every session
        it could reach is closing too (and the store may be closing beside it).
        """
        if last and (self._closing is None or not self.forwarder.alone):
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
        return d.addCallback(self._authenticated, conn)

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

    def on_send(self, conn: ClientConnection, frame: F.Send) -> None:
        """Store a message, answer ``sent``, push ``msg`` to everyone else who should get it.

        Messages reach the store in the order the session sent them: a plain text send joins
        this reactor turn's store batch at once; a send that needs a look-up first (a
        group's members, a file's record) waits in the session's queue, and so does every
        send behind it.
        """
        session: Session = conn.session
        self._within_limit("send", session.user, frame.id)
        conn.request_began()
        if frame.group is None and frame.file is None and not session.sends:
            to = frame.to
            self._store(session, frame, [] if to == session.user else [cast(str, to)], None, None)
            return
        if session.sends is None:
            session.sends = deque()
        session.sends.append(frame)
        self._drain_sends(session)

    def _drain_sends(self, session: Session) -> None:
        """Work through the session's queued sends, in order, until one must wait."""
        if session.draining:
            return
        session.draining = True
        try:
            sends: deque[F.Send] = session.sends  # type: ignore[assignment]
            while sends and not session.checking:
                frame = sends[0]
                if frame.group is None and frame.file is None:
                    sends.popleft()
                    to = frame.to
                    self._store(session, frame, [] if to == session.user else [cast(str, to)], None,
                                None)
                    continue
                session.checking = True
                checked = self._check_send(session.user, frame)
                checked.addBoth(self._send_checked, session, frame)
        finally:
            session.draining = False

    def _send_checked(self, checked: tuple[list[str], str | None, dict[str, Any] | None]
                      | Failure, session: Session, frame: F.Send) -> None:
        session.checking = False
        session.sends.popleft()  # type: ignore[union-attr]
        if isinstance(checked, Failure):
            session.conn.request_ended(frame, checked)
        else:
            self._store(session, frame, *checked)
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
                for name in frame.mentions or ():
                    if name not in group.members:  # type: ignore[union-attr]
                        raise errors.BadRequest(f"{name} is not a member of the group",
                                                ref=frame.id)
            else:
                recipients = [] if frame.to == user else [frame.to]  # type: ignore[list-item]
            file = None
            if frame.file is not None:
                file = _checked_file(found.pop(0), frame.file, user, frame.id)
            return recipients, frame.group, file

        return d.addCallback(check)

    def _store(self, session: Session, frame: F.Send, recipients: list[str],
               group: str | None, file: dict[str, Any] | None) -> None:
        started = self.clock.seconds()
        conn = session.conn
        self.batch.add(SendOp(sender=session.user, client_id=frame.id, recipients=recipients,
                              group=group, body=frame.body or "", kind=frame.kind, file=file,
                              ts=int(started * 1000), reply_to=frame.reply_to,
                              mentions=frame.mentions or None),
                       partial(self._stored, session=session, frame=frame, started=started),
                       partial(conn.request_ended, frame))

    def _stored(self, result: SendResult, session: Session,
                frame: F.Send | F.Edit | F.Recall | F.React, started: float) -> None:
        message = result.message
        sender = session.user
        conn = session.conn
        conn.sendFrame(F.Sent(id=message.id, mid=message.mid, seq=result.seqs[sender],
                              ts=message.ts))
        conn.request_ended(frame)
        metrics.SEND_LATENCY.observe(self.clock.seconds() - started)
        if result.duplicate:
            return
        # One frame is built; each inbox's copy differs only in its seq.
        msg = message_frame(message, result.seqs[sender])
        replace = msgspec.structs.replace
        targets: dict[str, list[F._Frame]] = {
            user: [msg if user == sender else replace(msg, seq=seq)]
            for user, seq in result.seqs.items()}
        self._deliver_now(targets, skip=session.id)

    # ------------------------------------------------------------------ edit, recall, react

    def on_edit(self, conn: ClientConnection, frame: F.Edit) -> None:
        """Replace the body of a text message this user sent: a new ``edit`` entry in every
        inbox holding it, answered by ``sent``."""
        self._change(conn, frame, "edit", frame.body, True)

    def on_recall(self, conn: ClientConnection, frame: F.Recall) -> None:
        """Take back a message this user sent: a new ``recall`` entry, answered by ``sent``."""
        self._change(conn, frame, "recall", "", True)

    def on_react(self, conn: ClientConnection, frame: F.React) -> None:
        """Add or remove a reaction to a message of this user's inbox: a new ``reaction``
        entry in every inbox holding it, answered by ``sent``."""
        self._change(conn, frame, "reaction", frame.emoji, frame.on)

    def _change(self, conn: ClientConnection, frame: F.Edit | F.Recall | F.React, kind: str,
                body: str, on: bool) -> None:
        session: Session = conn.session
        self._within_limit(F.frame_type(frame), session.user, frame.id)
        conn.request_began()
        started = self.clock.seconds()
        self.batch.add(ChangeOp(sender=session.user, client_id=frame.id, kind=kind,
                                ref=frame.mid, body=body, on=on, ts=int(started * 1000)),
                       partial(self._stored, session=session, frame=frame, started=started),
                       partial(conn.request_ended, frame))

    # ------------------------------------------------------------------ ack

    def on_ack(self, conn: ClientConnection, frame: F.Ack) -> None:
        """Stop retransmitting up to ``seq``, record the ack, tell senders ``delivered``."""
        session: Session = conn.session
        session.acknowledge(frame.seq)
        conn.request_began()
        user = session.user

        def acked(outcome: tuple[list[Receipt], list[Receipt]]) -> None:
            conn.request_ended(frame)
            self._acked(outcome[0], user)

        self.batch.add(AckOp(user=user, seq=frame.seq), acked,
                       partial(conn.request_ended, frame))

    def _acked(self, receipts: list[Receipt], user: str) -> None:
        if not receipts:
            return
        targets: dict[str, list[F._Frame]] = {}
        for receipt in receipts:
            targets.setdefault(receipt.sender, []).append(
                F.Delivered(id=receipt.id, mid=receipt.mid, by=user))
        self._deliver_now(targets)

    # ------------------------------------------------------------------ read

    def on_read(self, conn: ClientConnection, frame: F.Read) -> None:
        """Record that the user has read up to ``seq`` (and so received it): ``delivered``
        and ``read`` to the senders, ``read {seq}`` to the user's other sessions.  A seq
        this session already said it read changes nothing and tells nobody."""
        session: Session = conn.session
        if frame.with_ is not None or frame.group is not None:
            self._read_conversation(conn, frame)
            return
        session.acknowledge(frame.seq)
        if frame.seq <= session.read_seq:
            return
        session.read_seq = frame.seq
        user, seq, skip = session.user, frame.seq, session.id
        conn.request_began()

        def read(outcome: tuple[list[Receipt], list[Receipt]]) -> None:
            conn.request_ended(frame)
            self._read(list(outcome), user, seq, skip)

        # Reading implies receiving, and a client may read without acking first: the ack
        # is recorded too, so its senders still hear ``delivered`` before ``read``.
        self.batch.add(AckOp(user=user, seq=seq, read=True), read,
                       partial(conn.request_ended, frame))

    def _read_conversation(self, conn: ClientConnection, frame: F.Read) -> None:
        """``read`` of one conversation (``with`` or ``group``): acknowledge and read its
        entries up to ``seq``; ``delivered`` and ``read`` to their senders, and the same
        ``read`` to the user's other sessions when the read pointer moved."""
        if frame.with_ is not None and frame.group is not None:
            raise errors.BadRequest("read names a conversation by with or group, not both")
        session: Session = conn.session
        user, seq, skip = session.user, frame.seq, session.id
        conv = frame.with_ if frame.with_ is not None else "#" + str(frame.group)
        conn.request_began()

        def read(outcome: tuple[list[Receipt], list[Receipt], int]) -> None:
            conn.request_ended(frame)
            delivered, receipts, moved = outcome
            targets = _receipt_frames(delivered, receipts, user)
            if moved:
                targets.setdefault(user, []).append(
                    F.ReadNotice(seq=seq, by=user, with_=frame.with_, group=frame.group))
            if targets:
                self._deliver_now(targets, skip=skip)

        self.batch.add(AckOp(user=user, seq=seq, read=True, conv=conv), read,
                       partial(conn.request_ended, frame))

    def _read(self, receipts: list[list[Receipt]], user: str, seq: int, skip: str) -> None:
        delivered, read = receipts
        targets = _receipt_frames(delivered, read, user)
        targets.setdefault(user, []).append(F.ReadNotice(seq=seq, by=user))
        self._deliver_now(targets, skip=skip)

    # ------------------------------------------------------------------ typing

    def on_typing(self, conn: ClientConnection, frame: F.Typing) -> Deferred[None] | None:
        """Pass ``typing`` on to the person or the group's other members; never stored.

        Frames over the user's limit are dropped; a flood that goes on gets one
        ``rate_limited``.
        """
        session: Session = conn.session
        try:
            within = self._within_limit("typing", session.user, None, quiet=True)
        except errors.RateLimited:
            metrics.count("typing_dropped")  # the flood's report drops its frame too
            raise
        if not within:
            metrics.count("typing_dropped")
            return None
        user = session.user
        if frame.to is not None:
            to = frame.to
            d = maybeDeferred(self.store.user_exists, to)

            def to_user(exists: bool) -> None:
                if not exists:
                    raise errors.NotFound(f"no such user: {to}")
                self._deliver_now({to: [F.TypingNotice(from_=user, to=to)]}, skip=session.id)

            d.addCallback(to_user)
            return d
        group_id: str = frame.group  # type: ignore[assignment]
        d = maybeDeferred(self.store.get_group, group_id)

        def to_group(group: Group | None) -> None:
            members = _recipients_in(group, user, group_id, None)
            notice = F.TypingNotice(from_=user, group=group_id)
            self._deliver_now({member: [notice] for member in members})

        d.addCallback(to_group)
        return d

    # ------------------------------------------------------------------ limits

    def _within_limit(self, action: str, user: str, ref: str | None,
                      quiet: bool = False) -> bool:
        """Count one ``action`` frame of ``user``: True if it is within the limit.

        Over the limit it raises ``rate_limited`` (with ``retry_after``), or, when ``quiet``,
        returns False and raises only once for a flood that goes on.
        """
        limiter = self.limiter
        now = self.clock.seconds()
        verdict = limiter.check(action, user, now)
        if verdict is Verdict.ADMIT:
            return True
        if quiet and verdict is Verdict.DROP:
            return False
        extra = "; extra frames are dropped" if quiet else ""
        raise errors.RateLimited(f"{action} is sent too often{extra}", ref=ref,
                                 retry_after=limiter.retry_after(action, user, now))

    # ------------------------------------------------------------------ presence

    def announce(self, user: str, online: bool) -> Deferred[None]:
        """Push ``presence`` of ``user`` to every session of each of its mutual contacts."""
        d = maybeDeferred(self.store.contacts, user)

        def push(contacts: list[Contact]) -> Deferred[None] | None:
            presence = F.Presence(user=user, online=online)
            targets: dict[str, list[F._Frame]] = {
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
        out: list[F._Frame] = [entry_frame(e) for e in entries]
        more = bool(entries) and entries[-1].seq < last_seq
        out.append(F.Synced(after=frame.after, last_seq=last_seq, more=more))
        conn.send_frames(out)

    # ------------------------------------------------------------------ delivery

    def deliver(self, targets: dict[str, list[F._Frame]],
                skip: str | None = None) -> Deferred[None]:
        """Write frames to every session of each user, here or on other nodes, but ``skip``;
        fires once handed over (see :meth:`Fanout.deliver <dim.node.fanout.Fanout.deliver>`).
        """
        return self.fanout.deliver(targets, skip)  # type: ignore[return-value]

    def _deliver_now(self, targets: dict[str, list[F._Frame]],
                     skip: str | None = None) -> None:
        """:meth:`deliver` without a Deferred, for the per-message path."""
        self.fanout.deliver(targets, skip, wait=False)

    def push(self, targets: dict[str, list[F._Frame]]) -> Deferred[None]:
        """:class:`IPusher`: send each user's frames to all of its online sessions."""
        return self.fanout.push(targets)

    @property
    def locates(self) -> int:
        """Registry look-ups made for deliveries (for tests and metrics)."""
        return self.fanout.locates

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


def _receipt_frames(delivered: list[Receipt], read: list[Receipt],
                    user: str) -> dict[str, list[F._Frame]]:
    """``delivered`` and ``read`` frames, by ``user``, for the senders of the receipts."""
    targets: dict[str, list[F._Frame]] = {}
    for receipt in delivered:
        targets.setdefault(receipt.sender, []).append(
            F.Delivered(id=receipt.id, mid=receipt.mid, by=user))
    for receipt in read:
        targets.setdefault(receipt.sender, []).append(
            F.ReadNotice(id=receipt.id, mid=receipt.mid, by=user))
    return targets


def _gather(lookups: list[Deferred[Any]]) -> Deferred[list[Any]]:
    """All results in order, or the first failure itself (not wrapped in FirstError)."""
    d = gatherResults(lookups, consumeErrors=True)

    def unwrap(failure: Failure) -> Failure:
        if failure.check(FirstError):
            return cast(FirstError, failure.value).subFailure
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
    def fire(result: Any) -> Any:
        out.callback(None)
        return result
    d.addBoth(fire)
    return out
