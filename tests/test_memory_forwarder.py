"""Tests of the in-memory forwarder twin: nodes of one process joined by a ForwarderHub."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from dim.cluster.interface import IForwarder
from dim.cluster.local import ForwarderHub
from dim.errors import Unavailable


class MemoryForwarderTests(SynchronousTestCase):
    """Envelopes go from one node's forwarder to another node's receiver, in order."""

    def setUp(self) -> None:
        self.hub = ForwarderHub()
        self.a, self.b = self.hub.forwarder("a"), self.hub.forwarder("b")
        self.got: dict[str, list[bytes]] = {"a": [], "b": []}
        self.a.set_receiver(self.got["a"].append)
        self.b.set_receiver(self.got["b"].append)

    def test_interface(self) -> None:
        """It provides IForwarder, with the id of its node."""
        self.assertTrue(verifyObject(IForwarder, self.a))
        self.assertEqual(self.a.node, "a")

    def test_forward_hands_over_at_once(self) -> None:
        """forward() hands the bytes to the node's receiver before it fires, and the hub
        logs who sent what to whom."""
        d = self.a.forward("b", bytearray(b"e1"))
        self.assertEqual(self.got["b"], [b"e1"])
        self.assertIsInstance(self.got["b"][0], bytes)
        self.assertIsNone(self.successResultOf(d))
        self.a.forward("b", b"e2")
        self.b.forward("a", b"e3")
        self.assertEqual(self.got, {"a": [b"e3"], "b": [b"e1", b"e2"]})
        self.assertEqual(self.hub.log, [("a", "b", b"e1"), ("a", "b", b"e2"),
                                        ("b", "a", b"e3")])

    def test_unknown_node_dropped(self) -> None:
        """An envelope for a node the hub does not know is dropped (and logged), not an
        error: in a cluster it would wait on the node's topic."""
        self.successResultOf(self.a.forward("z", b"e"))
        self.assertEqual(self.got, {"a": [], "b": []})
        self.assertEqual(self.hub.log, [("a", "z", b"e")])

    def test_hold_and_release(self) -> None:
        """Held envelopes are delivered in order on release, then delivery is immediate."""
        self.hub.hold()
        self.a.forward("b", b"1")
        self.a.forward("b", b"2")
        self.assertEqual(self.got["b"], [])
        self.hub.release()
        self.assertEqual(self.got["b"], [b"1", b"2"])
        self.a.forward("b", b"3")
        self.assertEqual(self.got["b"], [b"1", b"2", b"3"])

    def test_failing_node(self) -> None:
        """Forwarding to a node in ``failing`` fails with its error and hands nothing over;
        other nodes are unaffected."""
        self.hub.failing["b"] = Unavailable("the broker does not answer")
        self.failureResultOf(self.a.forward("b", b"x"), Unavailable)
        self.successResultOf(self.b.forward("a", b"y"))
        self.assertEqual(self.got, {"a": [b"y"], "b": []})
        self.assertEqual(self.hub.log, [("b", "a", b"y")])

    def test_alone(self) -> None:
        """A forwarder is alone while no other node of its hub takes envelopes: a sender
        that never receives (a gateway) keeps a node alone."""
        hub = ForwarderHub()
        lone = hub.forwarder("n1")
        self.assertTrue(lone.alone)
        lone.set_receiver(lambda payload: None)
        self.assertTrue(lone.alone)
        gateway = hub.forwarder("gateway")
        self.assertTrue(lone.alone)
        hub.forwarder("n2").set_receiver(lambda payload: None)
        self.assertFalse(lone.alone)
        self.assertFalse(gateway.alone)
