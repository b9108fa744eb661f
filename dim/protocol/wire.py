"""Thin Twisted framing on top of the sans-IO codec.

:class:`FrameProtocol` feeds received bytes to a :class:`~dim.protocol.codec.FrameDecoder` and
hands each frame to :meth:`FrameProtocol.frameReceived`.  A rejected frame is answered with
one ``error`` frame; a fatal one also closes the connection.  Nothing here knows about users,
stores or reactors beyond the transport.
"""
from __future__ import annotations

from twisted.internet.interfaces import IConsumer, IPushProducer, ITCPTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import Attribute

from dim import errors
from dim.protocol import codec
from dim.protocol import frames as F


class IStreamTransport(ITCPTransport, IConsumer, IPushProducer):
    """What the reactor's TCP and TLS transports provide, as the protocols here use it."""

    disconnecting = Attribute("True once loseConnection was called.")


class FrameProtocol(Protocol):
    """A connection that speaks length-prefixed JSON frames."""

    #: Set by makeConnection before any other method runs.
    transport: IStreamTransport

    #: The frames this side accepts; nodes read client frames, clients read node frames.
    frame_types: tuple[type[F._Frame], ...] = F.CLIENT_FRAME_TYPES
    max_frame: int = F.DEFAULT_MAX_FRAME

    decoder: codec.FrameDecoder

    def connectionMade(self) -> None:
        self.decoder = codec.FrameDecoder(self.frame_types, self.max_frame)

    def dataReceived(self, data: bytes) -> None:
        for item in self.decoder.feed(data):
            if isinstance(item, errors.DimError):
                self.frameRejected(item)
            else:
                self.frameReceived(item)
            if self.transport is None or getattr(self.transport, "disconnecting", False):
                return

    def frameReceived(self, frame: F._Frame) -> None:
        """Handle one decoded frame."""
        raise NotImplementedError

    def frameRejected(self, error: errors.DimError) -> None:
        """Handle a frame the decoder rejected: answer it, and close if it was fatal."""
        self.sendError(error)

    def sendFrame(self, frame: F._Frame) -> None:
        """Write one frame."""
        self.transport.write(codec.encode(frame))

    def sendError(self, error: errors.DimError) -> None:
        """Report an error to the peer; close the connection if the error is fatal."""
        self.sendFrame(codec.error_frame(error))
        if error.fatal:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        pass
