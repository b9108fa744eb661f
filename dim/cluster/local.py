"""In-process twins of the cluster interfaces: one process, no Redis, no ZooKeeper, no Kafka.

:class:`LocalSessionRegistry` keeps every session in a dict; :class:`LocalNodeRegistry` keeps
the nodes of this process; :class:`ForwarderHub` joins :class:`MemoryForwarder` instances, one
per node, so several nodes in one process (tests, simulations) exchange envelopes in memory
(the embedded ``dim``'s lone node has one that reaches nobody else).  Every Deferred they
return has already fired, so callers written for the cluster implementations work
unchanged.  The embedded ``dim`` and the unit tests use them.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable, Iterable

import msgspec
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import Logger
from zope.interface import implementer

from dim.cluster.interface import (IForwarder, INodeRegistry, ISessionRegistry, NodeInfo,
                                   SessionRef)

_log = Logger()


@implementer(ISessionRegistry)
class LocalSessionRegistry:
    """Which node holds which session of which user, kept in memory."""

    def __init__(self) -> None:
        #: user -> {session id: node id}; a user with no session has no key.
        self._sessions: dict[str, dict[str, str]] = {}

    def add(self, user: str, session: str, node: str) -> Deferred[bool]:
        """Record a session; fires True if it is the user's first online session."""
        sessions = self._sessions.setdefault(user, {})
        first = not sessions
        sessions[session] = node
        return succeed(first)

    def remove(self, user: str, session: str) -> Deferred[bool]:
        """Forget a session; fires True if the user has no online session left.

        Forgetting a session that is not there changes nothing and fires False unless the
        user has no session at all.
        """
        sessions = self._sessions.get(user)
        if sessions is None:
            return succeed(False)
        existed = sessions.pop(session, None) is not None
        if not sessions:
            del self._sessions[user]
            return succeed(existed)
        return succeed(False)

    def locate(self, users: list[str]) -> Deferred[dict[str, list[SessionRef]]]:
        """``{user: [SessionRef, ...]}`` for the given users that have a session."""
        return succeed(self.locate_now(users))

    def locate_now(self, users: Iterable[str]) -> dict[str, list[SessionRef]]:
        """:meth:`locate` without the Deferred, for callers in the same process."""
        found: dict[str, list[SessionRef]] = {}
        for user in users:
            sessions = self._sessions.get(user)
            if sessions:
                found[user] = [SessionRef(session=s, node=n) for s, n in sessions.items()]
        return found

    def online(self, user: str) -> Deferred[bool]:
        """Whether the user has at least one online session."""
        return succeed(bool(self._sessions.get(user)))

    def refresh(self, node: str) -> Deferred[None]:
        """Nothing to renew: local sessions live until removed."""
        return succeed(None)

    def drop_node(self, node: str) -> Deferred[dict[str, bool]]:
        """Forget every session of ``node``; fires ``{user: still_online}`` for its users."""
        result: dict[str, bool] = {}
        for user in list(self._sessions):
            sessions = self._sessions[user]
            gone = [s for s, n in sessions.items() if n == node]
            if not gone:
                continue
            for s in gone:
                del sessions[s]
            result[user] = bool(sessions)
            if not sessions:
                del self._sessions[user]
        return succeed(result)

    def sessions_of(self, user: str) -> dict[str, str]:
        """A copy of ``{session: node}`` for one user (for tests and diagnostics)."""
        return dict(self._sessions.get(user, {}))

    def __len__(self) -> int:
        return sum(len(s) for s in self._sessions.values())


ConnectionCount = Callable[[], int]


@implementer(INodeRegistry)
class LocalNodeRegistry:
    """The nodes of this process, for a gateway running beside them.

    A node's connection count is either set with :meth:`set_connections` or read live from
    a callable given to :meth:`add` (e.g. ``NodeService.connection_count``).
    """

    def __init__(self, nodes: Iterable[NodeInfo] = ()) -> None:
        self._nodes: dict[str, NodeInfo] = {}
        self._counters: dict[str, ConnectionCount] = {}
        self._subscribers: list[Callable[[list[NodeInfo]], None]] = []
        for node in nodes:
            self._nodes[node.id] = node

    def add(self, node: NodeInfo, connections: ConnectionCount | None = None) -> None:
        """Register (or replace) a node; ``connections`` reports its live connection count."""
        self._nodes[node.id] = node
        if connections is not None:
            self._counters[node.id] = connections
        else:
            self._counters.pop(node.id, None)
        self._changed()

    def remove(self, node_id: str) -> None:
        """Forget a node (it stopped)."""
        if self._nodes.pop(node_id, None) is not None:
            self._counters.pop(node_id, None)
            self._changed()

    def set_connections(self, node_id: str, n: int) -> None:
        """Set the connection count of a node that has no live counter."""
        node = self._nodes.get(node_id)
        if node is None:
            raise KeyError(node_id)
        self._counters.pop(node_id, None)
        if node.connections != n:
            self._nodes[node_id] = msgspec.structs.replace(node, connections=n)
            self._changed()

    def nodes(self) -> list[NodeInfo]:
        """The live nodes, now, with current connection counts."""
        out = []
        for node_id, node in self._nodes.items():
            counter = self._counters.get(node_id)
            if counter is not None:
                node = msgspec.structs.replace(node, connections=counter())
            out.append(node)
        return out

    def subscribe(self, callback: Callable[[list[NodeInfo]], None]) -> None:
        """Call ``callback`` with the new list whenever a node is added, removed or set."""
        self._subscribers.append(callback)

    def _changed(self) -> None:
        nodes = self.nodes()
        for callback in list(self._subscribers):
            try:
                callback(nodes)
            except Exception:
                _log.failure("node registry subscriber failed")


class ForwarderHub:
    """Joins the :class:`MemoryForwarder` of several nodes of one process.

    Envelopes are handed to the receiving node at once, in order, unless :meth:`hold` was
    called; ``log`` records every ``(from node, to node, payload)`` handed over.  Forwarding
    to a node in ``failing`` fails with its error, as a forwarder whose transport does not
    answer does.
    """

    def __init__(self) -> None:
        self.receivers: dict[str, Callable[[bytes], Any]] = {}
        self.log: list[tuple[str, str, bytes]] = []
        #: Envelopes kept back by :meth:`hold` (None while delivering at once).
        self.held: list[tuple[str, bytes]] | None = None
        #: node -> the error forwarding to it fails with.
        self.failing: dict[str, Exception] = {}

    def forwarder(self, node: str) -> MemoryForwarder:
        """The forwarder of one node."""
        return MemoryForwarder(self, node)

    def hold(self) -> None:
        """Keep envelopes instead of delivering them, until :meth:`release`."""
        self.held = []

    def release(self) -> None:
        """Deliver the kept envelopes in order and deliver at once from now on."""
        held, self.held = self.held or [], None
        for node, payload in held:
            self._hand(node, payload)

    def _hand(self, node: str, payload: bytes) -> None:
        receiver = self.receivers.get(node)
        if receiver is None:
            _log.warn("no node {node} in this process; envelope dropped", node=node)
            return
        receiver(payload)


@implementer(IForwarder)
class MemoryForwarder:
    """An :class:`IForwarder` handing envelopes to another node of the same process."""

    def __init__(self, hub: ForwarderHub, node: str) -> None:
        self.hub = hub
        self.node = node

    @property
    def alone(self) -> bool:
        """Whether no other node of the hub takes envelopes."""
        return all(node == self.node for node in self.hub.receivers)

    def forward(self, node: str, payload: bytes) -> Deferred[None]:
        """Hand the envelope's bytes to the node's receiver (or keep it while held)."""
        error = self.hub.failing.get(node)
        if error is not None:
            return fail(error)
        payload = bytes(payload)
        self.hub.log.append((self.node, node, payload))
        if self.hub.held is not None:
            self.hub.held.append((node, payload))
        else:
            self.hub._hand(node, payload)
        return succeed(None)

    def set_receiver(self, receiver: Callable[[bytes], Any]) -> None:
        """Register this node's receiver with the hub."""
        self.hub.receivers[self.node] = receiver
