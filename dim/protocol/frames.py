"""Typed frames of the DIM wire contract, one class per frame type.

Frames are :mod:`msgspec` structs tagged by their ``type`` field.  Unknown fields are ignored
on decode, optional fields that are unset are left out on encode.  Frames from clients to
nodes and from nodes to clients are separate unions, because ``typing`` and ``read`` mean
different things in each direction.
"""
from __future__ import annotations

from typing import Annotated, Any, Union

import msgspec
from msgspec import Meta, Struct

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME = 65536
MAX_BODY_BYTES = 16 * 1024
DEFAULT_SYNC_LIMIT = 100
MAX_SYNC_LIMIT = 1000
MESSAGE_KINDS = ("text", "image", "file")
#: The most users one group message may mention.
MAX_MENTIONS = 50
#: The largest integer a client may send in any field: seqs, sizes and counts are stored as
#: signed 64-bit integers, so anything larger could only fail further in.
MAX_INT = 2**63 - 1
#: How deeply a client frame's JSON may nest (the deepest frame of the contract has 2 levels).
MAX_NESTING = 32

# \Z, not $: a $ would also match before a trailing newline ("bob\n").
UserName = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.\-]{1,32}\Z")]
ClientId = Annotated[str, Meta(pattern=r"^[\x20-\x7e]{1,64}\Z")]
Seq = Annotated[int, Meta(ge=0, le=MAX_INT)]
GroupId = Annotated[str, Meta(min_length=1, max_length=64)]


class _Frame(Struct, tag_field="type", omit_defaults=True, kw_only=True):
    """Base of every frame: a struct whose ``type`` tag names it."""

    def to_dict(self) -> dict[str, Any]:
        """The frame as the plain JSON object sent on the wire."""
        return msgspec.to_builtins(self)


class FileRef(Struct, omit_defaults=True, kw_only=True):
    """A file attached to a message: an uploaded file's id, name, size and mime type."""

    id: Annotated[str, Meta(min_length=1, max_length=64)]
    name: Annotated[str, Meta(min_length=1, max_length=255)]
    size: Annotated[int, Meta(ge=0, le=MAX_INT)]
    mime: Annotated[str, Meta(min_length=1, max_length=255)]


# ---------------------------------------------------------------- client to node


class Hello(_Frame, tag="hello"):
    """First frame of every connection: the protocol version and a gateway token."""

    v: Annotated[int, Meta(ge=0, le=MAX_INT)]
    token: Annotated[str, Meta(min_length=1, max_length=4096)]
    device: Annotated[str, Meta(max_length=64)] | None = None


class Send(_Frame, tag="send"):
    """Send a message to one user (``to``) or a group."""

    id: ClientId
    to: UserName | None = None
    group: GroupId | None = None
    body: str | None = None
    kind: str = "text"
    file: FileRef | None = None
    reply_to: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    mentions: list[UserName] | None = None


class Ack(_Frame, tag="ack"):
    """Every inbox message with seq <= ``seq`` was received by this session."""

    seq: Seq


class Sync(_Frame, tag="sync"):
    """Ask for inbox messages with seq > ``after``."""

    after: Seq = 0
    limit: Annotated[int, Meta(ge=1, le=MAX_INT)] = DEFAULT_SYNC_LIMIT


class Ping(_Frame, tag="ping"):
    """Heartbeat; answered by ``pong``."""


class Typing(_Frame, tag="typing"):
    """The person is typing to a user or in a group."""

    to: UserName | None = None
    group: GroupId | None = None


class Read(_Frame, tag="read", rename={"with_": "with"}):
    """The person has seen everything of this user's inbox up to ``seq``; with ``with`` (a
    peer) or ``group``, every entry of that conversation up to ``seq``."""

    seq: Seq
    with_: UserName | None = None
    group: GroupId | None = None


MessageId = Annotated[str, Meta(min_length=1, max_length=64)]


class Edit(_Frame, tag="edit"):
    """Replace the body of a text message this user sent (``mid``) with ``body``."""

    id: ClientId
    mid: MessageId
    body: str


class Recall(_Frame, tag="recall"):
    """Take back a message this user sent (``mid``): its body and file are gone for all."""

    id: ClientId
    mid: MessageId


class React(_Frame, tag="react"):
    """Add (``on``) or remove a reaction ``emoji`` to a message of this user's inbox."""

    id: ClientId
    mid: MessageId
    emoji: str
    on: bool = True


ClientFrame = Union[Hello, Send, Ack, Sync, Ping, Typing, Read, Edit, Recall, React]
CLIENT_FRAME_TYPES: tuple[type[_Frame], ...] = (Hello, Send, Ack, Sync, Ping, Typing, Read,
                                                Edit, Recall, React)
#: The most characters a reaction may have.
MAX_EMOJI = 16
#: The kinds of the entries that edit, recall and react store.
CHANGE_KINDS = ("edit", "recall", "reaction")


# ---------------------------------------------------------------- node to client


class Welcome(_Frame, tag="welcome"):
    """The session is authenticated."""

    user: str
    node: str
    heartbeat: int
    max_frame: int
    last_seq: int


class Sent(_Frame, tag="sent"):
    """A message this session sent is stored for every recipient."""

    id: str
    mid: str
    seq: int
    ts: int


class Msg(_Frame, tag="msg", rename={"from_": "from"}):
    """A message of this user's inbox."""

    mid: str
    id: str
    from_: str
    ts: int
    seq: int
    #: Always on the wire (no default, so never left out), as the contract lists them.
    body: str
    kind: str
    to: str | None = None
    group: str | None = None
    file: FileRef | None = None
    delivered: bool = False
    read: bool = False
    reply_to: str | None = None
    mentions: list[str] | None = None
    #: Of an edit, recall or reaction entry: the changed message and (reaction) add/remove.
    ref: str | None = None
    on: bool | None = None
    #: Of a changed message: the last edit's ms timestamp, recalled, the reactions.
    edited: int | None = None
    recalled: bool = False
    reactions: dict[str, list[str]] | None = None


class Delivered(_Frame, tag="delivered"):
    """A recipient acknowledged a message this user sent."""

    id: str
    mid: str
    by: str


class Synced(_Frame, tag="synced"):
    """Ends the ``msg`` frames answering one ``sync``."""

    after: int
    last_seq: int
    more: bool


class Pong(_Frame, tag="pong"):
    """Heartbeat answer; ``last_seq`` (an extension: the highest seq in the user's inbox when
    the node answered) lets an idle client find a message whose ``msg`` never reached it."""

    last_seq: int | None = None


class Error(_Frame, tag="error"):
    """Something went wrong; ``ref`` is the ``id`` of the offending frame, if it had one,
    and ``retry_after`` (with ``rate_limited``) the seconds until it would be accepted."""

    code: str
    message: str
    ref: str | None = None
    retry_after: float | None = None


class Goaway(_Frame, tag="goaway"):
    """The node is shutting down; reconnect elsewhere through the gateway."""

    reason: str


class Presence(_Frame, tag="presence"):
    """A contact's first session connected or last session went away."""

    user: str
    online: bool


class TypingNotice(_Frame, tag="typing", rename={"from_": "from"}):
    """Someone is typing to this user or in one of its groups."""

    from_: str
    to: str | None = None
    group: str | None = None


class ReadNotice(_Frame, tag="read", rename={"with_": "with"}):
    """A recipient has seen a message (``id``, ``mid``, ``by``), or another session of this
    user has read up to ``seq`` (of one conversation, with ``with`` or ``group``)."""

    by: str
    id: str | None = None
    mid: str | None = None
    seq: int | None = None
    with_: str | None = None
    group: str | None = None


class Notify(_Frame, tag="notify", rename={"from_": "from"}):
    """Something changed that the client should refetch or show."""

    event: str
    from_: str | None = None
    user: str | None = None
    group: str | None = None


ServerFrame = Union[Welcome, Sent, Msg, Delivered, Synced, Pong, Error, Goaway, Presence,
                    TypingNotice, ReadNotice, Notify]
SERVER_FRAME_TYPES: tuple[type[_Frame], ...] = (
    Welcome, Sent, Msg, Delivered, Synced, Pong, Error, Goaway, Presence, TypingNotice,
    ReadNotice, Notify)


def frame_type(frame: _Frame) -> str:
    """The wire ``type`` of a frame instance."""
    return frame.__struct_config__.tag  # type: ignore[return-value]
