"""Envelopes between nodes, over Kafka (confluent-kafka): one topic per node.

Node ``x`` reads topic ``dim.node.x`` (one partition, so envelopes keep the order they were
produced in) with consumer group ``dim.node.x``; any node forwards to ``x`` by producing to
that topic.  The topic is created at :meth:`KafkaForwarder.start` with replication
``min(3, brokers)`` (and ``min.insync.replicas = 2`` when replicated), the producer uses
``acks=all``, so :meth:`KafkaForwarder.forward` fires only once every in-sync replica has the
envelope.

Envelopes are opaque bytes here.  Every envelope forwarded to the same node within one
reactor turn travels in ONE Kafka record (:func:`pack`: each envelope prefixed with its
4-byte big-endian length), so a busy tick costs one ``produce()`` per destination node, not
one per envelope; the receiving side unpacks the record and hands each envelope to the
receiver in order.  Delivery reports are gathered on the producer's thread and cross to the
reactor once per poll, not once per record.

Order.  At most one produce request is in flight per broker connection
(``max.in.flight.requests.per.connection = 1``): librdkafka then keeps its input order
across retries, so envelopes to a node arrive in the order they were forwarded unless one
fails outright.  With five requests in flight a retried request could land behind a later
one (seen as 4 of 50 messages out of order in a black-box check).  The cost is latency under
load: records produced while a request is out wait for its answer (one broker round trip,
about 1-3 ms here, with ``acks=all``) and then all go in the next request; since a tick's
envelopes are already one record per node, the requests stay few and full.  The idempotent
producer would keep the order with five in flight, but it is not used, on purpose: when an
envelope times out, an idempotent producer drains and bumps its epoch, and across a broker
restart that held every later envelope of the node until it timed out too (seen as a node
whose forwards all failed for a whole ``forward_timeout`` after the broker was back, while
the other nodes' went through).  Envelopes are hints about stored messages and receivers
tolerate repeats, so idempotence buys nothing else here.

Failover.  A produce request left unanswered by a broker that stopped is sent again after
5 s.  Reconnecting is retried at least every second, and metadata is asked again quickly
when a partition's leader is lost, so forwarding moves to the new leader as soon as the
controller elected one (see docs/cluster.md for the broker settings that bound that: about
3-4 s after a broker's SIGKILL with the settings of ``scripts/stack --brokers 3``).

Nudges: the safety net for those seconds.  Besides its replicated topic, a node reads
``<topic>.nudge``, made of one unreplicated partition on each broker (up to 3).  A record not
acknowledged ``nudge_after`` seconds (default 1) after it was produced is sent again, with
every other record to the same node held up as long, as one nudge record to every nudge
partition (``acks=1``, given up after 3 s).  Partitions led by live brokers take it at once,
whatever the state of the replicated partition, so an online recipient gets a held-up
envelope about ``nudge_after`` seconds late instead of the length of the failover.  Every
record carries an id (its key), and the receiving side drops an id it already handed on, so
the receiver sees each envelope once in the usual case (it must still tolerate a repeat).
A nudge is a hint with no durability of its own: the message is stored, and the record on the
replicated partition is still delivered.  Without two brokers there are no nudges.

Observability: librdkafka's log lines, errors and statistics (every second) reach Twisted's
logger and :mod:`dim.cluster.metrics`; a broker that becomes unreachable and reachable again
is logged as a DIM line (a warning, then an info line with how long it was away), and so is
a forward held up for more than ``nudge_after`` seconds.  :meth:`KafkaForwarder.problems`
says what is wrong now, for the node's health report.

Offsets are committed by hand, and only after the receiver's Deferred fired for every
envelope up to that offset: a node that dies mid-batch gets the unhandled envelopes again
when it comes back (at-least-once; receivers must tolerate a repeat, which DIM's seqs do).

Threads: the consumer is polled and the producer served (delivery reports) on the
:class:`ThreadBridge`'s pool, in loops that never block the reactor; delivery reports and
envelopes hop to the reactor thread.  ``produce()`` itself never blocks (it queues), so it is
called on the reactor thread.  The forwarder keeps two pool threads busy while running (the
producer's event loop, and the consumer's poll), so give the bridge at least 3 threads.
Statistics and log lines are parsed on those threads and cross to the reactor in one hop.
"""
from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
from collections import deque
from typing import Any
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from zope.interface import implementer

from dim.cluster import metrics
from dim.cluster.interface import IForwarder
from dim.cluster.threads import ThreadBridge
from dim.errors import Unavailable

_log = Logger(namespace="dim.bus")
_kafka_log = Logger(namespace="dim.bus.librdkafka")
_length = struct.Struct(">I")

Receiver = Callable[[bytes], Any]

#: Record ids remembered to drop repeats (an envelope's record and its nudge).
SEEN_IDS = 20000


def topic_of(node: str, prefix: str = "dim.node.") -> str:
    """The Kafka topic a node reads its envelopes from."""
    return prefix + node


def nudge_topic_of(node: str, prefix: str = "dim.node.") -> str:
    """The Kafka topic of a node's nudges: one unreplicated partition per broker."""
    return prefix + node + ".nudge"


def pack(payloads: list[bytes]) -> bytes:
    """One record's value: each payload prefixed with its length (4 bytes, big-endian)."""
    length = _length.pack
    return b"".join([part for p in payloads for part in (length(len(p)), p)])


def unpack(value: bytes) -> list[bytes]:
    """The payloads of a record made by :func:`pack`; ValueError if it is cut short."""
    out: list[bytes] = []
    view = memoryview(value)
    at, end = 0, len(value)
    while at < end:
        if at + 4 > end:
            raise ValueError(f"record cut short at byte {at} of {end}")
        (size,) = _length.unpack_from(view, at)
        at += 4
        if at + size > end:
            raise ValueError(f"payload of {size} bytes cut short at byte {at} of {end}")
        out.append(bytes(view[at:at + size]))
        at += size
    return out


def client_settings(bootstrap: str, node: str, topic_prefix: str, forward_timeout: float,
                    linger_ms: float, common: dict[str, Any] | None = None,
                    producer: dict[str, Any] | None = None,
                    consumer: dict[str, Any] | None = None,
                    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The librdkafka settings of the admin client, the producer, the nudge producer and the
    consumer, in that order: the one place they are chosen.  ``common`` goes into all four
    (security settings, for instance); ``producer``/``consumer`` override that client's own.
    """
    base: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # A lost broker is tried again at least every second (librdkafka's default backs
        # off to 10 s), and a partition whose leader went away has its metadata asked
        # again every 100 ms until a new leader is known.
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1000,
        "topic.metadata.refresh.fast.interval.ms": 100,
        "retry.backoff.ms": 50,
        "retry.backoff.max.ms": 200,
        "socket.nagle.disable": True,
        "socket.connection.setup.timeout.ms": 3000,
        # Idle connections closed by a broker are not worth a log line.
        "log.connection.close": False,
        "statistics.interval.ms": 1000,
        **(common or {}),
    }
    admin = {**base, "statistics.interval.ms": 0}
    producer_config: dict[str, Any] = {
        **base,
        "linger.ms": linger_ms,
        "acks": "all",
        "enable.idempotence": False,
        # One request in flight per broker: retries keep the order (see the module notes).
        "max.in.flight.requests.per.connection": 1,
        # A request the broker never answers (it stopped while the request was in flight)
        # is sent again after 5 s rather than librdkafka's 30 s, which equalled the whole
        # forward timeout.
        "request.timeout.ms": min(5000, int(forward_timeout * 1000)),
        "message.timeout.ms": int(forward_timeout * 1000),
        **(producer or {}),
    }
    nudge_config: dict[str, Any] = {
        **base,
        "linger.ms": 0,
        # A nudge is a hint: one broker's word is enough, and it is given up after 3 s.
        "acks": 1,
        "enable.idempotence": False,
        "request.timeout.ms": 2000,
        "message.timeout.ms": 3000,
        "statistics.interval.ms": 0,
    }
    consumer_config: dict[str, Any] = {
        **base,
        "group.id": topic_of(node, topic_prefix),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Latency first: the broker answers a fetch as soon as one byte is there, an idle
        # fetch is renewed every 100 ms, and a failed fetch is retried after 50 ms.
        "fetch.min.bytes": 1,
        "fetch.wait.max.ms": 100,
        "fetch.error.backoff.ms": 50,
        "fetch.queue.backoff.ms": 0,
        **(consumer or {}),
    }
    return admin, producer_config, nudge_config, consumer_config


class _Record:
    """A record produced and not yet acknowledged: its destination, id, value, the
    forwards it carries and when it was produced (reactor time)."""

    __slots__ = ("node", "nudged", "rid", "since", "value", "waiting")

    def __init__(self, node: str, rid: bytes, value: bytes,
                 waiting: list[defer.Deferred[None]], since: float) -> None:
        self.node = node
        self.rid = rid
        self.value = value
        self.waiting = waiting
        self.since = since
        self.nudged = False


class _LibrdkafkaLog:
    """librdkafka's ``logger``: takes its lines on the client's polling thread, to be handed
    to the reactor with the forwarder's next hop."""

    def __init__(self, sink: list[tuple[int, str, str]]) -> None:
        self.sink = sink

    def log(self, level: int, fmt: str, *args: Any) -> None:
        """Keep one line (logging.Logger's signature, which confluent-kafka calls with the
        facility, the client's name and the message)."""
        facility = str(args[0]) if len(args) == 3 else ""
        try:
            text = fmt % args if args else fmt
        except (TypeError, ValueError):
            text = f"{fmt} {args!r}"
        self.sink.append((level, facility, text))


def _twisted_level(level: int, facility: str) -> LogLevel:
    """librdkafka's level for a line, made honest: a broker connection failing (``FAIL``)
    is routine while a broker restarts, and DIM says so in its own line, so it is info."""
    if facility == "FAIL":
        return LogLevel.info
    if level >= logging.CRITICAL:
        return LogLevel.critical
    if level >= logging.ERROR:
        return LogLevel.error
    if level >= logging.WARNING:
        return LogLevel.warn
    if level >= logging.INFO:
        return LogLevel.info
    return LogLevel.debug


@implementer(IForwarder)
class KafkaForwarder:
    """An :class:`IForwarder` on Kafka for the node ``node``.

    ``bootstrap`` is Kafka's ``bootstrap.servers`` (``"127.0.0.1:9092"``); ``bridge`` a
    started :class:`ThreadBridge` with at least 3 threads, owned by the caller; the bridge's
    reactor also runs the per-turn flush and the nudges.  ``linger_ms`` trades latency for
    batching (0: send at once).  ``forward_timeout`` (seconds) bounds how long
    :meth:`forward` may wait for the brokers before it fails with
    :class:`dim.errors.Unavailable`.  ``nudge_after`` (seconds; None: no nudges) is how long
    a record may wait for the brokers before it is sent again on the nudge partitions.
    ``client_config`` adds librdkafka settings to every client (admin, producers, consumer),
    and so does ``security_config`` (SASL and TLS, see :func:`dim.runtime.kafka_security`);
    ``producer_config`` and ``consumer_config`` add or override that client's.  With
    ``skip_backlog``, :meth:`start` reads from the end of the topic as it is then, skipping
    envelopes left from a previous life of the node (they are hints about stored messages,
    useless after a restart); otherwise reading resumes at the group's committed offset.
    """

    #: Other nodes may read this node's envelopes from Kafka at any time.
    alone = False

    def __init__(self, node: str, bootstrap: str, bridge: ThreadBridge,
                 linger_ms: float = 0, forward_timeout: float = 10.0,
                 poll_timeout: float = 0.1, batch: int = 500, topic_prefix: str = "dim.node.",
                 max_replication: int = 3, connect_timeout: float = 5.0,
                 producer_config: dict[str, Any] | None = None,
                 consumer_config: dict[str, Any] | None = None,
                 client_config: dict[str, Any] | None = None,
                 nudge_after: float | None = 1.0,
                 skip_backlog: bool = False, consume: bool = True,
                 security_config: dict[str, Any] | None = None) -> None:
        self.node = node
        #: False for a sender only (the gateway): no topic of its own, no consumer.
        self.consume = consume
        self.skip_backlog = skip_backlog
        self.bootstrap = bootstrap
        self.bridge = bridge
        self.clock = bridge.reactor
        self.topic = topic_of(node, topic_prefix)
        self.nudge_topic = nudge_topic_of(node, topic_prefix)
        self.topic_prefix = topic_prefix
        self.poll_timeout = poll_timeout
        self.batch = batch
        self.max_replication = max_replication
        self.connect_timeout = connect_timeout
        self.nudge_after = nudge_after
        #: SASL and TLS settings (see :func:`dim.runtime.kafka_security`), for every client.
        self.security_config: dict[str, Any] = dict(security_config or {})
        (self.admin_config, self.producer_config, self.nudge_config,
         self.consumer_config) = client_settings(
            bootstrap, node, topic_prefix, forward_timeout, linger_ms,
            common={**self.security_config, **(client_config or {})},
            producer=producer_config, consumer=consumer_config)
        #: The replication factor of this node's topic, once :meth:`start` made it.
        self.replication: int | None = None
        #: How many nudge partitions each node has (0: no nudges), once started.
        self.nudge_partitions = 0
        self._receiver: Receiver | None = None
        self._producer: Any = None
        self._nudger: Any = None
        self._consumer: Any = None
        self._running = threading.Event()  # read by the pool-thread loops
        self._producer_loop: defer.Deferred[None] | None = None
        self._consumer_loop: defer.Deferred[None] | None = None
        self._nudge_loop: LoopingCall | None = None
        self._uncommitted: int | None = None
        # This reactor turn's envelopes by destination node, and the flush that sends them.
        self._outgoing: dict[str, list[tuple[bytes, defer.Deferred[None]]]] = {}
        self._flush_call: Any = None
        # Records produced and not acknowledged yet, by id, oldest first.
        self._pending: dict[bytes, _Record] = {}
        self._in_flight = 0
        self._id_prefix = f"{node}:{os.urandom(4).hex()}:".encode()
        self._next_id = 0
        # Delivery reports, log lines and statistics gathered by the pool threads between
        # two hops to the reactor.
        self._reports: list[tuple[bytes, Any]] = []
        self._lines: list[tuple[int, str, str]] = []
        self._stats: list[dict[str, Any]] = []
        self._errors: list[Any] = []
        self._hop_lock = threading.Lock()
        # Ids of records handed to the receiver lately, to drop repeats.
        self._seen: set[bytes] = set()
        self._seen_order: deque[bytes] = deque()
        #: Broker states from the latest statistics: name -> state ("UP", "DOWN", ...).
        self.brokers: dict[str, str] = {}
        self._down_since: dict[str, float] = {}
        #: Records on this node's topic not read yet (statistics), None when unknown.
        self.consumer_lag: int | None = None
        self._held_logged = False
        self._all_down = False
        #: Records produced (one per destination node per turn) and envelopes they carried.
        self.records_out = 0
        self.envelopes_out = 0
        self.nudges_out = 0
        for config in (self.admin_config, self.producer_config, self.nudge_config,
                       self.consumer_config):
            config.setdefault("logger", _LibrdkafkaLog(self._lines))
            config.setdefault("error_cb", self._errors.append)
        for config in (self.producer_config, self.consumer_config):
            config.setdefault("stats_cb", self._gather_stats)
        metrics.add_forwarder(self)

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Create this node's topics (if missing), the producers and the consumer, and start
        polling.  Fails with Unavailable if Kafka does not answer within connect_timeout."""
        return defer.Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

        if not self.consume:
            brokers = await self.bridge.call(self._check_reachable)
        else:
            self.replication, brokers = await self.bridge.call(self._create_topics)
        if self.nudge_after is not None and brokers >= 2:
            self.nudge_partitions = min(self.max_replication, brokers)
        self._producer = Producer(self.producer_config)
        if self.nudge_partitions:
            self._nudger = Producer(self.nudge_config)
        if self.consume:
            self._consumer = Consumer(self.consumer_config)
            # Partitions assigned by hand: no group rebalance to wait for; the group's
            # committed offset (or the earliest) is where reading starts, unless the
            # backlog is skipped: then the end offset read now (not a lazily resolved
            # OFFSET_END, which could skip an envelope produced between assign and the
            # first fetch).  Nudges are read from their end: they are only worth anything
            # while they are fresh.
            partition = TopicPartition(self.topic, 0)
            if self.skip_backlog:
                partition = TopicPartition(self.topic, 0,
                                           await self.bridge.call(self._end_offset))
            self._consumer.assign([partition] + [
                TopicPartition(self.nudge_topic, p, OFFSET_END)
                for p in range(self.nudge_partitions)])
        self._running.set()
        self._producer_loop = self.bridge.call(self._serve_producer)
        self._producer_loop.addErrback(lambda f: _log.failure("producer loop failed", f))
        if self.consume:
            self._consumer_loop = defer.Deferred.fromCoroutine(self._consume())
            self._consumer_loop.addErrback(lambda f: _log.failure("consumer loop failed", f))
        if self.nudge_after is not None:
            self._nudge_loop = LoopingCall(self._check_held)
            self._nudge_loop.clock = self.clock
            self._nudge_loop.start(self.nudge_after / 4, now=False).addErrback(
                lambda f: _log.failure("nudge loop failed", f))

    def _metadata(self) -> tuple[Any, Any]:
        """(pool thread) An admin client and the cluster's metadata; Unavailable if Kafka
        does not answer within connect_timeout."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.admin_config)
        try:
            metadata = admin.list_topics(timeout=self.connect_timeout)
        except KafkaException as e:
            raise Unavailable(f"Kafka at {self.bootstrap} did not answer: {e}") from e
        finally:
            admin.poll(0)  # serve its log lines and errors
        return admin, metadata

    def _check_reachable(self) -> int:
        """(pool thread) Fail with Unavailable unless Kafka answers; how many brokers."""
        return len(self._metadata()[1].brokers)

    def _create_topics(self) -> tuple[int, int]:
        """(pool thread) Create this node's topic and its nudge topic unless they exist;
        the topic's replication factor and the number of brokers."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        admin, metadata = self._metadata()
        brokers = sorted(metadata.brokers)
        wanted = []
        existing = metadata.topics.get(self.topic)
        if existing is not None and existing.error is None and existing.partitions:
            replication = len(existing.partitions[0].replicas)
        else:
            replication = max(1, min(self.max_replication, len(brokers)))
            config = {"min.insync.replicas": str(min(2, replication))}
            wanted.append(NewTopic(self.topic, num_partitions=1,
                                   replication_factor=replication, config=config))
        nudges = min(self.max_replication, len(brokers))
        if self.nudge_after is not None and nudges >= 2:
            existing = metadata.topics.get(self.nudge_topic)
            if existing is None or existing.error is not None or not existing.partitions:
                # One partition on each broker, unreplicated: a broker's death leaves the
                # others' partitions writable and readable at once.
                wanted.append(NewTopic(self.nudge_topic, num_partitions=nudges,
                                       replica_assignment=[[b] for b in brokers[:nudges]],
                                       config={"retention.ms": "600000"}))
        if wanted:
            futures = admin.create_topics(wanted, operation_timeout=self.connect_timeout)
            for future in futures.values():
                try:
                    future.result(timeout=self.connect_timeout)
                except KafkaException as e:
                    if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
        return replication, len(brokers)

    def _end_offset(self) -> int:
        """(pool thread) The end offset of this node's partition, waiting up to
        connect_timeout for a topic just created to have a leader."""
        from confluent_kafka import KafkaException, TopicPartition

        deadline = time.monotonic() + self.connect_timeout
        while True:
            try:
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, 0), timeout=self.connect_timeout)
                return int(high)
            except KafkaException as e:
                if time.monotonic() > deadline:
                    raise Unavailable(f"Kafka at {self.bootstrap} gave no end offset for "
                                      f"{self.topic}: {e}") from e
                time.sleep(0.1)

    def stop(self) -> defer.Deferred[None]:
        """Stop polling, commit what was handled, flush the producer, close the consumer.
        Envelopes forwarded before stop() are delivered (or their forward() fails)."""
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if not self._running.is_set():
            return
        self.flush()  # this turn's envelopes go out before the producer is flushed
        if self._nudge_loop is not None and self._nudge_loop.running:
            self._nudge_loop.stop()
        self._running.clear()
        if self._consumer_loop is not None:
            await self._consumer_loop
        if self._consumer is not None:
            await self.bridge.call(self._close_consumer, self._uncommitted)
        self._uncommitted = None
        if self._producer_loop is not None:  # it flushes the producer when it ends
            await self._producer_loop

    def _close_consumer(self, offset: int | None) -> None:
        """(pool thread) Commit the last handled offset synchronously and close."""
        from confluent_kafka import TopicPartition

        try:
            if offset is not None:
                self._consumer.commit(offsets=[TopicPartition(self.topic, 0, offset)],
                                      asynchronous=False)
        finally:
            self._consumer.close()

    # -- sending ---------------------------------------------------------------------------

    def forward(self, node: str, payload: bytes) -> defer.Deferred[None]:
        """Send one encoded envelope to ``node``; fires once the brokers acknowledged the
        record carrying it (acks=all), fails with Unavailable if they did not within
        forward_timeout.  Envelopes forwarded to the same node in one reactor turn share a
        record, produced at the end of the turn, in the order they were forwarded."""
        if not self._running.is_set():
            return defer.fail(Unavailable("forwarder is not running"))
        d: defer.Deferred[None] = defer.Deferred()
        out = self._outgoing.get(node)
        if out is None:
            out = self._outgoing[node] = []
        out.append((payload, d))
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)
        return d

    def flush(self) -> None:
        """(reactor) Produce this turn's envelopes: one record per destination node."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        outgoing, self._outgoing = self._outgoing, {}
        now = self.clock.seconds()
        reports = self._reports  # the same list for the producer's life (see _hop)
        for node, out in outgoing.items():
            self._next_id += 1
            rid = self._id_prefix + str(self._next_id).encode()
            value = pack([payload for payload, _ in out])
            waiting = [d for _, d in out]
            try:
                self._producer.produce(
                    topic_of(node, self.topic_prefix), value, key=rid,
                    # The producer's pool thread: only gather; the loop hops once per poll.
                    on_delivery=lambda err, msg, rid=rid: reports.append((rid, err)))
            except BufferError:
                for d in waiting:
                    d.errback(Unavailable("the forward queue is full"))
                continue
            self._pending[rid] = _Record(node, rid, value, waiting, now)
            self._in_flight += len(waiting)
            self.records_out += 1
            self.envelopes_out += len(waiting)
        metrics.count("records_out", len(outgoing))

    def in_flight(self) -> int:
        """Envelopes handed to Kafka and not acknowledged yet."""
        return self._in_flight + sum(len(out) for out in self._outgoing.values())

    def _settle(self, reports: list[tuple[bytes, Any]]) -> None:
        """(reactor) Fire the forwards' Deferreds from a poll's delivery reports."""
        now = self.clock.seconds()
        for rid, err in reports:
            record = self._pending.pop(rid, None)
            if record is None:
                continue
            self._in_flight -= len(record.waiting)
            if err is None:
                metrics.PRODUCE_LATENCY.observe(max(0.0, now - record.since))
                for d in record.waiting:
                    d.callback(None)
            else:
                metrics.kafka_error(_error_name(err))
                for d in record.waiting:
                    d.errback(Unavailable(f"forward failed: {err}"))
        if self._held_logged and not self._held(now):
            self._held_logged = False
            _log.info("forwards to other nodes go through again")

    def _hop(self) -> None:
        """(pool thread) Hand what the clients reported since the last hop to the reactor,
        in one call."""
        if not (self._reports or self._lines or self._stats or self._errors):
            return
        # The lists stay the same objects (the clients' callbacks hold them); what is taken
        # is cut from their front, under a lock since the producer's and the consumer's
        # threads both hop.
        with self._hop_lock:
            taken = []
            for sink in (self._reports, self._lines, self._stats, self._errors):
                items = sink[:]
                del sink[:len(items)]
                taken.append(items)
        self.bridge.to_reactor(self._reported, *taken)

    def _reported(self, reports: list[tuple[bytes, Any]], lines: list[tuple[int, str, str]],
                  stats: list[dict[str, Any]], errors: list[Any]) -> None:
        """(reactor) Settle forwards, then log librdkafka's lines, errors and statistics."""
        if reports:
            self._settle(reports)
        for level, facility, text in lines:
            _kafka_log.emit(_twisted_level(level, facility), "{text}", text=text)
        for err in errors:
            self._kafka_error(err)
        for summary in stats:
            self._statistics(summary)

    def _poll_producer(self, timeout: float) -> None:
        """(pool thread) Serve the producers' events for up to ``timeout`` seconds, then
        hand the delivery reports gathered to the reactor in one hop."""
        self._producer.poll(timeout)
        if self._nudger is not None:
            self._nudger.poll(0)
        self._hop()

    def _serve_producer(self) -> None:
        """(pool thread) Serve delivery reports until stopped, then flush what is queued."""
        while self._running.is_set():
            self._poll_producer(self.poll_timeout)
        self._producer.flush(10.0)
        if self._nudger is not None:
            self._nudger.flush(1.0)
        self._poll_producer(0)

    # -- nudges ----------------------------------------------------------------------------

    def _held(self, now: float) -> list[_Record]:
        """(reactor) The records waiting for the brokers for nudge_after seconds or more."""
        if self.nudge_after is None:
            return []
        limit = now - self.nudge_after
        held = []
        for record in self._pending.values():  # oldest first
            if record.since > limit:
                break
            held.append(record)
        return held

    def _check_held(self) -> None:
        """(reactor) Log held-up forwards once, and nudge the records not nudged yet: per
        destination node, one nudge record carrying them all, on every nudge partition."""
        if not self._running.is_set():
            if self._nudge_loop is not None and self._nudge_loop.running:
                self._nudge_loop.stop()
            return
        now = self.clock.seconds()
        held = self._held(now)
        if not held:
            return
        if not self._held_logged:
            self._held_logged = True
            oldest = now - held[0].since
            _log.warn("Kafka has not acknowledged {n} forward(s) for {s:.1f} s (a broker "
                      "failing over?); {what}", n=sum(len(r.waiting) for r in held), s=oldest,
                      what="nudging their recipients" if self._nudger is not None
                      else "no nudges without two brokers")
        if self._nudger is None:
            return
        by_node: dict[str, list[bytes]] = {}
        for record in held:
            if not record.nudged:
                record.nudged = True
                by_node.setdefault(record.node, []).extend([record.rid, record.value])
        for node, parts in by_node.items():
            value = pack(parts)
            topic = nudge_topic_of(node, self.topic_prefix)
            for partition in range(self.nudge_partitions):
                try:
                    self._nudger.produce(topic, value, partition=partition,
                                         on_delivery=self._nudge_report)
                except BufferError:
                    break
            self.nudges_out += 1
            metrics.count("nudges_out")

    def _nudge_report(self, err: Any, msg: Any) -> None:
        """(pool thread) A nudge's delivery report: failures (its broker is the dead one,
        say) are only counted."""
        if err is not None:
            self._errors.append(err)

    # -- observability ---------------------------------------------------------------------

    def _gather_stats(self, text: str) -> None:
        """(pool thread) librdkafka's statistics: keep what the reactor needs."""
        try:
            stats = json.loads(text)
        except ValueError:
            return
        # A broker counts only while this client needs it (it leads a partition the client
        # reads or writes): an idle connection closed by the broker is no news.
        summary: dict[str, Any] = {"type": stats.get("type"), "brokers": {
            name: b.get("state") for name, b in stats.get("brokers", {}).items()
            if b.get("nodeid", -1) >= 0 and (b.get("toppars") or b.get("state") == "UP")}}
        if stats.get("type") == "consumer":
            partition = stats.get("topics", {}).get(self.topic, {}).get(
                "partitions", {}).get("0", {})
            lag = partition.get("consumer_lag")
            summary["lag"] = lag if isinstance(lag, int) and lag >= 0 else None
        self._stats.append(summary)

    def _statistics(self, summary: dict[str, Any]) -> None:
        """(reactor) Log brokers going down and coming back; keep the consumer lag."""
        if summary.get("type") == "consumer":
            self.consumer_lag = summary.get("lag")
            return
        now = self.clock.seconds()
        if any(state == "UP" for state in summary["brokers"].values()):
            self._all_down = False
        for name, state in summary["brokers"].items():
            before = self.brokers.get(name)
            self.brokers[name] = state
            if state == "UP":
                since = self._down_since.pop(name, None)
                if since is not None:
                    _log.info("Kafka broker {broker} is reachable again, after {s:.1f} s",
                              broker=name, s=now - since)
            elif before == "UP" and name not in self._down_since:
                self._down_since[name] = now
                _log.warn("Kafka broker {broker} is unreachable ({state}); its partitions "
                          "move to other brokers once the controller fences it",
                          broker=name, state=state)

    @property
    def brokers_up(self) -> int:
        """Brokers the producer is connected to, per the latest statistics."""
        return sum(1 for state in self.brokers.values() if state == "UP")

    @property
    def brokers_known(self) -> int:
        """Brokers the producer knows of, per the latest statistics."""
        return len(self.brokers)

    def _kafka_error(self, err: Any) -> None:
        """(reactor) One error from librdkafka's error_cb or a failed nudge."""
        from confluent_kafka import KafkaError

        name = _error_name(err)
        metrics.kafka_error(name)
        code = err.code() if hasattr(err, "code") else None
        if code == KafkaError._ALL_BROKERS_DOWN:
            self._all_down = True
            _log.error("no Kafka broker is reachable: forwards wait (up to the forward "
                       "timeout) for one to come back")
        elif code in (KafkaError._TRANSPORT, KafkaError._MSG_TIMED_OUT,
                      KafkaError._TIMED_OUT):
            _log.debug("Kafka: {err}", err=err)  # a broker going away; logged as such
        elif hasattr(err, "fatal") and err.fatal():
            _log.critical("Kafka client failed for good: {err}", err=err)
        else:
            _log.warn("Kafka: {err}", err=err)

    def problems(self) -> list[str]:
        """What is wrong with the bus now, as short sentences (empty when all is well)."""
        out = []
        if self._running.is_set() and self._all_down:
            out.append("kafka: no broker reachable")
        down = sorted(self._down_since)
        if down:
            out.append(f"kafka: broker(s) unreachable: {', '.join(down)}")
        held = self._held(self.clock.seconds()) if self.nudge_after is not None else []
        if held:
            out.append(f"kafka: {len(held)} record(s) unacknowledged for "
                       f"{self.clock.seconds() - held[0].since:.0f} s")
        return out

    # -- receiving -------------------------------------------------------------------------

    def set_receiver(self, receiver: Receiver) -> None:
        """Hand each envelope addressed to this node (bytes) to ``receiver`` on the reactor
        thread, in the order produced; if it returns a Deferred, the envelope is handled
        (and its offset committed) once that fires.  A failing receiver is logged and the
        envelope counts as handled."""
        self._receiver = receiver

    def _poll(self, commit: int | None) -> list[Any]:
        """(pool thread) Commit the last handled offset, then wait up to poll_timeout for
        records and take up to ``batch`` of them."""
        from confluent_kafka import KafkaError, TopicPartition

        if commit is not None:
            self._consumer.commit(offsets=[TopicPartition(self.topic, 0, commit)],
                                  asynchronous=True)
        out: list[Any] = []
        msg = self._consumer.poll(self.poll_timeout)
        while msg is not None:
            err = msg.error()
            if err is None:
                out.append(msg)
            elif err.code() != KafkaError._PARTITION_EOF:
                self._errors.append(err)
            if len(out) >= self.batch:
                break
            msg = self._consumer.poll(0)
        self._hop()
        return out

    async def _consume(self) -> None:
        """(reactor) Poll on the pool, hand envelopes to the receiver, then commit."""
        while self._running.is_set():
            commit, self._uncommitted = self._uncommitted, None
            messages = await self.bridge.call(self._poll, commit)
            if not messages:
                continue
            pending: list[defer.Deferred[Any]] = []
            last: int | None = None
            for msg in messages:
                if msg.topic() == self.topic:
                    self._deliver(msg.key(), msg.value(), pending)
                    last = msg.offset()
                else:
                    self._deliver_nudge(msg.value(), pending)
            if pending:
                results = await defer.DeferredList(pending, consumeErrors=True)
                for ok, failure in results:
                    if not ok:
                        _log.failure("receiver failed on an envelope", failure)
            if last is not None:
                self._uncommitted = last + 1

    def _first_time(self, rid: bytes | None) -> bool:
        """(reactor) Whether the record ``rid`` was not handed on lately (and remember it)."""
        if rid is None or b":" not in rid:
            return True  # not an id (a record from before ids: keyed by the sender)
        if rid in self._seen:
            metrics.count("repeats_dropped")
            return False
        self._seen.add(rid)
        self._seen_order.append(rid)
        if len(self._seen_order) > SEEN_IDS:
            self._seen.discard(self._seen_order.popleft())
        return True

    def _deliver_nudge(self, value: bytes, pending: list[defer.Deferred[Any]]) -> None:
        """(reactor) Hand on the records of a nudge that did not come the usual way yet."""
        try:
            parts = unpack(value)
        except ValueError as e:
            _log.warn("dropping a malformed nudge for {topic}: {e}", topic=self.topic, e=e)
            return
        for at in range(0, len(parts) - 1, 2):
            if parts[at] not in self._seen:
                metrics.count("nudged_in")
            self._deliver(parts[at], parts[at + 1], pending)

    def _deliver(self, rid: bytes | None, value: bytes,
                 pending: list[defer.Deferred[Any]]) -> None:
        """(reactor) Hand each envelope of one record to the receiver, in order, unless the
        record was handed on already; Deferreds of envelopes not handled yet go to
        ``pending``."""
        if not self._first_time(rid):
            return
        try:
            payloads = unpack(value)
        except ValueError as e:
            _log.warn("dropping a malformed record on {topic}: {e}", topic=self.topic, e=e)
            return
        if self._receiver is None:
            _log.warn("no receiver set; {n} envelope(s) dropped", n=len(payloads))
            return
        receiver = self._receiver
        for payload in payloads:
            try:
                result = receiver(payload)
            except Exception:
                _log.failure("receiver failed on an envelope")
                continue
            if isinstance(result, defer.Deferred):
                pending.append(result)


def _error_name(err: Any) -> str:
    """librdkafka's name for an error (a KafkaError, or whatever a report carried)."""
    name = getattr(err, "name", None)
    if callable(name):
        try:
            return str(name())
        except Exception:
            pass
    return type(err).__name__
