"""Tests of HeartbeatMonitor: hello deadline, idle timeout, one sweep for all connections."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dim.protocol import frames as F
from dim.node.heartbeat import HeartbeatMonitor
from tests.fakes.node import Node


class HeartbeatTests(SynchronousTestCase):
    """The monitor closes late connections and leaves live ones alone."""

    def setUp(self) -> None:
        self.node = Node(heartbeat=30)
        self.clock = self.node.clock
        self.renewals = 0

        def renew() -> None:
            self.renewals += 1

        self.monitor = HeartbeatMonitor(lambda: self.node.core.connections, self.clock,
                                        heartbeat=30, on_sweep=renew)
        self.monitor.start()
        self.addCleanup(self.monitor.stop)

    def assertIdleTimeout(self, client, fragment: str) -> None:
        [err] = client.of_type(F.Error)
        self.assertEqual(err.code, "idle_timeout")
        self.assertIn(fragment, err.message)
        self.assertTrue(client.closing)

    def test_one_looping_call(self) -> None:
        """However many connections, the monitor keeps one timer."""
        for _ in range(5):
            self.node.login("alice")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_no_hello_in_10s(self) -> None:
        """A connection without hello is closed 10 s after connecting."""
        client = self.node.connect()
        self.clock.advance(9)
        self.assertFalse(client.closing)
        self.clock.advance(1)
        self.assertIdleTimeout(client, "hello did not arrive in time")

    def test_hello_in_time(self) -> None:
        """A connection welcomed within 10 s stays."""
        client = self.node.connect()
        self.clock.advance(5)
        client.send(F.Hello(v=1, token="t-alice"))
        self.clock.advance(20)
        self.assertFalse(client.closing)

    def test_idle_3h(self) -> None:
        """A welcomed connection silent for 3H seconds gets idle_timeout and is closed."""
        client = self.node.login("alice")
        self.clock.advance(89)
        self.assertFalse(client.closing)
        self.clock.advance(1)
        self.assertIdleTimeout(client, "90")

    def test_ping_keeps_alive(self) -> None:
        """A client pinging every H seconds is never closed."""
        client = self.node.login("alice")
        for _ in range(10):
            self.clock.advance(30)
            client.send(F.Ping())
        self.assertEqual(client.received(), [F.Pong(last_seq=0)] * 10)
        self.assertFalse(client.closing)

    def test_only_the_silent_one(self) -> None:
        """Only the silent connection of two is closed."""
        quiet = self.node.login("alice")
        chatty = self.node.login("bob")
        for _ in range(4):
            self.clock.advance(25)
            chatty.send(F.Ping())
        self.assertTrue(quiet.closing)
        self.assertFalse(chatty.closing)

    def test_congested_client_closed_slow_consumer(self) -> None:
        """A client that reads nothing for the grace period is closed with slow_consumer,
        though it keeps writing."""
        client = self.node.login("alice")
        client.transport.producer.pauseProducing()
        self.clock.advance(14)
        client.send(F.Ping())
        self.assertFalse(client.closing)
        self.clock.advance(1)
        [err] = client.of_type(F.Error)
        self.assertEqual(err.code, "slow_consumer")
        self.assertTrue(client.closing)

    def test_congestion_that_drains_is_forgiven(self) -> None:
        """A client that catches up within the grace period stays connected."""
        client = self.node.login("alice")
        producer = client.transport.producer
        producer.pauseProducing()
        self.clock.advance(14)
        producer.resumeProducing()
        self.clock.advance(20)
        client.send(F.Ping())
        self.assertFalse(client.closing)
        self.assertEqual(client.of_type(F.Error), [])

    def test_stuck_close_aborted(self) -> None:
        """A closing connection that cannot flush is aborted after CLOSE_TIMEOUT."""
        client = self.node.connect()
        client.send(F.Ping())
        self.assertTrue(client.closing)
        self.assertFalse(client.transport.disconnected)
        self.clock.advance(10)
        self.assertTrue(client.transport.disconnected)

    def test_renewal_each_heartbeat(self) -> None:
        """on_sweep runs once per heartbeat period."""
        self.clock.pump([1] * 95)
        self.assertEqual(self.renewals, 3)

    def test_stop(self) -> None:
        """stop leaves no timer behind."""
        self.monitor.stop()
        self.assertFalse(self.monitor.running)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        client = self.node.connect()
        self.clock.advance(60)
        self.assertFalse(client.closing)

    def test_lost_connection_ignored(self) -> None:
        """A connection lost before its deadline is not touched."""
        client = self.node.connect()
        client.lose()
        self.clock.advance(20)
        self.assertEqual(client.received(), [])
