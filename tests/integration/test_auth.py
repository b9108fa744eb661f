"""The cluster services refuse a client without credentials: Redis without its password,
ZooKeeper writes to DIM's znodes without the digest, Kafka without the SASL login.

``scripts/stack up`` turns authentication on by default; these tests fail (they never skip)
on a stack without it, since a cluster then lets any local process rewrite its state.
"""
from __future__ import annotations

import uuid
from typing import Any

import txredisapi
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from kazoo.client import KazooClient
from kazoo.exceptions import NoAuthError
from kazoo.security import OPEN_ACL_UNSAFE
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from dim.cluster.interface import NodeInfo
from dim.cluster.registry import ZooKeeperNodeRegistry
from dim.cluster.threads import ThreadBridge
from dim.errors import Unavailable
from dim.store.redis import RedisStore
from tests.integration.services import (CONNECT_TIMEOUT, kafka_security, redis_url,
                                        require_kafka, require_redis, require_zookeeper,
                                        zookeeper_auth)


class RedisAuthTests(TestCase):
    """Redis answers DIM with the password of DIM_REDIS and nobody without it."""

    timeout = 30

    @defer.inlineCallbacks
    def test_no_password_refused(self) -> Any:
        """A connection without the password gets NOAUTH; a wrong one is refused too."""
        address = require_redis()
        self.assertTrue(address.password, "DIM_REDIS has no password: the stack runs "
                                          "without authentication (scripts/stack --no-auth?)")
        for password in (None, "not-" + address.password):
            try:
                conn = yield txredisapi.Connection(
                    address.host, address.port, dbid=address.db, password=password,
                    reconnect=False, connectTimeout=CONNECT_TIMEOUT, replyTimeout=5)
            except Exception as e:
                self.assertRegex(str(e), "NOAUTH|WRONGPASS|auth", password)
                continue
            try:
                with self.assertRaises(Exception) as caught:
                    yield conn.set(f"dim-auth-test:{uuid.uuid4().hex}", "x", expire=10)
                self.assertRegex(str(caught.exception), "NOAUTH|WRONGPASS")
            finally:
                yield conn.disconnect()

    @defer.inlineCallbacks
    def test_dim_with_password_accepted(self) -> Any:
        """DIM's store, given the URL with the password, reads and writes."""
        require_redis()
        store = yield RedisStore.connect(redis_url(), prefix=f"authtest{uuid.uuid4().hex}:",
                                         timeout=2.0, clock=reactor)
        try:
            yield store.create_user("alice", "hash", 0)
            self.assertTrue((yield store.user_exists("alice")))
        finally:
            yield store.redis.delete(f"{store.prefix}user:alice")
            yield store.close()


    @defer.inlineCallbacks
    def test_acl_user(self) -> Any:
        """An ACL user in the URL (redis://USER:PASSWORD@...) is how DIM logs in; with a
        wrong password for that user it is refused."""
        address = require_redis()
        admin = yield txredisapi.Connection(
            address.host, address.port, dbid=address.db, password=address.password,
            reconnect=False, connectTimeout=CONNECT_TIMEOUT, replyTimeout=5)
        self.addCleanup(admin.disconnect)
        user, password = f"dimtest{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
        yield admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*",
                                    "&*", "+@all")
        self.addCleanup(admin.execute_command, "ACL", "DELUSER", user)
        where = f"{address.host}:{address.port}/{address.db}"
        store = yield RedisStore.connect(f"redis://{user}:{password}@{where}",
                                         prefix=f"authtest{uuid.uuid4().hex}:", timeout=2.0,
                                         clock=reactor)
        try:
            who = yield store.redis.execute_command("ACL", "WHOAMI")
            self.assertEqual(who, user)
        finally:
            yield store.close()
        failure = yield self.assertFailure(
            RedisStore.connect(f"redis://{user}:wrong@{where}", timeout=1.0,
                               clock=reactor), Unavailable)
        self.assertIn("refused DIM's credentials", str(failure))
        self.assertNotIn(":wrong@", str(failure))


class ZooKeeperAuthTests(TestCase):
    """DIM's znodes carry a digest ACL: a client without the digest can neither write nor
    read them, while DIM's registry with it can."""

    timeout = 40

    def setUp(self) -> None:
        self.hosts = require_zookeeper()
        self.bridge = ThreadBridge("zk-auth-test", max_threads=4, reactor=reactor)
        self.bridge.start()
        self.addCleanup(self.bridge.stop)
        self.cluster = f"/dimauth{uuid.uuid4().hex[:10]}"
        self.auth = zookeeper_auth()
        self.assertIsNotNone(self.auth, "DIM_ZOOKEEPER_AUTH is not set: the stack runs "
                                        "without authentication (scripts/stack --no-auth?)")

    def kazoo(self, auth: tuple[str, str] | None) -> KazooClient:
        """A started kazoo client, with the digest credential ``auth`` or none."""
        client = KazooClient(hosts=self.hosts, timeout=5.0,
                             auth_data=[("digest", f"{auth[0]}:{auth[1]}")] if auth else None)
        client.start(5)
        return client

    def outsider(self) -> list[str]:
        """(pool thread) Try every write an intruder would; the ones that succeeded."""
        client = self.kazoo(None)
        done = []
        root = f"{self.cluster}/nodes"
        attempts = {
            "create a node": lambda: client.create(f"{root}/intruder", b"{}"),
            "rewrite a node": lambda: client.set(f"{root}/n1", b'{"id":"n1","host":"evil"}'),
            "delete a node": lambda: client.delete(f"{root}/n1"),
            "create beside the root": lambda: client.create(f"{self.cluster}/other", b""),
            "change the ACL": lambda: client.set_acls(root, OPEN_ACL_UNSAFE),
            "read the nodes": lambda: client.get_children(root),
        }
        try:
            for name, attempt in attempts.items():
                try:
                    attempt()
                    done.append(name)
                except NoAuthError:
                    pass
        finally:
            client.stop()
            client.close()
        return done

    def cleanup(self) -> None:
        """(pool thread) Delete the test's znodes, with the credential."""
        client = self.kazoo(self.auth)
        try:
            client.delete(self.cluster, recursive=True)
        finally:
            client.stop()
            client.close()

    @defer.inlineCallbacks
    def test_without_digest_refused(self) -> Any:
        """With a node registered, every write (and read) without the digest is refused."""
        registry = ZooKeeperNodeRegistry(self.hosts, self.bridge, reactor,
                                         root=f"{self.cluster}/nodes", auth=self.auth,
                                         connect_timeout=5.0)
        yield registry.start()
        self.addCleanup(lambda: self.bridge.call(self.cleanup))
        self.addCleanup(registry.stop)
        yield registry.register(NodeInfo(id="n1", host="127.0.0.1", port=9001))
        yield registry.watch()
        self.assertEqual([n.id for n in registry.nodes()], ["n1"])
        succeeded = yield self.bridge.call(self.outsider)
        self.assertEqual(succeeded, [])
        self.assertEqual([(n.id, n.host) for n in registry.nodes()], [("n1", "127.0.0.1")])

    @defer.inlineCallbacks
    def test_existing_open_root_secured(self) -> Any:
        """A root made before credentials were set gets the ACL when DIM starts on it."""
        def make_open() -> None:
            client = self.kazoo(None)
            try:
                client.ensure_path(f"{self.cluster}/nodes")
            finally:
                client.stop()
                client.close()
        yield self.bridge.call(make_open)
        self.addCleanup(lambda: self.bridge.call(self.cleanup))
        registry = ZooKeeperNodeRegistry(self.hosts, self.bridge, reactor,
                                         root=f"{self.cluster}/nodes", auth=self.auth,
                                         connect_timeout=5.0)
        yield registry.start()
        self.addCleanup(registry.stop)
        yield registry.register(NodeInfo(id="n1", host="127.0.0.1", port=9001))
        succeeded = yield self.bridge.call(self.outsider)
        self.assertEqual(succeeded, [])


class KafkaAuthTests(TestCase):
    """Kafka's client listener takes SASL logins only."""

    timeout = 60

    def setUp(self) -> None:
        self.bootstrap = require_kafka()
        self.security = kafka_security()
        self.assertTrue(self.security, "DIM_KAFKA_SASL is not set: the stack runs without "
                                       "authentication (scripts/stack --no-auth?)")
        self.bridge = ThreadBridge("kafka-auth-test", max_threads=2, reactor=reactor)
        self.bridge.start()
        self.addCleanup(self.bridge.stop)

    def topics(self, config: dict[str, Any]) -> Any:
        """(pool thread) The topic list as a client with ``config`` sees it."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap,
                             "socket.connection.setup.timeout.ms": 3000, **config})
        return admin.list_topics(timeout=6).topics

    @defer.inlineCallbacks
    def test_without_login_refused(self) -> Any:
        """No SASL, or SASL with a wrong password: no metadata; the right login: metadata."""
        wrong = {**self.security, "sasl.password": "not-" + self.security["sasl.password"]}
        for config in ({}, wrong):
            with self.assertRaises(KafkaException):
                yield self.bridge.call(self.topics, config)
        topics = yield self.bridge.call(self.topics, self.security)
        self.assertIsInstance(topics, dict)
