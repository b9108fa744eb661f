"""Envelopes between nodes, over Kafka (confluent-kafka): one topic per node.

Node ``x`` reads topic ``dim.node.x`` (one partition, so envelopes keep the order they were
produced in) with consumer group ``dim.node.x``; any node forwards to ``x`` by producing to
that topic.  The topic is created at :meth:`KafkaForwarder.start` with replication
``min(3, brokers)`` (and ``min.insync.replicas = 2`` when replicated), the producer uses
``acks=all``, so :meth:`KafkaForwarder.forward` fires only once every in-sync replica has the
envelope.

The producer is not idempotent, on purpose.  Envelopes are hints about stored messages and
receivers tolerate repeats, so idempotence buys nothing here, and it costs availability:
when an envelope times out, an idempotent producer drains and bumps its epoch, and across a
broker restart that held every later envelope of the node until it timed out too (seen as a
node whose forwards all failed for a whole ``forward_timeout`` after the broker was back,
while the other nodes' went through).  Up to five requests stay in flight per broker; a
retry may then put an envelope behind a later one, which a client handles like any gap (it
syncs, and shows each seq once).  A single request in flight would keep the order but
tripled the cross-node latency at 141 msg/s in ``dim-bench chat_cross_node``.  A produce
request left unanswered by a broker that stopped is sent again after 5 s.  Reconnecting is
retried at least every second, so forwarding resumes within a second of the broker's
return rather than after librdkafka's 10 s backoff.

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

import threading
from typing import Any, Callable

from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from dim.cluster.interface import IForwarder
from dim.cluster.threads import ThreadBridge
from dim.errors import Unavailable

_log = Logger()
Receiver = Callable[[bytes], Any]


def topic_of(node: str, prefix: str = "dim.node.") -> str:
    """The Kafka topic a node reads its envelopes from."""
    return prefix + node


@implementer(IForwarder)
class KafkaForwarder:
    """An :class:`IForwarder` on Kafka for the node ``node``.

    ``bootstrap`` is Kafka's ``bootstrap.servers`` (``"127.0.0.1:9092"``); ``bridge`` a
    started :class:`ThreadBridge` with at least 3 threads, owned by the caller (there are no
    timers here: librdkafka's ``message.timeout.ms`` bounds every forward).  ``linger_ms``
    trades latency for batching (0: send at once).  ``forward_timeout`` (seconds) bounds how
    long :meth:`forward` may wait for the brokers before it fails with
    :class:`dim.errors.Unavailable`.  ``producer_config`` and
    ``consumer_config`` add or override librdkafka settings; ``security_config`` (SASL and
    TLS settings, see :func:`dim.runtime.kafka_security`) goes to every client, the admin
    client included.  With ``skip_backlog``,
    :meth:`start` reads from the end of the topic as it is then, skipping envelopes left from
    a previous life of the node (they are hints about stored messages, useless after a
    restart); otherwise reading resumes at the group's committed offset.
    """

    def __init__(self, node: str, bootstrap: str, bridge: ThreadBridge,
                 linger_ms: float = 0, forward_timeout: float = 10.0,
                 poll_timeout: float = 0.1, batch: int = 500, topic_prefix: str = "dim.node.",
                 max_replication: int = 3, connect_timeout: float = 5.0,
                 producer_config: dict[str, Any] | None = None,
                 consumer_config: dict[str, Any] | None = None,
                 skip_backlog: bool = False, consume: bool = True,
                 security_config: dict[str, Any] | None = None) -> None:
        self.node = node
        #: False for a sender only (the gateway): no topic of its own, no consumer.
        self.consume = consume
        self.skip_backlog = skip_backlog
        self.bootstrap = bootstrap
        self.bridge = bridge
        self.topic = topic_of(node, topic_prefix)
        self.topic_prefix = topic_prefix
        self.poll_timeout = poll_timeout
        self.batch = batch
        self.max_replication = max_replication
        self.connect_timeout = connect_timeout
        self.security_config: dict[str, Any] = dict(security_config or {})
        self.producer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            **self.security_config,
            "linger.ms": linger_ms,
            "acks": "all",
            "enable.idempotence": False,
            "max.in.flight.requests.per.connection": 5,
            "reconnect.backoff.max.ms": 1000,
            # A request the broker never answers (it stopped while the request was in
            # flight) is sent again after 5 s rather than librdkafka's 30 s, which equalled
            # the whole forward timeout.
            "request.timeout.ms": min(5000, int(forward_timeout * 1000)),
            "message.timeout.ms": int(forward_timeout * 1000),
            "socket.nagle.disable": True,
            **(producer_config or {}),
        }
        self.consumer_config: dict[str, Any] = {
            "bootstrap.servers": bootstrap,
            **self.security_config,
            "group.id": topic_of(node, topic_prefix),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "reconnect.backoff.max.ms": 1000,
            "socket.nagle.disable": True,
            **(consumer_config or {}),
        }
        #: The replication factor of this node's topic, once :meth:`start` made it.
        self.replication: int | None = None
        self._receiver: Receiver | None = None
        self._producer: Any = None
        self._consumer: Any = None
        self._running = threading.Event()  # read by the pool-thread loops
        self._producer_loop: defer.Deferred[None] | None = None
        self._consumer_loop: defer.Deferred[None] | None = None
        self._uncommitted: int | None = None

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

        admin = AdminClient({"bootstrap.servers": self.bootstrap, **self.security_config})
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
        """Send an encoded envelope to ``node``; fires once the brokers acknowledged it (acks=all),
        fails with Unavailable if they did not within forward_timeout."""
        if not self._running.is_set():
            return defer.fail(Unavailable("forwarder is not running"))
        d: defer.Deferred[None] = defer.Deferred()

        def delivered(err: Any, msg: Any) -> None:
            # Runs on the producer loop's pool thread: only hop.
            self.bridge.to_reactor(self._settle, d, err)

        try:
            self._producer.produce(topic_of(node, self.topic_prefix), payload,
                                   key=self.node.encode(), on_delivery=delivered)
        except BufferError:
            return defer.fail(Unavailable("forward queue is full"))
        return d

    @staticmethod
    def _settle(d: defer.Deferred[None], err: Any) -> None:
        """(reactor) Fire a forward's Deferred from its delivery report."""
        if err is None:
            d.callback(None)
        else:
            d.errback(Unavailable(f"forward failed: {err}"))

    def _serve_producer(self) -> None:
        """(pool thread) Serve delivery reports until stopped."""
        while self._running.is_set():
            self._producer.poll(self.poll_timeout)
        self._producer.flush(10.0)

    # -- receiving -------------------------------------------------------------------------

    def set_receiver(self, receiver: Receiver) -> None:
        """Deliver envelopes addressed to this node to ``receiver`` on the reactor thread, in
        order; if it returns a Deferred, the envelope is handled (and its offset committed)
        once that fires.  A failing receiver is logged and the envelope counts as handled."""
        self._receiver = receiver

    def _poll(self, commit: int | None) -> list[Any]:
        """(pool thread) Commit the last handled offset, then wait up to poll_timeout for
        envelopes and take up to ``batch`` of them."""
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
            pending = []
            for msg in messages:
                pending.append(defer.maybeDeferred(self._deliver, msg.value()))
            results = await defer.DeferredList(pending, consumeErrors=True)
            for ok, failure in results:
                if not ok:
                    _log.failure("receiver failed on an envelope", failure)
            self._uncommitted = messages[-1].offset() + 1

    def _deliver(self, value: bytes) -> Any:
        """(reactor) Hand one envelope's bytes to the receiver."""
        if self._receiver is None:
            _log.warn("no receiver set; envelope dropped")
            return None
        return self._receiver(value)
