"""Pushing frames to users' sessions from outside a node: the cluster gateway's IPusher."""
from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from dim.cluster import envelope as E
from dim.cluster.interface import IForwarder, IPusher, ISessionRegistry, SessionRef
from dim.protocol import frames as F

_log = Logger()


@implementer(IPusher)
class ForwardingPusher:
    """Finds the nodes holding the target users' sessions and sends each node one envelope.

    The envelope is the one nodes exchange among themselves (:mod:`dim.cluster.envelope`),
    so a node handles a gateway's push like a peer's.
    """

    def __init__(self, sessions: ISessionRegistry, forwarder: IForwarder) -> None:
        self.sessions = sessions
        self.forwarder = forwarder

    def push(self, targets: dict[str, list[F._Frame]]) -> Deferred[None]:
        """Send each user's frames to the nodes holding its sessions; offline users are
        skipped.  Fires when every envelope was handed to Kafka."""
        d = maybeDeferred(self.sessions.locate, list(targets))
        d.addCallback(self._forward, targets)
        return d

    def _forward(self, located: dict[str, list[SessionRef]],
                 targets: dict[str, list[F._Frame]]) -> Deferred[None]:
        items = {user: [E.item(f) for f in frames]
                 for user, frames in targets.items() if user in located}
        sends = [maybeDeferred(self.forwarder.forward, node, E.encode(envelope))
                 for node, envelope in E.by_node(located, [(items, None)]).items()]
        done = DeferredList(sends, consumeErrors=True)
        return done.addCallback(self._report)

    @staticmethod
    def _report(results: list[tuple[bool, Any]]) -> None:
        for ok, value in results:
            if not ok:
                _log.failure("pushing to a node failed", value)

