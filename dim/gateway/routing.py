"""Strategies that pick the node a client should connect to.

Each strategy's ``choose(nodes, user)`` gets the live nodes (already without the ones the
client excluded) and the user asking, and returns one of them, or None for an empty list.
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import random
from typing import Protocol
from collections.abc import Callable

from dim.cluster.interface import NodeInfo


class RoutingStrategy(Protocol):
    """Picks a node for a user."""

    def choose(self, nodes: list[NodeInfo], user: str) -> NodeInfo | None:
        """One of ``nodes`` for ``user``, or None if ``nodes`` is empty."""


class RoundRobin:
    """Hands out the nodes in turn, in node id order."""

    def __init__(self) -> None:
        self._turn = itertools.count()

    def choose(self, nodes: list[NodeInfo], user: str) -> NodeInfo | None:
        """The next node in turn."""
        if not nodes:
            return None
        ordered = sorted(nodes, key=lambda n: n.id)
        return ordered[next(self._turn) % len(ordered)]


class Random:
    """Picks a node uniformly at random (``rng`` is injectable for tests)."""

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()

    def choose(self, nodes: list[NodeInfo], user: str) -> NodeInfo | None:
        """A random node."""
        if not nodes:
            return None
        return self._rng.choice(sorted(nodes, key=lambda n: n.id))


def _hash64(key: str) -> int:
    """A stable 64-bit hash of a string (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big")


class HashRing:
    """A consistent-hash ring of node ids with ``replicas`` virtual points per node."""

    def __init__(self, node_ids: list[str], replicas: int = 128) -> None:
        points = sorted((_hash64(f"{node_id}#{i}"), node_id)
                        for node_id in node_ids for i in range(replicas))
        self._keys = [p[0] for p in points]
        self._ids = [p[1] for p in points]

    def lookup(self, key: str) -> str | None:
        """The node id owning ``key``: the first point clockwise of the key's hash."""
        if not self._keys:
            return None
        i = bisect.bisect_right(self._keys, _hash64(key)) % len(self._keys)
        return self._ids[i]


class ConsistentHash:
    """Sends each user to the same node while that node lives.

    A user moves only when its node leaves (or is excluded); when a node comes, only about
    1/N of the users move to it.
    """

    def __init__(self, replicas: int = 128) -> None:
        self._replicas = replicas
        self._rings: dict[frozenset[str], HashRing] = {}

    def _ring(self, node_ids: frozenset[str]) -> HashRing:
        ring = self._rings.get(node_ids)
        if ring is None:
            if len(self._rings) >= 64:
                self._rings.clear()
            ring = self._rings[node_ids] = HashRing(sorted(node_ids), self._replicas)
        return ring

    def choose(self, nodes: list[NodeInfo], user: str) -> NodeInfo | None:
        """The node owning ``user`` on the ring of ``nodes``."""
        if not nodes:
            return None
        by_id = {n.id: n for n in nodes}
        node_id = self._ring(frozenset(by_id)).lookup(user)
        return by_id[node_id] if node_id is not None else None


class LeastConnections:
    """Picks a node with the fewest connections; ties are taken in turn.

    Connection counts reach the gateway with some delay, so taking tied nodes in turn
    spreads a burst of logins instead of sending all of it to one node.
    """

    def __init__(self) -> None:
        self._turn = itertools.count()

    def choose(self, nodes: list[NodeInfo], user: str) -> NodeInfo | None:
        """A least-loaded node."""
        if not nodes:
            return None
        fewest = min(n.connections for n in nodes)
        tied = sorted((n for n in nodes if n.connections == fewest), key=lambda n: n.id)
        return tied[next(self._turn) % len(tied)]


#: Every strategy by the name used in configuration.
STRATEGIES: dict[str, Callable[[], RoutingStrategy]] = {
    "round_robin": RoundRobin,
    "random": Random,
    "consistent_hash": ConsistentHash,
    "least_connections": LeastConnections,
}
