"""Pushing frames to users' sessions from outside a node: the cluster gateway's IPusher."""
from __future__ import annotations

from typing import Any

import msgspec
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.logger import Logger
from zope.interface import implementer

from dim.cluster.interface import IForwarder, IPusher, ISessionRegistry

_log = Logger()
_encode = msgspec.json.Encoder().encode


@implementer(IPusher)
class ForwardingPusher:
    """Finds the nodes holding the target users' sessions and sends each node one envelope.

    The envelope is the one nodes exchange among themselves (``{"t": "frames", "to": {user:
    [frame, ...]}, "skip": null}``), so a node handles a gateway's push like a peer's.
    """

    def __init__(self, sessions: ISessionRegistry, forwarder: IForwarder) -> None:
        self.sessions = sessions
        self.forwarder = forwarder

    def push(self, targets: dict[str, list[dict[str, Any]]]) -> Deferred[None]:
        """Send each user's frames to the nodes holding its sessions; offline users are
        skipped.  Fires when every envelope was handed to Kafka."""
        d = maybeDeferred(self.sessions.locate, list(targets))
        d.addCallback(self._forward, targets)
        return d

    def _forward(self, located: dict[str, list[Any]],
                 targets: dict[str, list[dict[str, Any]]]) -> Deferred[None]:
        by_node: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for user, refs in located.items():
            for node in {ref.node for ref in refs}:
                by_node.setdefault(node, {})[user] = targets[user]
        sends = [maybeDeferred(self.forwarder.forward, node,
                               _encode({"t": "frames", "to": to, "skip": None}))
                 for node, to in by_node.items()]
        done = DeferredList(sends, consumeErrors=True)
        done.addCallback(self._report)
        return done

    @staticmethod
    def _report(results: list[tuple[bool, Any]]) -> None:
        for ok, value in results:
            if not ok:
                _log.failure("pushing to a node failed", value)
