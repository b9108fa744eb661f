"""Sans-IO codec: bytes to typed frames and frames to bytes.

A frame on the wire is a 4-byte unsigned big-endian length N followed by N bytes of UTF-8
JSON, one object with a string ``type``.  :class:`FrameDecoder` is fed bytes in any chunks and
returns, in order, decoded frames and :class:`~dim.errors.DimError` instances for frames it
rejected.  A fatal error (``bad_frame``, ``frame_too_large``) ends the stream: the decoder
returns nothing more.  It never raises for any input.
"""
from __future__ import annotations

import math
import re
import struct
from typing import Any, Union
from collections.abc import Callable, Iterable

import msgspec

from dim import errors
from dim.protocol import frames as F

_LENGTH = struct.Struct(">I")
_encoder = msgspec.json.Encoder()

Decoded = Union[F._Frame, errors.DimError]


def encode(frame: F._Frame) -> bytes:
    """One frame as bytes on the wire, length prefix included."""
    payload = _encoder.encode(frame)
    return _LENGTH.pack(len(payload)) + payload


def encode_many(frames: Iterable[F._Frame]) -> bytes:
    """Several frames as one buffer, for a single transport write."""
    return b"".join(encode(f) for f in frames)


def encode_payload(obj: Any) -> bytes:
    """Any JSON-able object framed as it is, for extensions and tests."""
    payload = _encoder.encode(obj)
    return _LENGTH.pack(len(payload)) + payload


def error_frame(err: errors.DimError) -> F.Error:
    """The ``error`` frame that reports a :class:`DimError`."""
    retry_after = getattr(err, "retry_after", None)
    if retry_after is not None:
        # Rounded up to the millisecond, so a client waiting that long is not early.
        retry_after = math.ceil(retry_after * 1000) / 1000
    return F.Error(code=err.code, message=err.message, ref=err.ref, retry_after=retry_after)


def _check_send(frame: F.Send) -> None:
    if (frame.to is None) == (frame.group is None):
        raise errors.BadRequest("send needs exactly one of 'to' and 'group'", ref=frame.id)
    if frame.kind not in F.MESSAGE_KINDS:
        raise errors.BadRequest(f"kind must be one of {', '.join(F.MESSAGE_KINDS)}", ref=frame.id)
    if frame.kind == "text":
        if frame.body is None:
            raise errors.BadRequest("a text message needs a 'body'", ref=frame.id)
        if frame.file is not None:
            raise errors.BadRequest("a text message carries no 'file'", ref=frame.id)
    else:
        if frame.file is None:
            raise errors.BadRequest(f"a {frame.kind} message needs a 'file'", ref=frame.id)
        if frame.body is None:
            frame.body = ""
    if frame.mentions is not None:
        if frame.group is None:
            raise errors.BadRequest("only a group message may carry 'mentions'", ref=frame.id)
        frame.mentions = list(dict.fromkeys(frame.mentions))
        if len(frame.mentions) > F.MAX_MENTIONS:
            raise errors.BadRequest(f"at most {F.MAX_MENTIONS} mentions", ref=frame.id)
    if (len(frame.body) > F.MAX_BODY_BYTES // 4
            and len(frame.body.encode("utf-8")) > F.MAX_BODY_BYTES):
        raise errors.TooLarge(f"body is over {F.MAX_BODY_BYTES} bytes of UTF-8", ref=frame.id)


def _check_edit(frame: F.Edit) -> None:
    if not frame.body.strip():
        raise errors.BadRequest("an edit needs a body that is not empty", ref=frame.id)
    if (len(frame.body) > F.MAX_BODY_BYTES // 4
            and len(frame.body.encode("utf-8")) > F.MAX_BODY_BYTES):
        raise errors.TooLarge(f"body is over {F.MAX_BODY_BYTES} bytes of UTF-8", ref=frame.id)


def _check_react(frame: F.React) -> None:
    if not 1 <= len(frame.emoji) <= F.MAX_EMOJI or not frame.emoji.strip():
        raise errors.BadRequest(f"emoji must be 1-{F.MAX_EMOJI} characters", ref=frame.id)


def _check_target(frame: F.Typing) -> None:
    if (frame.to is None) == (frame.group is None):
        raise errors.BadRequest("typing needs exactly one of 'to' and 'group'")


def _check_hello(frame: F.Hello) -> None:
    if frame.v != F.PROTOCOL_VERSION:
        raise errors.BadRequest(f"protocol version {frame.v} is not supported; use 1")


def _clamp_sync(frame: F.Sync) -> None:
    if frame.limit > F.MAX_SYNC_LIMIT:
        frame.limit = F.MAX_SYNC_LIMIT


_CHECKS: dict[type[Any], Callable[[Any], Any]] = {
    F.Send: _check_send, F.Typing: _check_target, F.Hello: _check_hello,
    F.Sync: _clamp_sync, F.Edit: _check_edit, F.React: _check_react}


# The characters that open or close a JSON container or a string, or escape in a string.
_STRUCTURE = re.compile(rb'[\[\]{}"\\]')


def _too_deep(payload: bytes) -> bool:
    """Whether the JSON in ``payload`` nests containers deeper than ``MAX_NESTING``.

    A frame with few brackets cannot be too deep, and counting them is cheap: only a frame
    with more than ``MAX_NESTING`` opening brackets (inside strings or not) is scanned.
    """
    limit = F.MAX_NESTING
    if payload.count(b"[") + payload.count(b"{") <= limit:
        return False
    depth = 0
    in_string = False
    escaped_at = -1  # the position a backslash in a string escapes
    for match in _STRUCTURE.finditer(payload):
        char, at = match.group(), match.start()
        if in_string:
            if at == escaped_at:
                continue
            if char == b"\\":
                escaped_at = at + 1
            elif char == b'"':
                in_string = False
        elif char == b'"':
            in_string = True
        elif char == b"[" or char == b"{":
            depth += 1
            if depth > limit:
                return True
        else:
            depth -= 1
    return False


# A msgspec decoder and the set of accepted tags per tuple of frame types: both depend only
# on the types, and a node builds a FrameDecoder per connection (a decoder takes about 30 us
# to build, the set about 730 bytes to hold).  msgspec decoders are reusable and thread-safe.
_DECODERS: dict[tuple[type[F._Frame], ...],
                tuple[msgspec.json.Decoder[Any], frozenset[str]]] = {}


def _decoder_for(frame_types: tuple[type[F._Frame], ...]) -> tuple[
        msgspec.json.Decoder[Any], frozenset[str]]:
    """The shared decoder and tag set of one tuple of frame types."""
    key = tuple(frame_types)
    found = _DECODERS.get(key)
    if found is None:
        found = (msgspec.json.Decoder(Union[key]),
                 frozenset(str(cls.__struct_config__.tag) for cls in key))
        _DECODERS[key] = found
    return found


class FrameDecoder:
    """Turns a byte stream into frames of one direction (client-to-node or node-to-client)."""

    __slots__ = ("_buffer", "_decoder", "_tags", "closed", "max_frame")

    def __init__(self, frame_types: tuple[type[F._Frame], ...] = F.CLIENT_FRAME_TYPES,
                 max_frame: int = F.DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._decoder, self._tags = _decoder_for(frame_types)
        self._buffer = bytearray()
        self.closed = False

    def feed(self, data: bytes) -> list[Decoded]:
        """Add bytes; return every frame or error they complete, in order."""
        if self.closed:
            return []
        buf = self._buffer
        buf += data
        out: list[Decoded] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (length,) = _LENGTH.unpack_from(buf, pos)
            if length == 0 or length > self.max_frame:
                self.closed = True
                del buf[:]
                if length == 0:
                    out.append(errors.BadFrame("a frame of length 0 is not allowed"))
                else:
                    out.append(errors.FrameTooLarge(
                        f"frame of {length} bytes is over max_frame {self.max_frame}"))
                return out
            if end - pos - 4 < length:
                break
            payload = bytes(buf[pos + 4:pos + 4 + length])
            pos += 4 + length
            item = self._decode(payload)
            out.append(item)
            if isinstance(item, errors.DimError) and item.fatal:
                self.closed = True
                del buf[:]
                return out
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        """How many bytes wait for the rest of their frame."""
        return len(self._buffer)

    def _decode(self, payload: bytes) -> Decoded:
        if _too_deep(payload):
            return errors.BadFrame(f"the frame's JSON nests deeper than {F.MAX_NESTING} levels")
        try:
            frame = self._decoder.decode(payload)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as e:
            return self._classify(payload, e)
        except RecursionError:
            # Not deep by our count, yet too deep for the stack left: still not a frame.
            return errors.BadFrame("the frame's JSON nests too deeply")
        check = _CHECKS.get(type(frame))
        if check is not None:
            try:
                check(frame)
            except errors.DimError as e:
                return e
        return frame

    def _classify(self, payload: bytes, exc: Exception) -> errors.DimError:
        """Tell a broken frame (fatal) from a well-formed one with bad fields (not fatal)."""
        try:
            obj = msgspec.json.decode(payload)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return errors.BadFrame("the frame is not UTF-8 JSON")
        except RecursionError:
            return errors.BadFrame("the frame's JSON nests too deeply")
        if not isinstance(obj, dict) or not isinstance(obj.get("type"), str):
            return errors.BadFrame("the frame is not a JSON object with a string 'type'")
        ref = obj.get("id") if isinstance(obj.get("id"), str) else None
        if obj["type"] not in self._tags:
            return errors.UnknownType(f"unknown frame type {obj['type'][:64]!r}", ref=ref)
        return errors.BadRequest(str(exc), ref=ref)
