"""RedisSessionRegistry on a real Redis (``DIM_REDIS``, default redis://127.0.0.1:6379).

The tests fail when Redis does not answer.  Every test uses its own key prefix.
"""
from __future__ import annotations

import os
import uuid

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from dim.cluster.interface import ISessionRegistry, SessionRef
from dim.cluster.sessions import RedisSessionRegistry
from dim.errors import Unavailable
from tests.integration.test_redis_store import delete_prefix

REDIS_URL = os.environ.get("DIM_REDIS", "redis://127.0.0.1:6379")


def sleep(seconds: float) -> defer.Deferred[None]:
    """Fire after ``seconds`` of real time."""
    return task.deferLater(reactor, seconds, lambda: None)


class RedisSessionRegistryTests(TestCase):
    """Sessions by user and node, with lifetimes tied to node heartbeats."""

    timeout = 20

    @defer.inlineCallbacks
    def registry(self, ttl: float = 30.0):
        """A registry on a fresh prefix, closed and cleaned after the test."""
        if not hasattr(self, "prefix"):
            self.prefix = f"dimtest:{uuid.uuid4().hex[:12]}:"
            self.addCleanup(delete_prefix, REDIS_URL, self.prefix)
        registry = yield RedisSessionRegistry.connect(REDIS_URL, prefix=self.prefix, ttl=ttl,
                                                      timeout=2.0)
        self.addCleanup(registry.close)
        return registry

    @defer.inlineCallbacks
    def test_provides_interface(self):
        """The registry provides ISessionRegistry in full."""
        registry = yield self.registry()
        self.assertTrue(verifyObject(ISessionRegistry, registry))

    @defer.inlineCallbacks
    def test_add_remove_first_and_last(self):
        """add fires True for a user's first session only; remove True for the last."""
        r = yield self.registry()
        self.assertTrue((yield r.add("alice", "s1", "n1")))
        self.assertFalse((yield r.add("alice", "s1", "n1")))
        self.assertFalse((yield r.add("alice", "s2", "n2")))
        self.assertTrue((yield r.online("alice")))
        self.assertFalse((yield r.online("bob")))
        self.assertFalse((yield r.remove("alice", "s1")))
        self.assertTrue((yield r.remove("alice", "s2")))
        self.assertFalse((yield r.remove("alice", "s2")))
        self.assertFalse((yield r.online("alice")))

    @defer.inlineCallbacks
    def test_locate_across_nodes(self):
        """locate lists every session of every asked user with its node; others left out."""
        r = yield self.registry()
        yield r.add("alice", "s1", "n1")
        yield r.add("alice", "s2", "n2")
        yield r.add("bob", "s3", "n2")
        found = yield r.locate(["alice", "bob", "carol"])
        self.assertEqual({"alice", "bob"}, set(found))
        self.assertEqual({SessionRef(session="s1", node="n1"),
                          SessionRef(session="s2", node="n2")}, set(found["alice"]))
        self.assertEqual([SessionRef(session="s3", node="n2")], found["bob"])
        self.assertEqual({}, (yield r.locate([])))

    @defer.inlineCallbacks
    def test_shared_between_nodes(self):
        """Two registries (two nodes) on one Redis see each other's sessions."""
        a = yield self.registry()
        b = yield self.registry()
        self.assertTrue((yield a.add("alice", "s1", "n1")))
        self.assertFalse((yield b.add("alice", "s2", "n2")))
        found = yield a.locate(["alice"])
        self.assertEqual({"n1", "n2"}, {ref.node for ref in found["alice"]})

    @defer.inlineCallbacks
    def test_drop_node(self):
        """drop_node forgets the node's sessions and says who is still online elsewhere."""
        r = yield self.registry()
        yield r.add("alice", "s1", "n1")
        yield r.add("alice", "s2", "n2")
        yield r.add("bob", "s3", "n1")
        yield r.add("carol", "s4", "n2")
        self.assertEqual({"alice": True, "bob": False}, (yield r.drop_node("n1")))
        found = yield r.locate(["alice", "bob", "carol"])
        self.assertEqual({"alice": [SessionRef(session="s2", node="n2")],
                          "carol": [SessionRef(session="s4", node="n2")]}, found)
        self.assertEqual({}, (yield r.drop_node("n1")))
        self.assertTrue((yield r.add("bob", "s5", "n1")))

    @defer.inlineCallbacks
    def test_sessions_expire_without_heartbeat(self):
        """A node that stops refreshing loses its sessions after the TTL; a refreshed one
        keeps them."""
        r = yield self.registry(ttl=0.5)
        yield r.add("alice", "s1", "dead")
        yield r.add("bob", "s2", "live")
        for _ in range(4):
            yield sleep(0.25)
            self.assertEqual(1, (yield r.refresh("live")))
        found = yield r.locate(["alice", "bob"])
        self.assertEqual({"bob": [SessionRef(session="s2", node="live")]}, found)
        self.assertFalse((yield r.online("alice")))
        self.assertTrue((yield r.add("alice", "s3", "live")))

    @defer.inlineCallbacks
    def test_unreachable_fails_fast(self):
        """Connecting where nothing listens fails with Unavailable."""
        yield self.assertFailure(
            RedisSessionRegistry.connect("redis://127.0.0.1:1", timeout=0.5), Unavailable)
