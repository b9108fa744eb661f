"""Unit tests of the node registry's refresh when ZooKeeper is briefly out of reach."""
from __future__ import annotations

from typing import Any

from kazoo.exceptions import ConnectionLoss
from twisted.internet import defer, reactor
from twisted.internet.task import Clock, deferLater
from twisted.logger import globalLogPublisher
from twisted.trial import unittest

from dim.cluster.interface import NodeInfo
from dim.cluster.registry import ZooKeeperNodeRegistry
from dim.cluster.threads import ThreadBridge


class FlakyClient:
    """A kazoo client stand-in whose ``set`` fails with ConnectionLoss ``losses`` times."""

    def __init__(self, losses: int, error: Exception | None = None) -> None:
        self.losses = losses
        self.error = error or ConnectionLoss()
        self.sets: list[tuple[str, bytes]] = []
        self.creates: list[str] = []

    def create(self, path: str, data: bytes, acl: Any = None, ephemeral: bool = False,
               makepath: bool = False) -> None:
        self.creates.append(path)

    def set(self, path: str, data: bytes) -> None:
        if self.losses:
            self.losses -= 1
            raise self.error
        self.sets.append((path, data))


class RefreshTests(unittest.TestCase):
    """A lost connection during a refresh is a warning and the next tick retries."""

    def setUp(self) -> None:
        self.bridge = ThreadBridge("registry-test", max_threads=1, reactor=reactor)
        self.bridge.start()
        self.addCleanup(self.bridge.stop)
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    @defer.inlineCallbacks
    def refresh(self, registry: ZooKeeperNodeRegistry, clock: Clock):
        """Run one refresh tick and let its thread call come back."""
        clock.advance(registry.refresh_interval)
        for _ in range(100):
            yield deferLater(reactor, 0.01, lambda: None)
            if not self.bridge.pool.working and not self.bridge.pool.q.qsize():
                break
        yield deferLater(reactor, 0.02, lambda: None)

    @defer.inlineCallbacks
    def test_connection_loss_warns_and_retries(self):
        """ConnectionLoss on a refresh logs a warning, no error; the next tick writes."""
        client, clock = FlakyClient(losses=1), Clock()
        registry = ZooKeeperNodeRegistry("unused", self.bridge, clock, client=client)
        yield registry.register(NodeInfo(id="n1", host="h", port=1), connections=lambda: 3)
        self.addCleanup(registry._refresh.stop)
        yield self.refresh(registry, clock)
        self.assertEqual(client.sets, [])
        warnings = [e for e in self.events
                    if "ZooKeeper connection lost" in e.get("log_format", "")]
        self.assertEqual(len(warnings), 1)
        self.assertEqual(self.flushLoggedErrors(), [])
        yield self.refresh(registry, clock)
        self.assertEqual(len(client.sets), 1)
        self.assertIn(b'"connections":3', client.sets[0][1])

    @defer.inlineCallbacks
    def test_other_errors_still_logged(self):
        """An unexpected error on a refresh is logged as an error."""
        client, clock = FlakyClient(losses=1, error=RuntimeError("broken")), Clock()
        registry = ZooKeeperNodeRegistry("unused", self.bridge, clock, client=client)
        yield registry.register(NodeInfo(id="n1", host="h", port=1))
        self.addCleanup(registry._refresh.stop)
        yield self.refresh(registry, clock)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class ListeningClient(FlakyClient):
    """A stand-in that takes a connection state listener, as kazoo's client does."""

    def __init__(self) -> None:
        super().__init__(0)
        self.listeners: list[Any] = []

    def add_listener(self, listener: Any) -> None:
        self.listeners.append(listener)


class StateTests(unittest.TestCase):
    """ZooKeeper connection states are logged at honest levels."""

    def test_states_logged(self) -> None:
        """A lost connection is a warning, a lost session an error, the return info; the
        state shows in problems()."""
        from twisted.logger import LogLevel

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        bridge = ThreadBridge("registry-state", max_threads=1, reactor=reactor)
        client = ListeningClient()
        registry = ZooKeeperNodeRegistry("zk:1", bridge, Clock(), client=client)
        self.assertEqual(len(client.listeners), 1)
        levels = []
        for state in ("CONNECTED", "SUSPENDED", "CONNECTED", "SUSPENDED", "LOST", "CONNECTED"):
            registry._log_state(state)
            if state != "CONNECTED":
                self.assertEqual(registry.problems(), [f"zookeeper: {state.lower()}"])
            ours = [e for e in events if e.get("log_namespace") == "dim.zookeeper"]
            levels.append(ours[-1]["log_level"] if ours else None)
            events.clear()
        self.assertEqual(levels, [None, LogLevel.warn, LogLevel.info, LogLevel.warn,
                                  LogLevel.error, LogLevel.info])
        self.assertEqual(registry.problems(), [])


class KazooLogTests(unittest.TestCase):
    """kazoo's Python log records reach Twisted's logger, not stderr."""

    @defer.inlineCallbacks
    def test_kazoo_lines_to_twisted(self):
        """A kazoo warning about a dropped connection is logged at info under its own
        namespace, and a kazoo error stays an error; nothing propagates to the root
        logger (whose last-resort handler writes to stderr)."""
        import logging

        from twisted.logger import LogLevel

        from dim.cluster.registry import capture_kazoo_logs

        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        bridge = ThreadBridge("kazoo-log", max_threads=1, reactor=reactor)
        capture_kazoo_logs(bridge)
        kazoo = logging.getLogger("kazoo.client")
        kazoo.warning("Connection dropped: socket connection broken")
        kazoo.error("Session has expired")
        yield deferLater(reactor, 0.05, lambda: None)
        ours = [(e["log_namespace"], e["log_level"], e.get("text")) for e in events
                if e.get("log_namespace", "").startswith("kazoo")]
        self.assertEqual(ours, [
            ("kazoo.client", LogLevel.info, "Connection dropped: socket connection broken"),
            ("kazoo.client", LogLevel.error, "Session has expired")])
        self.assertFalse(logging.getLogger("kazoo").propagate)
