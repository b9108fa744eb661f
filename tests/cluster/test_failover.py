"""kill -9 of a node while twenty people chat on the real client core: nothing is lost, shown
twice or shown out of order, and the figures of the failover are printed."""
from __future__ import annotations

import signal
import time
from pathlib import Path

from twisted.internet import defer
from twisted.trial import unittest

from dim.bench.stats import percentile
from tests.cluster.kit import (Conversation, LocalCluster, Services, people_on, report,
                               wait_until)
from tests.harness import sleep


class NodeCrashTests(unittest.TestCase):
    """A node dies with kill -9 in the middle of a conversation."""

    timeout = 240

    @defer.inlineCallbacks
    def test_kill_9_during_chat(self):
        """20 people at 60 msg/s; kill -9 the busiest node: its people reconnect elsewhere
        (route excluding it, backoff, sync) and the checker finds 0 lost, 0 twice, 0 out of
        order."""
        cluster = LocalCluster(Path(self.mktemp()).resolve(), Services.shared(), nodes=3,
                               heartbeat=2, zk_timeout=4.0)
        self.addCleanup(cluster.cleanup)
        yield cluster.start()
        people = yield people_on(cluster, 20, "k")
        self.addCleanup(lambda: [p.stop() for p in people])
        by_node = {n: [p for p in people if p.node == n] for n in cluster.ids}
        self.assertTrue(all(by_node.values()), f"every node has people: {by_node}")

        chat = Conversation(people, rate=60)
        chat.start()
        yield sleep(4)
        victim = max(by_node, key=lambda n: len(by_node[n]))
        moved = [p for p in people if p.node == victim]
        killed_at = time.monotonic()
        cluster.nodes[victim].kill(signal.SIGKILL)
        vanished = yield cluster.wait_listed(set(cluster.ids) - {victim}, timeout=30)
        vanished = time.monotonic() - killed_at
        yield wait_until(lambda: all(any(t > killed_at for t in p.synced_at) for p in moved),
                         40, "the dead node's people reconnected and synced")
        reconnected = [min(t for t, _, _ in p.connects if t > killed_at) - killed_at
                       for p in moved]
        synced = [min(t for t in p.synced_at if t > killed_at) - killed_at for p in moved]
        for p in moved:
            self.assertNotEqual(p.node, victim)
        # Keep talking a while after everyone is back, then let the last messages arrive.
        yield sleep(max(0.0, killed_at + 12 - time.monotonic()))
        chat.stop()
        tally = yield chat.settle(60)
        report("kill_9", {
            "people": len(people), "on_dead_node": len(moved), "rate": chat.rate,
            "sent": tally.sent, "lost": len(tally.lost), "twice": len(tally.twice),
            "out_of_order": len(tally.out_of_order), "unconfirmed": tally.unconfirmed,
            "failed_then_retried": tally.failures,
            "vanished_from_nodes_s": round(vanished, 2),
            "all_reconnected_s": round(max(reconnected), 2),
            "all_synced_s": round(max(synced), 2),
            "latency_p50_ms": round(percentile(tally.latencies, 50) * 1000, 1),
            "latency_p99_ms": round(percentile(tally.latencies, 99) * 1000, 1)})
        self.assertEqual(tally.unconfirmed, 0, tally.summary())
        self.assertEqual(tally.lost, [], tally.summary())
        self.assertEqual(tally.twice, [], tally.summary())
        self.assertEqual(tally.out_of_order, [], tally.summary())
        self.assertGreater(tally.sent, 500)
