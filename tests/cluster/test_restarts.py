"""Kafka and Redis restart in the middle of a conversation across nodes: nothing that got a
``sent`` is lost.

These tests restart services, so they run on a stack of their own (``PrivateStack``: its own
directory and ports), never on the shared one other tests use at the same time.
"""
from __future__ import annotations

import time
from pathlib import Path

from twisted.internet import defer
from twisted.trial import unittest

from dim.bench.stats import percentile
from tests.cluster.kit import Conversation, LocalCluster, PrivateStack, people_on, report
from tests.harness import sleep


class ServiceRestartTests(unittest.TestCase):
    """Ten people on three nodes chat while a service restarts under them."""

    timeout = 300

    @defer.inlineCallbacks
    def setUp(self):
        self.cluster = LocalCluster(Path(self.mktemp()).resolve(), PrivateStack.services(),
                                    nodes=3, heartbeat=2, zk_timeout=4.0)
        self.addCleanup(self.cluster.cleanup)
        yield self.cluster.start()
        self.people = yield people_on(self.cluster, 10, "r")
        self.addCleanup(lambda: [p.stop() for p in self.people])

    @defer.inlineCallbacks
    def chat_through_restart(self, service: str, after: float = 8.0):
        """Chat at 40 msg/s, restart ``service`` 3 s in, go on ``after`` s once it is back;
        the tally once every message settled, and how long the restart took."""
        chat = Conversation(self.people, rate=40)
        chat.start()
        yield sleep(3)
        began = time.monotonic()
        took = yield PrivateStack.restart(service)
        yield sleep(after)
        chat.stop()
        tally = yield chat.settle(90)
        settled = time.monotonic() - began
        report(f"{service}_restart", {
            "sent": tally.sent, "lost": len(tally.lost), "twice": len(tally.twice),
            "out_of_order": len(tally.out_of_order), "unconfirmed": tally.unconfirmed,
            "failed_then_retried": tally.failures, "restart_s": round(took, 1),
            "settled_s": round(settled, 1),
            "latency_p50_ms": round(percentile(tally.latencies, 50) * 1000, 1),
            "latency_max_ms": round(max(tally.latencies or [0]) * 1000, 1)})
        for node in self.cluster.nodes.values():
            self.assertTrue(node.alive, node.log_tail())
        return tally

    @defer.inlineCallbacks
    def test_kafka_restart(self):
        """The broker restarts (about 15 s away): forwards wait for it, nothing is lost, shown
        twice or out of order."""
        tally = yield self.chat_through_restart("kafka")
        self.assertEqual(tally.unconfirmed, 0, tally.summary())
        self.assertEqual(tally.lost, [], tally.summary())
        self.assertEqual(tally.twice, [], tally.summary())
        self.assertEqual(tally.out_of_order, [], tally.summary())
        self.assertGreater(tally.sent, 500)

    @defer.inlineCallbacks
    def test_redis_restart(self):
        """Redis restarts (AOF on): every message that got ``sent`` is shown, once, in order
        (a send caught by the restart fails and is retried, as a person would)."""
        tally = yield self.chat_through_restart("redis")
        self.assertEqual(tally.unconfirmed, 0, tally.summary())
        self.assertEqual(tally.lost, [], tally.summary())
        self.assertEqual(tally.twice, [], tally.summary())
        self.assertEqual(tally.out_of_order, [], tally.summary())
        self.assertGreater(tally.sent, 300)
