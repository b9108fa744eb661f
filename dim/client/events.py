"""What the client core tells its listeners, and the states it speaks of.

A :class:`dim.client.session.ClientSession` (and the :class:`dim.client.chat.ChatClient` around
it) reports what happened with the small frozen dataclasses here, so a user interface, a test,
a bot or the load generator never touches frames.  :class:`EventSource` keeps the listeners.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from dim import errors
from dim.client.cache import ChatMessage
from dim.protocol import frames as F

log = Logger()

# Connection states, as shown in the chat's header.
OFFLINE = "offline"
CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"

# States of a message this session sends.
SENDING = "sending"
SENT = "sent"
DELIVERED = "delivered"
READ = "read"
FAILED = "failed"

#: How far along each state is: a message never goes back to a lower one.
STATE_RANK = {FAILED: 0, SENDING: 0, SENT: 1, DELIVERED: 2, READ: 3}


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class NodeAddress:
    """A node a client can connect to: its id, TCP address, and whether it speaks TLS."""

    id: str
    host: str
    port: int
    tls: bool = False

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NodeAddress:
        """A node from the gateway's ``{id, host, port}`` (and ``tls: true`` for TLS)."""
        return cls(id=str(obj["id"]), host=str(obj["host"]), port=int(obj["port"]),
                   tls=obj.get("tls") is True)


@dataclass
class Write:
    """What a message and a change this session writes share: the client's ``id``, the
    state of the write (sending, sent, failed; a message also delivered and read), the
    node's ``mid``, ``seq`` and ``ts`` once stored, and why it failed (``error``)."""

    id: str
    state: str = field(default=SENDING, kw_only=True)
    mid: str | None = field(default=None, kw_only=True)
    seq: int | None = field(default=None, kw_only=True)
    ts: int | None = field(default=None, kw_only=True)
    error: str | None = field(default=None, kw_only=True)
    #: How often it was written on the current connection.
    attempts: int = field(default=0, kw_only=True)


@dataclass
class OutgoingMessage(Write):
    """A message this session sends, with its state: sending, sent, delivered or failed."""

    body: str
    created: int
    to: str | None = None
    group: str | None = None
    kind: str = "text"
    #: The attached file of an "image" or "file" message: ``{id, name, size, mime}``.
    file: dict[str, Any] | None = None
    #: Recipients that acknowledged it (``delivered``) and that read it (``read``).
    delivered_by: set[str] = field(default_factory=set)
    read_by: set[str] = field(default_factory=set)
    #: The mid this message answers, and the members a group message mentions.
    reply_to: str | None = None
    mentions: list[str] | None = None

    def peer(self) -> str:
        """The conversation this message belongs to."""
        return "#" + self.group if self.group is not None else str(self.to)

    def frame(self) -> F.Send:
        """The ``send`` frame that writes this message (the same each time)."""
        return F.Send(id=self.id, to=self.to, group=self.group, body=self.body, kind=self.kind,
                      file=F.FileRef(**self.file) if self.file else None,
                      reply_to=self.reply_to, mentions=self.mentions)


#: The kinds of :class:`OutgoingChange`: the entry kinds the node stores for them.
EDIT = "edit"
RECALL = "recall"
REACTION = "reaction"


@dataclass
class OutgoingChange(Write):
    """An edit, recall or reaction this session writes about message ``ref`` (a mid), with
    its state: sending, sent or failed.  No :class:`MessageStatus` tells of it (it is not a
    message of its own); the Deferred its method returned does.  Its ``mid``, ``seq`` and
    ``ts`` are the stored entry's."""

    kind: str
    ref: str
    created: int
    #: The new text of an edit, or the emoji of a reaction.
    body: str = ""
    #: Whether a reaction is added (else removed).
    on: bool = True

    def frame(self) -> F.Edit | F.Recall | F.React:
        """The frame that writes this change (the same each time)."""
        if self.kind == EDIT:
            return F.Edit(id=self.id, mid=self.ref, body=self.body)
        if self.kind == RECALL:
            return F.Recall(id=self.id, mid=self.ref)
        return F.React(id=self.id, mid=self.ref, emoji=self.body, on=self.on)


# ---------------------------------------------------------------- results of a write


@dataclass(frozen=True)
class Sent:
    """What a send (or edit, recall, react) Deferred fires with: the node stored it.

    ``id`` is the client's, ``mid``, ``seq`` and ``ts`` the node's (``seq`` is its position in
    this user's inbox).  ``delivered`` fires (with None) when the first recipient
    acknowledged it; it stays pending until then, and never fails.
    """

    id: str
    mid: str
    seq: int
    ts: int
    delivered: Deferred[None] = field(compare=False, repr=False)


class SendTimedOut(TimeoutError):
    """The node never answered a write: no ``sent`` after it was written, written again 4 s
    later, and waited for 4 s more.  The message is ``failed``; ``retry(id)`` tries again
    with the same id, so it is never stored twice."""

    def __init__(self, id: str, waited: float) -> None:
        super().__init__(f"no answer from the node for {id} after two writes, {waited:g} s")
        self.id = id
        self.waited = waited


class SendRefused(errors.DimError):
    """The node refused a write with an ``error`` naming it (``ref``), ``code`` being the
    contract's.  The exception is also of the error tree's class for that code, so
    ``failure.check(errors.Forbidden)`` works as well as ``failure.check(SendRefused)``."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message, ref)
        self.code = code

    @classmethod
    def of(cls, code: str, message: str, ref: str | None = None) -> SendRefused:
        """The refusal for an ``error`` frame: of the class that also is ``code``'s error."""
        return _REFUSED.get(code, cls)(code, message, ref)


class WriteExpired(errors.Unauthorized):
    """The session expired (the node or the gateway refused its token) before the node
    stored write ``id``, or the write was made on the expired session.  It is ``failed``:
    :meth:`~dim.client.session.ClientSession.retry` writes it again, with the same id, once
    the session is started again with a new token.  Also an ``errors.Unauthorized``."""

    def __init__(self, id: str, reason: str) -> None:
        super().__init__(f"the session expired before {id} was stored: {reason}", id)
        self.id = id
        self.reason = reason


_REFUSED: dict[str, type[SendRefused]] = {
    code: type(f"{kind.__name__}Refused", (SendRefused, kind), {"__doc__": SendRefused.__doc__})
    for code, kind in errors.BY_CODE.items()
}


@dataclass(frozen=True)
class Connecting:
    """A TCP connection to ``node`` is being opened."""

    node: NodeAddress


@dataclass(frozen=True)
class Connected:
    """The node welcomed this session."""

    node: NodeAddress
    user: str
    last_seq: int


@dataclass(frozen=True)
class Disconnected:
    """The connection to ``node`` is gone (``reason`` says why)."""

    node: NodeAddress | None
    reason: str


@dataclass(frozen=True)
class Reconnecting:
    """The next connection attempt (``attempt``, from 1) starts in ``in_seconds``."""

    in_seconds: float
    attempt: int


@dataclass(frozen=True)
class Offline:
    """The session stopped and will not reconnect by itself (``reason`` says why)."""

    reason: str


@dataclass(frozen=True)
class SessionExpired:
    """The token was refused; the person has to log in again."""

    message: str


@dataclass(frozen=True)
class MessageReceived:
    """A message of the inbox arrived that was not sent by this session; shown once per seq."""

    entry: ChatMessage


@dataclass(frozen=True)
class MessageStatus:
    """A message this session sent changed state (sending, sent, delivered, failed)."""

    id: str
    state: str
    message: OutgoingMessage


@dataclass(frozen=True)
class Delivered:
    """A recipient acknowledged a message this user sent (from this or another device)."""

    id: str
    mid: str
    by: str


@dataclass(frozen=True)
class ReadReceipt:
    """A recipient has seen a message this user sent (from this or another device)."""

    id: str
    mid: str
    by: str


@dataclass(frozen=True)
class ReadUpTo:
    """This user read everything up to ``seq`` (here or on another device): clear unread."""

    seq: int


@dataclass(frozen=True)
class PresenceChanged:
    """A contact came online (first session) or went offline (last session)."""

    user: str
    online: bool


@dataclass(frozen=True)
class PeerTyping:
    """``user`` is typing in the conversation ``peer`` (a user, or ``#`` + a group id)."""

    user: str
    peer: str


@dataclass(frozen=True)
class Notified:
    """A ``notify`` hint: ``event`` (contact_request, contact_added, contact_removed,
    group_changed) and its fields (``from``, ``user``, ``group``)."""

    event: str
    fields: dict[str, Any]


@dataclass(frozen=True)
class RosterChanged:
    """The roster changed: ``what`` is "contacts", "groups", "names" or "profile"."""

    what: str


@dataclass(frozen=True)
class MessageChanged:
    """A message was edited, recalled or reacted to (by anyone, from any device):
    ``message`` is it in its new state; ``change`` the edit, recall or reaction entry."""

    message: ChatMessage
    change: ChatMessage


@dataclass(frozen=True)
class SyncFinished:
    """A sync ended; everything up to ``last_seq`` has been handled."""

    last_seq: int


@dataclass(frozen=True)
class ServerError:
    """The node reported an error (``ref`` names the frame's id, if it had one)."""

    code: str
    message: str
    ref: str | None = None


SessionEvent = (Connecting | Connected | Disconnected | Reconnecting | Offline | SessionExpired |
                MessageReceived | MessageStatus | Delivered | SyncFinished | ServerError |
                ReadReceipt | ReadUpTo | PresenceChanged | PeerTyping | Notified | RosterChanged |
                MessageChanged)
Listener = Callable[[SessionEvent], None]


class EventSource:
    """Keeps listeners and tells each of them every event."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` with every event from now on; returns a function that stops it."""
        self._listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)
        return unsubscribe

    def emit(self, event: SessionEvent) -> None:
        """Tell every listener about ``event``; a failing listener does not stop the others."""
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                log.failure("session listener failed on {event!r}", event=event)

