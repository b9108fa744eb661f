"""ZooKeeperNodeRegistry on a real ZooKeeper (``DIM_ZOOKEEPER``, default 127.0.0.1:2181).

The tests fail when ZooKeeper does not answer.  Every test works under its own root znode.
Timings of vanishing nodes are printed (and asserted against the session timeout).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from dim.cluster.interface import INodeRegistry, NodeInfo
from dim.cluster.registry import ZooKeeperNodeRegistry
from dim.cluster.threads import ThreadBridge
from dim.errors import Unavailable
from tests.integration.services import zookeeper_auth, zookeeper_client_args

ZK_HOSTS = os.environ.get("DIM_ZOOKEEPER", "127.0.0.1:2181")
SESSION_TIMEOUT = 4.0

#: A node that registers with plain kazoo, says "ready" and waits to be killed.
CRASHING_NODE = """
import json, sys, time
from kazoo.client import KazooClient
zk = KazooClient(hosts=sys.argv[1], timeout=float(sys.argv[3]),
                 auth_data=[("digest", sys.argv[4])] if sys.argv[4] else None)
zk.start(5)
zk.create(sys.argv[2], json.dumps({"id": "c", "host": "127.0.0.1", "port": 1,
          "connections": 0, "incarnation": "x"}).encode(), ephemeral=True, makepath=True)
print("ready", flush=True)
time.sleep(600)
"""


def sleep(seconds: float) -> defer.Deferred[None]:
    """Fire after ``seconds`` of real time."""
    return task.deferLater(reactor, seconds, lambda: None)


async def wait_for(predicate: Any, timeout: float, step: float = 0.01) -> float:
    """Wait until ``predicate()`` is true; the seconds it took (fails after ``timeout``)."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await sleep(step)
    return time.monotonic() - start


class ZooKeeperNodeRegistryTests(TestCase):
    """Nodes register ephemeral znodes; a watcher sees them come, change and go."""

    timeout = 40

    def setUp(self) -> None:
        self.root = f"/dimtest/{uuid.uuid4().hex[:12]}/nodes"
        self.bridge = ThreadBridge("zk-test", max_threads=4, reactor=reactor)
        self.bridge.start()
        self.addCleanup(self.bridge.stop)
        self.addCleanup(self.delete_root)

    def delete_root(self) -> defer.Deferred[None]:
        from kazoo.client import KazooClient

        def run() -> None:
            zk = KazooClient(hosts=ZK_HOSTS, **zookeeper_client_args())
            zk.start(5)
            try:
                zk.delete(self.root.rsplit("/", 1)[0], recursive=True)
            finally:
                zk.stop()
                zk.close()
        return self.bridge.call(run)

    async def registry(self, **kw: Any) -> ZooKeeperNodeRegistry:
        """A started registry under this test's root, stopped after the test."""
        kw.setdefault("session_timeout", SESSION_TIMEOUT)
        kw.setdefault("refresh_interval", 0.2)
        kw.setdefault("auth", zookeeper_auth())
        registry = ZooKeeperNodeRegistry(ZK_HOSTS, self.bridge, reactor, root=self.root,
                                         connect_timeout=3.0, **kw)
        await registry.start()
        self.addCleanup(lambda: None if registry._stopped else registry.stop())
        return registry

    def crashing_node(self) -> subprocess.Popen[bytes]:
        """CRASHING_NODE as node "c" in a child process, killed at the end of the test."""
        proc = subprocess.Popen(
            [sys.executable, "-c", CRASHING_NODE, ZK_HOSTS, self.root + "/c",
             str(SESSION_TIMEOUT), os.environ.get("DIM_ZOOKEEPER_AUTH", "")],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.addCleanup(proc.wait)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        return proc

    def test_provides_interface(self):
        """The registry provides INodeRegistry."""
        registry = ZooKeeperNodeRegistry(ZK_HOSTS, self.bridge, reactor)
        self.assertTrue(verifyObject(INodeRegistry, registry))

    @defer.inlineCallbacks
    def test_register_watch_refresh_and_close(self):
        """Two nodes register; a watcher sees both, their connection counts, and one
        vanishing soon after its client closes."""
        counts = {"a": 3, "b": 5}
        a = yield defer.Deferred.fromCoroutine(self.registry())
        b = yield defer.Deferred.fromCoroutine(self.registry())
        watcher = yield defer.Deferred.fromCoroutine(self.registry())
        seen: list[list[NodeInfo]] = []
        watcher.subscribe(seen.append)
        yield a.register(NodeInfo(id="a", host="127.0.0.1", port=7001, incarnation="ia"),
                         connections=lambda: counts["a"])
        yield watcher.watch()
        self.assertEqual(["a"], [n.id for n in watcher.nodes()])
        yield b.register(NodeInfo(id="b", host="127.0.0.1", port=7002, incarnation="ib"),
                         connections=lambda: counts["b"])
        yield defer.Deferred.fromCoroutine(
            wait_for(lambda: [n.id for n in watcher.nodes()] == ["a", "b"], 5))
        self.assertEqual(NodeInfo(id="b", host="127.0.0.1", port=7002, connections=5,
                                  incarnation="ib"), watcher.nodes()[1])
        counts["a"] = 42
        took = yield defer.Deferred.fromCoroutine(
            wait_for(lambda: watcher.nodes()[0].connections == 42, 5))
        print(f"\nconnection count change seen after {took * 1000:.0f} ms "
              f"(refresh every 200 ms)")
        self.assertTrue(seen)
        start = time.monotonic()
        yield b.stop()
        took = yield defer.Deferred.fromCoroutine(
            wait_for(lambda: [n.id for n in watcher.nodes()] == ["a"], SESSION_TIMEOUT))
        total = time.monotonic() - start
        print(f"clean close: node vanished {took * 1000:.0f} ms after stop() returned, "
              f"{total * 1000:.0f} ms after it was called")
        self.assertEqual(["a"], [n.id for n in seen[-1]])

    @defer.inlineCallbacks
    def test_killed_node_vanishes_within_session_timeout(self):
        """A node killed with SIGKILL vanishes once its session times out (about 4 s)."""
        watcher = yield defer.Deferred.fromCoroutine(self.registry())
        yield watcher.watch()
        proc = self.crashing_node()
        line = yield self.bridge.call(proc.stdout.readline)
        self.assertEqual(b"ready\n", line)
        yield defer.Deferred.fromCoroutine(
            wait_for(lambda: [n.id for n in watcher.nodes()] == ["c"], 5))
        proc.kill()
        start = time.monotonic()
        took = yield defer.Deferred.fromCoroutine(
            wait_for(lambda: watcher.nodes() == [], SESSION_TIMEOUT * 2 + 2))
        print(f"\nkill -9: node vanished after {took:.2f} s "
              f"(session timeout {SESSION_TIMEOUT} s)")
        self.assertLess(time.monotonic() - start, SESSION_TIMEOUT * 2 + 2)

    @defer.inlineCallbacks
    def test_fast_restart_replaces_stale_znode(self):
        """A node restarting under the same id while its dead predecessor's znode lingers
        takes the znode over, and keeps it after the old session expires."""
        watcher = yield defer.Deferred.fromCoroutine(self.registry())
        yield watcher.watch()
        proc = self.crashing_node()
        self.assertEqual(b"ready\n", (yield self.bridge.call(proc.stdout.readline)))
        proc.kill()
        again: list[bool] = []
        node = yield defer.Deferred.fromCoroutine(self.registry())
        yield node.register(NodeInfo(id="c", host="h", port=2, incarnation="new"),
                            on_reregister=lambda: again.append(True))
        yield defer.Deferred.fromCoroutine(wait_for(
            lambda: [n.incarnation for n in watcher.nodes()] == ["new"], 5))
        yield sleep(SESSION_TIMEOUT * 2)
        self.assertEqual(["new"], [n.incarnation for n in watcher.nodes()])
        self.assertEqual([], again)

    @defer.inlineCallbacks
    def test_lost_znode_created_again(self):
        """If the znode is deleted behind the node's back, the next refresh recreates it and
        calls on_reregister."""
        a = yield defer.Deferred.fromCoroutine(self.registry())
        watcher = yield defer.Deferred.fromCoroutine(self.registry())
        again: list[bool] = []
        yield a.register(NodeInfo(id="a", host="h", port=1),
                         on_reregister=lambda: again.append(True))
        yield watcher.watch()
        yield self.bridge.call(watcher.client.delete, self.root + "/a")
        yield defer.Deferred.fromCoroutine(wait_for(lambda: again == [True], 5))
        yield defer.Deferred.fromCoroutine(
            wait_for(lambda: [n.id for n in watcher.nodes()] == ["a"], 5))

    @defer.inlineCallbacks
    def test_tls_node_seen_as_tls(self):
        """A node registered as TLS is seen with tls by a watcher, a plain one without."""
        tls = yield defer.Deferred.fromCoroutine(self.registry())
        plain = yield defer.Deferred.fromCoroutine(self.registry())
        watcher = yield defer.Deferred.fromCoroutine(self.registry())
        yield tls.register(NodeInfo(id="t", host="h", port=1, tls=True))
        yield plain.register(NodeInfo(id="p", host="h", port=2))
        yield watcher.watch()
        yield defer.Deferred.fromCoroutine(wait_for(lambda: len(watcher.nodes()) == 2, 5))
        self.assertEqual({n.id: n.tls for n in watcher.nodes()}, {"t": True, "p": False})

    @defer.inlineCallbacks
    def test_unreachable_fails_fast(self):
        """start() fails with Unavailable when nothing listens."""
        registry = ZooKeeperNodeRegistry("127.0.0.1:1", self.bridge, reactor,
                                         connect_timeout=1.0)
        yield self.assertFailure(registry.start(), Unavailable)
