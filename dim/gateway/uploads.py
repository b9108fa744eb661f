"""Uploads that stream to disk: a Twisted Web request whose body goes to file storage.

twisted.web reads a whole request body (into memory, or a temporary file when large) before
any resource sees the request.  For the upload route that would mean a 20 MiB body copied
twice; :class:`StreamingRequest` instead writes each chunk straight into an
:class:`dim.files.Upload` as it arrives (running sha256, size checked on every chunk).

A ``Content-Length`` over the limit is refused with 413 as soon as the headers are read
(before any ``100 Continue``); a chunked body is refused the moment its count passes the
limit.  A refusal writes the 413 at once, reads and drops whatever the client still sends (so
its socket is not reset before it reads the answer) and closes the connection when the body
ends or after :data:`LINGER` seconds; a client that waits for ``100 Continue`` sends nothing
more, so its connection closes at once.

An upload's token is checked before a byte of its body is kept: the connection stops reading
while the token is verified (the little that already arrived is held in memory), a bad token
is refused with 401 at once, and a good one opens the upload (and sends ``100 Continue`` to a
client waiting for it).  Requests for the upload route without an ``Authorization`` header
have their body dropped and get their answer (401, 503) from the route.

Every other request is an ordinary :class:`twisted.web.server.Request` whose body is capped
while it is read: a ``Content-Length`` over the cap, or a chunked body passing it, is refused
with 413 like an upload over its limit.

:class:`DeadlineChannel` gives each request a deadline to arrive whole (headers and body;
uploads have a longer one), whatever the pace of its bytes, and answers 408 and closes the
connection when it passes; :class:`GatewayHTTPFactory` caps the connections open at once
from one client address.
"""
from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol
from twisted.web.iweb import INonQueuedRequestFactory
from twisted.web.server import Request, Site
from zope.interface import implementer

from dim.errors import DimError, Internal, TooLarge, Unauthorized, Unavailable
from dim.files import FileStorage, Upload
from dim.gateway.errors import error_json

if TYPE_CHECKING:
    from dim.gateway.limits import GatewayLimits

_log = Logger()

#: Seconds a refused upload's connection stays open to drain the client's body.
LINGER = 5.0
#: The method and path of the route whose bodies are streamed.
UPLOAD_METHOD = b"POST"
UPLOAD_PATH = b"/v1/files"


class StreamingRequest(Request):
    """A request whose body, for the upload route, streams into file storage.

    After the body is in, the route finds the finished :class:`dim.files.Upload` (or None, when
    the body was dropped) in :attr:`upload`; :attr:`streamed` says this request took the body.
    """

    def __init__(self, channel: Any, storage: FileStorage | None, limit: int,
                 verify: Callable[[str], Any] | None = None,
                 body_limit: int | None = None) -> None:
        super().__init__(channel)
        self.storage = storage
        self.limit = limit
        self.verify = verify
        self.body_limit = body_limit
        self.streamed = False
        self.upload: Upload | None = None
        self.refused = False
        self._received = 0
        self._linger: Any = None
        #: While the token is checked: the chunks that arrived meanwhile, else None.
        self._held: list[bytes] | None = None
        self._continue = False
        self._received_args: tuple[bytes, bytes, bytes] | None = None
        self._gone = False

    def gotLength(self, length: int | None) -> None:
        """Headers are in: for the upload route, check the token then start an upload, or
        refuse at once; for another route, refuse a body over the cap."""
        if not is_upload(self.channel):
            super().gotLength(length)
            if (self.body_limit is not None and length is not None
                    and length > self.body_limit):
                self.refuse(TooLarge(f"the request body is over {self.body_limit} bytes"))
            return
        self.streamed = True
        self.content = io.BytesIO()
        if length is not None and length > self.limit:
            self.refuse(TooLarge(f"the file is over the limit of {self.limit} bytes"))
            return
        token = bearer(self.requestHeaders.getRawHeaders(b"authorization"))
        if self.storage is None or token is None:
            return
        if self.verify is None:
            self.upload = self.storage.begin(self.limit)
            return
        self._held = []
        expect = self.requestHeaders.getRawHeaders(b"expect") or [b""]
        self._continue = expect[0].lower() == b"100-continue"
        # No "100 Continue" before the token is known good.
        self.requestHeaders.removeHeader(b"expect")
        self._pause(True)
        d = defer.maybeDeferred(self.verify, token)
        d.addCallbacks(self._token_good, self._token_bad)

    def _pause(self, paused: bool) -> None:
        transport = getattr(self.channel, "transport", None)
        if transport is None:
            return
        if paused:
            transport.pauseProducing()
        else:
            transport.resumeProducing()

    def _token_good(self, user: Any) -> None:
        held, self._held = self._held or [], None
        if self._gone or self.refused:
            return
        try:
            self.upload = self.storage.begin(self.limit) if self.storage is not None else None
        except OSError:
            _log.failure("starting an upload failed")
            self.refuse(Unavailable("the upload cannot be stored now; retry"))
            self._pause(False)
            if self._received_args is not None:
                self._close()
            return
        for chunk in held:
            self._store_chunk(chunk)
        if self.refused:
            return
        if self._continue and not self._received:
            # The channel has its transport while one of its requests reads a body.
            self.channel.transport.write(  # type: ignore[union-attr]
                b"HTTP/1.1 100 Continue\r\n\r\n")
        self._pause(False)
        if self._received_args is not None:
            self.requestReceived(*self._received_args)

    def _token_bad(self, failure: Any) -> None:
        self._held = None
        if self._gone or self.refused:
            return
        error = failure.value
        if not isinstance(error, DimError):
            _log.failure("checking an upload's token failed", failure)
            error = Internal("the token could not be checked; retry")
        elif not isinstance(error, Unauthorized):
            error = Unauthorized(error.message)
        if self._continue and not self._received:
            self.requestHeaders.setRawHeaders(b"expect", [b"100-continue"])
        self.refuse(error)
        self._pause(False)
        if self._received_args is not None:
            self._close()

    def handleContentChunk(self, data: bytes) -> None:
        """A piece of the body: into the upload, held, dropped, or (elsewhere) capped and
        kept the usual way."""
        self._received += len(data)
        if self.refused:
            return
        if not self.streamed:
            if self.body_limit is not None and self._received > self.body_limit:
                self.refuse(TooLarge(f"the request body is over {self.body_limit} bytes"))
                return
            super().handleContentChunk(data)
            return
        if self._held is not None:
            self._held.append(data)
            return
        self._store_chunk(data)

    def _store_chunk(self, data: bytes) -> None:
        if self.upload is None:
            return
        try:
            self.upload.write(data)
        except TooLarge as e:
            self.upload = None
            self.refuse(e)

    def refuse(self, error: DimError) -> None:
        """Answer ``error`` now, before the body is in, then drain and close."""
        self.refused = True
        if self.upload is not None:
            self.upload.discard()
            self.upload = None
        expect = self.requestHeaders.getRawHeaders(b"expect") or [b""]
        waiting = expect[0].lower() == b"100-continue" and not self._received
        # No "100 Continue" may follow the answer.
        self.requestHeaders.removeHeader(b"expect")
        body = error_json(error)
        head = (f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode("ascii")
        self.channel.persistent = False
        self.channel.transport.write(head + body)  # type: ignore[union-attr]
        if waiting:
            # The client sends no body before a 100 Continue: nothing to drain.
            self._close()
        else:
            self._linger = self.channel.callLater(LINGER, self._close)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """The body is in: close a refused request's connection, process any other."""
        if self.refused:
            self._close()
            return
        if self._held is not None:
            # The token is still being checked: carry on once it is known.
            self._received_args = (command, path, version)
            return
        if self.streamed:
            self.notifyFinish().addBoth(self._discard)
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Any) -> None:
        """The client went away: a half-written upload is discarded."""
        self._gone = True
        self._discard(None)
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        super().connectionLost(reason)

    def _discard(self, result: Any) -> None:
        """Drop an upload the route did not keep (once answered, or the client went away:
        a lost connection is expected here, so the result is swallowed)."""
        if self.upload is not None:
            self.upload.discard()

    def _close(self) -> None:
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        self.channel.loseConnection()


@implementer(INonQueuedRequestFactory)
class StreamingRequestFactory:
    """Makes the requests of a Site: :class:`StreamingRequest` with the gateway's storage and
    size limit (``Site(resource, requestFactory=StreamingRequestFactory(storage, limit))``)."""

    def __init__(self, storage: FileStorage | None, limit: int,
                 verify: Callable[[str], Any] | None = None,
                 body_limit: int | None = None) -> None:
        self.storage = storage
        self.limit = limit
        self.verify = verify
        self.body_limit = body_limit

    def __call__(self, channel: Any, *queued: Any) -> StreamingRequest:
        return StreamingRequest(channel, self.storage, self.limit, self.verify,
                                self.body_limit)


def is_upload(channel: Any) -> bool:
    """Whether the request the channel is reading is for the upload route."""
    command = getattr(channel, "_command", None)
    path = (getattr(channel, "_path", None) or b"").split(b"?", 1)[0]
    return bool(command == UPLOAD_METHOD and path == UPLOAD_PATH)


def bearer(values: Sequence[bytes] | None) -> str | None:
    """The token of ``Authorization: Bearer <token>`` header values, or None."""
    if not values:
        return None
    scheme, _, token = values[0].decode("latin-1").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


class DeadlineChannel(HTTPChannel):
    """An HTTP channel giving each request ``request_timeout`` seconds from its first byte
    to its last (``upload_timeout`` for an upload, from the end of its headers): a client
    sending a byte now and then cannot keep a connection forever.  A request too slow is
    answered 408 and the connection closed (aborted if the client does not read)."""

    request_timeout = 30.0
    upload_timeout = 600.0
    _deadline: Any = None

    def dataReceived(self, data: bytes) -> None:
        """Bytes of a request: the first starts the request's deadline."""
        if data and not self._handlingRequest and self._deadline is None:
            self._deadline = self.callLater(self.request_timeout, self._too_slow)
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        """The headers are in: an upload gets its longer deadline for the body."""
        if self._deadline is not None and self._deadline.active() and is_upload(self):
            self._deadline.reset(self.upload_timeout)
        super().allHeadersReceived()

    def allContentReceived(self) -> None:
        """The request is in whole: no deadline while it is answered."""
        self._stop_deadline()
        super().allContentReceived()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The connection is gone: its deadline with it."""
        self._stop_deadline()
        super().connectionLost(reason)

    def _stop_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport is None:
            return
        peer = self.transport.getPeer()
        _log.info("closing a connection from {peer}: its request took too long to arrive",
                  peer=getattr(peer, "host", str(peer)))
        body = error_json(RequestTimeout())
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
            + body)
        self.persistent = False
        self.transport.loseConnection()
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)


class RequestTimeout(DimError):
    """The request did not arrive in time."""

    code, status = "bad_request", 408


class HTTPSite(Site):
    """The gateway's Site: :class:`DeadlineChannel` connections with the limits' deadlines
    and idle timeout (HTTP/1.1; the channel sits in twisted.web's usual wrapper, which
    would switch to HTTP/2 when TLS negotiates it)."""

    @staticmethod
    def protocol() -> Any:
        """A new connection's protocol: a DeadlineChannel in twisted.web's wrapper."""
        return _GenericHTTPChannelProtocol(DeadlineChannel())

    def __init__(self, resource: Any, limits: GatewayLimits, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.limits = limits

    def buildProtocol(self, addr: Any) -> Any:
        """A DeadlineChannel with the limits' deadlines."""
        wrapper = super().buildProtocol(addr)
        channel = getattr(wrapper, "_channel", wrapper)
        channel.request_timeout = self.limits.request_timeout
        channel.upload_timeout = self.limits.upload_timeout
        return wrapper


class GatewayHTTPFactory(WrappingFactory):
    """``site`` behind a cap of ``limits.max_connections_per_address`` connections open at
    once from one address (trusted proxies are not capped); a connection over the cap is
    closed at once."""

    def __init__(self, site: Site, limits: GatewayLimits) -> None:
        super().__init__(site)
        self.limits = limits
        #: Open connections by client address.
        self.open: dict[str, int] = {}

    def buildProtocol(self, addr: Any) -> Any:
        """A wrapped channel, or None (the connection is closed) over the cap."""
        host = str(getattr(addr, "host", "") or "")
        cap = self.limits.max_connections_per_address
        if (cap and host and host not in self.limits.trusted_proxies
                and self.open.get(host, 0) >= cap):
            _log.info("refusing a connection from {host}: {cap} already open",
                      host=host, cap=cap)
            return None
        wrapper = super().buildProtocol(addr)
        if wrapper is not None:
            wrapper.dim_host = host  # type: ignore[attr-defined]
        return wrapper

    def registerProtocol(self, p: ProtocolWrapper) -> None:
        """Count an open connection of its address."""
        super().registerProtocol(p)
        host = getattr(p, "dim_host", "")
        self.open[host] = self.open.get(host, 0) + 1

    def unregisterProtocol(self, p: ProtocolWrapper) -> None:
        """A connection closed: count it out."""
        super().unregisterProtocol(p)
        host = getattr(p, "dim_host", "")
        left = self.open.get(host, 0) - 1
        if left > 0:
            self.open[host] = left
        else:
            self.open.pop(host, None)
