"""The bus under faults, on three Kafka brokers: a broker SIGKILLed during a conversation
across nodes, two brokers down at once, and ZooKeeper away for longer than the session
timeout.  Nothing that got ``sent`` is lost, and a broker's death costs a quiet conversation
at most a few seconds.

These tests kill services, so they run on a three-broker stack of their own
(:class:`ThreeBrokers`: its own directory and ports), never on the shared one.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet import defer, threads
from twisted.trial import unittest

from dim.bench.stats import percentile
from dim.launch import port_open
from tests.cluster.kit import Conversation, LocalCluster, Services, people_on, report
from tests.harness import REPO, http, sleep

#: The worst send -> shown a quiet conversation may see when one of three brokers dies.
STALL_BOUND = 3.0


class ThreeBrokers:
    """``scripts/stack --brokers 3`` in a directory and on ports of this test process,
    started on first use and stopped when the process exits."""

    _services: Services | None = None
    offset = 0
    DIR = REPO / ".cluster" / f"test-stack3-{os.getpid()}"

    @classmethod
    def _stack(cls, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, str(REPO / "scripts" / "stack"), *args,
                               "--dir", str(cls.DIR)], capture_output=True, text=True,
                              timeout=timeout)

    @classmethod
    def services(cls) -> Services:
        """Start the stack unless it runs; its services (fails the test if it cannot)."""
        if cls._services is None:
            for offset in range(6100, 7900, 100):
                ports = [6379 + offset, 2181 + offset, *range(9092 + offset, 9098 + offset)]
                if not any(port_open(p, timeout=0.2) for p in ports):
                    break
            else:
                raise AssertionError("no free ports for a three-broker stack")
            cls.offset = offset
            result = cls._stack("up", "--brokers", "3", "--port-offset", str(offset))
            if result.returncode != 0:
                raise AssertionError(f"the 3-broker stack did not start:\n"
                                     f"{result.stderr[-3000:]}")
            found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
            cls._services = Services(found["DIM_REDIS"], found["DIM_ZOOKEEPER"],
                                     found["DIM_KAFKA"], found.get("DIM_ZOOKEEPER_AUTH", ""),
                                     found.get("DIM_KAFKA_SASL", ""))
            import atexit
            atexit.register(cls.down)
        return cls._services

    @classmethod
    def run(cls, *args: str) -> defer.Deferred[float]:
        """``scripts/stack ARGS`` in a thread; fires with the seconds it took."""
        def go() -> float:
            began = time.monotonic()
            result = cls._stack(*args)
            if result.returncode != 0:
                raise AssertionError(f"stack {args} failed:\n{result.stderr[-3000:]}")
            return time.monotonic() - began
        return threads.deferToThread(go)

    @classmethod
    def kill(cls, service: str) -> defer.Deferred[float]:
        """SIGKILL one service (``kafka-2``, ``zookeeper``)."""
        return cls.run("stop", service, "--kill")

    @classmethod
    def back(cls) -> defer.Deferred[float]:
        """Start whatever is stopped again and wait until it answers (on the stack's own
        ports, whatever DIM_STACK_PORT_OFFSET says)."""
        return cls.run("up", "--port-offset", str(cls.offset))

    @classmethod
    def down(cls) -> None:
        """Stop the stack and delete its data."""
        cls._stack("down", "--purge", timeout=120)
        cls._services = None
        import shutil
        shutil.rmtree(cls.DIR, ignore_errors=True)


class BrokerFaultTests(unittest.TestCase):
    """People on two nodes chat while brokers die under them."""

    timeout = 600

    @defer.inlineCallbacks
    def setUp(self):
        self.cluster = LocalCluster(Path(self.mktemp()).resolve(), ThreeBrokers.services(),
                                    nodes=2, heartbeat=2, zk_timeout=4.0)
        self.addCleanup(self.cluster.cleanup)
        yield self.cluster.start()
        self.people = yield people_on(self.cluster, 4, "b")
        self.addCleanup(lambda: [p.stop() for p in self.people])

    def worst_during(self, chat: Conversation, began: float, until: float) -> float:
        """The worst send -> shown of the messages sent between ``began`` and ``until``."""
        worst = 0.0
        for sender, message, recipient, _ in chat.messages:
            sent = sender.sent_at[message.id]
            shown = recipient.shown_at.get((sender.user, message.id))
            if began <= sent <= until and shown is not None:
                worst = max(worst, shown - sent)
        return worst

    @defer.inlineCallbacks
    def test_broker_sigkill_quiet_conversation(self):
        """Each broker in turn is SIGKILLed during a quiet conversation across two nodes:
        no message waits more than 3 s, none is lost, shown twice or out of order."""
        chat = Conversation(self.people, rate=5)
        chat.start()
        self.addCleanup(chat.stop)  # also when the test fails midway
        yield sleep(3)
        stalls = []
        for broker in ("kafka-1", "kafka-2", "kafka-3"):
            began = time.monotonic()
            yield ThreeBrokers.kill(broker)
            yield sleep(8)
            stalls.append(round(self.worst_during(chat, began - 0.5, began + 8), 2))
            yield ThreeBrokers.back()
            yield sleep(4)
        chat.stop()
        tally = yield chat.settle(90)
        report("broker_sigkill", {
            "sent": tally.sent, "lost": len(tally.lost), "twice": len(tally.twice),
            "out_of_order": len(tally.out_of_order), "worst_per_kill_s": stalls,
            "latency_p50_ms": round(percentile(tally.latencies, 50) * 1000, 1),
            "latency_max_ms": round(max(tally.latencies or [0]) * 1000, 1)})
        self.assertEqual(tally.unconfirmed, 0, tally.summary())
        self.assertEqual(tally.lost, [], tally.summary())
        self.assertEqual(tally.twice, [], tally.summary())
        self.assertEqual(tally.out_of_order, [], tally.summary())
        self.assertLessEqual(max(stalls), STALL_BOUND, f"worst per kill: {stalls}")
        for node in self.cluster.nodes.values():
            self.assertTrue(node.alive, node.log_tail())
            self.assertIn("is unreachable", node.log_tail(400))

    @defer.inlineCallbacks
    def test_two_brokers_down(self):
        """Two of three brokers down: sends still get ``sent`` (the store has them), the
        gateway says degraded, and delivery resumes once one broker is back; nothing lost."""
        chat = Conversation(self.people, rate=5)
        chat.start()
        self.addCleanup(chat.stop)  # also when the test fails midway
        yield sleep(2)
        yield ThreeBrokers.kill("kafka-2")
        yield ThreeBrokers.kill("kafka-3")
        yield sleep(6)
        health = yield http("GET", f"{self.cluster.base}/v1/health")
        during = len(chat.messages)
        yield sleep(4)
        confirmed = sum(1 for _, m, _, _ in chat.messages[during:] if m.seq is not None)
        yield ThreeBrokers.back()
        yield sleep(5)
        chat.stop()
        tally = yield chat.settle(120)
        report("two_brokers_down", {
            "sent": tally.sent, "lost": len(tally.lost), "twice": len(tally.twice),
            "confirmed_while_down": confirmed, "health_while_down": health.body,
            "latency_max_ms": round(max(tally.latencies or [0]) * 1000, 1)})
        self.assertGreater(confirmed, 5, "sends got no `sent` while two brokers were down")
        self.assertEqual(health.body.get("status"), "degraded", health.body)
        self.assertEqual(tally.unconfirmed, 0, tally.summary())
        self.assertEqual(tally.lost, [], tally.summary())
        self.assertEqual(tally.twice, [], tally.summary())

    @defer.inlineCallbacks
    def test_zookeeper_away_longer_than_session(self):
        """ZooKeeper is SIGKILLed and stays away for longer than the session timeout: the
        nodes keep their sessions or register again, stay listed, log it as DIM lines (not
        stderr), and nothing is lost."""
        chat = Conversation(self.people, rate=5)
        chat.start()
        self.addCleanup(chat.stop)  # also when the test fails midway
        yield sleep(2)
        yield ThreeBrokers.kill("zookeeper")
        yield sleep(4.0 + 4)
        yield ThreeBrokers.back()
        took = yield self.cluster.wait_listed(set(self.cluster.ids), 60)
        yield sleep(4)
        chat.stop()
        tally = yield chat.settle(90)
        logs = "".join(node.log_tail(400) for node in self.cluster.nodes.values())
        report("zookeeper_away", {
            "sent": tally.sent, "lost": len(tally.lost), "twice": len(tally.twice),
            "relisted_s": round(took, 1),
            "latency_max_ms": round(max(tally.latencies or [0]) * 1000, 1)})
        self.assertEqual(tally.unconfirmed, 0, tally.summary())
        self.assertEqual(tally.lost, [], tally.summary())
        self.assertEqual(tally.twice, [], tally.summary())
        self.assertIn("ZooKeeper connection to", logs)
        # ZooKeeper keeps sessions across its own restart (they are in its log, and their
        # timers start again when it is back), so a node's session usually survives;
        # if it expired, the node registered again and re-added its sessions.
        for node_id, node in self.cluster.nodes.items():
            tail = node.log_tail(400)
            self.assertTrue("(same session)" in tail or "registered again" in tail,
                            f"{node_id} neither kept its session nor registered again")
        self.assertNotIn("[stderr#error]", logs)


