"""Tests of NodeService: it listens, sweeps, and drains its clients on stop."""
from __future__ import annotations

from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from dim.node.connection import ClientConnection
from dim.node.service import NodeService
from dim.protocol import codec
from dim.protocol import frames as F
from tests.fakes.node import Node


class NodeServiceTests(SynchronousTestCase):
    """NodeService wires the port, the heartbeat sweep and the core together."""

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.node = Node(clock=self.reactor)
        self.service = NodeService(self.node.core, "tcp:0:interface=127.0.0.1", self.reactor)

    def accept(self) -> tuple[ClientConnection, StringTransport]:
        """Accept one connection through the listening factory."""
        factory = self.reactor.tcpServers[0][1]
        conn = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = StringTransport()
        conn.makeConnection(transport)
        return conn, transport

    def test_listens(self) -> None:
        """startService listens on the description's port and interface."""
        self.service.startService()
        self.assertEqual(len(self.reactor.tcpServers), 1)
        port, _, _, interface = self.reactor.tcpServers[0]
        self.assertEqual((port, interface), (0, "127.0.0.1"))
        self.assertIsNotNone(self.service.port)
        self.assertIs(self.successResultOf(self.service.listening()), self.service.port)
        self.service.stopService()

    def test_connection_count(self) -> None:
        """connection_count follows accepted and lost connections."""
        self.service.startService()
        conn, _ = self.accept()
        self.accept()
        self.assertEqual(self.service.connection_count(), 2)
        conn.connectionLost(None)
        self.assertEqual(self.service.connection_count(), 1)
        self.service.stopService()

    def test_heartbeat_runs(self) -> None:
        """The service's sweep closes a connection that never says hello."""
        self.service.startService()
        _, transport = self.accept()
        self.reactor.advance(10)
        self.assertTrue(transport.disconnecting)
        self.service.stopService()

    def test_stop_drains(self) -> None:
        """stopService stops listening, sends goaway, and fires once clients are gone."""
        self.service.startService()
        conn, transport = self.accept()
        conn.dataReceived(codec.encode(F.Hello(v=1, token="t-alice")))
        transport.clear()
        d = self.service.stopService()
        self.assertFalse(self.service.running)
        frames = codec.FrameDecoder(F.SERVER_FRAME_TYPES).feed(transport.value())
        self.assertEqual(frames, [F.Goaway(reason="shutdown")])
        self.assertNoResult(d)
        self.reactor.advance(1)
        self.assertTrue(transport.disconnecting)
        conn.connectionLost(None)
        self.assertIsNone(self.successResultOf(d))
        self.assertFalse(self.service.monitor.running)
        self.assertEqual(len(self.node.sessions), 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
