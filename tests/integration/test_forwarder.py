"""KafkaForwarder on a real Kafka (``DIM_KAFKA``, default 127.0.0.1:9092).

The tests fail when Kafka does not answer.  Every test uses fresh node ids (so fresh topics
and groups) and deletes its topics afterwards.  Round-trip latencies are printed.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import msgspec
from confluent_kafka.admin import AdminClient
from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from dim.bench.stats import percentile
from dim.cluster.forwarder import KafkaForwarder, topic_of
from dim.cluster.interface import IForwarder
from dim.cluster.threads import ThreadBridge
from dim.errors import Unavailable
from tests.integration.services import kafka_security

KAFKA = os.environ.get("DIM_KAFKA", "127.0.0.1:9092")
#: The login of the stack's Kafka (DIM_KAFKA_SASL), for every client of these tests.
SECURITY = kafka_security()
enc = msgspec.json.encode
dec = msgspec.json.decode


def sleep(seconds: float) -> defer.Deferred[None]:
    """Fire after ``seconds`` of real time."""
    return task.deferLater(reactor, seconds, lambda: None)


async def wait_for(predicate: Any, timeout: float) -> None:
    """Wait until ``predicate()`` is true (fails after ``timeout`` seconds)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await sleep(0.01)


def _j(obj: Any) -> bytes:
    """A JSON payload to forward."""
    return json.dumps(obj).encode()


def _n(payload: bytes) -> int:
    """The ``n`` of a forwarded JSON payload."""
    return json.loads(payload)["n"]


class KafkaForwarderTests(TestCase):
    """Two nodes exchange envelopes through their Kafka topics."""

    timeout = 120

    def setUp(self) -> None:
        self.bridge = ThreadBridge("kafka-test", max_threads=8, reactor=reactor)
        self.bridge.start()
        self.addCleanup(self.bridge.stop)
        self.run_id = uuid.uuid4().hex[:10]
        self.topics: list[str] = []
        self.addCleanup(self.delete_topics)

    def delete_topics(self) -> defer.Deferred[None]:
        from confluent_kafka.admin import AdminClient

        def run() -> None:
            if self.topics:
                admin = AdminClient({"bootstrap.servers": KAFKA, **SECURITY})
                for f in admin.delete_topics(self.topics, operation_timeout=10).values():
                    try:
                        f.result(10)
                    except Exception:
                        pass
        return self.bridge.call(run)

    async def forwarder(self, name: str, **kw: Any) -> KafkaForwarder:
        """A started forwarder for node ``<name>-<run>``, stopped after the test."""
        node = f"{name}-{self.run_id}"
        forwarder = KafkaForwarder(node, KAFKA, self.bridge, connect_timeout=5.0,
                                   security_config=SECURITY, **kw)
        self.topics += [forwarder.topic, forwarder.nudge_topic]
        await forwarder.start()
        self.addCleanup(forwarder.stop)
        return forwarder

    def test_provides_interface(self):
        """KafkaForwarder provides IForwarder."""
        self.assertTrue(verifyObject(IForwarder, KafkaForwarder("n", KAFKA, self.bridge)))

    @defer.inlineCallbacks
    def test_exchange_1000_in_order(self):
        """Nodes a and b each send 1000 envelopes to the other: all arrive, in order."""
        a = yield defer.Deferred.fromCoroutine(self.forwarder("a"))
        b = yield defer.Deferred.fromCoroutine(self.forwarder("b"))
        self.assertEqual(topic_of(a.node), a.topic)
        got: dict[str, list[int]] = {"a": [], "b": []}
        a.set_receiver(lambda env: got["a"].append(_n(env)))
        b.set_receiver(lambda env: got["b"].append(_n(env)))
        start = time.monotonic()
        sends = []
        for n in range(1000):
            sends.append(a.forward(b.node, _j({"from": a.node, "n": n, "body": "x" * 100})))
            sends.append(b.forward(a.node, _j({"from": b.node, "n": n, "body": "y" * 100})))
        yield defer.gatherResults(sends)
        acked = time.monotonic() - start
        yield defer.Deferred.fromCoroutine(
            wait_for(lambda: len(got["a"]) >= 1000 and len(got["b"]) >= 1000, 30))
        total = time.monotonic() - start
        print(f"\n2000 envelopes: all acknowledged after {acked:.2f} s, "
              f"all received after {total:.2f} s (replication {a.replication})")
        self.assertEqual(list(range(1000)), got["a"])
        self.assertEqual(list(range(1000)), got["b"])

    @defer.inlineCallbacks
    def test_many_ticks_in_order(self):
        """500 envelopes forwarded one per reactor turn, without waiting for the brokers
        (so many records in the producer at once), arrive in the order forwarded."""
        a = yield defer.Deferred.fromCoroutine(self.forwarder("ta"))
        b = yield defer.Deferred.fromCoroutine(self.forwarder("tb"))
        got: list[int] = []
        b.set_receiver(lambda env: got.append(dec(env)))
        sends = []
        for n in range(500):
            sends.append(a.forward(b.node, enc(n)))
            yield sleep(0)
        yield defer.gatherResults(sends)
        yield defer.Deferred.fromCoroutine(wait_for(lambda: len(got) >= 500, 30))
        self.assertEqual(got, list(range(500)))
        self.assertGreater(a.records_out, 50)  # not all in one record

    @defer.inlineCallbacks
    def test_sender_only(self):
        """A forwarder that does not consume (the gateway's) makes no topic and still sends."""
        node = yield defer.Deferred.fromCoroutine(self.forwarder("node"))
        got: list[bytes] = []
        node.set_receiver(got.append)
        gateway = KafkaForwarder(f"gateway-{self.run_id}", KAFKA, self.bridge,
                                 connect_timeout=5.0, consume=False, security_config=SECURITY)
        yield gateway.start()
        self.addCleanup(gateway.stop)
        yield gateway.forward(node.node, b'{"to": {}}')
        yield defer.Deferred.fromCoroutine(wait_for(lambda: got, 30))
        self.assertEqual(got, [b'{"to": {}}'])
        topics = yield self.bridge.call(
            lambda: AdminClient({"bootstrap.servers": KAFKA, **SECURITY}).list_topics(
                timeout=5).topics)
        self.assertNotIn(gateway.topic, topics)

    @defer.inlineCallbacks
    def test_commit_after_receiver_fired(self):
        """An envelope whose receiver Deferred never fired is delivered again after a
        restart; handled ones are not."""
        a = yield defer.Deferred.fromCoroutine(self.forwarder("a"))
        b = yield defer.Deferred.fromCoroutine(self.forwarder("b"))
        held: list[defer.Deferred[None]] = []
        got: list[int] = []

        def receive(env: bytes) -> Any:
            got.append(_n(env))
            if got[-1] == 2:
                d: defer.Deferred[None] = defer.Deferred()
                held.append(d)
                return d
            return None
        b.set_receiver(receive)
        for n in range(2):
            yield a.forward(b.node, _j({"n": n}))
        yield defer.Deferred.fromCoroutine(wait_for(lambda: got == [0, 1], 10))
        yield sleep(0.3)  # let the commit of 0..1 go out with the next poll
        yield a.forward(b.node, _j({"n": 2}))
        yield defer.Deferred.fromCoroutine(wait_for(lambda: got == [0, 1, 2], 10))
        # Simulate a crash of b after n=2 was received but before its offset was committed:
        # end the loop, drop the pending commit, close the consumer without committing.
        b._running.clear()
        held[0].callback(None)
        yield b._consumer_loop
        b._uncommitted = None  # a crash: the last batch's offset never committed
        yield self.bridge.call(b._consumer.close)
        yield b._producer_loop
        again: list[int] = []
        b2 = KafkaForwarder(b.node, KAFKA, self.bridge, security_config=SECURITY)
        b2.set_receiver(lambda env: again.append(_n(env)))
        yield b2.start()
        self.addCleanup(b2.stop)
        yield defer.Deferred.fromCoroutine(wait_for(lambda: again == [2], 15))
        yield sleep(0.5)
        self.assertEqual([2], again)

    @defer.inlineCallbacks
    def test_round_trip_latency(self):
        """Round trips a -> b -> a, one at a time, for linger.ms 0 and 5 (printed)."""
        report = []
        for linger in (0, 5):
            a = yield defer.Deferred.fromCoroutine(self.forwarder(f"pa{linger}",
                                                                  linger_ms=linger))
            b = yield defer.Deferred.fromCoroutine(self.forwarder(f"pb{linger}",
                                                                  linger_ms=linger))
            b.set_receiver(lambda env, a=a, b=b: b.forward(a.node, env))
            waiting: dict[int, defer.Deferred[None]] = {}
            a.set_receiver(lambda env, waiting=waiting: waiting.pop(_n(env)).callback(None))
            samples = []
            for n in range(-20, 300):  # the first 20 warm up
                d: defer.Deferred[None] = defer.Deferred()
                waiting[n] = d
                start = time.perf_counter()
                a.forward(b.node, _j({"n": n}))
                yield d
                if n >= 0:
                    samples.append((time.perf_counter() - start) * 1000)
            p50, p99 = percentile(samples, 50), percentile(samples, 99)
            report.append(f"linger.ms={linger}: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                          f"over {len(samples)} round trips")
            self.assertLess(p50, 1000)
        print("\n" + "\n".join(report))

    @defer.inlineCallbacks
    def test_unreachable_fails_fast(self):
        """start() fails with Unavailable when no broker answers."""
        f = KafkaForwarder("x", "127.0.0.1:1", self.bridge, connect_timeout=1.0)
        yield self.assertFailure(f.start(), Unavailable)
