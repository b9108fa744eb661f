"""What the client core hears of one conversation being read: the ``read`` echo that names a
conversation, as an event.

Reading a conversation, editing, recalling and reacting are calls of the session
(:meth:`dim.client.session.ClientSession.read_conversation`, ``edit``, ``recall``, ``react``),
queued while offline like sends.
"""
from __future__ import annotations

from dataclasses import dataclass

from dim.protocol import frames as F


@dataclass(frozen=True)
class ConversationReadUpTo:
    """This user read one conversation (``with_`` a user, or ``group``) up to ``seq``, here
    or on another device: clear that conversation's unread messages up to it."""

    seq: int
    with_: str | None = None
    group: str | None = None

    @property
    def peer(self) -> str:
        """The conversation's key: the user, or ``#`` + the group id."""
        return self.with_ if self.with_ is not None else "#" + str(self.group)


def conversation_read_event(frame: F.ReadNotice) -> ConversationReadUpTo | None:
    """The event of a ``read`` echo that names a conversation, or None for any other."""
    if frame.seq is None or (frame.with_ is None and frame.group is None):
        return None
    return ConversationReadUpTo(frame.seq, frame.with_, frame.group)
