"""Tests of the service helpers that order start-up and shutdown."""
from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import defer
from twisted.trial import unittest

from dim.runtime import OrderedMultiService, ResourceService


class SlowStop(Service):
    """A service whose stop finishes only when the test says so."""

    def __init__(self, name: str, log: list[str]) -> None:
        self.setName(name)
        self.log = log
        self.stopping: defer.Deferred[None] = defer.Deferred()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        self.log.append(f"stop {self.name}")
        return self.stopping.addCallback(lambda _: self.log.append(f"stopped {self.name}"))


class OrderedMultiServiceTests(unittest.TestCase):
    """Children stop one at a time, last added first."""

    def test_waits_for_each_child(self) -> None:
        """The first child (a store) starts stopping only after the later one finished."""
        log: list[str] = []
        top = OrderedMultiService()
        ResourceService("store", on_stop=lambda: log.append("store closed")).setServiceParent(top)
        node = SlowStop("node", log)
        node.setServiceParent(top)
        top.startService()
        done = top.stopService()
        self.assertEqual(log, ["stop node"])
        self.assertNoResult(done)
        node.stopping.callback(None)
        self.assertEqual(log, ["stop node", "stopped node", "store closed"])
        self.successResultOf(done)

    def test_failure_does_not_stop_the_rest(self) -> None:
        """A child that fails to stop is logged and the others still stop."""
        log: list[str] = []
        top = OrderedMultiService()
        ResourceService("store", on_stop=lambda: log.append("store closed")).setServiceParent(top)
        ResourceService("bad", on_stop=lambda: 1 / 0).setServiceParent(top)
        top.startService()
        self.successResultOf(top.stopService())
        self.assertEqual(log, ["store closed"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)
