"""Conversation calls of the client core that go over the session's connection: reading one
conversation, and editing, recalling or reacting to a message.

They are functions of a :class:`dim.client.session.Session` (kept out of that module so it
stays small).  Each writes one frame when the session is connected and returns the frame's
``id`` (or True for a read); offline they write nothing and return None (or False): the
person tries again once connected.  The node answers an edit, recall or react with ``sent``
(a ``MessageStatus`` of that id) or an ``error`` with that ``ref`` (a ``ServerError``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dim import errors
from dim.protocol import frames as F


@dataclass(frozen=True)
class ConversationReadUpTo:
    """This user read one conversation (``with_`` a user, or ``group``) up to ``seq``, here
    or on another device: clear that conversation's unread messages up to it."""

    seq: int
    with_: str | None = None
    group: str | None = None


def conversation_read_event(frame: F.ReadNotice) -> ConversationReadUpTo | None:
    """The event of a ``read`` echo that names a conversation, or None for any other."""
    if frame.seq is None or (frame.with_ is None and frame.group is None):
        return None
    return ConversationReadUpTo(frame.seq, frame.with_, frame.group)


def _write(session: Any, frame: F._Frame) -> bool:
    if not session.connected:
        return False
    session._conn.sendFrame(frame)
    return True


def read_conversation(session: Any, seq: int, with_: str | None = None,
                      group: str | None = None) -> bool:
    """Tell the node the person has seen one conversation up to ``seq`` (only what is on
    screen); True if the ``read`` was written."""
    if (with_ is None) == (group is None):
        raise errors.BadRequest("a conversation is one of a user and a group")
    return _write(session, F.Read(seq=seq, with_=with_, group=group))


def edit(session: Any, mid: str, body: str) -> str | None:
    """Replace the body of one's own text message ``mid``; the frame's id, or None."""
    if not body.strip():
        raise errors.BadRequest("an edit needs some text")
    if len(body.encode("utf-8")) > F.MAX_BODY_BYTES:
        raise errors.TooLarge(f"the message is over {F.MAX_BODY_BYTES} bytes")
    frame = F.Edit(id=session.new_id(), mid=mid, body=body)
    return frame.id if _write(session, frame) else None


def recall(session: Any, mid: str) -> str | None:
    """Take back one's own message ``mid``; the frame's id, or None."""
    frame = F.Recall(id=session.new_id(), mid=mid)
    return frame.id if _write(session, frame) else None


def react(session: Any, mid: str, emoji: str, on: bool = True) -> str | None:
    """Add (``on``) or remove a reaction to message ``mid``; the frame's id, or None."""
    if not 1 <= len(emoji) <= F.MAX_EMOJI:
        raise errors.BadRequest(f"a reaction is 1-{F.MAX_EMOJI} characters")
    frame = F.React(id=session.new_id(), mid=mid, emoji=emoji, on=on)
    return frame.id if _write(session, frame) else None
