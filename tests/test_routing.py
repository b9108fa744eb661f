"""Tests of :mod:`dim.gateway.routing`: how each strategy spreads users over nodes."""
from __future__ import annotations

import random
from collections import Counter

from twisted.trial.unittest import SynchronousTestCase

from dim.cluster.interface import NodeInfo
from dim.gateway.routing import (STRATEGIES, ConsistentHash, HashRing, LeastConnections,
                                 Random, RoundRobin)


def make_nodes(n: int, connections: list[int] | None = None) -> list[NodeInfo]:
    """n nodes named n0, n1, ... with the given connection counts."""
    counts = connections or [0] * n
    return [NodeInfo(id=f"n{i}", host="127.0.0.1", port=7000 + i, connections=counts[i])
            for i in range(n)]


USERS = [f"user{i}" for i in range(3000)]


class EveryStrategyTests(SynchronousTestCase):
    """Properties every strategy shares."""

    def test_registry(self) -> None:
        """STRATEGIES names the four strategies."""
        self.assertEqual(set(STRATEGIES),
                         {"round_robin", "random", "consistent_hash", "least_connections"})

    def test_empty(self) -> None:
        """Every strategy answers None when there is no node."""
        for name, factory in STRATEGIES.items():
            self.assertIsNone(factory().choose([], "alice"), name)

    def test_single(self) -> None:
        """Every strategy picks the only node there is."""
        nodes = make_nodes(1)
        for name, factory in STRATEGIES.items():
            self.assertEqual(factory().choose(nodes, "alice"), nodes[0], name)

    def test_picks_from_list(self) -> None:
        """Every strategy only ever picks one of the nodes given."""
        nodes = make_nodes(3)[1:]
        for name, factory in STRATEGIES.items():
            strategy = factory()
            for user in USERS[:200]:
                self.assertIn(strategy.choose(nodes, user), nodes, name)


class RoundRobinTests(SynchronousTestCase):
    """RoundRobin hands out nodes in turn."""

    def test_in_turn(self) -> None:
        """Consecutive choices cycle through all nodes in id order, whatever the list order."""
        nodes = make_nodes(3)
        rr = RoundRobin()
        picks = [rr.choose(list(reversed(nodes)), "u").id for _ in range(6)]
        self.assertEqual(picks, ["n0", "n1", "n2", "n0", "n1", "n2"])

    def test_even(self) -> None:
        """Over many choices every node gets the same share."""
        rr = RoundRobin()
        nodes = make_nodes(4)
        counts = Counter(rr.choose(nodes, u).id for u in USERS[:400])
        self.assertEqual(set(counts.values()), {100})


class RandomTests(SynchronousTestCase):
    """Random picks uniformly with an injectable generator."""

    def test_seeded(self) -> None:
        """The same seed gives the same picks."""
        nodes = make_nodes(5)
        a = Random(random.Random(7))
        b = Random(random.Random(7))
        self.assertEqual([a.choose(nodes, "u").id for _ in range(50)],
                         [b.choose(nodes, "u").id for _ in range(50)])

    def test_roughly_uniform(self) -> None:
        """Each of 3 nodes gets between 28% and 39% of 3000 picks."""
        nodes = make_nodes(3)
        r = Random(random.Random(1))
        counts = Counter(r.choose(nodes, u).id for u in USERS)
        self.assertEqual(len(counts), 3)
        for node_id, n in counts.items():
            self.assertTrue(840 <= n <= 1170, (node_id, n))


class ConsistentHashTests(SynchronousTestCase):
    """ConsistentHash keeps users where they are while their node lives."""

    def assign(self, strategy: ConsistentHash, nodes: list[NodeInfo]) -> dict[str, str]:
        """Every user's node id."""
        return {u: strategy.choose(nodes, u).id for u in USERS}

    def test_sticky(self) -> None:
        """The same user gets the same node every time, and in a fresh instance."""
        nodes = make_nodes(5)
        first = self.assign(ConsistentHash(), nodes)
        self.assertEqual(first, self.assign(ConsistentHash(), list(reversed(nodes))))

    def test_balanced(self) -> None:
        """With 128 virtual points per node, each of 4 nodes gets 15%-35% of users."""
        counts = Counter(self.assign(ConsistentHash(), make_nodes(4)).values())
        for node_id, n in counts.items():
            self.assertTrue(450 <= n <= 1050, (node_id, n))

    def test_node_leaves(self) -> None:
        """When a node leaves (or is excluded), only its own users move."""
        ch = ConsistentHash()
        nodes = make_nodes(5)
        before = self.assign(ch, nodes)
        after = self.assign(ch, [n for n in nodes if n.id != "n2"])
        for user in USERS:
            if before[user] != "n2":
                self.assertEqual(after[user], before[user], user)
            else:
                self.assertNotEqual(after[user], "n2")

    def test_node_joins(self) -> None:
        """When a node joins, users only move to it, and about 1/N of them do."""
        ch = ConsistentHash()
        nodes = make_nodes(5)
        before = self.assign(ch, nodes[:4])
        after = self.assign(ch, nodes)
        moved = [u for u in USERS if after[u] != before[u]]
        self.assertTrue(all(after[u] == "n4" for u in moved))
        self.assertTrue(300 <= len(moved) <= 900, len(moved))

    def test_ring_lookup(self) -> None:
        """An empty ring finds nothing; a ring finds one of its nodes."""
        self.assertIsNone(HashRing([]).lookup("x"))
        self.assertIn(HashRing(["a", "b"]).lookup("x"), ("a", "b"))


class LeastConnectionsTests(SynchronousTestCase):
    """LeastConnections picks the least-loaded node, taking ties in turn."""

    def test_least(self) -> None:
        """The node with the fewest connections is chosen."""
        nodes = make_nodes(3, [10, 3, 7])
        self.assertEqual(LeastConnections().choose(nodes, "u").id, "n1")

    def test_ties_in_turn(self) -> None:
        """Tied nodes are taken in turn, never a busier one."""
        nodes = make_nodes(4, [2, 5, 2, 2])
        lc = LeastConnections()
        picks = [lc.choose(nodes, "u").id for _ in range(6)]
        self.assertEqual(picks, ["n0", "n2", "n3", "n0", "n2", "n3"])

    def test_follows_counts(self) -> None:
        """As counts change, choices follow the least-loaded node."""
        lc = LeastConnections()
        counts = [0, 0, 0]
        for _ in range(30):
            chosen = lc.choose(make_nodes(3, counts), "u")
            counts[int(chosen.id[1:])] += 1
        self.assertEqual(counts, [10, 10, 10])
