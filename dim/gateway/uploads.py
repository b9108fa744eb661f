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

Only requests for the upload route with an ``Authorization`` header are streamed to storage;
others of that route have their body dropped and get their answer (401, 503) from the route.
Every other request is an ordinary :class:`twisted.web.server.Request`.
"""
from __future__ import annotations

import io
from http import HTTPStatus
from typing import Any

from twisted.web.iweb import INonQueuedRequestFactory
from twisted.web.server import Request
from zope.interface import implementer

from dim.errors import DimError, TooLarge
from dim.files import FileStorage, Upload
from dim.gateway.errors import error_json

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

    def __init__(self, channel: Any, storage: FileStorage | None, limit: int) -> None:
        super().__init__(channel)
        self.storage = storage
        self.limit = limit
        self.streamed = False
        self.upload: Upload | None = None
        self.refused = False
        self._received = 0
        self._linger: Any = None

    def gotLength(self, length: int | None) -> None:
        """Headers are in: for the upload route, start an upload or refuse it at once."""
        command = getattr(self.channel, "_command", None)
        path = (getattr(self.channel, "_path", None) or b"").split(b"?", 1)[0]
        if command != UPLOAD_METHOD or path != UPLOAD_PATH:
            super().gotLength(length)
            return
        self.streamed = True
        self.content = io.BytesIO()
        if length is not None and length > self.limit:
            self.refuse(TooLarge(f"the file is over the limit of {self.limit} bytes"))
            return
        if self.storage is not None and self.requestHeaders.hasHeader(b"authorization"):
            self.upload = self.storage.begin(self.limit)

    def handleContentChunk(self, data: bytes) -> None:
        """A piece of the body: into the upload, dropped, or (elsewhere) the usual way."""
        if not self.streamed:
            super().handleContentChunk(data)
            return
        self._received += len(data)
        if self.refused or self.upload is None:
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
        self.channel.transport.write(head + body)
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
        if self.streamed:
            self.notifyFinish().addBoth(self._discard)
        super().requestReceived(command, path, version)

    def connectionLost(self, reason: Any) -> None:
        """The client went away: a half-written upload is discarded."""
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

    def __init__(self, storage: FileStorage | None, limit: int) -> None:
        self.storage = storage
        self.limit = limit

    def __call__(self, channel: Any) -> StreamingRequest:
        return StreamingRequest(channel, self.storage, self.limit)
