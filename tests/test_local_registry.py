"""Tests of the in-process session and node registries."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dim.cluster.interface import INodeRegistry, ISessionRegistry, NodeInfo, SessionRef
from dim.cluster.local import LocalNodeRegistry, LocalSessionRegistry


class LocalSessionRegistryTests(SynchronousTestCase):
    """LocalSessionRegistry keeps sessions per user and node."""

    def setUp(self) -> None:
        self.reg = LocalSessionRegistry()

    def test_interface(self) -> None:
        """It provides ISessionRegistry."""
        self.assertTrue(verifyObject(ISessionRegistry, self.reg))

    def test_add_first(self) -> None:
        """add fires True for a user's first session and False for later ones."""
        self.assertTrue(self.successResultOf(self.reg.add("alice", "s1", "n1")))
        self.assertFalse(self.successResultOf(self.reg.add("alice", "s2", "n2")))
        self.assertTrue(self.successResultOf(self.reg.add("bob", "s3", "n1")))

    def test_remove_last(self) -> None:
        """remove fires True only when the user's last session goes."""
        self.reg.add("alice", "s1", "n1")
        self.reg.add("alice", "s2", "n1")
        self.assertFalse(self.successResultOf(self.reg.remove("alice", "s1")))
        self.assertTrue(self.successResultOf(self.reg.remove("alice", "s2")))
        self.assertFalse(self.successResultOf(self.reg.online("alice")))

    def test_remove_unknown(self) -> None:
        """Removing a session that is not there fires False and changes nothing."""
        self.assertFalse(self.successResultOf(self.reg.remove("alice", "s1")))
        self.reg.add("alice", "s1", "n1")
        self.assertFalse(self.successResultOf(self.reg.remove("alice", "zz")))
        self.assertTrue(self.successResultOf(self.reg.online("alice")))

    def test_locate(self) -> None:
        """locate lists the sessions of the asked users and leaves offline users out."""
        self.reg.add("alice", "s1", "n1")
        self.reg.add("alice", "s2", "n2")
        found = self.successResultOf(self.reg.locate(["alice", "bob"]))
        self.assertEqual(set(found), {"alice"})
        self.assertEqual(set(found["alice"]),
                         {SessionRef(session="s1", node="n1"),
                          SessionRef(session="s2", node="n2")})

    def test_drop_node(self) -> None:
        """drop_node forgets a node's sessions and reports who is still online."""
        self.reg.add("alice", "s1", "n1")
        self.reg.add("alice", "s2", "n2")
        self.reg.add("bob", "s3", "n1")
        self.reg.add("carol", "s4", "n2")
        result = self.successResultOf(self.reg.drop_node("n1"))
        self.assertEqual(result, {"alice": True, "bob": False})
        self.assertEqual(self.reg.sessions_of("alice"), {"s2": "n2"})
        self.assertFalse(self.successResultOf(self.reg.online("bob")))
        self.assertEqual(len(self.reg), 2)

    def test_refresh(self) -> None:
        """refresh fires and keeps every session."""
        self.reg.add("alice", "s1", "n1")
        self.assertIsNone(self.successResultOf(self.reg.refresh("n1")))
        self.assertTrue(self.successResultOf(self.reg.online("alice")))


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
