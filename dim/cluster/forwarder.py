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
controller elected one (see docs/cluster.md for the broker settings that bound that).

Offsets are committed by hand, and only after the receiver's Deferred fired for every
envelope up to that offset: a node that dies mid-batch gets the unhandled envelopes again
when it comes back (at-least-once; receivers must tolerate a repeat, which DIM's seqs do).

Threads: the consumer is polled and the producer served (delivery reports) on the
:class:`ThreadBridge`'s pool, in loops that never block the reactor; delivery reports and
envelopes hop to the reactor thread.  ``produce()`` itself never blocks (it queues), so it is
called on the reactor thread.  The forwarder keeps two pool threads busy while running (the
producer's event loop, and the consumer's poll), so give the bridge at least 3 threads.
"""
from __future__ import annotations

import struct
import threading
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from dim.cluster.interface import IForwarder
from dim.cluster.threads import ThreadBridge
from dim.errors import Unavailable

_log = Logger()
_length = struct.Struct(">I")

Receiver = Callable[[bytes], Any]


def topic_of(node: str, prefix: str = "dim.node.") -> str:
    """The Kafka topic a node reads its envelopes from."""
    return prefix + node


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
                    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The librdkafka settings of the admin client, the producer and the consumer, in that
    order: the one place they are chosen.  ``common`` goes into all three (security
    settings, for instance); ``producer``/``consumer`` override that client's own."""
    base: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        # A lost broker is tried again at least every second (librdkafka's default backs
        # off to 10 s), and a partition whose leader went away has its metadata asked
        # again every 100 ms until a new leader is known.
        "reconnect.backoff.ms": 50,
        "reconnect.backoff.max.ms": 1000,
        "topic.metadata.refresh.fast.interval.ms": 100,
        "retry.backoff.ms": 50,
        "retry.backoff.max.ms": 500,
        "socket.nagle.disable": True,
        "socket.connection.setup.timeout.ms": 3000,
        **(common or {}),
    }
    admin = dict(base)
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
    return admin, producer_config, consumer_config


class _Outgoing:
    """The envelopes forwarded to one node during the current reactor turn."""

    __slots__ = ("payloads", "waiting")

    def __init__(self) -> None:
        self.payloads: list[bytes] = []
        self.waiting: list[defer.Deferred[None]] = []


@implementer(IForwarder)
class KafkaForwarder:
    """An :class:`IForwarder` on Kafka for the node ``node``.

    ``bootstrap`` is Kafka's ``bootstrap.servers`` (``"127.0.0.1:9092"``); ``bridge`` a
    started :class:`ThreadBridge` with at least 3 threads, owned by the caller (there are no
    timers here: librdkafka's ``message.timeout.ms`` bounds every forward); the bridge's
    reactor also runs the per-turn flush.  ``linger_ms`` trades latency for batching (0:
    send at once).  ``forward_timeout`` (seconds) bounds how long :meth:`forward` may wait
    for the brokers before it fails with :class:`dim.errors.Unavailable`.
    ``client_config`` adds librdkafka settings to every client (admin, producer, consumer);
    ``producer_config`` and ``consumer_config`` add or override that client's.  With
    ``skip_backlog``, :meth:`start` reads from the end of the topic as it is then, skipping
    envelopes left from a previous life of the node (they are hints about stored messages,
    useless after a restart); otherwise reading resumes at the group's committed offset.
    """

    def __init__(self, node: str, bootstrap: str, bridge: ThreadBridge,
                 linger_ms: float = 0, forward_timeout: float = 10.0,
                 poll_timeout: float = 0.1, batch: int = 500, topic_prefix: str = "dim.node.",
                 max_replication: int = 3, connect_timeout: float = 5.0,
                 producer_config: dict[str, Any] | None = None,
                 consumer_config: dict[str, Any] | None = None,
                 client_config: dict[str, Any] | None = None,
                 skip_backlog: bool = False, consume: bool = True) -> None:
        self.node = node
        #: False for a sender only (the gateway): no topic of its own, no consumer.
        self.consume = consume
        self.skip_backlog = skip_backlog
        self.bootstrap = bootstrap
        self.bridge = bridge
        self.clock = bridge.reactor
        self.topic = topic_of(node, topic_prefix)
        self.topic_prefix = topic_prefix
        self.poll_timeout = poll_timeout
        self.batch = batch
        self.max_replication = max_replication
        self.connect_timeout = connect_timeout
        self.admin_config, self.producer_config, self.consumer_config = client_settings(
            bootstrap, node, topic_prefix, forward_timeout, linger_ms, common=client_config,
            producer=producer_config, consumer=consumer_config)
        #: The replication factor of this node's topic, once :meth:`start` made it.
        self.replication: int | None = None
        self._receiver: Receiver | None = None
        self._producer: Any = None
        self._consumer: Any = None
        self._running = threading.Event()  # read by the pool-thread loops
        self._producer_loop: defer.Deferred[None] | None = None
        self._consumer_loop: defer.Deferred[None] | None = None
        self._uncommitted: int | None = None
        # This reactor turn's envelopes by destination node, and the flush that sends them.
        self._outgoing: dict[str, _Outgoing] = {}
        self._flush_call: Any = None
        # Delivery reports gathered by the producer's thread between two hops to the reactor.
        self._reports: list[tuple[list[defer.Deferred[None]], Any]] = []
        #: Records produced (one per destination node per turn) and envelopes they carried.
        self.records_out = 0
        self.envelopes_out = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Create this node's topic (if missing), the producer and the consumer, and start
        polling.  Fails with Unavailable if Kafka does not answer within connect_timeout."""
        return defer.Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition

        if not self.consume:
            await self.bridge.call(self._check_reachable)
            self._producer = Producer(self.producer_config)
            self._running.set()
            self._producer_loop = self.bridge.call(self._serve_producer)
            self._producer_loop.addErrback(lambda f: _log.failure("producer loop failed", f))
            return
        self.replication = await self.bridge.call(self._create_topic)
        self._producer = Producer(self.producer_config)
        self._consumer = Consumer(self.consumer_config)
        # One partition, assigned by hand: no group rebalance to wait for; the group's
        # committed offset (or the earliest) is where reading starts, unless the backlog is
        # skipped: then the end offset read now (not a lazily resolved OFFSET_END, which
        # could skip an envelope produced between assign and the first fetch).
        partition = TopicPartition(self.topic, 0)
        if self.skip_backlog:
            partition = TopicPartition(self.topic, 0, await self.bridge.call(self._end_offset))
        self._consumer.assign([partition])
        self._running.set()
        self._producer_loop = self.bridge.call(self._serve_producer)
        self._producer_loop.addErrback(lambda f: _log.failure("producer loop failed", f))
        self._consumer_loop = defer.Deferred.fromCoroutine(self._consume())
        self._consumer_loop.addErrback(lambda f: _log.failure("consumer loop failed", f))

    def _metadata(self) -> tuple[Any, Any]:
        """(pool thread) An admin client and the cluster's metadata; Unavailable if Kafka
        does not answer within connect_timeout."""
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        admin = AdminClient(self.admin_config)
        try:
            return admin, admin.list_topics(timeout=self.connect_timeout)
        except KafkaException as e:
            raise Unavailable(f"Kafka at {self.bootstrap} did not answer: {e}") from e

    def _check_reachable(self) -> None:
        """(pool thread) Fail with Unavailable unless Kafka answers."""
        self._metadata()

    def _create_topic(self) -> int:
        """(pool thread) Create this node's topic unless it exists; its replication factor."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        admin, metadata = self._metadata()
        existing = metadata.topics.get(self.topic)
        if existing is not None and existing.error is None and existing.partitions:
            return len(existing.partitions[0].replicas)
        replication = max(1, min(self.max_replication, len(metadata.brokers)))
        config = {"min.insync.replicas": str(min(2, replication))}
        futures = admin.create_topics(
            [NewTopic(self.topic, num_partitions=1, replication_factor=replication,
                      config=config)], operation_timeout=self.connect_timeout)
        try:
            futures[self.topic].result(timeout=self.connect_timeout)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        return replication

    def _end_offset(self) -> int:
        """(pool thread) The end offset of this node's partition, waiting up to
        connect_timeout for a topic just created to have a leader."""
        import time

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
            out = self._outgoing[node] = _Outgoing()
        out.payloads.append(payload)
        out.waiting.append(d)
        if self._flush_call is None:
            self._flush_call = self.clock.callLater(0, self.flush)
        return d

    def flush(self) -> None:
        """(reactor) Produce this turn's envelopes: one record per destination node."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        outgoing, self._outgoing = self._outgoing, {}
        for node, out in outgoing.items():
            waiting = out.waiting

            def delivered(err: Any, msg: Any, waiting: list[defer.Deferred[None]] = waiting,
                          ) -> None:
                # The producer's pool thread: only gather; the loop hops once per poll.
                self._reports.append((waiting, err))

            try:
                self._producer.produce(topic_of(node, self.topic_prefix), pack(out.payloads),
                                       key=self.node.encode(), on_delivery=delivered)
            except BufferError:
                self._settle([(waiting, "the forward queue is full")])
                continue
            self.records_out += 1
            self.envelopes_out += len(waiting)

    @staticmethod
    def _settle(reports: list[tuple[list[defer.Deferred[None]], Any]]) -> None:
        """(reactor) Fire the forwards' Deferreds from a poll's delivery reports."""
        for waiting, err in reports:
            if err is None:
                for d in waiting:
                    d.callback(None)
            else:
                for d in waiting:
                    d.errback(Unavailable(f"forward failed: {err}"))

    def _poll_producer(self, timeout: float) -> None:
        """(pool thread) Serve the producer's events for up to ``timeout`` seconds, then
        hand the delivery reports gathered to the reactor in one hop."""
        self._producer.poll(timeout)
        if self._reports:
            reports, self._reports = self._reports, []
            self.bridge.to_reactor(self._settle, reports)

    def _serve_producer(self) -> None:
        """(pool thread) Serve delivery reports until stopped, then flush what is queued."""
        while self._running.is_set():
            self._poll_producer(self.poll_timeout)
        self._producer.flush(10.0)
        self._poll_producer(0)

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
                _log.warn("kafka consumer error: {err}", err=err)
            if len(out) >= self.batch:
                break
            msg = self._consumer.poll(0)
        return out

    async def _consume(self) -> None:
        """(reactor) Poll on the pool, hand envelopes to the receiver, then commit."""
        while self._running.is_set():
            commit, self._uncommitted = self._uncommitted, None
            messages = await self.bridge.call(self._poll, commit)
            if not messages:
                continue
            pending: list[defer.Deferred[Any]] = []
            for msg in messages:
                self._deliver(msg.value(), pending)
            if pending:
                results = await defer.DeferredList(pending, consumeErrors=True)
                for ok, failure in results:
                    if not ok:
                        _log.failure("receiver failed on an envelope", failure)
            self._uncommitted = messages[-1].offset() + 1

    def _deliver(self, value: bytes, pending: list[defer.Deferred[Any]]) -> None:
        """(reactor) Hand each envelope of one record to the receiver, in order; Deferreds
        of envelopes not handled yet go to ``pending``."""
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
