"""The cluster test kit: a gateway and nodes as twistd processes, people on the client core,
and a checker that counts what was lost, shown twice or shown out of order.

- :class:`LocalCluster`: ``dim-gateway`` and N ``dim-node`` processes under one fresh cluster
  name, on the services of :class:`Services`; :meth:`LocalCluster.cleanup` removes its Redis
  keys, ZooKeeper znodes and Kafka topics.
- :class:`PrivateStack`: a second ``scripts/stack`` (its own directory and ports) for the
  tests that restart Redis or Kafka, so they never disturb the shared stack others test on.
- :class:`Person`: one user on :class:`dim.client.session.ClientSession` (the real reconnect
  loop: route excluding the failed node, backoff with jitter, sync from the last seq).
- :class:`Conversation`: many people sending to each other at a steady rate, and the
  checker.
- :class:`ClusterTestCase`: a fresh cluster (gateway + 3 nodes) for each test, with
  :func:`people_on` and :func:`wait_until` for the tests that start people on it.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, task, threads
from twisted.trial import unittest

from dim.client.gateway import GatewayClient
from dim.client.events import (FAILED, Connected, Disconnected, MessageReceived, MessageStatus,
                               NodeAddress, OutgoingMessage, SyncFinished)
from dim.client.session import ClientSession
from dim import launch
from tests.harness import REPO, WireClient, http, register_and_login, sleep
from tests.integration import services as env

SECRET = "cluster-test-secret-of-at-least-32-bytes!"


@dataclass(frozen=True)
class Services:
    """Where Redis, ZooKeeper and Kafka answer, and their credentials (the Redis password is
    in its URL; ``zookeeper_auth`` is ``USER:PASSWORD``, ``kafka_sasl``
    ``MECHANISM:USER:PASSWORD``, both empty without authentication)."""

    redis: str
    zookeeper: str
    kafka: str
    zookeeper_auth: str = ""
    kafka_sasl: str = ""

    @classmethod
    def shared(cls) -> Services:
        """The services of ``DIM_REDIS``/``DIM_ZOOKEEPER``/``DIM_KAFKA`` (with
        ``DIM_ZOOKEEPER_AUTH``/``DIM_KAFKA_SASL``); fails the test if one of them does not
        accept connections."""
        env.require_redis()
        env.require_zookeeper()
        env.require_kafka()
        return cls(env.redis_url(), env.zookeeper_hosts(), env.kafka_bootstrap(),
                   os.environ.get("DIM_ZOOKEEPER_AUTH", ""), os.environ.get("DIM_KAFKA_SASL", ""))

    def credential_env(self) -> dict[str, str]:
        """The environment giving a DIM process these credentials (set even when empty, so
        no credential of another stack leaks in from the test's environment)."""
        return {"DIM_ZOOKEEPER_AUTH": self.zookeeper_auth, "DIM_KAFKA_SASL": self.kafka_sasl}

    def zookeeper_client_args(self) -> dict[str, Any]:
        """What a KazooClient needs to act as DIM here."""
        return ({"auth_data": [("digest", self.zookeeper_auth)]} if self.zookeeper_auth
                else {})

    def kafka_config(self) -> dict[str, str]:
        """``bootstrap.servers`` and the login, for a confluent-kafka client."""
        from dim.runtime import kafka_security

        return {"bootstrap.servers": self.kafka, **kafka_security(self.kafka_sasl or None)}


# ---------------------------------------------------------------- a private stack


class PrivateStack:
    """A ``scripts/stack`` of its own (directory ``.cluster/test-stack``, ports moved up by
    :attr:`OFFSET`), started once per test process and stopped when it exits.

    If a previous run left it running, it is reused.  While another test run uses it (a lock
    file says so), this process makes one under ``.cluster/test-stack-PID`` on other ports.
    """

    DIR = REPO / ".cluster" / "test-stack"
    OFFSET = 4100
    _services: Services | None = None
    _lock: Any = None

    @classmethod
    def _claim(cls) -> None:
        """Take the stack for this process; if another test run holds it, use one of this
        process's own (its directory and ports), so neither run stops the other's."""
        import fcntl

        cls.DIR.parent.mkdir(parents=True, exist_ok=True)
        lock = open(cls.DIR.parent / "test-stack.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            cls._lock = lock
            return
        except OSError:
            lock.close()
        cls.DIR = REPO / ".cluster" / f"test-stack-{os.getpid()}"
        for offset in range(4200, 6000, 100):
            ports = [6379 + offset, 2181 + offset, 9092 + offset, 9093 + offset]
            if not any(launch.port_open(p, timeout=0.2) for p in ports):
                cls.OFFSET = offset
                return
        raise AssertionError("no free ports for a private stack")

    @classmethod
    def services(cls) -> Services:
        """Start the stack unless it runs; its services (fails the test if it cannot start)."""
        if cls._services is None:
            cls._claim()
            result = subprocess.run(
                [sys.executable, str(REPO / "scripts" / "stack"), "up", "--dir", str(cls.DIR),
                 "--port-offset", str(cls.OFFSET)], capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise AssertionError(f"the private stack did not start:\n{result.stderr[-3000:]}")
            found = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
            cls._services = Services(found["DIM_REDIS"], found["DIM_ZOOKEEPER"],
                                     found["DIM_KAFKA"], found.get("DIM_ZOOKEEPER_AUTH", ""),
                                     found.get("DIM_KAFKA_SASL", ""))
            import atexit
            atexit.register(cls.down)
        return cls._services

    @classmethod
    def restart(cls, service: str) -> defer.Deferred[float]:
        """``scripts/stack restart SERVICE`` in a thread; fires with the seconds it took."""
        def run() -> float:
            began = time.monotonic()
            result = subprocess.run(
                [sys.executable, str(REPO / "scripts" / "stack"), "restart", service,
                 "--dir", str(cls.DIR)], capture_output=True, text=True, timeout=300)
            if result.returncode != 0:
                raise AssertionError(f"restarting {service} failed:\n{result.stderr[-3000:]}")
            return time.monotonic() - began
        return threads.deferToThread(run)

    @classmethod
    def down(cls) -> None:
        """Stop the private stack and delete its data."""
        subprocess.run([sys.executable, str(REPO / "scripts" / "stack"), "down", "--purge",
                        "--dir", str(cls.DIR)], capture_output=True, timeout=120)
        cls._services = None
        if cls.DIR.name != "test-stack":
            import shutil
            shutil.rmtree(cls.DIR, ignore_errors=True)


# ---------------------------------------------------------------- the cluster


class LocalCluster(launch.Cluster):
    """A gateway and ``nodes`` nodes as twistd processes (:class:`dim.launch.Cluster`) on
    these services, under a fresh cluster name."""

    def __init__(self, workdir: Path, services: Services, nodes: int = 3, heartbeat: int = 2,
                 zk_timeout: float = 4.0, routing: str = "round_robin",
                 node_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.services = services
        self.heartbeat = heartbeat
        run = uuid.uuid4().hex[:8]
        super().__init__(
            workdir, f"ct{run}", [f"n{i}-{run}" for i in range(1, nodes + 1)],
            gateway_args=["--redis", services.redis, "--zookeeper", services.zookeeper,
                          "--kafka", services.kafka, "--routing", routing,
                          "--zk-timeout", str(zk_timeout), "--files", str(workdir / "files")],
            node_args=["--redis", services.redis, "--kafka", services.kafka,
                       "--zookeeper", services.zookeeper, "--heartbeat", str(heartbeat),
                       "--zk-timeout", str(zk_timeout), *(node_args or [])],
            env={"DIM_SECRET": SECRET, **services.credential_env()})

    @defer.inlineCallbacks
    def start(self, timeout: float = 60.0):
        """Start every process; fires once the gateway lists every node."""
        self.start_processes(timeout)
        yield self.wait_listed(set(self.ids), timeout)

    @defer.inlineCallbacks
    def live_nodes(self):
        """The ids ``GET /v1/nodes`` lists now."""
        r = yield http("GET", f"{self.base}/v1/nodes")
        assert r.code == 200, r
        return {n["id"] for n in r.body["nodes"]}

    @defer.inlineCallbacks
    def wait_listed(self, ids: set[str], timeout: float = 30.0):
        """Wait until ``/v1/nodes`` lists exactly ``ids``; the seconds it took."""
        began = time.monotonic()
        while True:
            live = yield self.live_nodes()
            if live == ids:
                return time.monotonic() - began
            if time.monotonic() - began > timeout:
                tails = "\n".join(f"--- {p.name}\n{p.log_tail(20)}" for p in self.processes())
                raise AssertionError(f"/v1/nodes lists {sorted(live)}, not {sorted(ids)}, "
                                     f"after {timeout} s\n{tails}")
            yield sleep(0.05)

    def address(self, node_id: str) -> NodeAddress:
        """Where clients reach a node."""
        return NodeAddress(node_id, "127.0.0.1", self.ports[node_id])

    def cleanup(self) -> None:
        """Stop the processes; delete this cluster's Redis keys, znodes and Kafka topics."""
        self.stop()
        delete_redis_keys(self.services.redis, f"{self.name}:*")
        delete_znodes(self.services.zookeeper, f"/{self.name}",
                      **self.services.zookeeper_client_args())
        delete_topics(self.services.kafka_config(),
                      [f"{self.name}.node.{i}{suffix}" for i in self.ids
                       for suffix in ("", ".nudge")])


def delete_redis_keys(url: str, pattern: str) -> None:
    """Delete every key matching ``pattern`` (redis-cli, so no reactor is needed)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    script = ("local n = 0 for _, k in ipairs(redis.call('KEYS', ARGV[1])) do "
              "redis.call('DEL', k) n = n + 1 end return n")
    # The password goes through the environment, not the command line.
    auth = {"REDISCLI_AUTH": unquote(parts.password)} if parts.password else {}
    subprocess.run(["redis-cli", "-h", parts.hostname or "127.0.0.1", "-p",
                    str(parts.port or 6379), "-n", parts.path.strip("/") or "0",
                    "EVAL", script, "0", pattern], capture_output=True, timeout=30,
                   env={**os.environ, **auth})


def delete_znodes(hosts: str, path: str, **client_args: Any) -> None:
    """Delete a znode and everything under it (``client_args`` may carry ``auth_data``)."""
    from kazoo.client import KazooClient

    zk = KazooClient(hosts=hosts, timeout=5, **client_args)
    try:
        zk.start(5)
        zk.delete(path, recursive=True)
    except Exception:
        pass
    finally:
        zk.stop()
        zk.close()


def delete_topics(config: dict[str, str], topics: list[str]) -> None:
    """Delete Kafka topics (missing ones are ignored); ``config`` holds
    ``bootstrap.servers`` and any login."""
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient(dict(config))  # alive until the answers
        futures = admin.delete_topics(topics, operation_timeout=10)
        for f in futures.values():
            try:
                f.result(timeout=15)
            except Exception:
                pass
    except Exception:
        pass


# ---------------------------------------------------------------- people


class Person:
    """One user on the real client core, recording what was sent and what was shown."""

    def __init__(self, base: str, user: str, token: str, clock: Any = time.monotonic) -> None:
        self.user = user
        self.clock = clock
        gateway = GatewayClient(base, token=token,
                                request_options={"persistent": False, "timeout": 10})
        self.session = ClientSession(gateway, reactor, user, token, device="test")
        self.session.subscribe(self._event)
        #: (sender, id) -> seq, in the order shown; ``shown_count`` counts repeats.
        self.shown: list[tuple[str, str, int, str]] = []
        self.shown_count: dict[tuple[str, str], int] = {}
        self.shown_at: dict[tuple[str, str], float] = {}
        self.sent_at: dict[str, float] = {}
        self.failures = 0
        #: Ids of messages that failed and were sent again (a later send in time).
        self.retried: set[str] = set()
        self.connects: list[tuple[float, str, int]] = []
        self.disconnects: list[float] = []
        self.synced_at: list[float] = []
        self._welcome_seq: int | None = None

    @classmethod
    @defer.inlineCallbacks
    def login(cls, base: str, user: str):
        """Register and log in ``user``; a Person with its token and the node from login."""
        answer = yield register_and_login(base, user)
        person = cls(base, user, answer["token"])
        person.login_node = answer["node"]
        return person

    def start(self, node: NodeAddress | dict[str, Any] | None = None) -> None:
        """Connect (to ``node``, else to the one login gave)."""
        self.session.start(node if node is not None else self.login_node)

    def stop(self) -> None:
        """Disconnect for good."""
        self.session.stop()

    @property
    def node(self) -> str | None:
        """The id of the node this person is connected to (None while not connected)."""
        return self.session.node.id if self.session.connected and self.session.node else None

    def send(self, to: str, body: str) -> OutgoingMessage:
        """Send a message now."""
        id = self.session.new_id()
        self.session.send(to, body, id=id)  # failures are counted from the events
        self.sent_at[id] = self.clock()
        return self.session.outgoing[id]

    def _event(self, event: Any) -> None:
        now = self.clock()
        if isinstance(event, MessageReceived):
            e = event.entry
            key = (e.sender, e.id)
            self.shown.append((e.sender, e.id, e.seq, e.body))
            self.shown_count[key] = self.shown_count.get(key, 0) + 1
            self.shown_at.setdefault(key, now)
        elif isinstance(event, MessageStatus) and event.state == FAILED:
            # The person presses retry a moment later, as the contract expects of one.
            self.failures += 1
            self.retried.add(event.id)
            reactor.callLater(0.5, self.session.retry, event.id)
        elif isinstance(event, Connected):
            self.connects.append((now, event.node.id, event.last_seq))
            self._welcome_seq = event.last_seq
            self._check_synced(now)
        elif isinstance(event, Disconnected):
            self.disconnects.append(now)
        elif isinstance(event, SyncFinished):
            self._check_synced(now)

    def _check_synced(self, now: float) -> None:
        if self._welcome_seq is not None and self.session.last_seq >= self._welcome_seq:
            self.synced_at.append(now)
            self._welcome_seq = None


@dataclass
class Tally:
    """What the checker found."""

    sent: int = 0
    lost: list[tuple[str, str, str]] = field(default_factory=list)
    twice: list[tuple[str, str, str]] = field(default_factory=list)
    out_of_order: list[tuple[str, str]] = field(default_factory=list)
    unconfirmed: int = 0
    failures: int = 0
    latencies: list[float] = field(default_factory=list)
    #: For each lost message, when it was sent and what its recipient had seen by then.
    lost_detail: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The counts, then a line per lost message (for the test log)."""
        counts = (f"sent {self.sent}, lost {len(self.lost)}, shown twice {len(self.twice)}, "
                  f"out of order {len(self.out_of_order)}, never confirmed {self.unconfirmed}, "
                  f"failed then retried {self.failures}")
        return "\n".join([counts, *self.lost_detail])


class Conversation:
    """People sending to random others at ``rate`` messages per second in total.

    Bodies are ``<sender>#<n>`` with ``n`` counting up per sender, so order per sender can
    be checked at every recipient.
    """

    def __init__(self, people: list[Person], rate: float, seed: int = 7) -> None:
        self.people = people
        self.rate = rate
        self.rng = random.Random(seed)
        self.counter = {p.user: 0 for p in people}
        #: (sender, id, recipient, n) of every message sent.
        self.messages: list[tuple[Person, OutgoingMessage, Person, int]] = []
        self._loop: task.LoopingCall | None = None
        self._tick = 0.02
        self.began = time.monotonic()

    def start(self) -> None:
        """Start sending."""
        self._budget = 0.0
        self.began = time.monotonic()
        self._loop = task.LoopingCall(self._send_some)
        self._loop.start(self._tick, now=True)

    def stop(self) -> None:
        """Stop sending."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def _send_some(self) -> None:
        self._budget += self.rate * self._tick
        while self._budget >= 1:
            self._budget -= 1
            sender = self.rng.choice(self.people)
            recipient = self.rng.choice([p for p in self.people if p is not sender])
            self.counter[sender.user] += 1
            n = self.counter[sender.user]
            message = sender.send(recipient.user, f"{sender.user}#{n}")
            self.messages.append((sender, message, recipient, n))

    def check(self) -> Tally:
        """Count lost, twice-shown and out-of-order messages (see the module docstring)."""
        tally = Tally(sent=len(self.messages))
        for sender, message, recipient, _ in self.messages:
            key = (sender.user, message.id)
            if message.seq is None:
                tally.unconfirmed += 1
                continue
            shown = recipient.shown_count.get(key, 0)
            if shown == 0:
                tally.lost.append((sender.user, recipient.user, message.body))
                tally.lost_detail.append(self._explain(sender, message, recipient))
            elif shown > 1:
                tally.twice.append((sender.user, recipient.user, message.body))
            else:
                tally.latencies.append(recipient.shown_at[key] - sender.sent_at[message.id])
        retried = {(p.user, i) for p in self.people for i in p.retried}
        for person in self.people:
            tally.failures += person.failures
            last: dict[str, int] = {}
            for sender, id, _seq, body in sorted(person.shown, key=lambda s: s[2]):
                if (sender, id) in retried:
                    continue  # the person sent it again later: it is not out of order
                n = int(body.rsplit("#", 1)[1])
                if n <= last.get(sender, 0):
                    tally.out_of_order.append((sender, person.user))
                last[sender] = max(n, last.get(sender, 0))
        return tally

    def _explain(self, sender: Person, message: OutgoingMessage, recipient: Person) -> str:
        """One line on a lost message: when it was sent (seconds since the start), and the
        recipient's state: connected node, last contiguous seq, seqs held across a gap, when it
        last showed a message, and how often it connected."""
        session = recipient.session
        last_shown = max(recipient.shown_at.values(), default=None)
        return (f"  lost {message.body} ({message.id}) {sender.user}->{recipient.user}: sent at "
                f"{sender.sent_at[message.id] - self.began:.2f} s, sender seq {message.seq}; "
                f"recipient on {recipient.node}, last_seq {session.last_seq}, "
                f"ahead {sorted(session._ahead)[:5]}, last shown at "
                f"{'-' if last_shown is None else f'{last_shown - self.began:.2f}'} s, "
                f"{len(recipient.connects)} connects, now {time.monotonic() - self.began:.2f} s")

    @defer.inlineCallbacks
    def settle(self, timeout: float = 60.0):
        """Wait until every message that got ``sent`` is shown and none is unconfirmed."""
        began = time.monotonic()
        while time.monotonic() - began < timeout:
            tally = self.check()
            if not tally.lost and not tally.unconfirmed:
                return tally
            yield sleep(0.2)
        return self.check()


def log_in_all(base: str, users: list[str], at_once: int = 4) -> defer.Deferred[list[Person]]:
    """Register and log in ``users``, a few at a time (password hashing is slow on purpose,
    and a loaded machine would time out a burst of them)."""
    limit = defer.DeferredSemaphore(at_once)
    return defer.gatherResults([limit.run(Person.login, base, u) for u in users],
                               consumeErrors=True)


def report(name: str, figures: dict[str, Any]) -> None:
    """Print figures and append them to ``$DIM_CLUSTER_FIGURES`` (JSON lines) if set."""
    line = json.dumps({"test": name, **figures})
    print(line)
    path = os.environ.get("DIM_CLUSTER_FIGURES")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


@defer.inlineCallbacks
def wait_until(predicate, timeout: float, what: str, step: float = 0.05):
    """Wait until ``predicate()`` holds; fail naming ``what`` after ``timeout`` seconds."""
    began = time.monotonic()
    while not predicate():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        yield sleep(step)
    return time.monotonic() - began


@defer.inlineCallbacks
def people_on(cluster: LocalCluster, count: int, prefix: str):
    """``count`` people logged in through the gateway and connected where it sent them."""
    people = yield log_in_all(cluster.base, [f"{prefix}{i}" for i in range(count)])
    for p in people:
        p.start()
    yield wait_until(lambda: all(p.node for p in people), 30, "everyone connected")
    return people


class ClusterTestCase(unittest.TestCase):
    """Starts a fresh cluster (gateway + 3 nodes) on the shared stack for each test."""

    timeout = 120
    nodes = 3
    heartbeat = 2
    node_args: list[str] = []

    @defer.inlineCallbacks
    def setUp(self):
        self.cluster = LocalCluster(Path(self.mktemp()).resolve(), Services.shared(),
                                    nodes=self.nodes, heartbeat=self.heartbeat,
                                    node_args=self.node_args)
        self.addCleanup(self.cluster.cleanup)
        yield self.cluster.start()
        self.n1, self.n2, self.n3 = self.cluster.ids[:3]
        self.clients: list[WireClient] = []
        self.addCleanup(lambda: defer.gatherResults([c.close() for c in self.clients]))

    @defer.inlineCallbacks
    def login(self, user: str):
        """Register and log in; the login answer."""
        answer = yield register_and_login(self.cluster.base, user)
        return answer

    @defer.inlineCallbacks
    def connect(self, token: str, node: str, device: str | None = None):
        """A WireClient welcomed by ``node``."""
        c = yield WireClient.login("127.0.0.1", self.cluster.ports[node], token, device)
        c.token = token
        self.clients.append(c)
        return c
