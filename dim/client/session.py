"""The client core: one user's live session with DIM, outside any user interface.

:class:`ClientSession` speaks the wire contract to a node: ``hello``/``welcome``, heartbeats,
sending with resend and failure, seq bookkeeping (gaps, duplicates, ``sync``), coalesced
cumulative ``ack``, and reconnecting through the gateway with exponential backoff and full
jitter.  It tells its listeners what happened with small dataclass events, so a user
interface (the terminal chat), a test or the load generator never touches frames.

:class:`ChatClient` puts a session together with login, the local cache and saved settings:
it is the object the terminal chat is given.

Policies worth knowing:

- Heartbeat: a ``ping`` after H seconds without writing; the connection is dead after 2H
  seconds without hearing anything (10 s before ``welcome``).
- Acks: after each batch of received bytes, the highest contiguous seq is acked at once if no
  ack went out in the last :data:`ACK_INTERVAL` seconds, else once that interval has passed.
  So an idle client acks immediately and a busy one at most every 50 ms.
- Sends: no ``sent`` :data:`SEND_TIMEOUT` seconds after writing a ``send``: it is written once
  more with the same id; no ``sent`` 4 s after that: the message is ``failed`` until
  :meth:`ClientSession.retry`.  A message whose connection is lost goes back to the outbox
  and is written again, with the same id, after reconnecting.
- Reconnect: delay ``uniform(0, min(30, 0.5 * 2 ** (attempt - 1)))``; the route asks the
  gateway to exclude the node that failed, and asks again without exclusion if that leaves
  no node (a single-node ``dim`` comes back on the same node).
"""
from __future__ import annotations

import ipaddress
import itertools
import random
import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol, Union

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from dim import errors
from dim.client.cache import ChatMessage, Conversation, MessageCache
from dim.client.config import ClientConfig
from dim.client.gateway import GatewayClient
from dim.protocol import frames as F
from dim.protocol.wire import FrameProtocol

log = Logger()

SEND_TIMEOUT = 4.0
HELLO_TIMEOUT = 10.0
ACK_INTERVAL = 0.05
BACKOFF_BASE = 0.5
BACKOFF_CAP = 30.0
SYNC_PAGE = 500
#: The decoder's frame limit on the client side; generous, the node limits what it sends.
CLIENT_MAX_FRAME = 1 << 20

# Connection states, as shown in the chat's header.
OFFLINE = "offline"
CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"

# States of a message this session sends.
SENDING = "sending"
SENT = "sent"
DELIVERED = "delivered"
FAILED = "failed"


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class NodeAddress:
    """A node a client can connect to: its id and TCP address."""

    id: str
    host: str
    port: int

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NodeAddress:
        """A node from the gateway's ``{id, host, port}``."""
        return cls(id=str(obj["id"]), host=str(obj["host"]), port=int(obj["port"]))


@dataclass
class OutgoingMessage:
    """A message this session sends, with its state: sending, sent, delivered or failed."""

    id: str
    body: str
    created: int
    to: str | None = None
    group: str | None = None
    kind: str = "text"
    state: str = SENDING
    mid: str | None = None
    seq: int | None = None
    ts: int | None = None
    error: str | None = None
    #: How often it was written on the current connection.
    attempts: int = 0

    def peer(self) -> str:
        """The conversation this message belongs to."""
        return "#" + self.group if self.group is not None else str(self.to)


@dataclass(frozen=True)
class Connecting:
    """A TCP connection to ``node`` is being opened."""

    node: NodeAddress


@dataclass(frozen=True)
class Connected:
    """The node welcomed this session."""

    node: NodeAddress
    user: str
    last_seq: int


@dataclass(frozen=True)
class Disconnected:
    """The connection to ``node`` is gone (``reason`` says why)."""

    node: NodeAddress | None
    reason: str


@dataclass(frozen=True)
class Reconnecting:
    """The next connection attempt (``attempt``, from 1) starts in ``in_seconds``."""

    in_seconds: float
    attempt: int


@dataclass(frozen=True)
class Offline:
    """The session stopped and will not reconnect by itself (``reason`` says why)."""

    reason: str


@dataclass(frozen=True)
class SessionExpired:
    """The token was refused; the person has to log in again."""

    message: str


@dataclass(frozen=True)
class MessageReceived:
    """A message of the inbox arrived that was not sent by this session; shown once per seq."""

    entry: ChatMessage


@dataclass(frozen=True)
class MessageStatus:
    """A message this session sent changed state (sending, sent, delivered, failed)."""

    id: str
    state: str
    message: OutgoingMessage


@dataclass(frozen=True)
class Delivered:
    """A recipient acknowledged a message this user sent (from this or another device)."""

    id: str
    mid: str
    by: str


@dataclass(frozen=True)
class SyncFinished:
    """A sync ended; everything up to ``last_seq`` has been handled."""

    last_seq: int


@dataclass(frozen=True)
class ServerError:
    """The node reported an error (``ref`` names the frame's id, if it had one)."""

    code: str
    message: str
    ref: str | None = None


SessionEvent = Union[Connecting, Connected, Disconnected, Reconnecting, Offline, SessionExpired,
                     MessageReceived, MessageStatus, Delivered, SyncFinished, ServerError]
Listener = Callable[[SessionEvent], None]


class EventSource:
    """Keeps listeners and tells each of them every event."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event from now on; returns a function that stops it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
        return unsubscribe

    def emit(self, event: SessionEvent) -> None:
        """Tell every listener about ``event``; a failing listener does not stop the others."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.failure("session listener failed on {event!r}", event=event)


# ---------------------------------------------------------------- the wire


class ClientConnection(FrameProtocol):
    """One TCP connection to a node; frames go to and come from its :class:`ClientSession`."""

    frame_types = F.SERVER_FRAME_TYPES
    max_frame = CLIENT_MAX_FRAME

    def __init__(self, session: ClientSession) -> None:
        self.session = session

    def connectionMade(self) -> None:
        super().connectionMade()
        self.session._connection_made(self)

    def dataReceived(self, data: bytes) -> None:
        self.session._heard(self)
        super().dataReceived(data)
        self.session._batch_done(self)

    def frameReceived(self, frame: F._Frame) -> None:
        self.session._frame_received(self, frame)

    def frameRejected(self, error: errors.DimError) -> None:
        # The node sent something that is not a frame: this connection is not to be trusted.
        log.warn("bad frame from node: {error}", error=error)
        self.session._connection_broken(self, f"bad frame from node: {error.message}")

    def sendFrame(self, frame: F._Frame) -> None:
        super().sendFrame(frame)
        self.session._wrote(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.session._connection_lost(self, reason)


def default_endpoint(reactor: Any, host: str, port: int) -> IStreamClientEndpoint:
    """A TCP client endpoint for a node address (an IP literal or a host name)."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=HELLO_TIMEOUT)
    if ip.version == 6:
        return TCP6ClientEndpoint(reactor, host, port, timeout=HELLO_TIMEOUT)
    return TCP4ClientEndpoint(reactor, host, port, timeout=HELLO_TIMEOUT)


def full_jitter(attempt: int, rng: Callable[[], float], base: float = BACKOFF_BASE,
                cap: float = BACKOFF_CAP) -> float:
    """Delay before reconnect attempt ``attempt`` (from 1): uniform in [0, min(cap, base*2^(n-1))]."""
    return rng() * min(cap, base * (2 ** min(attempt - 1, 32)))


class RouteSource(Protocol):
    """What the session needs of the gateway: a node to connect to."""

    def route(self, exclude: Iterable[str] = ()) -> Deferred[dict[str, Any]]:
        """Ask for a node, avoiding ``exclude``."""


# ---------------------------------------------------------------- the session


class ClientSession(EventSource):
    """One user's live connection to DIM, kept alive across node failures.

    ``reactor`` provides time (``callLater``, ``seconds``) and TCP; ``gateway`` gives nodes
    (``route``); ``rng`` returns floats in [0, 1) for the backoff jitter; ``cache``, when
    given, receives every message and the last contiguous seq, and gives the starting seq.
    """

    def __init__(self, gateway: RouteSource, reactor: Any, user: str, token: str, *,
                 device: str | None = "dim-chat", last_seq: int | None = None,
                 cache: MessageCache | None = None, rng: Callable[[], float] = random.random,
                 endpoint_factory: Callable[[Any, str, int], IStreamClientEndpoint] = default_endpoint,
                 ) -> None:
        super().__init__()
        self.gateway = gateway
        self.reactor = reactor
        self.user = user
        self.token = token
        self.device = device
        self.cache = cache
        self.rng = rng
        self.endpoint_factory = endpoint_factory
        #: The highest seq such that every seq up to it has been handled.
        self.last_seq = last_seq if last_seq is not None else (cache.last_seq if cache else 0)
        #: Seqs above ``last_seq`` already handled (they arrived across a gap).
        self._ahead: set[int] = set()
        #: Every message this session sent, by id.
        self.outgoing: dict[str, OutgoingMessage] = {}
        self._outbox: list[str] = []
        self._send_timers: dict[str, Any] = {}
        self._counter = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)

        self.state = OFFLINE
        self.node: NodeAddress | None = None
        self.heartbeat: float | None = None
        self.welcome: F.Welcome | None = None
        self._conn: ClientConnection | None = None
        self._stopping = False
        self._attempt = 0
        self._failed_node: str | None = None
        self._reconnect_call: Any = None
        self._ping_call: Any = None
        self._dead_call: Any = None
        self._ack_call: Any = None
        self._acked = 0
        self._ack_wanted = False
        self._last_ack_at = float("-inf")
        self._syncing = False
        self._sync_again = False
        self._sync_after = 0

    # ------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """Whether a node has welcomed this session and the connection is up."""
        return self.state == CONNECTED and self._conn is not None

    def start(self, node: NodeAddress | dict[str, Any] | None = None) -> None:
        """Connect to ``node`` (from login), or to whichever node the gateway routes to."""
        self._stopping = False
        if isinstance(node, dict):
            node = NodeAddress.from_json(node)
        if node is not None:
            self._connect(node)
        else:
            self._route()

    def stop(self) -> None:
        """Disconnect and stay offline; unsent messages stay in the outbox."""
        self._stopping = True
        self._cancel(self._reconnect_call)
        self._reconnect_call = None
        conn = self._conn
        if conn is not None:
            self._flush_ack(conn)
            self._drop(conn, "stopped")
            if conn.transport is not None:
                conn.transport.loseConnection()
        if self.state != OFFLINE:
            self.state = OFFLINE
            self.emit(Offline("stopped"))

    def send(self, to: str | None, body: str, *, group: str | None = None,
             kind: str = "text") -> OutgoingMessage:
        """Send ``body`` to user ``to`` (or a group); returns the message, state ``sending``.

        Raises BadRequest or TooLarge at once for a message the node would refuse.
        """
        if (to is None) == (group is None):
            raise errors.BadRequest("a message goes to exactly one of a user and a group")
        if len(body.encode("utf-8")) > F.MAX_BODY_BYTES:
            raise errors.TooLarge(f"the message is over {F.MAX_BODY_BYTES} bytes")
        message = OutgoingMessage(id=self.new_id(), body=body, to=to, group=group, kind=kind,
                                  created=int(self.reactor.seconds() * 1000))
        self.outgoing[message.id] = message
        self._outbox.append(message.id)
        self.emit(MessageStatus(message.id, SENDING, message))
        self._flush_outbox()
        return message

    def retry(self, id: str) -> OutgoingMessage:
        """Send a failed message again, with the same id (so it is never stored twice)."""
        message = self.outgoing[id]
        if message.state != FAILED:
            return message
        message.state, message.error, message.attempts = SENDING, None, 0
        self._outbox.append(id)
        self.emit(MessageStatus(id, SENDING, message))
        self._flush_outbox()
        return message

    def new_id(self) -> str:
        """A message id unique for this sender: time, a counter and random bits."""
        ms = int(time.time() * 1000)
        return f"{ms:x}-{self._id_prefix}-{next(self._counter)}"

    # ------------------------------------------------------------ connecting

    def _route(self) -> None:
        if self.state != RECONNECTING:
            self.state = CONNECTING
        exclude = [self._failed_node] if self._failed_node else []
        d = self.gateway.route(exclude=exclude)
        if exclude:
            def without_exclusion(f: Failure) -> Deferred[dict[str, Any]]:
                f.trap(errors.Unavailable)
                return self.gateway.route(exclude=[])
            d.addErrback(without_exclusion)
        d.addCallbacks(self._routed, self._route_failed)

    def _routed(self, answer: dict[str, Any]) -> None:
        if self._stopping:
            return
        try:
            node = NodeAddress.from_json(answer["node"])
        except (KeyError, TypeError, ValueError):
            self._route_failed(Failure(errors.Internal("the gateway's route answer has no node")))
            return
        self._connect(node)

    def _route_failed(self, f: Failure) -> None:
        if self._stopping:
            return
        if f.check(errors.Unauthorized):
            self._expire(f.value.message)
            return
        log.info("route failed: {f}", f=f.getErrorMessage())
        self._schedule_reconnect()

    def _connect(self, node: NodeAddress) -> None:
        self.node = node
        if self.state != RECONNECTING:
            self.state = CONNECTING
        self.emit(Connecting(node))
        endpoint = self.endpoint_factory(self.reactor, node.host, node.port)
        factory = Factory.forProtocol(lambda: ClientConnection(self))  # type: ignore[arg-type]
        d = endpoint.connect(factory)
        d.addErrback(self._connect_failed, node)

    def _connect_failed(self, f: Failure, node: NodeAddress) -> None:
        if self._stopping:
            return
        log.info("connecting to {node} failed: {f}", node=node, f=f.getErrorMessage())
        self._failed_node = node.id
        self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._stopping or self._reconnect_call is not None:
            return
        self._attempt += 1
        delay = full_jitter(self._attempt, self.rng)
        self.state = RECONNECTING
        self.emit(Reconnecting(delay, self._attempt))
        self._reconnect_call = self.reactor.callLater(delay, self._reconnect_now)

    def _reconnect_now(self) -> None:
        self._reconnect_call = None
        if not self._stopping:
            self._route()

    def _expire(self, message: str) -> None:
        self._stopping = True
        self.state = OFFLINE
        self.emit(SessionExpired(message))
        self.emit(Offline("session expired"))

    # ------------------------------------------------------------ connection events

    def _connection_made(self, conn: ClientConnection) -> None:
        if self._stopping:
            conn.transport.loseConnection()
            return
        old = self._conn
        if old is not None and old is not conn:
            self._drop(old, "replaced")
            old.transport.loseConnection()
        self._conn = conn
        self.welcome = None
        self.heartbeat = None
        self._dead_call = self.reactor.callLater(HELLO_TIMEOUT, self._dead, conn)
        conn.sendFrame(F.Hello(v=F.PROTOCOL_VERSION, token=self.token, device=self.device))

    def _heard(self, conn: ClientConnection) -> None:
        if conn is self._conn and self._dead_call is not None and self.heartbeat:
            self._dead_call.reset(2 * self.heartbeat)

    def _wrote(self, conn: ClientConnection) -> None:
        if conn is not self._conn or not self.heartbeat:
            return
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.reset(self.heartbeat)
        else:
            self._ping_call = self.reactor.callLater(self.heartbeat, self._ping, conn)

    def _ping(self, conn: ClientConnection) -> None:
        self._ping_call = None
        if conn is self._conn:
            conn.sendFrame(F.Ping())

    def _dead(self, conn: ClientConnection) -> None:
        self._dead_call = None
        if conn is not self._conn:
            return
        waited = 2 * self.heartbeat if self.heartbeat else HELLO_TIMEOUT
        self._connection_broken(conn, f"nothing heard from the node for {waited:g} s")

    def _connection_broken(self, conn: ClientConnection, reason: str) -> None:
        """Give up on a connection that still looks open, and reconnect."""
        if conn is not self._conn:
            return
        self._lost(conn, reason)
        if conn.transport is not None:
            conn.transport.abortConnection()

    def _connection_lost(self, conn: ClientConnection, reason: Failure | None) -> None:
        if conn is self._conn:
            text = reason.getErrorMessage() if reason is not None else "connection lost"
            self._lost(conn, text)

    def _drop(self, conn: ClientConnection, reason: str) -> None:
        """Forget ``conn``: stop its timers, put its unconfirmed sends back in the outbox."""
        if conn is not self._conn:
            return
        self._conn = None
        for call in (self._ping_call, self._dead_call, self._ack_call):
            self._cancel(call)
        self._ping_call = self._dead_call = self._ack_call = None
        self._syncing = self._sync_again = False
        waiting = [m.id for m in self.outgoing.values()
                   if m.state == SENDING and m.id in self._send_timers]
        for id in waiting:
            self._cancel(self._send_timers.pop(id))
        for message in self.outgoing.values():
            message.attempts = 0
        self._outbox = waiting + [i for i in self._outbox if i not in waiting]

    def _lost(self, conn: ClientConnection, reason: str) -> None:
        node = self.node
        self._drop(conn, reason)
        self.emit(Disconnected(node, reason))
        if self._stopping:
            return
        self._failed_node = node.id if node else None
        self._schedule_reconnect()

    # ------------------------------------------------------------ frames

    def _frame_received(self, conn: ClientConnection, frame: F._Frame) -> None:
        if conn is not self._conn:
            return
        handler = getattr(self, "_on_" + F.frame_type(frame), None)
        if handler is not None:
            handler(conn, frame)

    def _on_welcome(self, conn: ClientConnection, frame: F.Welcome) -> None:
        self.welcome = frame
        self.heartbeat = max(1, frame.heartbeat)
        self.state = CONNECTED
        self._attempt = 0
        self._failed_node = None
        self._acked = 0
        self._last_ack_at = float("-inf")
        assert self.node is not None
        if frame.node and frame.node != self.node.id:
            self.node = NodeAddress(frame.node, self.node.host, self.node.port)
        self._cancel(self._dead_call)
        self._dead_call = self.reactor.callLater(2 * self.heartbeat, self._dead, conn)
        self._wrote(conn)
        self.emit(Connected(self.node, frame.user, frame.last_seq))
        self._flush_outbox()
        if frame.last_seq > self.last_seq or self._ahead:
            self._request_sync()
        elif self.last_seq:
            self._ack_wanted = True

    def _on_sent(self, conn: ClientConnection, frame: F.Sent) -> None:
        message = self.outgoing.get(frame.id)
        if message is not None:
            self._stop_resending(message.id)
            message.mid, message.seq, message.ts = frame.mid, frame.seq, frame.ts
            message.error = None
            if self.cache is not None:
                self.cache.put(ChatMessage(
                    seq=frame.seq, mid=frame.mid, id=frame.id, sender=self.user, ts=frame.ts,
                    to=message.to, group=message.group, body=message.body, kind=message.kind,
                    delivered=message.state == DELIVERED))
        self._note_seq(frame.seq)
        if message is not None and message.state in (SENDING, FAILED):
            message.state = SENT
            self.emit(MessageStatus(message.id, SENT, message))

    def _on_msg(self, conn: ClientConnection, frame: F.Msg) -> None:
        if frame.seq <= self.last_seq or frame.seq in self._ahead:
            self._ack_wanted = True  # a retransmission: our ack may have been lost
            return
        entry = ChatMessage(seq=frame.seq, mid=frame.mid, id=frame.id, sender=frame.from_,
                            ts=frame.ts, to=frame.to, group=frame.group, body=frame.body,
                            kind=frame.kind, delivered=frame.delivered, read=frame.read)
        if self.cache is not None:
            self.cache.put(entry)
        self._note_seq(frame.seq)
        mine = self.outgoing.get(frame.id) if frame.from_ == self.user else None
        if mine is not None:
            # Our own message, listed by a sync before its `sent` reached us.
            self._stop_resending(mine.id)
            mine.mid, mine.seq, mine.ts = frame.mid, frame.seq, frame.ts
            state = DELIVERED if frame.delivered else SENT
            if mine.state != state and mine.state != DELIVERED:
                mine.state = state
                self.emit(MessageStatus(mine.id, state, mine))
        else:
            self.emit(MessageReceived(entry))

    def _on_delivered(self, conn: ClientConnection, frame: F.Delivered) -> None:
        if self.cache is not None:
            self.cache.mark_delivered(frame.mid)
        message = self.outgoing.get(frame.id)
        if message is not None and message.mid in (None, frame.mid):
            self._stop_resending(frame.id)
            message.mid = frame.mid
            if message.state != DELIVERED:
                message.state = DELIVERED
                self.emit(MessageStatus(message.id, DELIVERED, message))
        self.emit(Delivered(frame.id, frame.mid, frame.by))

    def _on_synced(self, conn: ClientConnection, frame: F.Synced) -> None:
        self._syncing = False
        progressed = self.last_seq > self._sync_after
        again, self._sync_again = self._sync_again, False
        if progressed and (frame.more or again or self._ahead):
            self._request_sync()
        else:
            self.emit(SyncFinished(self.last_seq))

    def _on_error(self, conn: ClientConnection, frame: F.Error) -> None:
        self.emit(ServerError(frame.code, frame.message, frame.ref))
        if frame.code == errors.Unauthorized.code:
            self._drop(conn, frame.message)
            if conn.transport is not None:
                conn.transport.loseConnection()
            self._expire(frame.message)
            return
        message = self.outgoing.get(frame.ref) if frame.ref else None
        if message is not None and message.state == SENDING:
            self._stop_resending(message.id)
            if frame.code == errors.RateLimited.code:
                # Not the message's fault: keep the resend timer's pace.
                self._send_timers[message.id] = self.reactor.callLater(
                    SEND_TIMEOUT, self._send_timeout, message.id)
                return
            message.state, message.error = FAILED, f"{frame.code}: {frame.message}"
            self.emit(MessageStatus(message.id, FAILED, message))

    def _on_goaway(self, conn: ClientConnection, frame: F.Goaway) -> None:
        self._connection_broken(conn, f"node going away: {frame.reason}")

    # ------------------------------------------------------------ seq bookkeeping

    def _note_seq(self, seq: int) -> None:
        """Record that inbox position ``seq`` was handled; sync if a gap shows."""
        if seq <= self.last_seq or seq in self._ahead:
            self._ack_wanted = True
            return
        self._ahead.add(seq)
        while self.last_seq + 1 in self._ahead:
            self._ahead.remove(self.last_seq + 1)
            self.last_seq += 1
        if self._ahead:
            self._request_sync()

    def _request_sync(self) -> None:
        if not self.connected:
            return
        if self._syncing:
            self._sync_again = True
            return
        self._syncing = True
        self._sync_after = self.last_seq
        assert self._conn is not None
        self._conn.sendFrame(F.Sync(after=self.last_seq, limit=SYNC_PAGE))

    def _batch_done(self, conn: ClientConnection) -> None:
        """After a batch of received frames: persist the seq and ack it (coalesced)."""
        if conn is not self._conn:
            return
        if self.cache is not None and self.cache.last_seq != self.last_seq:
            self.cache.last_seq = self.last_seq
        if not (self.last_seq > self._acked or self._ack_wanted) or self.last_seq == 0:
            return
        if self._ack_call is not None:
            return
        wait = self._last_ack_at + ACK_INTERVAL - self.reactor.seconds()
        if wait <= 0:
            self._flush_ack(conn)
        else:
            self._ack_call = self.reactor.callLater(wait, self._ack_due, conn)

    def _ack_due(self, conn: ClientConnection) -> None:
        self._ack_call = None
        self._flush_ack(conn)

    def _flush_ack(self, conn: ClientConnection) -> None:
        if conn is not self._conn or not self.connected or self.last_seq == 0:
            return
        if self.last_seq > self._acked or self._ack_wanted:
            conn.sendFrame(F.Ack(seq=self.last_seq))
            self._acked = self.last_seq
            self._ack_wanted = False
            self._last_ack_at = self.reactor.seconds()

    # ------------------------------------------------------------ sending

    def _flush_outbox(self) -> None:
        if not self.connected:
            return
        pending, self._outbox = self._outbox, []
        for id in pending:
            message = self.outgoing[id]
            if message.state == SENDING and id not in self._send_timers:
                self._transmit(message)

    def _transmit(self, message: OutgoingMessage) -> None:
        assert self._conn is not None
        self._conn.sendFrame(F.Send(id=message.id, to=message.to, group=message.group,
                                    body=message.body, kind=message.kind))
        message.attempts += 1
        self._send_timers[message.id] = self.reactor.callLater(
            SEND_TIMEOUT, self._send_timeout, message.id)

    def _stop_resending(self, id: str) -> None:
        """The node answered message ``id``: no resend timer, no place in the outbox."""
        self._cancel(self._send_timers.pop(id, None))
        if id in self._outbox:
            self._outbox.remove(id)

    def _send_timeout(self, id: str) -> None:
        self._send_timers.pop(id, None)
        message = self.outgoing[id]
        if message.state != SENDING:
            return
        if not self.connected:
            if id not in self._outbox:
                self._outbox.append(id)
            return
        if message.attempts < 2:
            self._transmit(message)
        else:
            message.state, message.error = FAILED, "no answer from the node"
            self.emit(MessageStatus(id, FAILED, message))

    @staticmethod
    def _cancel(call: Any) -> None:
        if call is not None and call.active():
            call.cancel()


# ---------------------------------------------------------------- what the chat is given


class ChatClient(EventSource):
    """Login, the live session, the local cache and saved settings: what the chat talks to.

    Listeners subscribed here hear every session event, across logins.  All methods that
    talk to the network return Deferreds; everything else answers at once from memory and
    the cache.
    """

    def __init__(self, gateway: GatewayClient, reactor: Any, *,
                 config: ClientConfig | None = None,
                 cache_factory: Callable[[str, str], MessageCache] | None = MessageCache.open_for,
                 device: str = "dim-chat", rng: Callable[[], float] = random.random,
                 endpoint_factory: Callable[[Any, str, int], IStreamClientEndpoint] = default_endpoint,
                 ) -> None:
        super().__init__()
        self.gateway = gateway
        self.reactor = reactor
        self.config = config
        self.cache_factory = cache_factory
        self.device = device
        self.rng = rng
        self.endpoint_factory = endpoint_factory
        self.user: str | None = None
        self.session: ClientSession | None = None
        self.cache: MessageCache | None = None

    # ------------------------------------------------------------ state

    @property
    def state(self) -> str:
        """offline, connecting, connected or reconnecting."""
        return self.session.state if self.session else OFFLINE

    @property
    def node(self) -> NodeAddress | None:
        """The node the session is (or was last) connected to."""
        return self.session.node if self.session else None

    # ------------------------------------------------------------ logging in

    def resume(self, user: str | None = None) -> bool:
        """Start with a saved token of ``user`` (default: the last user); False if none."""
        if self.config is None:
            return False
        user = user or self.config.user
        token = self.config.token(self.gateway.base_url, user) if user else None
        if not user or not token:
            return False
        self.gateway.token = token
        self._start(user, token, None)
        return True

    def login(self, user: str, password: str) -> Deferred[None]:
        """Log in and connect; fails with a DimError (Unauthorized for a wrong password)."""
        d = self.gateway.login(user, password)

        def logged_in(answer: dict[str, Any]) -> None:
            name = answer.get("user") or user
            if self.config is not None:
                self.config.remember(self.gateway.base_url, name)
                self.config.save_token(self.gateway.base_url, name, answer["token"],
                                       answer.get("expires"))
            self._start(name, answer["token"], answer.get("node"))
        return d.addCallback(logged_in)

    def register(self, user: str, password: str) -> Deferred[None]:
        """Create the account, then log in with it."""
        d = self.gateway.register(user, password)
        return d.addCallback(lambda _: self.login(user, password))

    def logout(self) -> None:
        """Disconnect and forget the saved token."""
        if self.session is not None:
            self.session.stop()
        if self.config is not None and self.user:
            self.config.forget_token(self.gateway.base_url, self.user)

    def stop(self) -> None:
        """Disconnect (keeping the saved token) and close the cache."""
        if self.session is not None:
            self.session.stop()
            self.session.cache = None
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def _start(self, user: str, token: str, node: dict[str, Any] | None) -> None:
        if self.session is not None:
            self.session.stop()
        if self.cache is not None and self.user != user:
            self.cache.close()
            self.cache = None
        self.user = user
        if self.cache is None and self.cache_factory is not None:
            self.cache = self.cache_factory(self.gateway.base_url, user)
        self.session = ClientSession(self.gateway, self.reactor, user, token, device=self.device,
                                     cache=self.cache, rng=self.rng,
                                     endpoint_factory=self.endpoint_factory)
        self.session.subscribe(self._relay)
        self.session.start(node)

    def _relay(self, event: SessionEvent) -> None:
        if isinstance(event, SessionExpired) and self.config is not None and self.user:
            self.config.forget_token(self.gateway.base_url, self.user)
        self.emit(event)

    # ------------------------------------------------------------ messages

    def send(self, to: str, body: str) -> OutgoingMessage:
        """Send ``body`` to ``to``; the returned message changes state as events report."""
        if self.session is None:
            raise errors.Unauthorized("not logged in")
        return self.session.send(to, body)

    def retry(self, id: str) -> OutgoingMessage:
        """Send a failed message again."""
        if self.session is None:
            raise errors.Unauthorized("not logged in")
        return self.session.retry(id)

    def conversations(self) -> list[Conversation]:
        """Every conversation with its unread count, newest first."""
        return self.cache.conversations() if self.cache is not None else []

    def history(self, peer: str, before_seq: int | None = None,
                limit: int = 50) -> Deferred[list[ChatMessage]]:
        """Up to ``limit`` messages of one conversation below ``before_seq``, oldest first.

        Reads the cache; if the cache lacks inbox positions below ``before_seq`` it first
        fetches them from the gateway (``GET /v1/messages``) and caches them.
        """
        cache = self.cache
        if cache is None:
            return succeed([])
        gap = cache.first_missing(before_seq)
        if gap is None or self.gateway.token is None:
            return succeed(cache.history(peer, before_seq, limit))
        upto = before_seq if before_seq is not None else (self.session.last_seq + 1
                                                         if self.session else gap + 1000)
        fetch_from = max(gap - 1, upto - 1 - 1000, 0)
        d = self.gateway.messages(after=fetch_from, limit=min(1000, max(1, upto - 1 - fetch_from)))

        def fetched(answer: dict[str, Any]) -> list[ChatMessage]:
            if self.cache is not None:
                self.cache.put_many(ChatMessage.from_json(m) for m in answer.get("messages", []))
                return self.cache.history(peer, before_seq, limit)
            return []

        def offline(f: Failure) -> list[ChatMessage]:
            log.info("could not fetch older messages: {f}", f=f.getErrorMessage())
            return cache.history(peer, before_seq, limit) if self.cache is not None else []
        return d.addCallbacks(fetched, offline)

    def pending(self, peer: str) -> list[OutgoingMessage]:
        """Messages to ``peer`` this session sent that have no seq yet (sending or failed)."""
        if self.session is None:
            return []
        return [m for m in self.session.outgoing.values() if m.peer() == peer and m.seq is None]

    def outgoing(self, id: str) -> OutgoingMessage | None:
        """A message this session sent, by id."""
        return self.session.outgoing.get(id) if self.session else None

    def mark_seen(self, peer: str) -> None:
        """The person has seen everything in ``peer``'s conversation."""
        if self.cache is not None:
            self.cache.mark_seen(peer)

    def user_info(self, name: str) -> Deferred[dict[str, Any]]:
        """Whether ``name`` exists and is online: ``{user, online}``; NotFound if no such user."""
        return self.gateway.user(name)
