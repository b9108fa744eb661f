"""Interfaces of the parts that differ between one process and a cluster.

- :class:`ISessionRegistry`: which node holds which session of which user.  In one process it
  is an in-memory map (:mod:`dim.cluster.local`); in a cluster, Redis with a TTL renewed by
  heartbeats (:mod:`dim.cluster.sessions`).
- :class:`INodeRegistry`: the live nodes, their addresses and connection counts.  In one
  process, the one local node; in a cluster, ephemeral znodes in ZooKeeper.
- :class:`IForwarder`: carries envelopes (bytes) to other nodes.  In one process there are no other
  nodes; in a cluster, one Kafka topic per node.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from msgspec import Struct
from zope.interface import Attribute, Interface


class NodeInfo(Struct, kw_only=True):
    """A live node as the gateway sees it."""

    id: str
    host: str
    port: int
    connections: int = 0
    incarnation: str = ""
    #: Whether the node's client port speaks TLS (clients then connect with TLS and verify
    #: its certificate).
    tls: bool = False
    #: What the node finds wrong with the services it uses ("kafka: ...", "zookeeper: ..."),
    #: empty when all is well; the gateway's /v1/health reports them.
    problems: list[str] = []


class SessionRef(Struct, frozen=True, kw_only=True):
    """One session of a user on a node."""

    session: str
    node: str


class ISessionRegistry(Interface):
    """Where every online session of every user is.  Methods return Deferreds."""

    def add(user: str, session: str, node: str) -> Any:
        """Record a session; fires True if it is the user's first online session."""

    def remove(user: str, session: str) -> Any:
        """Forget a session; fires True if the user has no online session left."""

    def locate(users: list[str]) -> Any:
        """``{user: [SessionRef, ...]}`` for the given users (users with none are left out)."""

    def online(user: str) -> Any:
        """Whether the user has at least one online session."""

    def refresh(node: str) -> Any:
        """Renew the lifetime of every session of ``node`` (called on the node's heartbeat)."""

    def drop_node(node: str) -> Any:
        """Forget every session of a node that died; fires with ``{user: still_online}`` for
        the users it had."""


class INodeRegistry(Interface):
    """The live nodes.  ``nodes()`` answers from a local view kept current by watching."""

    def nodes() -> list[NodeInfo]:
        """The live nodes, now."""

    def subscribe(callback: Callable[[list[NodeInfo]], None]) -> None:
        """Call ``callback`` on the reactor thread with the new list whenever it changes."""


class IForwarder(Interface):
    """Carries encoded envelopes (:mod:`dim.cluster.envelope`, as bytes the forwarder does
    not look into) from this node to another node."""

    node = Attribute("The id of this node.")
    alone = Attribute(
        "True while no other node can receive what this one forwards (a node alone in its "
        "process): every session it could reach is its own.")

    def forward(node: str, payload: bytes) -> Any:
        """Hand one encoded envelope to be delivered to ``node``; fires once it is handed
        over durably (fails with :class:`dim.errors.Unavailable` if it could not be).
        Envelopes forwarded to one node arrive in the order they were forwarded, unless
        one fails."""

    def set_receiver(receiver: Callable[[bytes], Any]) -> None:
        """Hand each envelope addressed to this node to ``receiver`` (on the reactor thread),
        in order.  If ``receiver`` returns a Deferred, the envelope counts as handled when
        it fires."""


class IPusher(Interface):
    """Delivers frames to every online session of some users, on whichever node holds them.

    The gateway uses it for ``notify`` and ``presence`` frames.  In one process it is the
    node's fan-out; in a cluster, a forwarder that sends one envelope per node holding
    sessions.
    """

    def push(targets: dict[str, list[Any]]) -> Any:
        """Send each user's frames (typed frames of :mod:`dim.protocol.frames`) to all of its
        online sessions; fires once handed over.  Offline users are skipped silently."""
