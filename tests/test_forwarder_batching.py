"""KafkaForwarder's batching per reactor tick, with a fake producer and a task.Clock: one
record per destination node per tick, delivery reports settled in one hop per poll."""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from twisted.internet import task
from twisted.trial.unittest import TestCase

from dim.cluster.forwarder import KafkaForwarder, pack, topic_of, unpack
from dim.errors import Unavailable


class FakeReactor(task.Clock):
    """A task.Clock that also records hops from other threads (run them with :meth:`hops`)."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def callFromThread(self, f: Callable[..., Any], *args: Any) -> None:
        self.from_threads.append((f, args))

    def hops(self) -> int:
        """Run the recorded hops; how many there were."""
        calls, self.from_threads = self.from_threads, []
        for f, args in calls:
            f(*args)
        return len(calls)


class FakeBridge:
    """Just enough of a ThreadBridge: its reactor and the hop to it."""

    def __init__(self, reactor: FakeReactor) -> None:
        self.reactor = reactor

    def to_reactor(self, f: Callable[..., Any], *args: Any) -> None:
        self.reactor.callFromThread(f, *args)


class FakeProducer:
    """Records produce() calls; poll() reports every queued record as delivered (or failed
    with ``fail``)."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes, Callable[[Any, Any], None]]] = []
        self.queued: list[Callable[[Any, Any], None]] = []
        self.fail: Any = None
        self.full = False

    def produce(self, topic: str, value: bytes, key: bytes,
                on_delivery: Callable[[Any, Any], None]) -> None:
        if self.full:
            raise BufferError("queue full")
        self.produced.append((topic, value, on_delivery))
        self.queued.append(on_delivery)

    def poll(self, timeout: float) -> int:
        queued, self.queued = self.queued, []
        for report in queued:
            report(self.fail, None)
        return len(queued)


class BatchingTests(TestCase):
    """Envelopes of one tick share a record per destination node."""

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        bridge: Any = FakeBridge(self.reactor)
        self.forwarder = KafkaForwarder("a", "127.0.0.1:1", bridge)
        self.producer = FakeProducer()
        self.forwarder._producer = self.producer
        self.forwarder._running.set()

    def test_one_node_one_produce(self) -> None:
        """N forwards to the same node in one tick become one produce() of all N, in order."""
        ds = [self.forwarder.forward("b", f"e{n}".encode()) for n in range(50)]
        self.assertEqual(self.producer.produced, [])  # nothing before the tick ends
        self.reactor.advance(0)
        self.assertEqual(len(self.producer.produced), 1)
        topic, value, _ = self.producer.produced[0]
        self.assertEqual(topic, topic_of("b"))
        self.assertEqual(unpack(value), [f"e{n}".encode() for n in range(50)])
        self.assertFalse(any(d.called for d in ds))
        self.forwarder._poll_producer(0)
        self.assertEqual(self.reactor.hops(), 1)
        for d in ds:
            self.assertIsNone(self.successResultOf(d))

    def test_two_nodes_two_produces(self) -> None:
        """Forwards to two nodes in one tick become two produce() calls, one per node."""
        self.forwarder.forward("b", b"1")
        self.forwarder.forward("c", b"2")
        self.forwarder.forward("b", b"3")
        self.reactor.advance(0)
        got = {topic: unpack(value) for topic, value, _ in self.producer.produced}
        self.assertEqual(got, {topic_of("b"): [b"1", b"3"], topic_of("c"): [b"2"]})

    def test_next_tick_next_record(self) -> None:
        """A forward made after the tick's flush goes into the next tick's record."""
        self.forwarder.forward("b", b"1")
        self.reactor.advance(0)
        self.forwarder.forward("b", b"2")
        self.reactor.advance(0)
        self.assertEqual([unpack(v) for _, v, _ in self.producer.produced], [[b"1"], [b"2"]])

    def test_reports_settled_in_one_hop(self) -> None:
        """The reports of many records gathered in one poll reach the reactor in one hop."""
        ds = []
        for _ in range(5):
            ds += [self.forwarder.forward(node, b"x") for node in ("b", "c", "d")]
            self.reactor.advance(0)
        self.assertEqual(len(self.producer.produced), 15)
        self.forwarder._poll_producer(0)
        self.assertEqual(self.reactor.hops(), 1)
        self.assertTrue(all(d.called for d in ds))
        self.forwarder._poll_producer(0)
        self.assertEqual(self.reactor.hops(), 0)  # nothing to report: no hop

    def test_failed_record_fails_each_forward(self) -> None:
        """A record the brokers did not take fails every forward it carried with
        Unavailable."""
        self.producer.fail = "broker down"
        ds = [self.forwarder.forward("b", b"x") for _ in range(3)]
        self.reactor.advance(0)
        self.forwarder._poll_producer(0)
        self.reactor.hops()
        for d in ds:
            self.failureResultOf(d, Unavailable)

    def test_full_queue_fails_at_once(self) -> None:
        """A full producer queue fails the tick's forwards to that node at once."""
        self.producer.full = True
        d = self.forwarder.forward("b", b"x")
        self.reactor.advance(0)
        self.failureResultOf(d, Unavailable)

    def test_not_running_fails(self) -> None:
        """forward() on a stopped forwarder fails with Unavailable."""
        self.forwarder._running.clear()
        self.failureResultOf(self.forwarder.forward("b", b"x"), Unavailable)


class FramingTests(TestCase):
    """The record framing round-trips and rejects cut records."""

    def test_round_trip(self) -> None:
        """pack then unpack gives back the payloads, empty ones included."""
        payloads = [b"", b"a", b"\x00" * 70000, "é".encode()]
        self.assertEqual(unpack(pack(payloads)), payloads)
        self.assertEqual(unpack(b""), [])

    def test_cut_short(self) -> None:
        """A record cut inside a length or a payload is refused."""
        value = pack([b"hello", b"world"])
        for cut in (3, 7, len(value) - 1):
            self.assertRaises(ValueError, unpack, value[:cut])


class ReceivingTests(TestCase):
    """A record's envelopes reach the receiver one by one, in order, and once."""

    def setUp(self) -> None:
        bridge: Any = FakeBridge(FakeReactor())
        self.forwarder = KafkaForwarder("a", "127.0.0.1:1", bridge)
        self.got: list[bytes] = []
        self.forwarder.set_receiver(self.got.append)

    def test_deliver_in_order(self) -> None:
        """Each payload of a record is handed to the receiver, in order."""
        pending: list[Any] = []
        self.forwarder._deliver(b"b:1:1", pack([b"1", b"2", b"3"]), pending)
        self.assertEqual(self.got, [b"1", b"2", b"3"])
        self.assertEqual(pending, [])

    def test_repeat_dropped(self) -> None:
        """A record id handed on already (its nudge came first) is not handed on again."""
        pending: list[Any] = []
        nudge = pack([b"b:1:7", pack([b"x", b"y"])])
        self.forwarder._deliver_nudge(nudge, pending)
        self.forwarder._deliver(b"b:1:7", pack([b"x", b"y"]), pending)
        self.forwarder._deliver_nudge(nudge, pending)  # the nudge from another partition
        self.forwarder._deliver(b"b:1:8", pack([b"z"]), pending)
        self.assertEqual(self.got, [b"x", b"y", b"z"])

    def test_old_keys_not_ids(self) -> None:
        """A record keyed by a bare node id (no record id) is always handed on."""
        pending: list[Any] = []
        self.forwarder._deliver(b"n1", pack([b"1"]), pending)
        self.forwarder._deliver(b"n1", pack([b"2"]), pending)
        self.assertEqual(self.got, [b"1", b"2"])


class NudgeTests(TestCase):
    """Records held up by the brokers are sent again on the nudge partitions."""

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        bridge: Any = FakeBridge(self.reactor)
        self.forwarder = KafkaForwarder("a", "127.0.0.1:1", bridge, nudge_after=1.0)
        self.producer = FakeProducer()
        self.nudger = FakeNudger()
        self.forwarder._producer = self.producer
        self.forwarder._nudger = self.nudger
        self.forwarder.nudge_partitions = 3
        self.forwarder._running.set()

    def test_held_record_nudged_once_on_every_partition(self) -> None:
        """A record unacknowledged after nudge_after goes to each nudge partition once,
        with the other records to the same node held as long, in one nudge record."""
        self.forwarder.forward("b", b"1")
        self.reactor.advance(0)
        self.reactor.advance(0.2)
        self.forwarder.forward("b", b"2")
        self.forwarder.forward("c", b"3")
        self.reactor.advance(0)
        self.forwarder._check_held()
        self.assertEqual(self.nudger.produced, [])  # not held long enough yet
        self.reactor.advance(1.1)
        self.forwarder._check_held()
        by_topic: dict[str, set[int]] = {}
        for topic, value, partition in self.nudger.produced:
            by_topic.setdefault(topic, set()).add(partition)
            parts = unpack(value)
            payloads = [p for at in range(1, len(parts), 2) for p in unpack(parts[at])]
            self.assertEqual(payloads, [b"1", b"2"] if topic.startswith(topic_of("b"))
                             else [b"3"])
        self.assertEqual(by_topic, {topic_of("b") + ".nudge": {0, 1, 2},
                                    topic_of("c") + ".nudge": {0, 1, 2}})
        self.forwarder._check_held()
        self.reactor.advance(2.0)
        self.forwarder._check_held()
        self.assertEqual(len(self.nudger.produced), 6)  # each record nudged once
        self.assertEqual(self.forwarder.problems()[-1][:7], "kafka: ")
        self.flushLoggedErrors()

    def test_acknowledged_in_time_not_nudged(self) -> None:
        """A record the brokers acknowledged within nudge_after is never nudged."""
        d = self.forwarder.forward("b", b"1")
        self.reactor.advance(0)
        self.reactor.advance(0.5)
        self.forwarder._poll_producer(0)
        self.reactor.hops()
        self.successResultOf(d)
        self.reactor.advance(2.0)
        self.forwarder._check_held()
        self.assertEqual(self.nudger.produced, [])
        self.assertEqual(self.forwarder.problems(), [])


class FakeNudger:
    """The nudge producer: records produce() calls with their partition."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes, int]] = []

    def produce(self, topic: str, value: bytes, partition: int,
                on_delivery: Callable[[Any, Any], None]) -> None:
        self.produced.append((topic, value, partition))

    def poll(self, timeout: float) -> int:
        return 0


class MetricsTests(TestCase):
    """The bus's figures reach Prometheus."""

    def test_in_flight_and_records(self) -> None:
        """Envelopes waiting for the brokers show in dim_bus_envelopes_in_flight, records
        produced in dim_bus_records_out."""
        from prometheus_client import REGISTRY

        reactor = FakeReactor()
        bridge: Any = FakeBridge(reactor)
        forwarder = KafkaForwarder("m", "127.0.0.1:1", bridge)
        forwarder._producer = FakeProducer()
        forwarder._running.set()
        before = REGISTRY.get_sample_value("dim_bus_envelopes_in_flight") or 0.0
        records = REGISTRY.get_sample_value("dim_bus_records_out_total") or 0.0
        for _ in range(3):
            forwarder.forward("b", b"x")
        reactor.advance(0)
        self.assertEqual(REGISTRY.get_sample_value("dim_bus_envelopes_in_flight"), before + 3)
        self.assertEqual(REGISTRY.get_sample_value("dim_bus_records_out_total"), records + 1)
        forwarder._poll_producer(0)
        reactor.hops()
        self.assertEqual(REGISTRY.get_sample_value("dim_bus_envelopes_in_flight"), before)
