"""dim-node and dim-gateway refuse to start, with one line naming the missing piece and exit
status 1, when a service does not answer or DIM_SECRET is unset."""
from __future__ import annotations

import time
from pathlib import Path

from twisted.internet import defer
from twisted.trial import unittest

from dim.launch import DimProcess, free_ports
from tests.cluster.kit import SECRET, Services, delete_redis_keys, delete_topics, delete_znodes
from tests.harness import sleep, twistd


class StartFailureTests(unittest.TestCase):
    """Each service missing in turn, all at once in parallel processes."""

    timeout = 120

    @defer.inlineCallbacks
    def test_missing_services_and_secret(self):
        """Redis, Kafka, ZooKeeper unreachable, and no DIM_SECRET: status 1 and a clear line."""
        s = Services.shared()
        dead = f"127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
        workdir = Path(self.mktemp()).resolve()
        name = f"cs{int(time.time() * 1000) % 10**8}"

        def node(label: str, redis: str, kafka: str, zookeeper: str,
                 secret: str = SECRET) -> DimProcess:
            return twistd("dim-node", [
                "--id", f"{label}-{name}", "--listen", "tcp:0:interface=127.0.0.1",
                "--cluster", name, "--redis", redis, "--kafka", kafka,
                "--zookeeper", zookeeper, "--connect-timeout", "2"], workdir,
                env={"DIM_SECRET": secret}, name=label)

        cases = {
            "no-redis": (node("no-redis", f"redis://{dead}", s.kafka, s.zookeeper),
                         f"DIM node no-redis-{name} cannot start: Redis at redis://{dead}"),
            "no-kafka": (node("no-kafka", s.redis, dead, s.zookeeper),
                         f"cannot start: Kafka at {dead}"),
            "no-zookeeper": (node("no-zookeeper", s.redis, s.kafka, dead),
                             f"cannot start: ZooKeeper at {dead}"),
            "gateway-no-zookeeper": (twistd("dim-gateway", [
                "--listen", "tcp:0:interface=127.0.0.1", "--cluster", name,
                "--redis", s.redis, "--zookeeper", dead, "--connect-timeout", "2",
                "--files", str(workdir / "files")], workdir, env={"DIM_SECRET": SECRET},
                name="gateway-no-zookeeper"),
                f"DIM gateway cannot start: ZooKeeper at {dead}"),
        }
        nosecret = node("no-secret", s.redis, s.kafka, s.zookeeper, secret="")
        self.addCleanup(delete_redis_keys, s.redis, f"{name}:*")
        self.addCleanup(delete_znodes, s.zookeeper, f"/{name}", **s.zookeeper_client_args())
        self.addCleanup(delete_topics, s.kafka_config(), [f"{name}.node.no-zookeeper-{name}"])
        for p, _ in cases.values():
            p.start()
        nosecret.start()
        self.addCleanup(lambda: [p.kill() for p, _ in [*cases.values(), (nosecret, "")]])
        deadline = time.monotonic() + 60
        while any(p.alive for p, _ in [*cases.values(), (nosecret, "")]):
            self.assertLess(time.monotonic(), deadline, "a process did not exit")
            yield sleep(0.2)
        for label, (p, line) in cases.items():
            self.assertEqual(p.returncode, 1, f"{label}:\n{p.log_tail()}")
            self.assertIn(line, p.log.read_text(), label)
        self.assertNotEqual(nosecret.returncode, 0)
        self.assertFalse(nosecret.log.exists() and "starting" in nosecret.log.read_text())


class MigrationAtStartTests(unittest.TestCase):
    """A node brings Redis data of an older layout up to date before it takes clients."""

    timeout = 120

    @defer.inlineCallbacks
    def test_node_migrates_data_written_before_conversations(self):
        """Data written as the store did before conversations is at the current schema,
        with its conversations and unread counts, once a node of this version listens."""
        from twisted.internet import reactor

        from dim.store.redis import RedisStore, open_redis
        from dim.store.redis_schema import SCHEMA_VERSION, schema_version
        from tests.fakes.redis_v1 import LegacyRedisWriter

        s = Services.shared()
        workdir = Path(self.mktemp()).resolve()
        name = f"cm{int(time.time() * 1000) % 10**8}"
        self.addCleanup(delete_redis_keys, s.redis, f"{name}:*")
        self.addCleanup(delete_znodes, s.zookeeper, f"/{name}", **s.zookeeper_client_args())
        self.addCleanup(delete_topics, s.kafka_config(), [f"{name}.node.n1"])
        redis = open_redis(s.redis, poolsize=1)
        self.addCleanup(redis.disconnect)
        old = LegacyRedisWriter(redis, f"{name}:")
        for user in ("alice", "bob"):
            yield defer.Deferred.fromCoroutine(old.create_user(user))
        for n in range(3):
            yield defer.Deferred.fromCoroutine(old.send("bob", f"b{n}", ["alice"], f"hi {n}"))
        yield defer.Deferred.fromCoroutine(old.read("alice", 1))
        node = twistd("dim-node", [
            "--id", "n1", "--listen", "tcp:0:interface=127.0.0.1", "--cluster", name,
            "--redis", s.redis, "--kafka", s.kafka, "--zookeeper", s.zookeeper],
            workdir, env={"DIM_SECRET": SECRET, **s.credential_env()}, name="n1")
        node.start()
        self.addCleanup(node.stop)
        deadline = time.monotonic() + 60
        while "takes clients" not in (node.log.read_text() if node.log.exists() else ""):
            self.assertTrue(node.alive, node.log_tail())
            self.assertLess(time.monotonic(), deadline, node.log_tail())
            yield sleep(0.2)
        self.assertIn("migrated from schema 1 to", node.log.read_text())
        store = yield RedisStore.connect(s.redis, prefix=f"{name}:", clock=reactor)
        self.addCleanup(store.close)
        self.assertEqual(SCHEMA_VERSION,
                         (yield defer.Deferred.fromCoroutine(schema_version(store))))
        convs = yield store.conversations("alice", 10)
        self.assertEqual([("bob", 1, 2, 3)],
                         [(c.conv, c.read_seq, c.unread, c.last.seq) for c in convs])
