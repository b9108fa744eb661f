"""The one error tree of DIM.

Every failure a client can see is a :class:`DimError` carrying one of the contract's error
codes.  The node turns it into an ``error`` frame and the gateway into an HTTP status with
``{"error": {"code", "message"}}``; nothing below those boundaries knows about either.
"""
from __future__ import annotations


class DimError(Exception):
    """A failure with a contract error code, an HTTP status and a human message."""

    code: str = "internal"
    status: int = 500
    #: Whether the node closes the connection after sending the ``error`` frame.
    fatal: bool = False

    def __init__(self, message: str | None = None, ref: str | None = None) -> None:
        self.message = message or (self.__class__.__doc__ or "").splitlines()[0].rstrip(".")
        self.ref = ref
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, ref={self.ref!r})"


class BadFrame(DimError):
    """The bytes are not a frame: not UTF-8 JSON, or not an object with a string type."""

    code, status, fatal = "bad_frame", 400, True


class FrameTooLarge(DimError):
    """The frame's length is zero or above max_frame."""

    code, status, fatal = "frame_too_large", 413, True


class Unauthorized(DimError):
    """Not authenticated, or the token is invalid, expired or revoked."""

    code, status, fatal = "unauthorized", 401, True


class IdleTimeout(DimError):
    """Nothing was heard on this connection for too long."""

    code, status, fatal = "idle_timeout", 408, True


class UnknownType(DimError):
    """The frame type is not one this side accepts."""

    code, status = "unknown_type", 400


class BadRequest(DimError):
    """A field is missing or invalid."""

    code, status = "bad_request", 400


class NotFound(DimError):
    """No such user, group or file."""

    code, status = "not_found", 404


class Forbidden(DimError):
    """Not allowed."""

    code, status = "forbidden", 403


class TooLarge(DimError):
    """The content is above the allowed size."""

    code, status = "too_large", 413


class RateLimited(DimError):
    """Too many requests; slow down."""

    code, status = "rate_limited", 429

    def __init__(self, message: str | None = None, ref: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message, ref)
        #: Seconds until the request would be accepted again, when known.
        self.retry_after = retry_after


class Internal(DimError):
    """The server failed; the request may be retried."""

    code, status = "internal", 500


class Conflict(DimError):
    """The name is already taken."""

    code, status = "conflict", 409


class SlowConsumer(DimError):
    """The client does not read what it is sent; it should reconnect and sync."""

    code, status, fatal = "slow_consumer", 503, True


class Unavailable(DimError):
    """No node is available."""

    code, status = "unavailable", 503


#: Every error class by its contract code.
BY_CODE: dict[str, type[DimError]] = {
    cls.code: cls
    for cls in (BadFrame, FrameTooLarge, Unauthorized, IdleTimeout, UnknownType, BadRequest,
                NotFound, Forbidden, TooLarge, RateLimited, Internal, Conflict, SlowConsumer,
                Unavailable)
}
