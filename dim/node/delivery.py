"""What a node does with its clients' frames: sessions, sending, delivery, acks, sync.

:class:`NodeCore` is the handler every :class:`~dim.node.connection.ClientConnection` of a
node hands its frames to.  It authenticates ``hello``, stores ``send`` through the
:class:`~dim.store.interface.IStore`, pushes ``msg`` to every session of the recipient and to
the sender's other sessions (local ones directly, remote ones through the
:class:`~dim.cluster.interface.IForwarder`, one envelope per node), sends each ``msg`` once
more if it is not acknowledged within ``retransmit_after`` seconds, turns ``ack`` into
``delivered`` for the sender, and answers ``sync`` from the inbox.

Envelopes between nodes are plain dicts::

    {"t": "frames", "to": {user: [frame_dict, ...]}, "skip": session_id_or_None}

and mean: write these frames to every session of each user on this node, except ``skip``.
"""
from __future__ import annotations

import secrets
from collections import deque
from typing import Any, Callable

import msgspec
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from dim import errors
from dim.cluster.interface import IForwarder, ISessionRegistry, SessionRef
from dim.node import metrics
from dim.node.connection import ClientConnection
from dim.protocol import codec
from dim.protocol import frames as F
from dim.store.interface import InboxEntry, IStore, Receipt, SendResult, StoredMessage

_log = Logger()

#: Seconds between ``goaway`` and closing the connections on shutdown.
SHUTDOWN_GRACE = 1.0
#: Seconds after the grace before connections that did not close are aborted.
DRAIN_TIMEOUT = 5.0
#: A tolerance for float arithmetic when comparing due times.
_EPSILON = 1e-6

# An item to push: the encoded frame, its type, and its seq when it is a msg to track.
_Push = tuple[bytes, str, "int | None"]


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
                 "_clock", "_after")

    def __init__(self, conn: ClientConnection, user: str, session_id: str,
                 clock: IReactorTime, retransmit_after: float) -> None:
        self.conn = conn
        self.user = user
        self.id = session_id
        self.ready = False
        self._held: list[_Push] = []
        self._pending: deque[tuple[float, int, bytes]] = deque()
        self._timer: IDelayedCall | None = None
        self._acked = 0
        self._clock = clock
        self._after = retransmit_after

    def start(self) -> None:
        """``welcome`` was sent: write what was held back."""
        self.ready = True
        held, self._held = self._held, []
        for item in held:
            self.push(*item)

    def push(self, data: bytes, frame_type: str, seq: int | None) -> None:
        """Write one encoded frame; track it for retransmission if it is a ``msg``."""
        if not self.ready:
            self._held.append((data, frame_type, seq))
            return
        conn = self.conn
        if not conn.is_open:
            return
        conn.write_encoded(data, frame_type)
        if seq is not None and seq > self._acked:
            self._pending.append((self._clock.seconds() + self._after, seq, data))
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
            pending.clear()
        else:
            self._pending = deque(p for p in pending if p[1] > seq)
        # The timer is left to fire and find nothing due: at a steady rate of messages this
        # keeps one timer per session alive instead of making and cancelling one per message.

    @property
    def unacknowledged(self) -> list[int]:
        """The seqs that will be sent once more if no ack comes (for tests)."""
        return [seq for _, seq, _ in self._pending]

    def close(self) -> None:
        """The connection is gone: forget everything and cancel the timer."""
        self.ready = False
        self._held.clear()
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


class NodeCore:
    """The node's handling of client frames, shared by all its connections."""

    def __init__(self, node_id: str, store: IStore, sessions: ISessionRegistry,
                 authenticate: Callable[[str], Deferred[str]], clock: IReactorTime,
                 heartbeat: int = 30, max_frame: int = F.DEFAULT_MAX_FRAME,
                 forwarder: IForwarder | None = None, retransmit_after: float = 4.0,
                 shutdown_grace: float = SHUTDOWN_GRACE,
                 drain_timeout: float = DRAIN_TIMEOUT) -> None:
        self.node_id = node_id
        self.store = store
        self.sessions = sessions
        self.authenticate = authenticate
        self.clock = clock
        self.heartbeat = heartbeat
        self.max_frame = max_frame
        self.forwarder = forwarder
        self.retransmit_after = retransmit_after
        self.shutdown_grace = shutdown_grace
        self.drain_timeout = drain_timeout
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
        if not d.called:
            self._pending_removals.add(d)
            d.addBoth(self._removal_done, d)
        d.addErrback(lambda f: _log.failure("unregistering session {s} failed", f, s=session.id))

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
        d.addCallback(lambda _: self.store.last_seq(user))
        d.addCallback(self._welcome, conn, session)
        d.addErrback(self._hello_failed, conn, session)
        return d

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

        The store is called before anything asynchronous happens, so a session's messages
        are stored in the order it sent them.
        """
        session: Session = conn.session
        if frame.group is not None:
            raise errors.NotFound("groups are not supported yet", ref=frame.id)
        if frame.kind != "text":
            raise errors.BadRequest("files are not supported yet", ref=frame.id)
        user = session.user
        recipients = [] if frame.to == user else [frame.to]
        started = self.clock.seconds()
        d = self.store.store_message(user, frame.id, recipients, None, frame.body or "",
                                     frame.kind, None, int(started * 1000))
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
        targets: dict[str, list[F._Frame]] = {}
        for user, seq in result.seqs.items():
            targets[user] = [message_frame(message, seq)]
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
        targets: dict[str, list[F._Frame]] = {}
        for receipt in receipts:
            targets.setdefault(receipt.sender, []).append(
                F.Delivered(id=receipt.id, mid=receipt.mid, by=user))
        self.deliver(targets)

    # ------------------------------------------------------------------ sync

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

    def deliver(self, targets: dict[str, list[F._Frame]], skip: str | None = None) -> None:
        """Write frames to every session of each user, here or on other nodes, but ``skip``."""
        for user, frames in targets.items():
            mine = self.local.get(user)
            if mine and (len(mine) > 1 or skip not in mine):
                self._push_local(mine, [_encoded(f) for f in frames], skip)
        if self.forwarder is not None:
            d = maybeDeferred(self.sessions.locate, list(targets))
            d.addCallback(self._forward, targets, skip)
            d.addErrback(lambda f: _log.failure("locating sessions to forward to failed", f))

    def _push_local(self, sessions: dict[str, Session], items: list[_Push],
                    skip: str | None) -> None:
        for session in list(sessions.values()):
            if session.id == skip:
                continue
            for item in items:
                session.push(*item)

    def _forward(self, located: dict[str, list[SessionRef]],
                 targets: dict[str, list[F._Frame]], skip: str | None) -> None:
        by_node: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for user, refs in located.items():
            frames = targets.get(user)
            if not frames:
                continue
            for ref in refs:
                if ref.node == self.node_id or ref.session == skip:
                    continue
                node_frames = by_node.setdefault(ref.node, {})
                if user not in node_frames:
                    node_frames[user] = [f.to_dict() for f in frames]
        assert self.forwarder is not None
        for node, to in by_node.items():
            envelope = {"t": "frames", "to": to, "skip": skip}
            metrics.count("envelopes_out")
            d = maybeDeferred(self.forwarder.forward, node, envelope)
            d.addErrback(lambda f, n=node: _log.failure("forwarding to node {node} failed", f,
                                                        node=n))

    def receive_envelope(self, envelope: dict[str, Any]) -> None:
        """Deliver an envelope from another node to the sessions here."""
        metrics.count("envelopes_in")
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
            items: list[_Push] = []
            for frame in frames:
                if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
                    continue
                ftype = frame["type"]
                seq = frame.get("seq") if ftype == "msg" else None
                items.append((codec.encode_payload(frame), ftype,
                              seq if isinstance(seq, int) else None))
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


def _encoded(frame: F._Frame) -> _Push:
    seq = frame.seq if type(frame) is F.Msg else None
    return codec.encode(frame), F.frame_type(frame), seq


def _chain(d: Deferred[None]) -> Deferred[None]:
    """A new Deferred that fires when ``d`` does, so callers cannot disturb ``d``."""
    out: Deferred[None] = Deferred()
    d.addBoth(lambda r: (out.callback(None), r)[1])
    return out
