"""The real services DIM uses answer the clients DIM uses, from the reactor.

Run against a stack (`eval "$(scripts/stack up)"`); an absent service fails its test within
a couple of seconds (see tests.integration.services.require).
"""
from __future__ import annotations

import uuid
from typing import Any

import txredisapi
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic
from kazoo.client import KazooClient
from kazoo.protocol.states import WatchedEvent
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.python.threadable import isInIOThread
from twisted.trial.unittest import TestCase

from dim.cluster.threads import ThreadBridge
from tests.integration.services import (
    CONNECT_TIMEOUT,
    kafka_replication,
    kafka_security,
    require_kafka,
    require_redis,
    require_zookeeper,
    zookeeper_client_args,
)


def unique(prefix: str) -> str:
    """A name no other test run uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class RedisTests(TestCase):
    """txredisapi on the global reactor against the stack's Redis."""

    timeout = 30

    @inlineCallbacks
    def connect(self) -> Any:
        """Connect without reconnecting, so a dead Redis fails the test instead of hanging."""
        address = require_redis()
        conn = yield txredisapi.Connection(
            address.host, address.port, dbid=address.db, password=address.password,
            reconnect=False, connectTimeout=CONNECT_TIMEOUT, replyTimeout=10)
        self.addCleanup(conn.disconnect)
        return conn

    @inlineCallbacks
    def test_set_get_round_trip(self) -> Any:
        """A value SET on Redis comes back unchanged from GET, and DEL removes it."""
        conn = yield self.connect()
        key = unique("dim-test:kv")
        self.addCleanup(conn.delete, key)
        self.assertEqual((yield conn.set(key, "hello é", expire=60)), "OK")
        self.assertEqual((yield conn.get(key)), "hello é")
        self.assertEqual((yield conn.delete(key)), 1)
        self.assertIsNone((yield conn.get(key)))

    @inlineCallbacks
    def test_multi_exec(self) -> Any:
        """Commands queued between MULTI and EXEC run together and EXEC returns their replies."""
        conn = yield self.connect()
        key, counter = unique("dim-test:tx"), unique("dim-test:n")
        self.addCleanup(conn.delete, [key, counter])
        transaction = yield conn.multi()
        yield transaction.set(key, "a")
        yield transaction.incr(counter)
        yield transaction.incrby(counter, 41)
        yield transaction.get(key)
        replies = yield transaction.commit()
        self.assertEqual(list(replies), ["OK", 1, 42, "a"])
        self.assertEqual((yield conn.get(counter)), 42)


class ZooKeeperTests(TestCase):
    """kazoo through the thread bridge against the stack's ZooKeeper."""

    timeout = 30

    def setUp(self) -> None:
        self.hosts = require_zookeeper()
        self.bridge = ThreadBridge(unique("test-zookeeper"), max_threads=4, reactor=reactor)
        self.bridge.start()
        self.addCleanup(self.bridge.stop)

    @inlineCallbacks
    def client(self) -> Any:
        """A started kazoo client, closed at the end of the test."""
        client = KazooClient(hosts=self.hosts, timeout=4.0, **zookeeper_client_args())
        self.addCleanup(self.bridge.call, self.close, client)
        yield self.bridge.call(client.start, timeout=2 * CONNECT_TIMEOUT)
        return client

    @staticmethod
    def close(client: KazooClient) -> None:
        """Stop and close a kazoo client (blocking; run on the bridge)."""
        client.stop()
        client.close()

    @inlineCallbacks
    def test_ephemeral_watch_fires_when_owner_closes(self) -> Any:
        """A watch on another client's ephemeral znode fires DELETED on the reactor when that
        client closes its session."""
        owner = yield self.client()
        observer = yield self.client()
        path = f"/dim-test/{unique('ephemeral')}"
        yield self.bridge.call(owner.create, path, b"node-1", ephemeral=True, makepath=True)

        fired: Deferred[WatchedEvent] = Deferred()
        on_reactor_thread: list[bool] = []

        def on_reactor(event: WatchedEvent) -> None:
            on_reactor_thread.append(isInIOThread())
            if not fired.called:
                fired.callback(event)

        def watch(event: WatchedEvent) -> None:
            reactor.callFromThread(on_reactor, event)  # kazoo calls this on its own thread

        stat = yield self.bridge.call(observer.exists, path, watch=watch)
        self.assertIsNotNone(stat)
        self.assertEqual(stat.ephemeralOwner, owner.client_id[0])
        self.assertFalse(fired.called)

        yield self.bridge.call(self.close, owner)
        event = yield fired.addTimeout(10, reactor)
        self.assertEqual((event.type, event.path), ("DELETED", path))
        self.assertEqual(on_reactor_thread, [True])
        self.assertIsNone((yield self.bridge.call(observer.exists, path)))


class KafkaTests(TestCase):
    """confluent-kafka through the thread bridge against the stack's Kafka."""

    timeout = 90

    def setUp(self) -> None:
        self.bootstrap = require_kafka()
        self.bridge = ThreadBridge(unique("test-kafka"), max_threads=2, reactor=reactor)
        self.bridge.start()
        self.addCleanup(self.bridge.stop)
        self.common = {"bootstrap.servers": self.bootstrap,
                       "socket.connection.setup.timeout.ms": 5000, **kafka_security()}

    @inlineCallbacks
    def create_topic(self) -> Any:
        """A new single-partition topic, deleted at the end of the test."""
        admin = AdminClient(self.common)
        topic = unique("dim-test")
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=1, replication_factor=kafka_replication())],
            operation_timeout=15)
        yield self.bridge.call(futures[topic].result, 20)
        self.addCleanup(lambda: self.bridge.call(
            lambda: admin.delete_topics([topic], operation_timeout=10)[topic].result(15)))
        return topic

    @staticmethod
    def produce(producer: Producer, topic: str, values: list[bytes]) -> list[Any]:
        """Produce values in order and wait for their delivery reports (blocking)."""
        reports: list[Any] = []
        for value in values:
            producer.produce(topic, key=b"user-1", value=value,
                             on_delivery=lambda err, msg: reports.append((err, msg.offset())))
        remaining = producer.flush(20)
        if remaining:
            raise AssertionError(f"{remaining} message(s) not delivered within 20 s")
        return reports

    @staticmethod
    def consume(consumer: Consumer, topic: str, count: int, seconds: float) -> list[bytes]:
        """Subscribe and poll until count messages arrive or seconds pass (blocking)."""
        import time

        consumer.subscribe([topic])
        values: list[bytes] = []
        deadline = time.monotonic() + seconds
        while len(values) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"consumer error: {message.error()}")
            values.append(message.value())
        return values

    @inlineCallbacks
    def test_produce_consume_round_trip(self) -> Any:
        """Messages produced with idempotence on come back in order to a consumer group."""
        topic = yield self.create_topic()
        producer = Producer({**self.common, "enable.idempotence": True, "acks": "all",
                             "linger.ms": 0})
        values = [f"message {i}".encode() for i in range(5)]
        reports = yield self.bridge.call(self.produce, producer, topic, values)
        self.assertEqual([err for err, _ in reports], [None] * 5)
        self.assertEqual([offset for _, offset in reports], list(range(5)))

        consumer = Consumer({**self.common, "group.id": unique("dim-test-group"),
                             "auto.offset.reset": "earliest", "enable.auto.commit": False})
        self.addCleanup(self.bridge.call, consumer.close)
        received = yield self.bridge.call(self.consume, consumer, topic, len(values), 45)
        self.assertEqual(received, values)
