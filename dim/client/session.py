"""The client core: one user's live session with DIM, outside any user interface.

:class:`ClientSession` speaks the wire contract to a node: ``hello``/``welcome``, heartbeats,
sending with resend and failure, seq bookkeeping (gaps, duplicates, ``sync``), coalesced
cumulative ``ack``, and reconnecting through the gateway with exponential backoff and full
jitter.  It tells its listeners what happened with small dataclass events, so a user
interface (the terminal chat), a test or the load generator never touches frames
(:mod:`dim.client.events`).


Policies worth knowing:

- Heartbeat: a ``ping`` after H seconds without writing; the connection is dead after 2H
  seconds without hearing anything (10 s before ``welcome``).  A ``pong`` whose
  ``last_seq`` is above the session's starts a ``sync``, so an idle client finds a message
  whose ``msg`` was lost on its way between nodes within one heartbeat.
- Acks: after each batch of received bytes, the highest contiguous seq is acked at once if no
  ack went out in the last :data:`ACK_INTERVAL` seconds, else once that interval has passed.
  So an idle client acks immediately and a busy one at most every 50 ms.
- Sends: :meth:`ClientSession.send` (and :meth:`~ClientSession.edit`,
  :meth:`~ClientSession.recall`, :meth:`~ClientSession.react`) returns a Deferred that fires
  with :class:`dim.client.events.Sent` (the node's ``mid``, ``seq`` and ``ts``, and a
  ``delivered`` Deferred) once the node stored it.  No ``sent`` :data:`SEND_TIMEOUT` seconds
  after writing: it is written once more with the same id; no ``sent`` 4 s after that: it is
  ``failed`` (the Deferred fails with :class:`~dim.client.events.SendTimedOut`) until
  :meth:`ClientSession.retry`.  An ``error`` naming it fails it with
  :class:`~dim.client.events.SendRefused`.  A write whose connection is lost goes back to the
  outbox and is written again, with the same id, after reconnecting; one made offline waits
  there (neither fails while offline, nor when :meth:`ClientSession.stop` is called: they go
  after a later ``start``).  When the session expires (its token refused), every write not
  stored yet fails with :class:`~dim.client.events.WriteExpired`, and so does one made on
  the expired session until it is started again with a new token.  A write refused with
  ``rate_limited`` is written again after the error's ``retry_after`` (those refused
  together one after another, that far apart), and that refusal does not count as an
  attempt.  These ordinary failures are not logged as "Unhandled error in Deferred" when
  nobody handles them (the events told the person); the Deferred still holds the failure
  for whoever adds an errback later.
- Memory: ``outgoing`` and ``changes`` keep every write being sent, but only the newest
  :data:`KEPT_WRITES` stored ones and the :data:`KEPT_WRITES` that failed last (until
  retried); receipts for an older stored one still come as events, by mid, and fire its
  ``delivered``.
- Reconnect: delay ``uniform(0, min(8, 0.5 * 2 ** (attempt - 1)))`` (so a restarted server
  is found again within 8 s), or at once on :meth:`ClientSession.reconnect_now`; the route
  asks the gateway to exclude the node that failed, and asks again without exclusion if that
  leaves no node (a single-node ``dim`` comes back on the same node).
- Typing: :meth:`ClientSession.typing` writes at most one ``typing`` per conversation every
  :data:`TYPING_INTERVAL` seconds; nothing is queued while offline.
- Read: :meth:`ClientSession.read` is cumulative; a lower or equal seq than the last one
  written is not written again, and one asked for while offline goes out after ``welcome``.
  :meth:`ClientSession.read_conversation` does the same per conversation.
"""
from __future__ import annotations

import ipaddress
import itertools
import random
import secrets
import time
from typing import TYPE_CHECKING, Any, Protocol, cast
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from dim import errors
from dim.client.cache import ChatMessage, MessageCache, conversation_of
from dim.client.events import (CONNECTED, CONNECTING, Connected, Connecting, DELIVERED, Delivered,
    Disconnected, EDIT, EventSource, FAILED, MessageReceived, MessageStatus, NodeAddress,
    Notified, OFFLINE, Offline, OutgoingChange, OutgoingMessage, PeerTyping, PresenceChanged,
    READ, REACTION, RECALL, RECONNECTING, ReadReceipt, ReadUpTo, Reconnecting, SENDING, SENT,
    STATE_RANK, SendRefused, SendTimedOut, Sent, ServerError, SessionExpired, SyncFinished,
    WriteExpired)
from dim.client.conversations import conversation_read_event
from dim.client.tls import tls_endpoint
from dim.protocol import frames as F
from dim.protocol.wire import FrameProtocol

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

log = Logger()

SEND_TIMEOUT = 4.0
HELLO_TIMEOUT = 10.0
ACK_INTERVAL = 0.05
BACKOFF_BASE = 0.5
BACKOFF_CAP = 8.0
SYNC_PAGE = 500
#: A sync unanswered this long is asked again; one refused by an error, after SYNC_RETRY.
SYNC_TIMEOUT = 10.0
SYNC_RETRY = 1.0
TYPING_INTERVAL = 3.0
#: The decoder's frame limit on the client side; generous, the node limits what it sends.
CLIENT_MAX_FRAME = 1 << 20
#: How many of its stored writes, and of its failed ones, a session remembers (in
#: ``outgoing`` and ``changes`` together), the newest; older ones are forgotten, so a long
#: session's memory stays bounded.
KEPT_WRITES = 1000


# ---------------------------------------------------------------- the wire


class NodeConnection(FrameProtocol):
    """The client's TCP connection to a node; frames go to and come from its
    :class:`ClientSession`.  The node's end is :class:`dim.node.connection.ClientConnection`."""

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
    """Delay before reconnect attempt ``attempt`` (from 1).

    Uniform in [0, min(cap, base*2^(n-1))]."""
    return rng() * min(cap, base * (2 ** min(attempt - 1, 32)))


#: A write of this session the node answers with ``sent``: a message, or a change to one.
Outgoing = OutgoingMessage | OutgoingChange

#: What a write's Deferred fails with in the ordinary course (the events tell of them too).
ORDINARY_FAILURES = (SendTimedOut, SendRefused, WriteExpired)


def _fail_quietly(d: Deferred[Sent], reason: Exception) -> None:
    """Fail ``d`` with ``reason``, an ordinary failure of a write: if nothing in its chain
    handles it, Twisted is not to log it as unhandled when ``d`` is collected (a caller that
    does not wait for a send is told by the events), yet ``d`` keeps the failure for an
    errback added later.  A failure the caller's chain turned into another is still logged."""
    d.errback(Failure(reason))
    result = getattr(d, "result", None)
    info = getattr(d, "_debugInfo", None)
    if isinstance(result, Failure) and result.check(*ORDINARY_FAILURES) and info:
        info.failResult = None


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
    A node with ``tls: true`` is connected to with TLS over ``endpoint_factory``'s endpoint,
    its certificate verified against ``trust_root`` (the system's authorities when None).
    """

    def __init__(self, gateway: RouteSource, reactor: Any, user: str, token: str, *,
                 device: str | None = "dim-chat", last_seq: int | None = None,
                 cache: MessageCache | None = None, rng: Callable[[], float] = random.random,
                 endpoint_factory: Callable[[Any, str, int],
                                            IStreamClientEndpoint] = default_endpoint,
                 trust_root: IOpenSSLTrustRoot | None = None,
                 ) -> None:
        super().__init__()
        self.gateway = gateway
        self.reactor = reactor
        self.trust_root = trust_root
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
        #: The messages this session sent, by id: every one being sent, and the newest
        #: :data:`KEPT_WRITES` stored writes and as many failed ones.
        self.outgoing: dict[str, OutgoingMessage] = {}
        #: The edits, recalls and reactions this session wrote, by id, kept the same way.
        self.changes: dict[str, OutgoingChange] = {}
        #: The Deferreds waiting for the ``sent`` of a write, and for its first ``delivered``.
        self._waiting: dict[str, list[Deferred[Sent]]] = {}
        self._delivery: dict[str, list[Deferred[None]]] = {}
        #: The writes remembered that a recipient acknowledged.
        self._delivered: set[str] = set()
        #: The writes remembered that the node stored, oldest first.
        self._stored: dict[str, None] = {}
        #: The writes that failed, oldest failure first (some may have been retried since).
        self._failures: dict[str, None] = {}
        #: The mids of writes forgotten while their ``delivered`` Deferreds still wait.
        self._forgotten: dict[str, str] = {}
        self._outbox: list[str] = []
        self._send_timers: dict[str, Any] = {}
        #: When the last send refused with ``rate_limited`` is due to go again.
        self._rate_next = float("-inf")
        self._counter = itertools.count(1)
        self._id_prefix = secrets.token_hex(3)

        self.state = OFFLINE
        self.node: NodeAddress | None = None
        self.heartbeat: float | None = None
        self.welcome: F.Welcome | None = None
        self._conn: NodeConnection | None = None
        self._stopping = False
        #: Why the token was refused, once it was (until the session is started again).
        self._expired: str | None = None
        self._attempt = 0
        self._failed_node: str | None = None
        self._reconnect_call: Any = None
        self._ping_call: Any = None
        self._dead_call: Any = None
        self._ack_call: Any = None
        self._sync_call: Any = None
        self._acked = 0
        self._ack_wanted = False
        self._last_ack_at = float("-inf")
        self._syncing = False
        self._sync_again = False
        self._sync_after = 0
        #: The highest seq a ``read`` was written for, and the highest one asked for.
        self._read_sent = 0
        self._read_wanted = 0
        #: The same per conversation, by (with, group).
        self._conversation_read_sent: dict[tuple[str | None, str | None], int] = {}
        self._conversation_read_wanted: dict[tuple[str | None, str | None], int] = {}
        #: When a ``typing`` was last written, per conversation.
        self._typed_at: dict[str, float] = {}

    # ------------------------------------------------------------ public API

    @property
    def connected(self) -> bool:
        """Whether a node has welcomed this session and the connection is up."""
        return self.state == CONNECTED and self._conn is not None

    def start(self, node: NodeAddress | dict[str, Any] | None = None) -> None:
        """Connect to ``node`` (from login), or to whichever node the gateway routes to.

        An expired session can be started again once ``token`` is a new one."""
        self._stopping = False
        self._expired = None
        if isinstance(node, dict):
            node = NodeAddress.from_json(node)
        if node is not None:
            self._connect(node)
        else:
            self._route()

    def stop(self) -> None:
        """Disconnect and stay offline.  Writes not stored yet stay in the outbox, their
        Deferreds pending, and go (with the same ids) after a later :meth:`start`."""
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
             kind: str = "text", file: dict[str, Any] | None = None,
             reply_to: str | None = None, mentions: list[str] | None = None,
             id: str | None = None) -> Deferred[Sent]:
        """Send ``body`` to user ``to`` (or a group): a Deferred firing with :class:`Sent`
        once the node stored it, or failing with :class:`SendTimedOut` or
        :class:`SendRefused`.

        ``file`` (an uploaded file's ``{id, name, size, mime}``) goes with kind "image" or
        "file", ``body`` being its caption.  ``reply_to`` is the mid of the message it
        answers (of the same conversation); ``mentions`` the group members it calls.
        ``id`` is the message's id (:meth:`new_id` when not given): the message is
        ``outgoing[id]`` at once, and a ``MessageStatus`` (sending) has told listeners before
        this returns.  An id already used answers for that write instead (a failed one is
        tried again, as :meth:`retry` does).  Offline, the message waits in the outbox.
        Raises BadRequest or TooLarge at once for a message the node would refuse.
        """
        if (to is None) == (group is None):
            raise errors.BadRequest("a message goes to exactly one of a user and a group")
        if len(body.encode("utf-8")) > F.MAX_BODY_BYTES:
            raise errors.TooLarge(f"the message is over {F.MAX_BODY_BYTES} bytes")
        if file is not None:
            if kind not in ("image", "file"):
                raise errors.BadRequest("a file goes with kind image or file")
            file = {k: file[k] for k in ("id", "name", "size", "mime") if k in file}
            if len(file) != 4:
                raise errors.BadRequest("a file needs id, name, size and mime")
        if mentions and group is None:
            raise errors.BadRequest("only a group message mentions people")
        if mentions and len(set(mentions)) > F.MAX_MENTIONS:
            raise errors.BadRequest(f"a message mentions at most {F.MAX_MENTIONS} people")
        if id is not None and self._known(id):
            return self.retry(id)
        message = OutgoingMessage(id=id or self.new_id(), body=body, to=to, group=group,
                                  kind=kind, file=file, created=self._now_ms(),
                                  reply_to=reply_to,
                                  mentions=list(dict.fromkeys(mentions)) if mentions else None)
        self.outgoing[message.id] = message
        return self._write(message)

    def edit(self, mid: str, body: str, *, id: str | None = None) -> Deferred[Sent]:
        """Replace the body of one's own text message ``mid`` with ``body``; a Deferred as
        :meth:`send`'s (the node refuses with ``forbidden`` or ``not_found``)."""
        if not body.strip():
            raise errors.BadRequest("an edit needs some text")
        if len(body.encode("utf-8")) > F.MAX_BODY_BYTES:
            raise errors.TooLarge(f"the message is over {F.MAX_BODY_BYTES} bytes")
        return self._change(EDIT, mid, body, True, id)

    def recall(self, mid: str, *, id: str | None = None) -> Deferred[Sent]:
        """Take back one's own message ``mid``; a Deferred as :meth:`send`'s."""
        return self._change(RECALL, mid, "", True, id)

    def react(self, mid: str, emoji: str, on: bool = True, *,
              id: str | None = None) -> Deferred[Sent]:
        """Add (``on``) or remove the reaction ``emoji`` to message ``mid``; a Deferred as
        :meth:`send`'s."""
        if not 1 <= len(emoji) <= F.MAX_EMOJI:
            raise errors.BadRequest(f"a reaction is 1-{F.MAX_EMOJI} characters")
        return self._change(REACTION, mid, emoji, on, id)

    def _change(self, kind: str, mid: str, body: str, on: bool,
                id: str | None) -> Deferred[Sent]:
        if not 1 <= len(mid) <= 64:
            raise errors.BadRequest("a message id is 1-64 characters")
        if id is not None and self._known(id):
            return self.retry(id)
        change = OutgoingChange(id=id or self.new_id(), kind=kind, ref=mid, body=body, on=on,
                                created=self._now_ms())
        self.changes[change.id] = change
        return self._write(change)

    def _known(self, id: str) -> bool:
        """Whether ``id`` names a write of this session already (else checks it is one the
        node accepts)."""
        if id in self.outgoing or id in self.changes:
            return True
        if not (1 <= len(id) <= 64 and all(" " <= c <= "~" for c in id)):
            raise errors.BadRequest("an id is 1-64 printable ASCII characters")
        return False

    def _write(self, item: Outgoing) -> Deferred[Sent]:
        """Queue a new write and write it if connected; the Deferred of its ``sent``.  On an
        expired session it fails at once (nothing would ever write it)."""
        d = self._wait(item.id)
        self._outbox.append(item.id)
        if isinstance(item, OutgoingMessage):
            self.emit(MessageStatus(item.id, SENDING, item))
        if self._expired is not None:
            self._expire_write(item, self._expired)
        self._flush_outbox()
        return d

    def retry(self, id: str) -> Deferred[Sent]:
        """Write a failed message (or change) again, with the same id (so it is never stored
        twice); a Deferred as :meth:`send`'s.  For one that did not fail, the Deferred
        answers for the write under way (or at once, if it was stored).  KeyError for an id
        this session never wrote, or one it forgot (:data:`KEPT_WRITES`)."""
        item = self._item(id)
        if item is None:
            raise KeyError(id)
        if item.state != FAILED:
            if item.seq is not None and item.mid is not None and item.ts is not None:
                return succeed(self._sent(item))
            return self._wait(id)
        item.state, item.error, item.attempts = SENDING, None, 0
        return self._write(item)

    def _item(self, id: str | None) -> Outgoing | None:
        if id is None:
            return None
        return self.outgoing.get(id) or self.changes.get(id)

    def _now_ms(self) -> int:
        return int(self.reactor.seconds() * 1000)

    def reconnect_now(self) -> bool:
        """Connect again at once: skip the backoff wait, or drop a connection that looks
        stuck.  False if the session is stopped."""
        if self._stopping:
            return False
        self._attempt = 0
        if self._reconnect_call is not None:
            self._cancel(self._reconnect_call)
            self._reconnect_call = None
            self._route()
            return True
        conn = self._conn
        if conn is not None:
            self._connection_broken(conn, "reconnecting at the person's request")
            return True
        if self.state == OFFLINE:
            self._route()
        return True

    def read(self, seq: int) -> bool:
        """The person has seen everything of the inbox up to ``seq``: tell the node (cumulative).

        Returns whether a ``read`` was written now (else it is not needed, or waits for the
        connection).
        """
        seq = min(seq, self.last_seq)
        if seq <= self._read_wanted:
            return False
        self._read_wanted = seq
        return self._flush_read()

    def read_conversation(self, seq: int, *, with_: str | None = None,
                          group: str | None = None) -> bool:
        """The person has seen the conversation with user ``with_`` (or ``group``) up to
        ``seq`` (only what is on screen): tell the node (cumulative, forward only).

        Returns whether a ``read`` was written now; else it is not needed (not above the one
        asked for before) or waits for the connection (only the highest per conversation).
        """
        if (with_ is None) == (group is None):
            raise errors.BadRequest("a conversation is one of a user and a group")
        key = (with_, group)
        if seq <= self._conversation_read_wanted.get(key, 0):
            return False
        self._conversation_read_wanted[key] = seq
        return self._flush_conversation_read(key)

    def _flush_conversation_read(self, key: tuple[str | None, str | None]) -> bool:
        wanted = self._conversation_read_wanted.get(key, 0)
        if not self.connected or wanted <= self._conversation_read_sent.get(key, 0):
            return False
        assert self._conn is not None
        self._conn.sendFrame(F.Read(seq=wanted, with_=key[0], group=key[1]))
        self._conversation_read_sent[key] = wanted
        return True

    def typing(self, to: str | None = None, group: str | None = None) -> bool:
        """The person is typing to ``to`` (or in ``group``): a ``typing`` frame, at most one
        per conversation every :data:`TYPING_INTERVAL` seconds.  True if one was written."""
        if (to is None) == (group is None):
            raise errors.BadRequest("typing goes to exactly one of a user and a group")
        if not self.connected:
            return False
        key = "#" + group if group is not None else str(to)
        now = self.reactor.seconds()
        if now - self._typed_at.get(key, float("-inf")) < TYPING_INTERVAL:
            return False
        self._typed_at[key] = now
        assert self._conn is not None
        self._conn.sendFrame(F.Typing(to=to, group=group))
        return True

    def _flush_read(self) -> bool:
        if not self.connected or self._read_wanted <= self._read_sent:
            return False
        assert self._conn is not None
        self._conn.sendFrame(F.Read(seq=self._read_wanted))
        self._read_sent = self._read_wanted
        return True

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
            self._expire(cast(errors.Unauthorized, f.value).message)
            return
        log.info("route failed: {f}", f=f.getErrorMessage())
        self._schedule_reconnect()

    def _connect(self, node: NodeAddress) -> None:
        self.node = node
        if self.state != RECONNECTING:
            self.state = CONNECTING
        self.emit(Connecting(node))
        endpoint = self.endpoint_factory(self.reactor, node.host, node.port)
        if node.tls:
            endpoint = tls_endpoint(endpoint, node.host, self.trust_root)
        factory = Factory.forProtocol(lambda: NodeConnection(self))
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
        """The token was refused: stay offline, and fail every write not stored yet (none
        could ever be written with this token)."""
        self._stopping = True
        self._expired = message
        self.state = OFFLINE
        self.emit(SessionExpired(message))
        self.emit(Offline("session expired"))
        items: list[Outgoing] = [*self.outgoing.values(), *self.changes.values()]
        for item in items:
            if item.state == SENDING:
                self._expire_write(item, message)

    def _expire_write(self, item: Outgoing, message: str) -> None:
        self._stop_resending(item.id)
        self._failed(item, WriteExpired(item.id, message), f"session expired: {message}")

    # ------------------------------------------------------------ connection events

    def _connection_made(self, conn: NodeConnection) -> None:
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

    def _heard(self, conn: NodeConnection) -> None:
        if conn is self._conn and self._dead_call is not None and self.heartbeat:
            self._dead_call.reset(2 * self.heartbeat)

    def _wrote(self, conn: NodeConnection) -> None:
        if conn is not self._conn or not self.heartbeat:
            return
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.reset(self.heartbeat)
        else:
            self._ping_call = self.reactor.callLater(self.heartbeat, self._ping, conn)

    def _ping(self, conn: NodeConnection) -> None:
        self._ping_call = None
        if conn is self._conn:
            conn.sendFrame(F.Ping())

    def _dead(self, conn: NodeConnection) -> None:
        self._dead_call = None
        if conn is not self._conn:
            return
        waited = 2 * self.heartbeat if self.heartbeat else HELLO_TIMEOUT
        self._connection_broken(conn, f"nothing heard from the node for {waited:g} s")

    def _connection_broken(self, conn: NodeConnection, reason: str) -> None:
        """Give up on a connection that still looks open, and reconnect."""
        if conn is not self._conn:
            return
        self._lost(conn, reason)
        if conn.transport is not None:
            conn.transport.abortConnection()

    def _connection_lost(self, conn: NodeConnection, reason: Failure | None) -> None:
        if conn is self._conn:
            text = reason.getErrorMessage() if reason is not None else "connection lost"
            self._lost(conn, text)

    def _drop(self, conn: NodeConnection, reason: str) -> None:
        """Forget ``conn``: stop its timers, put its unconfirmed sends back in the outbox."""
        if conn is not self._conn:
            return
        self._conn = None
        for call in (self._ping_call, self._dead_call, self._ack_call, self._sync_call):
            self._cancel(call)
        self._ping_call = self._dead_call = self._ack_call = self._sync_call = None
        self._syncing = self._sync_again = False
        items: list[Outgoing] = [*self.outgoing.values(), *self.changes.values()]
        waiting = [i.id for i in items if i.state == SENDING and i.id in self._send_timers]
        for id in waiting:
            self._cancel(self._send_timers.pop(id))
        for item in items:
            item.attempts = 0
        self._outbox = waiting + [i for i in self._outbox if i not in waiting]

    def _lost(self, conn: NodeConnection, reason: str) -> None:
        node = self.node
        self._drop(conn, reason)
        self.emit(Disconnected(node, reason))
        if self._stopping:
            return
        self._failed_node = node.id if node else None
        self._schedule_reconnect()

    # ------------------------------------------------------------ frames

    def _frame_received(self, conn: NodeConnection, frame: F._Frame) -> None:
        if conn is not self._conn:
            return
        handler = getattr(self, "_on_" + F.frame_type(frame), None)
        if handler is not None:
            handler(conn, frame)

    def _on_pong(self, conn: NodeConnection, frame: F.Pong) -> None:
        # A node that tells the inbox's last seq lets an idle client find a message whose
        # ``msg`` never came (its notification was lost between nodes): sync up to it.
        if frame.last_seq is not None and frame.last_seq > self.last_seq:
            self._request_sync()

    def _on_welcome(self, conn: NodeConnection, frame: F.Welcome) -> None:
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
        self._flush_read()
        for key in list(self._conversation_read_wanted):
            self._flush_conversation_read(key)
        if frame.last_seq > self.last_seq or self._ahead:
            self._request_sync()
        elif self.last_seq:
            self._ack_wanted = True

    def _on_sent(self, conn: NodeConnection, frame: F.Sent) -> None:
        item = self._item(frame.id)
        if item is not None:
            self._stop_resending(item.id)
            item.mid, item.seq, item.ts = frame.mid, frame.seq, frame.ts
            item.error = None
            if isinstance(item, OutgoingMessage) and self.cache is not None:
                self.cache.put(ChatMessage(
                    seq=frame.seq, mid=frame.mid, id=frame.id, sender=self.user, ts=frame.ts,
                    to=item.to, group=item.group, body=item.body, kind=item.kind,
                    delivered=STATE_RANK[item.state] >= STATE_RANK[DELIVERED],
                    read=item.state == READ and item.group is None, file=item.file,
                    reply_to=item.reply_to, mentions=item.mentions))
        self._note_seq(frame.seq)
        if item is not None:
            if item.state in (SENDING, FAILED):
                item.state = SENT
                if isinstance(item, OutgoingMessage):
                    self.emit(MessageStatus(item.id, SENT, item))
            self._resolve(item)

    def _on_msg(self, conn: NodeConnection, frame: F.Msg) -> None:
        if frame.seq <= self.last_seq or frame.seq in self._ahead:
            self._ack_wanted = True  # a retransmission: our ack may have been lost
            return
        entry = ChatMessage.from_frame(frame)
        if self.cache is not None:
            self.cache.put(entry)
        self._note_seq(frame.seq)
        mine = self._item(frame.id) if frame.from_ == self.user else None
        if mine is None:
            self.emit(MessageReceived(entry))
            return
        # Our own write, listed by a sync before its `sent` reached us.
        self._stop_resending(mine.id)
        mine.mid, mine.seq, mine.ts = frame.mid, frame.seq, frame.ts
        if isinstance(mine, OutgoingMessage):
            state = READ if frame.read else DELIVERED if frame.delivered else SENT
            if STATE_RANK[state] > STATE_RANK[mine.state] or mine.state == FAILED:
                mine.state = state
                self.emit(MessageStatus(mine.id, state, mine))
        else:
            if mine.state in (SENDING, FAILED):
                mine.state, mine.error = SENT, None
            self.emit(MessageReceived(entry))  # a change is shown by what it changes
        self._resolve(mine)
        if frame.delivered or frame.read:
            self._mark_delivered(mine.id)

    def _on_delivered(self, conn: NodeConnection, frame: F.Delivered) -> None:
        self._receipt(frame.id, frame.mid, frame.by, read=False)

    def _advance(self, message: OutgoingMessage, state: str) -> None:
        """Move one's own message forward to ``state`` (never back), telling listeners."""
        if STATE_RANK[state] > STATE_RANK[message.state] or message.state == FAILED:
            message.state, message.error = state, None
            self.emit(MessageStatus(message.id, state, message))

    def _on_read(self, conn: NodeConnection, frame: F.ReadNotice) -> None:
        conversation_read = conversation_read_event(frame)
        if conversation_read is not None:
            # One conversation was read on another device: not the whole inbox.
            if frame.by == self.user:
                # Read on another device: no need to claim it again from here.
                key = (conversation_read.with_, conversation_read.group)
                for pointers in (self._conversation_read_sent, self._conversation_read_wanted):
                    pointers[key] = max(pointers.get(key, 0), conversation_read.seq)
                self.emit(conversation_read)  # type: ignore[arg-type]
            return
        if frame.seq is not None:
            if frame.by != self.user:
                return
            # Another device of this user read up to seq: no need to claim it again.
            self._read_sent = max(self._read_sent, frame.seq)
            self._read_wanted = max(self._read_wanted, frame.seq)
            if self.cache is not None:
                self.cache.mark_read_upto(frame.seq)
            self.emit(ReadUpTo(frame.seq))
            return
        if frame.mid is not None:
            self._receipt(frame.id, frame.mid, frame.by, read=True)

    def _receipt(self, id: str | None, mid: str, by: str, *, read: bool) -> None:
        """Recipient ``by`` acknowledged (``delivered``) or read message ``mid`` of this user,
        write ``id`` of this session or not: note it in the cache and on the write, tell
        listeners, and fire the write's ``delivered`` (read implies delivered)."""
        if self.cache is not None:
            if read:
                self.cache.mark_read(mid)
            else:
                self.cache.mark_delivered(mid)
            self.cache.add_receipt(mid, by, read)
        item = self._item(id)
        mine = item is not None and item.mid in (None, mid)
        if item is not None and mine:
            self._stop_resending(item.id)
            item.mid = mid
            if isinstance(item, OutgoingMessage):
                item.delivered_by.add(by)
                if read:
                    item.read_by.add(by)
                # A group message is read once every member read it; the listing says when.
                self._advance(item, READ if read and item.group is None else DELIVERED)
        self.emit(ReadReceipt(id or "", mid, by) if read else Delivered(id or "", mid, by))
        if item is not None and mine:
            self._mark_delivered(item.id)
        elif item is None:
            self._forgotten_delivered(id, mid)

    def _on_presence(self, conn: NodeConnection, frame: F.Presence) -> None:
        self.emit(PresenceChanged(frame.user, frame.online))

    def _on_typing(self, conn: NodeConnection, frame: F.TypingNotice) -> None:
        if frame.from_ == self.user:
            return
        self.emit(PeerTyping(frame.from_, conversation_of(self.user, frame.from_, frame.to,
                                                          frame.group)))

    def _on_notify(self, conn: NodeConnection, frame: F.Notify) -> None:
        fields = {k: v for k, v in (("from", frame.from_), ("user", frame.user),
                                    ("group", frame.group)) if v is not None}
        self.emit(Notified(frame.event, fields))

    def _on_synced(self, conn: NodeConnection, frame: F.Synced) -> None:
        self._cancel(self._sync_call)
        self._sync_call = None
        self._syncing = False
        progressed = self.last_seq > self._sync_after
        again, self._sync_again = self._sync_again, False
        if progressed and (frame.more or again or self._ahead):
            self._request_sync()
        else:
            self.emit(SyncFinished(self.last_seq))

    def _on_error(self, conn: NodeConnection, frame: F.Error) -> None:
        self.emit(ServerError(frame.code, frame.message, frame.ref))
        if frame.ref is None and self._syncing and frame.code != errors.Unauthorized.code:
            # An error without a ref answers a frame that had no id: while a sync is out,
            # most likely that sync (the node could not read the inbox). Ask again soon.
            self._retry_sync(SYNC_RETRY)
        if frame.code == errors.Unauthorized.code:
            self._drop(conn, frame.message)
            if conn.transport is not None:
                conn.transport.loseConnection()
            self._expire(frame.message)
            return
        item = self._item(frame.ref)
        if item is not None and item.state == SENDING:
            self._stop_resending(item.id)
            if frame.code == errors.RateLimited.code:
                self._rate_limited(item, frame.retry_after)
                return
            self._failed(item, SendRefused.of(frame.code, frame.message, item.id),
                         f"{frame.code}: {frame.message}")

    def _rate_limited(self, message: Outgoing, retry_after: float | None) -> None:
        """The node refused a send for now: not the message's fault, and no attempt lost.
        Refused sends go again one after another, ``retry_after`` apart (the time the node
        needs for one more), so a long paste drains at the node's pace instead of failing."""
        message.attempts = 0
        wait = retry_after if retry_after is not None and retry_after > 0 else SEND_TIMEOUT
        now = self.reactor.seconds()
        at = max(now, self._rate_next) + wait
        self._rate_next = at
        self._send_timers[message.id] = self.reactor.callLater(
            at - now, self._send_timeout, message.id)

    def _on_goaway(self, conn: NodeConnection, frame: F.Goaway) -> None:
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
        self._cancel(self._sync_call)
        self._sync_call = self.reactor.callLater(SYNC_TIMEOUT, self._retry_sync, 0.0)

    def _retry_sync(self, delay: float) -> None:
        """Give up on the sync in flight and ask again after ``delay`` seconds."""
        self._cancel(self._sync_call)
        self._syncing = False
        if delay:
            self._sync_call = self.reactor.callLater(delay, self._retry_sync, 0.0)
        else:
            self._sync_call = None
            self._request_sync()

    def _batch_done(self, conn: NodeConnection) -> None:
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

    def _ack_due(self, conn: NodeConnection) -> None:
        self._ack_call = None
        self._flush_ack(conn)

    def _flush_ack(self, conn: NodeConnection) -> None:
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
            item = self._item(id)
            if item is not None and item.state == SENDING and id not in self._send_timers:
                self._transmit(item)

    def _transmit(self, item: Outgoing) -> None:
        assert self._conn is not None
        self._conn.sendFrame(item.frame())
        item.attempts += 1
        self._send_timers[item.id] = self.reactor.callLater(
            SEND_TIMEOUT, self._send_timeout, item.id)

    def _stop_resending(self, id: str) -> None:
        """The node answered write ``id``: no resend timer, no place in the outbox."""
        self._cancel(self._send_timers.pop(id, None))
        if id in self._outbox:
            self._outbox.remove(id)

    def _send_timeout(self, id: str) -> None:
        self._send_timers.pop(id, None)
        item = self._item(id)
        if item is None or item.state != SENDING:
            return
        if not self.connected:
            if id not in self._outbox:
                self._outbox.append(id)
            return
        if item.attempts < 2:
            self._transmit(item)
        else:
            self._failed(item, SendTimedOut(id, item.attempts * SEND_TIMEOUT),
                         "no answer from the node")

    def _failed(self, item: Outgoing, reason: Exception, error: str) -> None:
        """Write ``item`` is failed: tell listeners, then fail the Deferreds waiting for it."""
        item.state, item.error = FAILED, error
        if isinstance(item, OutgoingMessage):
            self.emit(MessageStatus(item.id, FAILED, item))
        for d in self._waiting.pop(item.id, []):
            _fail_quietly(d, reason)
        self._failures.pop(item.id, None)
        self._failures[item.id] = None
        while len(self._failures) > KEPT_WRITES:
            oldest = next(iter(self._failures))
            del self._failures[oldest]
            if getattr(self._item(oldest), "state", None) == FAILED:
                self._forget(oldest)

    # ------------------------------------------------------------ the Deferreds of writes

    def _wait(self, id: str) -> Deferred[Sent]:
        """A new Deferred for the ``sent`` of write ``id``."""
        d: Deferred[Sent] = Deferred()
        self._waiting.setdefault(id, []).append(d)
        return d

    def _sent(self, item: Outgoing) -> Sent:
        assert item.mid is not None and item.seq is not None and item.ts is not None
        delivered: Deferred[None] = Deferred()
        if item.id in self._delivered:
            delivered.callback(None)
        else:
            self._delivery.setdefault(item.id, []).append(delivered)
        return Sent(item.id, item.mid, item.seq, item.ts, delivered)

    def _resolve(self, item: Outgoing) -> None:
        """Write ``item`` is stored: fire the Deferreds waiting for it, and forget the oldest
        stored write beyond the newest :data:`KEPT_WRITES`."""
        for d in self._waiting.pop(item.id, []):
            d.callback(self._sent(item))
        if item.id in self._stored:
            return
        self._stored[item.id] = None
        while len(self._stored) > KEPT_WRITES:
            self._forget(next(iter(self._stored)))

    def _forget(self, id: str) -> None:
        """Forget write ``id`` (stored, or failed long ago).  Receipts for it still come as
        events (by mid), and its ``delivered`` Deferreds still fire on the first of them."""
        self._stored.pop(id, None)
        item = self.outgoing.pop(id, None) or self.changes.pop(id, None)
        self._delivered.discard(id)
        if item is not None and item.mid is not None and id in self._delivery:
            self._forgotten[id] = item.mid

    def _forgotten_delivered(self, id: str | None, mid: str) -> None:
        """A receipt for a write that may have been forgotten: fire its ``delivered``."""
        if id is not None and self._forgotten.get(id) == mid:
            del self._forgotten[id]
            for d in self._delivery.pop(id, []):
                d.callback(None)

    def _mark_delivered(self, id: str) -> None:
        """A recipient acknowledged write ``id``: fire its ``delivered`` Deferreds, once."""
        if id in self._delivered:
            return
        self._delivered.add(id)
        self._forgotten.pop(id, None)
        for d in self._delivery.pop(id, []):
            d.callback(None)

    @staticmethod
    def _cancel(call: Any) -> None:
        if call is not None and call.active():
            call.cancel()

