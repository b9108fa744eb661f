"""Fan-out: writing frames to every session of some users, on this node or on others.

:class:`Fanout` knows the sessions of this node (``local``), asks the session registry where
the other sessions are, and hands each other node one envelope
(:mod:`dim.cluster.envelope`) through the forwarder.  Every frame is encoded once: its bytes
are shared by every local session that gets it and carried as they are inside envelopes.
Envelopes from other nodes come back in through :meth:`Fanout.receive`.  It is the
:class:`~dim.cluster.interface.IPusher` of the node's process.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable

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

if TYPE_CHECKING:
    from dim.node.delivery import Session

_log = Logger()

# An item to push: the encoded frame (with its length prefix), its type, and its seq when
# it is a msg to track for retransmission.
Push = tuple[bytes, str, "int | None"]


def encoded(frame: F._Frame) -> Push:
    """A frame encoded once, ready to be written to any number of sessions."""
    seq = frame.seq if type(frame) is F.Msg else None
    return codec.encode(frame), F.frame_type(frame), seq


@implementer(IPusher)
class Fanout:
    """Delivers frames to the sessions of users wherever they are.

    ``local`` maps user -> {session id: Session} for this node; the node's connection code
    adds and removes sessions there.  Without a ``forwarder`` there are no other nodes.
    """

    def __init__(self, node_id: str, sessions: ISessionRegistry, clock: IReactorTime,
                 forwarder: IForwarder | None = None) -> None:
        self.node_id = node_id
        self.sessions = sessions
        self.clock = clock
        self.forwarder = forwarder
        #: user -> {session id: Session} for the sessions on this node.
        self.local: dict[str, dict[str, Session]] = {}
        #: Registry look-ups made for deliveries (for tests and metrics).
        self.locates = 0
        # A registry in this process answers at once: ask it without a Deferred.
        self._locate_now: Callable[[Iterable[str]], dict[str, list[SessionRef]]] | None = \
            getattr(sessions, "locate_now", None)
        # Deliveries waiting for the one registry look-up of this reactor turn.
        self._to_locate: list[tuple[dict[str, list[Push]], str | None, Deferred[None]]] = []
        self._locate_call: IDelayedCall | None = None
        if forwarder is not None:
            forwarder.set_receiver(self.receive)

    def push(self, targets: dict[str, list[F._Frame]]) -> Deferred[None]:
        """Send each user's frames to all of its online sessions, here and on other nodes
        (:class:`IPusher`)."""
        return self.deliver(targets)

    def deliver(self, targets: dict[str, list[F._Frame]],
                skip: str | None = None) -> Deferred[None]:
        """Write frames to every session of each user, here or on other nodes, but ``skip``.

        Local sessions get them at once; the registry is asked once for all the users, and
        each other node holding some of their sessions gets one envelope.  Fires once every
        envelope is handed over (failures are logged, not raised).
        """
        return self.deliver_encoded(
            {user: [encoded(f) for f in frames] for user, frames in targets.items()}, skip)

    def deliver_encoded(self, targets: dict[str, list[Push]],
                        skip: str | None = None) -> Deferred[None]:
        """:meth:`deliver` for frames already encoded (shared between users)."""
        local = self.local
        for user, items in targets.items():
            mine = local.get(user)
            if mine and (len(mine) > 1 or skip not in mine):
                push_local(mine, items, skip)
        if self.forwarder is None:
            return succeed(None)
        if self._locate_now is not None:
            return self._forward(self._locate_now(targets), targets, skip)
        # A shared registry costs a round trip per look-up: every delivery of this reactor
        # turn waits for one look-up of all their users, made on the next turn.
        done: Deferred[None] = Deferred()
        self._to_locate.append((targets, skip, done))
        if self._locate_call is None:
            self._locate_call = self.clock.callLater(0, self._locate_batch)
        return done

    def _locate_batch(self) -> None:
        """Look up the sessions of every user of the waiting deliveries at once, then forward
        each delivery in the order it was made."""
        self._locate_call = None
        batch, self._to_locate = self._to_locate, []
        if not batch:
            return
        users: dict[str, None] = {}
        for targets, _, _ in batch:
            users.update(dict.fromkeys(targets))
        self.locates += 1
        metrics.count("session_lookups")
        d = maybeDeferred(self.sessions.locate, list(users))

        def forward(located: dict[str, list[SessionRef]]) -> None:
            for targets, skip, done in batch:
                self._forward(located, targets, skip).chainDeferred(done)

        def failed(failure: Failure) -> None:
            _log.failure("locating sessions to forward to failed", failure)
            for _, _, done in batch:
                done.callback(None)

        d.addCallbacks(forward, failed)

    def _forward(self, located: dict[str, list[SessionRef]], targets: dict[str, list[Push]],
                 skip: str | None) -> Deferred[None]:
        items = {user: [E.Item.of(*push) for push in pushes]
                 for user, pushes in targets.items() if user in located}
        envelopes = E.by_node(located, items, skip, here=self.node_id)
        if not envelopes:
            return succeed(None)
        assert self.forwarder is not None
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
        skip = envelope.skip
        for user, items in envelope.to.items():
            mine = local.get(user)
            if mine:
                push_local(mine, [(item.framed(), item.type, item.seq) for item in items],
                           skip)


def push_local(sessions: dict[str, Session], items: list[Push], skip: str | None) -> None:
    """Write the items to every session of one user on this node but ``skip``."""
    for session in list(sessions.values()):
        if session.id == skip:
            continue
        for item in items:
            session.push(*item)


def _nothing(_: object) -> None:
    return None


def _forward_failed(failure: Failure, node: str) -> None:
    _log.failure("forwarding to node {node} failed", failure, node=node)
