"""Tests of the in-process session and node registries."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from dim.cluster.interface import INodeRegistry, NodeInfo, SessionRef
from dim.cluster.local import LocalNodeRegistry, LocalSessionRegistry
from tests.fakes.node import RemoteLikeRegistry
from tests.session_registry_contract import SessionRegistryContractMixin


class LocalSessionRegistryContractTests(SessionRegistryContractMixin, TestCase):
    """LocalSessionRegistry keeps the registry contract."""

    def makeRegistry(self) -> LocalSessionRegistry:
        return LocalSessionRegistry()


class RemoteLikeRegistryContractTests(SessionRegistryContractMixin, TestCase):
    """The node tests' stand-in for Redis keeps the registry contract too."""

    def makeRegistry(self) -> RemoteLikeRegistry:
        return RemoteLikeRegistry()


class LocalSessionRegistryTests(SynchronousTestCase):
    """What only the in-process registry offers: answers without Deferreds, and counts."""

    def setUp(self) -> None:
        self.reg = LocalSessionRegistry()

    def test_answers_at_once(self) -> None:
        """Every Deferred it returns has already fired."""
        self.assertTrue(self.successResultOf(self.reg.add("alice", "s1", "n1")))
        self.assertEqual({"alice": [SessionRef(session="s1", node="n1")]},
                         self.successResultOf(self.reg.locate(["alice"])))
        self.assertIsNone(self.successResultOf(self.reg.refresh("n1")))
        self.assertEqual({"alice": False}, self.successResultOf(self.reg.drop_node("n1")))

    def test_locate_now(self) -> None:
        """locate_now answers as locate does, without a Deferred, for any iterable."""
        self.reg.add("alice", "s1", "n1")
        self.reg.add("alice", "s2", "n2")
        self.assertEqual(self.successResultOf(self.reg.locate(["alice", "bob"])),
                         self.reg.locate_now(iter(["alice", "bob"])))

    def test_sessions_of_and_len(self) -> None:
        """sessions_of copies one user's sessions; len counts every session."""
        self.reg.add("alice", "s1", "n1")
        self.reg.add("alice", "s2", "n2")
        self.reg.add("bob", "s3", "n1")
        sessions = self.reg.sessions_of("alice")
        self.assertEqual({"s1": "n1", "s2": "n2"}, sessions)
        sessions.clear()
        self.assertEqual({"s1": "n1", "s2": "n2"}, self.reg.sessions_of("alice"))
        self.assertEqual({}, self.reg.sessions_of("carol"))
        self.assertEqual(3, len(self.reg))
        self.reg.drop_node("n1")
        self.assertEqual(1, len(self.reg))


class LocalNodeRegistryTests(SynchronousTestCase):
    """LocalNodeRegistry lists this process's nodes and tells subscribers of changes."""

    def test_interface(self) -> None:
        """It provides INodeRegistry."""
        self.assertTrue(verifyObject(INodeRegistry, LocalNodeRegistry()))

    def test_add_remove_notify(self) -> None:
        """add and remove change nodes() and call subscribers with the new list."""
        reg = LocalNodeRegistry()
        seen: list[list[str]] = []
        reg.subscribe(lambda nodes: seen.append([n.id for n in nodes]))
        reg.add(NodeInfo(id="n1", host="127.0.0.1", port=9000))
        reg.add(NodeInfo(id="n2", host="127.0.0.1", port=9001))
        reg.remove("n1")
        reg.remove("n1")
        self.assertEqual([n.id for n in reg.nodes()], ["n2"])
        self.assertEqual(seen, [["n1"], ["n1", "n2"], ["n2"]])

    def test_set_connections(self) -> None:
        """set_connections updates the count and notifies once per change."""
        reg = LocalNodeRegistry([NodeInfo(id="n1", host="h", port=1)])
        seen: list[int] = []
        reg.subscribe(lambda nodes: seen.append(nodes[0].connections))
        reg.set_connections("n1", 5)
        reg.set_connections("n1", 5)
        self.assertEqual(reg.nodes()[0].connections, 5)
        self.assertEqual(seen, [5])
        self.assertRaises(KeyError, reg.set_connections, "nx", 1)

    def test_live_counter(self) -> None:
        """A node added with a counter reports its live value in nodes()."""
        reg = LocalNodeRegistry()
        count = [3]
        reg.add(NodeInfo(id="n1", host="h", port=1), connections=lambda: count[0])
        self.assertEqual(reg.nodes()[0].connections, 3)
        count[0] = 7
        self.assertEqual(reg.nodes()[0].connections, 7)

    def test_failing_subscriber(self) -> None:
        """A failing subscriber is logged and does not stop the others."""
        reg = LocalNodeRegistry()
        seen: list[int] = []

        def bad(nodes: list[NodeInfo]) -> None:
            raise RuntimeError("boom")

        reg.subscribe(bad)
        reg.subscribe(lambda nodes: seen.append(len(nodes)))
        reg.add(NodeInfo(id="n1", host="h", port=1))
        self.assertEqual(seen, [1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
