"""One client's TCP connection to a node.

:class:`ClientConnection` decodes frames, answers ``ping`` itself, enforces ``hello`` first,
records when it last heard from the client, and hands every other frame to a handler
injected at construction (``handler.on_<type>(conn, frame)``).  Whatever the handler raises
or errbacks becomes an ``error`` frame here, the one boundary where the error tree meets the
wire.  The handler also hears ``connection_made(conn)`` and ``connection_lost(conn)``.
"""
from __future__ import annotations

import enum
from typing import Any, Protocol as TypingProtocol, cast
from collections.abc import Iterable

import msgspec
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from dim import errors
from dim.node import metrics
from dim.protocol import codec
from dim.protocol import frames as F
from dim.protocol.wire import FrameProtocol

_log = Logger()

_PONG = codec.encode(F.Pong())

#: Requests a connection may have in flight before it stops reading from its socket.
MAX_IN_FLIGHT = 512
#: In-flight requests below which a paused connection reads again.
RESUME_IN_FLIGHT = 128
#: Unsent bytes above which a connection gets no live pushes (they stay in the inbox).
PUSH_LIMIT = 256 * 1024
#: Unsent bytes above which a connection is closed at once with ``slow_consumer``.
MAX_OUTPUT = 8 * 1024 * 1024


def unsent_bytes(transport: Any) -> int:
    """How many bytes written to ``transport`` still wait to reach the socket.

    Reads Twisted's file-descriptor buffers (``dataBuffer``, ``offset``, ``_tempDataLen``);
    for TLS the wrapped TCP transport's (the encrypted bytes).  0 for transports without
    them (test doubles).
    """
    layers: tuple[Any, ...] = (transport, getattr(transport, "transport", None))
    for t in layers:
        buffer = getattr(t, "dataBuffer", None)
        if buffer is not None:
            return len(buffer) - t.offset + t._tempDataLen
    return 0


class ConnectionState(enum.Enum):
    """Where a connection is in its life."""

    NEW = "new"                        # connected, no hello yet
    AUTHENTICATING = "authenticating"  # hello received, welcome not yet sent
    READY = "ready"                    # welcome sent
    CLOSED = "closed"                  # connection lost


class ConnectionHandler(TypingProtocol):
    """What a :class:`ClientConnection` hands its frames to (``NodeCore`` in the node).

    Besides these, ``on_send``, ``on_ack``, ``on_sync`` and any ``on_<type>`` may be defined;
    a frame type with no method gets ``unknown_type``.  Methods may return a Deferred.
    """

    def connection_made(self, conn: ClientConnection) -> None:
        """A client connected."""

    def connection_lost(self, conn: ClientConnection) -> None:
        """A client's connection ended, for whatever reason."""

    def on_hello(self, conn: ClientConnection, frame: F.Hello) -> Any:
        """Authenticate; call :meth:`ClientConnection.welcome` on success."""


class ClientConnection(FrameProtocol):
    """A client's framed connection; frames go to the handler, errors come back as frames."""

    frame_types = F.CLIENT_FRAME_TYPES

    def __init__(self, handler: ConnectionHandler, clock: IReactorTime,
                 max_frame: int = F.DEFAULT_MAX_FRAME, push_limit: int = PUSH_LIMIT,
                 max_output: int = MAX_OUTPUT) -> None:
        self.handler = handler
        self.clock = clock
        self.max_frame = max_frame
        self.push_limit = push_limit
        self.max_output = max_output
        self.state = ConnectionState.NEW
        #: The handler's per-session state, set once the client is authenticated.
        self.session: Any = None
        self.connected_at = 0.0
        self.last_heard = 0.0
        self._in_flight = 0
        #: Why reading is paused: "requests" (too many in flight), "writes" (the client
        #: does not read what it is sent).  Reading resumes when no reason is left.  A tuple,
        #: since the empty one costs nothing and idle connections are rarely paused.
        self._pause_reasons: tuple[str, ...] = ()
        #: Since when the client has not been reading (None while it keeps up).
        self.write_congested_since: float | None = None
        self._backpressure: _WriteBackpressure | None = None
        #: When the node started closing this connection (None while it is not).
        self.closing_since: float | None = None
        #: A fatal error waiting for the requests in flight before it (their answers go
        #: first), after which the connection closes.
        self._fatal_pending: errors.DimError | None = None

    # ------------------------------------------------------------------ lifecycle

    def connectionMade(self) -> None:
        # FrameProtocol.connectionMade would only build a plain decoder; this one names the
        # types it rejects (building a decoder costs about 30 us, so it is built once).
        self.decoder = _TypeNamingDecoder(self.frame_types, self.max_frame)
        # Frames are small and answered at once: Nagle's algorithm would hold them back
        # behind delayed ACKs for tens of milliseconds.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            try:
                set_no_delay(True)
            except OSError:
                pass
        self.connected_at = self.last_heard = self.clock.seconds()
        if getattr(self.transport, "registerProducer", None) is not None:
            self._backpressure = _WriteBackpressure(self)
            self.transport.registerProducer(self._backpressure, True)
        self.handler.connection_made(self)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if self.state is ConnectionState.CLOSED:
            return
        self.state = ConnectionState.CLOSED
        self.handler.connection_lost(self)

    @property
    def is_open(self) -> bool:
        """Whether frames written now can still reach the client."""
        return (self.state is not ConnectionState.CLOSED and self.transport is not None
                and not self.transport.disconnecting)

    @property
    def welcomed(self) -> bool:
        """Whether the client is authenticated (``welcome`` was sent)."""
        return self.state is ConnectionState.READY

    def close(self, error: errors.DimError | None = None) -> None:
        """Close the connection, after sending ``error`` if one is given."""
        if not self.is_open:
            return
        if error is not None:
            self._write_error(error)
        self._lose()

    def abort(self) -> None:
        """Drop the connection at once, without flushing what is buffered."""
        if self.state is not ConnectionState.CLOSED and self.transport is not None:
            self._unregister_backpressure()
            self.transport.abortConnection()

    # ------------------------------------------------------------------ reading

    def dataReceived(self, data: bytes) -> None:
        self.last_heard = self.clock.seconds()
        super().dataReceived(data)

    def frameRejected(self, error: errors.DimError) -> None:
        if not self.is_open or self._fatal_pending is not None:
            return
        if self.state is not ConnectionState.READY and not error.fatal:
            rejected = getattr(error, "frame_type", None)
            if rejected != "hello":
                error = errors.Unauthorized(f"{rejected or 'a frame'} before welcome: "
                                            "send hello first")
        self.sendError(error)

    def frameReceived(self, frame: F._Frame) -> None:
        ftype = F.frame_type(frame)
        metrics.frame_in(ftype)
        if not self.is_open or self._fatal_pending is not None:
            return
        state = self.state
        if state is ConnectionState.READY:
            if type(frame) is F.Ping:
                # A handler may answer with more than a bare pong (NodeCore adds last_seq).
                if hasattr(self.handler, "on_ping"):
                    self._dispatch(frame, "on_ping")
                else:
                    self.pong()
            elif type(frame) is F.Hello:
                self.sendError(errors.BadRequest("already authenticated: hello was sent twice"))
            else:
                self._dispatch(frame, "on_" + ftype)
        elif type(frame) is F.Hello:
            if state is ConnectionState.NEW:
                self.state = ConnectionState.AUTHENTICATING
                self._dispatch(frame, "on_hello")
            else:
                self.sendError(errors.BadRequest("hello was sent twice"))
        else:
            self.sendError(errors.Unauthorized(f"{ftype} before welcome: send hello first"))

    def _dispatch(self, frame: F._Frame, name: str) -> None:
        method = getattr(self.handler, name, None)
        if method is None:
            self.sendError(errors.UnknownType(f"{F.frame_type(frame)} is not accepted by this node",
                                              ref=getattr(frame, "id", None)))
            return
        try:
            result = method(self, frame)
        except Exception:
            self._failed(Failure(), frame)
            return
        if isinstance(result, Deferred):
            if result.called and not result.paused:
                if isinstance(result.result, Failure):
                    result.addErrback(self._failed, frame)
            else:
                self._in_flight += 1
                if self._in_flight >= MAX_IN_FLIGHT:
                    self.pause_reading("requests")
                result.addErrback(self._failed, frame)
                result.addBoth(self._settled)

    def request_began(self) -> None:
        """A handler took a request it answers later without a Deferred (a batched store
        write): count it in flight, as a pending Deferred would be."""
        self._in_flight += 1
        if self._in_flight >= MAX_IN_FLIGHT:
            self.pause_reading("requests")

    def request_ended(self, frame: F._Frame, failure: Failure | None = None) -> None:
        """The request of :meth:`request_began` is answered; a failure becomes the
        ``error`` frame it would have been as a Deferred's."""
        if failure is not None:
            self._failed(failure, frame)
        self._settled(None)

    def _settled(self, _: object) -> None:
        self._in_flight -= 1
        if self._fatal_pending is not None and self._in_flight <= 0:
            error, self._fatal_pending = self._fatal_pending, None
            if self.is_open:
                self._write_error(error)
                self._lose()
            return
        if self._in_flight <= RESUME_IN_FLIGHT and "requests" in self._pause_reasons:
            self.resume_reading("requests")

    def pause_reading(self, reason: str) -> None:
        """Stop reading from the socket for ``reason`` (until :meth:`resume_reading`)."""
        reasons = self._pause_reasons
        if not reasons and self.is_open:
            self.transport.pauseProducing()
        if reason not in reasons:
            self._pause_reasons = reasons + (reason,)

    def resume_reading(self, reason: str) -> None:
        """Drop one reason to pause; read again when none is left."""
        reasons = self._pause_reasons
        if reason not in reasons:
            return
        self._pause_reasons = reasons = tuple(r for r in reasons if r != reason)
        if not reasons and self.is_open:
            self.transport.resumeProducing()

    def _failed(self, failure: Failure, frame: F._Frame) -> None:
        if failure.check(errors.DimError):
            error = cast(errors.DimError, failure.value)
        else:
            _log.failure("handling a {type} frame failed", failure, type=F.frame_type(frame))
            error = errors.Internal("the node failed to handle this frame; it may be retried")
        if error.ref is None:
            ref = getattr(frame, "id", None)
            if isinstance(ref, str):
                error.ref = ref
        if type(frame) is F.Hello and self.state is ConnectionState.AUTHENTICATING:
            self.state = ConnectionState.NEW
        if self.is_open:
            self.sendError(error)

    # ------------------------------------------------------------------ writing

    def welcome(self, frame: F.Welcome) -> None:
        """Send ``welcome``: from now on the client may send any frame."""
        if self.state is ConnectionState.CLOSED:
            return
        self.state = ConnectionState.READY
        self.sendFrame(frame)

    def pong(self, last_seq: int | None = None) -> None:
        """Answer a ``ping`` (with the inbox's ``last_seq`` when it is known)."""
        if self.is_open:
            self.transport.write(_PONG if last_seq is None
                                 else codec.encode(F.Pong(last_seq=last_seq)))
            metrics.frame_out("pong")

    def sendFrame(self, frame: F._Frame) -> None:
        """Write one frame, if the connection is still open."""
        if self.is_open:
            self.transport.write(codec.encode(frame))
            metrics.frame_out(F.frame_type(frame))
            self._check_output()

    def send_frames(self, frames: Iterable[F._Frame]) -> None:
        """Write several frames in one write."""
        if not self.is_open:
            return
        frames = list(frames)
        if frames:
            self.transport.write(codec.encode_many(frames))
            for frame in frames:
                metrics.frame_out(F.frame_type(frame))
            self._check_output()

    def write_encoded(self, data: bytes, frame_type: str) -> None:
        """Write one frame already encoded (shared by several sessions)."""
        if self.is_open:
            self.transport.write(data)
            metrics.frame_out(frame_type)
            self._check_output()

    @property
    def output_backlog(self) -> int:
        """Bytes written to this connection that the client has not taken yet."""
        return unsent_bytes(self.transport)

    def takes_pushes(self) -> bool:
        """Whether live pushes may be written now: open, and the client keeps up with what
        it is sent (less than ``push_limit`` bytes wait).  A push not written stays in the
        inbox; the client finds it by the next gap, ``pong.last_seq`` or a sync."""
        return self.is_open and unsent_bytes(self.transport) <= self.push_limit

    def _check_output(self) -> None:
        """Close the connection with ``slow_consumer`` once more than ``max_output`` bytes
        wait for a client that does not read: what a node buffers for one client is
        bounded whatever the client does."""
        if unsent_bytes(self.transport) > self.max_output and self.is_open:
            metrics.count("slow_consumers")
            _log.info("closing a connection that left {n} bytes unread",
                      n=unsent_bytes(self.transport))
            self.close(errors.SlowConsumer(
                f"more than {self.max_output} bytes sent to this connection wait unread"))

    def sendError(self, error: errors.DimError) -> None:
        """Send an ``error`` frame; close the connection if the error is fatal.

        A fatal error behind requests still in flight (a batched store write, say) waits
        for their answers, so that a valid ``send`` before a broken frame still gets its
        ``sent``; nothing more is read meanwhile."""
        if error.fatal and self._in_flight > 0 and self.state is ConnectionState.READY:
            if self._fatal_pending is None and self.is_open:
                self._fatal_pending = error
                self.pause_reading("closing")
            return
        self._write_error(error)
        if error.fatal:
            self._lose()

    def _lose(self) -> None:
        # A registered producer would keep the transport open: let it go first.
        self._unregister_backpressure()
        if self.closing_since is None:
            self.closing_since = self.clock.seconds()
        self.transport.loseConnection()

    def _unregister_backpressure(self) -> None:
        if self._backpressure is not None:
            self._backpressure = None
            self.transport.unregisterProducer()

    def _write_error(self, error: errors.DimError) -> None:
        metrics.error(error.code)
        self.transport.write(codec.encode(codec.error_frame(error)))
        metrics.frame_out("error")


class _TypeNamingDecoder(codec.FrameDecoder):
    """A decoder whose non-fatal rejections say which frame type they rejected, so that
    before welcome a broken ``hello`` gets ``bad_request`` and anything else
    ``unauthorized``."""

    __slots__ = ()

    def _decode(self, payload: bytes) -> codec.Decoded:
        item = super()._decode(payload)
        if isinstance(item, errors.DimError) and not item.fatal:
            try:
                obj = msgspec.json.decode(payload)
            except msgspec.DecodeError:
                obj = None
            ftype = obj.get("type") if isinstance(obj, dict) else None
            item.frame_type = ftype if isinstance(ftype, str) else None  # type: ignore[attr-defined]
        return item


@implementer(IPushProducer)
class _WriteBackpressure:
    """Told by the transport when its write buffer fills (the client is not reading what
    it is sent) and when it drains: reading from that client stops meanwhile, so a client
    that floods requests without reading the answers cannot make the node buffer without
    bound.  The heartbeat sweep drops clients that stay congested."""

    __slots__ = ("conn",)

    def __init__(self, conn: ClientConnection) -> None:
        self.conn = conn

    def pauseProducing(self) -> None:
        conn = self.conn
        if conn.write_congested_since is None:
            conn.write_congested_since = conn.clock.seconds()
        conn.pause_reading("writes")

    def resumeProducing(self) -> None:
        self.conn.write_congested_since = None
        self.conn.resume_reading("writes")

    def stopProducing(self) -> None:
        pass


#: The attributes a TCP transport of a client connection ends up with: Twisted's own, then
#: ``registerProducer`` (backpressure) and the first write.
_TRANSPORT_ATTRIBUTES = ("reactor", "_tempDataBuffer", "_tempDataLen", "socket", "fileno",
                         "protocol", "server", "client", "sessionno", "hostname", "logstr",
                         "repstr", "connected", "producer", "streamingProducer", "dataBuffer",
                         "offset")
_transport_attributes_known = False


def _announce_transport_attributes() -> None:
    """Let CPython size every TCP transport for all the attributes it will get.

    CPython (3.11+) keeps an instance's attributes in an array sized from what its class's
    shared key table held when the instance was made, and that table stops growing once many
    instances were made with fewer attributes.  Twisted's accepted transports get 13
    attributes in ``__init__``; a client connection adds 4 more later (``registerProducer``,
    then the first write).  When the table froze before learning the last of them (the
    process's first connections, such as port probes, never wrote), every transport turned
    its attributes into a full dict on its first write: 832 bytes per idle connection.  One
    unused instance given all 17 names, before any connection is accepted, teaches the table
    them.  Nothing else changes; on other interpreters this costs one small object.
    """
    global _transport_attributes_known
    if _transport_attributes_known:
        return
    _transport_attributes_known = True
    from twisted.internet import tcp
    sample = tcp.Server.__new__(tcp.Server)
    for name in _TRANSPORT_ATTRIBUTES:
        setattr(sample, name, None)


class ConnectionFactory(Factory):
    """Builds a :class:`ClientConnection` bound to one handler for every accepted socket."""

    def __init__(self, handler: ConnectionHandler, clock: IReactorTime,
                 max_frame: int = F.DEFAULT_MAX_FRAME, push_limit: int = PUSH_LIMIT,
                 max_output: int = MAX_OUTPUT) -> None:
        _announce_transport_attributes()
        self.handler = handler
        self.clock = clock
        self.max_frame = max_frame
        self.push_limit = push_limit
        self.max_output = max_output

    def buildProtocol(self, addr: Any) -> ClientConnection:
        conn = ClientConnection(self.handler, self.clock, self.max_frame, self.push_limit,
                                self.max_output)
        conn.factory = self
        return conn
