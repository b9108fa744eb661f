"""Fan-out: writing frames to every session of some users, on this node or on others.

:class:`Fanout` knows the sessions of this node (``local``) and writes to them at once.  What
other nodes should get is gathered for the rest of the reactor turn; then the session
registry is asked once where those users' sessions are, and each other node gets one
envelope (:mod:`dim.cluster.envelope`) through the forwarder with every delivery of the
turn.  Every frame is encoded once: its bytes
are shared by every local session that gets it and carried as they are inside envelopes.
Envelopes from other nodes come back in through :meth:`Fanout.receive`.  It is the
:class:`~dim.cluster.interface.IPusher` of the node's process.
"""
from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar
from collections.abc import Callable, Iterable, Mapping

import msgspec
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from dim.cluster import envelope as E
from dim.cluster.interface import IForwarder, IPusher, ISessionRegistry, SessionRef
from dim.node import metrics
from dim.protocol import codec
from dim.protocol import frames as F

_log = Logger()

# An item to push: the encoded frame (with its length prefix), its type, and its seq when
# it is a msg to track for retransmission.
Push = tuple[bytes, str, "int | None"]


class LocalSession(Protocol):
    """What fan-out needs of a session on this node (:class:`dim.node.delivery.Session`)."""

    id: str

    def push(self, data: bytes, frame_type: str, seq: int | None) -> None:
        """Write one encoded frame to the session's connection."""


SessionT = TypeVar("SessionT", bound=LocalSession)


def encoded(frame: F._Frame) -> Push:
    """A frame encoded once, ready to be written to any number of sessions."""
    seq = frame.seq if type(frame) is F.Msg else None
    return codec.encode(frame), F.frame_type(frame), seq


@implementer(IPusher)
class Fanout(Generic[SessionT]):
    """Delivers frames to the sessions of users wherever they are.

    ``local`` maps user -> {session id: Session} for this node; the node's connection code
    adds and removes sessions there; ``forwarder`` carries envelopes to the other nodes
    (the embedded ``dim``'s reaches none).
    """

    def __init__(self, node_id: str, sessions: ISessionRegistry, clock: IReactorTime,
                 forwarder: IForwarder) -> None:
        self.node_id = node_id
        self.sessions = sessions
        self.clock = clock
        self.forwarder = forwarder
        #: user -> {session id: Session} for the sessions on this node.
        self.local: dict[str, dict[str, SessionT]] = {}
        #: Registry look-ups made for deliveries (for tests and metrics).
        self.locates = 0
        # A registry in this process answers at once: ask it without a Deferred.
        self._locate_now: Callable[[Iterable[str]], dict[str, list[SessionRef]]] | None = \
            getattr(sessions, "locate_now", None)
        # Deliveries to other nodes waiting for the end of this reactor turn, and the
        # Deferreds of those whose callers wait for them.
        self._pending: list[tuple[dict[str, list[Push]], str | None]] = []
        self._waiters: list[Deferred[None]] = []
        self._call: IDelayedCall | None = None
        forwarder.set_receiver(self.receive)

    def push(self, targets: dict[str, list[F._Frame]]) -> Deferred[None]:
        """Send each user's frames to all of its online sessions, here and on other nodes
        (:class:`IPusher`); fires once handed over."""
        return self.deliver(targets, wait=True)  # type: ignore[return-value]

    def deliver(self, targets: dict[str, list[F._Frame]], skip: str | None = None,
                wait: bool = True) -> Deferred[None] | None:
        """Write frames to every session of each user, here or on other nodes, but ``skip``.

        Local sessions get them at once.  What other nodes should get waits for the end of
        this reactor turn, when one registry look-up serves every delivery of the turn and
        each other node gets one envelope holding all of them, in order.  With ``wait``, a
        Deferred fires once those envelopes are handed over (failures are logged, not
        raised); without, nothing is returned (the hot path makes no Deferred).
        """
        return self.deliver_encoded(
            {user: [encoded(f) for f in frames] for user, frames in targets.items()}, skip,
            wait)

    def deliver_encoded(self, targets: dict[str, list[Push]], skip: str | None = None,
                        wait: bool = True) -> Deferred[None] | None:
        """:meth:`deliver` for frames already encoded (shared between users)."""
        local = self.local
        for user, items in targets.items():
            mine = local.get(user)
            if mine and (len(mine) > 1 or skip not in mine):
                push_local(mine, items, skip)
        self._pending.append((targets, skip))
        if self._call is None:
            self._call = self.clock.callLater(0, self.flush)
        if not wait:
            return None
        done: Deferred[None] = Deferred()
        self._waiters.append(done)
        return done

    def flush(self) -> None:
        """Forward the deliveries of this turn now: one look-up for all their users, then
        one envelope per node."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        batch, self._pending = self._pending, []
        waiters, self._waiters = self._waiters, []
        if not batch:
            _fire(waiters)
            return
        users: dict[str, None] = {}
        for targets, _ in batch:
            users.update(dict.fromkeys(targets))
        if self._locate_now is not None:
            d = self._forward(self._locate_now(users), batch)
        else:
            self.locates += 1
            metrics.count("session_lookups")
            d = maybeDeferred(self.sessions.locate, list(users))
            d.addCallbacks(self._forward, _locate_failed, callbackArgs=(batch,))
        if waiters:
            d.addBoth(lambda _: _fire(waiters))

    def _forward(self, located: dict[str, list[SessionRef]],
                 batch: list[tuple[dict[str, list[Push]], str | None]]) -> Deferred[None]:
        # Only users with a session on another node need their frames in an envelope; the
        # sessions here were served when the frames were delivered.
        here = self.node_id
        elsewhere = {user for user, refs in located.items()
                     if any(ref.node != here for ref in refs)}
        if not elsewhere:
            return succeed(None)
        deliveries: list[E.Delivery] = []
        for targets, skip in batch:
            items = {user: [E.Item.of(*push) for push in pushes]
                     for user, pushes in targets.items() if user in elsewhere}
            if items:
                deliveries.append((items, skip))
        envelopes = E.by_node(located, deliveries, here=here)
        if not envelopes:
            return succeed(None)
        handed: list[Deferred[Any]] = []
        for node, envelope in envelopes.items():
            metrics.count("envelopes_out")
            d = maybeDeferred(self.forwarder.forward, node, E.encode(envelope))
            d.addCallbacks(_nothing, _forward_failed, errbackArgs=(node,))
            handed.append(d)
        if len(handed) == 1:
            return handed[0]
        return DeferredList(handed).addCallback(_nothing)

    def receive(self, payload: bytes) -> None:
        """Deliver an envelope from another node (or the gateway) to the sessions here."""
        metrics.count("envelopes_in")
        try:
            envelope = E.decode(payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            _log.warn("ignoring an envelope that does not decode: {error}", error=str(e))
            return
        local = self.local
        for part in envelope.parts:
            skip = part.skip
            for user, items in part.to.items():
                mine = local.get(user)
                if mine:
                    push_local(mine, [(item.framed(), item.type, item.seq) for item in items],
                               skip)


def push_local(sessions: Mapping[str, LocalSession], items: list[Push],
               skip: str | None) -> None:
    """Write the items to every session of one user on this node but ``skip``."""
    for session in list(sessions.values()):
        if session.id == skip:
            continue
        for item in items:
            session.push(*item)


def _nothing(_: object) -> None:
    return None


def _fire(waiters: list[Deferred[None]]) -> None:
    for d in waiters:
        d.callback(None)


def _locate_failed(failure: Failure) -> None:
    _log.failure("locating sessions to forward to failed", failure)


def _forward_failed(failure: Failure, node: str) -> None:
    _log.failure("forwarding to node {node} failed", failure, node=node)
