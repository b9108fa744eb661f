"""RedisSessionRegistry on a real Redis (``DIM_REDIS``, default redis://127.0.0.1:6379).

The tests fail when Redis does not answer.  Every test uses its own key prefix.
"""
from __future__ import annotations

import os
import uuid

from twisted.internet import defer, reactor, task
from twisted.trial.unittest import TestCase

from dim.cluster.interface import SessionRef
from dim.cluster.sessions import RedisSessionRegistry
from dim.errors import Unavailable
from dim.store.redis import _session_versions, saw_session_version, session_version_seen
from tests.fakes.redis import delete_prefix
from tests.session_registry_contract import SessionRegistryContractMixin

REDIS_URL = os.environ.get("DIM_REDIS", "redis://127.0.0.1:6379")


def sleep(seconds: float) -> defer.Deferred[None]:
    """Fire after ``seconds`` of real time."""
    return task.deferLater(reactor, seconds, lambda: None)


class RegistryCase(TestCase):
    """A test that opens registries on one fresh key prefix."""

    timeout = 20

    @defer.inlineCallbacks
    def registry_on_redis(self, ttl: float = 30.0):
        """A registry on a fresh prefix, closed and cleaned after the test."""
        if not hasattr(self, "prefix"):
            self.prefix = f"dimtest:{uuid.uuid4().hex[:12]}:"
            self.addCleanup(delete_prefix, REDIS_URL, self.prefix)
        registry = yield RedisSessionRegistry.connect(REDIS_URL, prefix=self.prefix, ttl=ttl,
                                                      timeout=2.0, clock=reactor)
        self.addCleanup(registry.close)
        return registry


class RedisSessionRegistryContractTests(SessionRegistryContractMixin, RegistryCase):
    """RedisSessionRegistry keeps the registry contract."""

    def makeRegistry(self):
        return self.registry_on_redis()


class RedisSessionRegistryTests(RegistryCase):
    """What only the Redis registry does: several nodes share it, and sessions live only as
    long as their node's heartbeats."""

    @defer.inlineCallbacks
    def test_shared_between_nodes(self):
        """Two registries (two nodes) on one Redis see each other's sessions."""
        a = yield self.registry_on_redis()
        b = yield self.registry_on_redis()
        self.assertTrue((yield a.add("alice", "s1", "n1")))
        self.assertFalse((yield b.add("alice", "s2", "n2")))
        found = yield a.locate(["alice"])
        self.assertEqual({"n1", "n2"}, {ref.node for ref in found["alice"]})
        self.assertEqual({"alice": True}, (yield b.drop_node("n1")))
        self.assertEqual({"alice": [SessionRef(session="s2", node="n2")]},
                         (yield a.locate(["alice"])))

    @defer.inlineCallbacks
    def test_sessions_expire_without_heartbeat(self):
        """A node that stops refreshing loses its sessions after the TTL; a refreshed one
        keeps them."""
        r = yield self.registry_on_redis(ttl=0.5)
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
            RedisSessionRegistry.connect("redis://127.0.0.1:1", timeout=0.5, clock=reactor),
            Unavailable)


@defer.inlineCallbacks
def until(check, timeout: float = 5.0):
    """Wait (polling every 10 ms of real time) until ``check()`` is true; fail after timeout."""
    waited = 0.0
    while not check():
        if waited >= timeout:
            raise AssertionError("condition not met in time")
        yield sleep(0.01)
        waited += 0.01


class SessionCacheTests(RegistryCase):
    """Each registry's cache of locate, kept current by change events, on a real Redis."""

    @defer.inlineCallbacks
    def heard(self, *registries):
        """Wait until every registry heard every change made so far."""
        for r in registries:
            yield until(lambda r=r: r._live
                        and r._applied >= session_version_seen(r.prefix))

    @defer.inlineCallbacks
    def test_steady_state_answers_from_memory(self):
        """Once the changes are heard, locating the same users again asks Redis nothing."""
        a = yield self.registry_on_redis()
        b = yield self.registry_on_redis()
        yield a.add("alice", "s1", "n1")
        yield self.heard(b)
        first = yield b.locate(["alice", "bob"])
        misses = b.misses
        for _ in range(20):
            self.assertEqual(first, (yield b.locate(["alice", "bob"])))
        self.assertEqual(misses, b.misses)
        self.assertEqual(40, b.hits)
        self.assertEqual({"alice": [SessionRef(session="s1", node="n1")]}, first)

    @defer.inlineCallbacks
    def test_add_on_one_seen_by_the_other_at_once(self):
        """A session added through one registry is found by another right after, even
        before the other heard the event (it asks Redis then)."""
        a = yield self.registry_on_redis()
        b = yield self.registry_on_redis()
        yield self.heard(b)
        self.assertEqual({}, (yield b.locate(["alice"])))  # cached: offline
        yield a.add("alice", "s1", "n1")
        found = yield b.locate(["alice"])
        self.assertEqual({"alice": [SessionRef(session="s1", node="n1")]}, found)

    @defer.inlineCallbacks
    def test_remove_and_move_invalidate(self):
        """Removing a session, and the session's user moving to another node, are seen by
        a registry that had the user cached."""
        a = yield self.registry_on_redis()
        b = yield self.registry_on_redis()
        yield a.add("alice", "s1", "n1")
        yield self.heard(b)
        yield b.locate(["alice"])
        yield a.remove("alice", "s1")
        yield a.add("alice", "s2", "n2")
        yield self.heard(b)
        self.assertIsNone(b._cache.get("alice"))
        found = yield b.locate(["alice"])
        self.assertEqual({"alice": [SessionRef(session="s2", node="n2")]}, found)
        yield a.remove("alice", "s2")
        self.assertEqual({}, (yield b.locate(["alice"])))

    @defer.inlineCallbacks
    def test_drop_node_invalidates(self):
        """drop_node through one registry empties the dropped users in another's cache."""
        a = yield self.registry_on_redis()
        b = yield self.registry_on_redis()
        yield a.add("alice", "s1", "n1")
        yield a.add("bob", "s2", "n1")
        yield a.add("bob", "s3", "n2")
        yield self.heard(b)
        yield b.locate(["alice", "bob"])
        self.assertEqual({"alice": False, "bob": True}, (yield a.drop_node("n1")))
        found = yield b.locate(["alice", "bob"])
        self.assertEqual({"bob": [SessionRef(session="s3", node="n2")]}, found)
        yield self.heard(b)
        self.assertEqual(found, (yield b.locate(["alice", "bob"])))

    @defer.inlineCallbacks
    def test_change_not_yet_heard_asks_redis(self):
        """When a newer session version was seen than the events heard, locate asks Redis."""
        a = yield self.registry_on_redis()
        yield a.add("alice", "s1", "n1")
        yield self.heard(a)
        yield a.locate(["alice"])
        misses = a.misses
        saw_session_version(a.prefix, session_version_seen(a.prefix) + 1)
        yield a.locate(["alice"])
        self.assertEqual(misses + 1, a.misses)

    @defer.inlineCallbacks
    def test_subscription_lost_falls_back_then_resumes(self):
        """With the event connection killed, locate asks Redis; the cache resumes once
        the registry subscribed again, and sees changes made meanwhile."""
        a = yield self.registry_on_redis()
        b = yield self.registry_on_redis()
        yield a.add("alice", "s1", "n1")
        yield self.heard(b)
        yield b.locate(["alice"])
        yield a.redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        yield until(lambda: not b._live)
        misses = b.misses
        yield a.add("alice", "s2", "n2")
        found = yield b.locate(["alice"])
        self.assertEqual({"n1", "n2"}, {ref.node for ref in found["alice"]})
        self.assertEqual(misses + 1, b.misses)
        yield until(lambda: b._live)
        yield b.locate(["alice"])
        misses = b.misses
        again = yield b.locate(["alice"])
        self.assertEqual(set(found["alice"]), set(again["alice"]))
        self.assertEqual(misses, b.misses)

    @defer.inlineCallbacks
    def test_store_batch_reports_the_version(self):
        """A store batch after a session change reports that change's version, so a cache
        that has not heard it yet asks Redis for the recipient."""
        from dim.store.redis import RedisStore
        a = yield self.registry_on_redis()
        store = yield RedisStore.connect(REDIS_URL, prefix=self.prefix, timeout=2.0, clock=reactor)
        self.addCleanup(store.close)
        yield store.create_user("alice", "h", 0)
        yield store.create_user("bob", "h", 0)
        yield a.add("bob", "s1", "n1")
        version = session_version_seen(self.prefix)
        _session_versions[self.prefix] = 0  # as if the add came from another process
        yield store.store_message("alice", "c", ["bob"], None, "hi", "text", None, 0)
        self.assertEqual(version, session_version_seen(self.prefix))
