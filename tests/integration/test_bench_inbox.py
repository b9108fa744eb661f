"""dim-bench's ``big_inbox`` scenario run small: 2,000 entries on SQLite and on real Redis.

It starts the embedded ``dim`` and a one-node cluster (Redis, ZooKeeper and Kafka from the
environment, as ``scripts/stack env`` prints them); the test fails when one does not answer.
"""
from __future__ import annotations

from pathlib import Path

from twisted.trial import unittest

from dim.bench import inbox, report
from dim.bench.scenarios import SEARCH_LIMIT, Context, big_inbox
from tests.integration.services import require_kafka, require_redis, require_zookeeper


class BigInboxScenarioTests(unittest.TestCase):
    """The scenario fills both stores and times every call through the real gateways."""

    timeout = 240

    def test_small_inbox_on_sqlite_and_redis(self) -> None:
        """Every call answers 200 with what the fill stored; Redis's searches report the
        entries they scanned; every process's CPU is counted, Redis's among them."""
        require_redis()
        require_zookeeper()
        require_kafka()
        ctx = Context(quick=True, out=Path(self.mktemp()).resolve(),
                      log=lambda line: None)
        result = big_inbox(ctx, 2000, 0.2)
        self.assertEqual(report.OK, result["status"])
        self.assertEqual([], report.check_schema({"machine": report.machine(),
                                                  "scenarios": {"big_inbox": result}}))
        hits = result["sqlite"]["fill"]["hits"]
        self.assertEqual(0, hits["qx"])
        self.assertEqual(inbox.RARE_COUNT, hits["zephyr"])
        for store in ("sqlite", "redis"):
            fill = result[store]["fill"]
            self.assertEqual((2000, 0, hits), (fill["entries"], fill["failed"], fill["hits"]))
            self.assertEqual(inbox.PEERS + inbox.GROUPS, fill["conversations"])
            calls = result[store]["calls"]
            self.assertEqual(50, calls["conversations"]["found"])
            for _, q in inbox.QUERIES:
                self.assertEqual(min(hits[q], SEARCH_LIMIT), calls[q]["found"], (store, q))
            for call in calls.values():
                self.assertEqual([("200", call["requests"])], list(call["statuses"].items()))
                self.assertGreaterEqual(call["requests"], 3)
                self.assertGreater(call["p99_ms"], 0)
                self.assertGreaterEqual(call["p99_ms"], call["p50_ms"])
                self.assertGreater(call["all_cpu_ms_per_request"], 0)
        redis = result["redis"]["calls"]
        self.assertIn("Redis", redis["conversations"]["cpu_ms_per_request"])
        self.assertIn("gateway", redis["conversations"]["cpu_ms_per_request"])
        self.assertEqual(2000, redis["qx"]["entries_scanned"])
        self.assertEqual(500, redis["hello"]["entries_scanned"])
        self.assertGreater(redis["qx"]["entries_scanned_per_s"], 0)
        md = report.markdown({"machine": report.machine(), "scenarios": {"big_inbox": result}})
        self.assertIn("## big_inbox: one inbox of 2,000 entries", md)
        self.assertIn("| Redis | search `qx` (2 letters, no match) | 0 |", md)
