"""RedisSessionRegistry's batching and cache rules, on a stand-in Redis with task.Clock."""
from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.internet import task
from twisted.trial.unittest import TestCase

from dim.cluster.interface import SessionRef
from dim.cluster.sessions import BATCH, RedisSessionRegistry
from dim.errors import Internal
from dim.store.redis import saw_session_version
from tests.fakes.redis import RecordingRedis


def reply(results: list[Any], version: int) -> str:
    """The batch script's answer: the session version, then one result per operation."""
    return json.dumps([version, results])


class RegistryBatchTests(TestCase):
    """Adds, removes and locates of one reactor turn are one script call; the cache rules."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.redis = RecordingRedis()
        self.redis.assert_batch = lambda body: self.assertEqual(BATCH, body)  # type: ignore
        self.prefix = f"unit:{uuid.uuid4().hex[:8]}:"
        self.registry = RedisSessionRegistry(self.redis, prefix=self.prefix, clock=self.clock)

    def answer(self, index: int, results: list[Any], version: int) -> None:
        """Answer the index-th script call."""
        self.redis.calls[index][2].callback(reply(results, version))

    def locate_answered(self, users: list[str], lists: list[Any], base: int,
                        version: int) -> dict[str, list[SessionRef]]:
        """Run one locate that misses the cache, answered by Redis with ``lists``."""
        d = self.registry.locate(users)
        self.clock.advance(0)
        self.answer(len(self.redis.calls) - 1, [[base, lists]], version)
        return self.successResultOf(d)

    def test_hellos_of_one_turn_are_one_call(self) -> None:
        """N adds and a locate in one turn go as one script call, answered in order."""
        adds = [self.registry.add(f"u{n}", f"s{n}", "n1") for n in range(20)]
        found = self.registry.locate(["u0", "x"])
        self.clock.advance(0)
        self.assertEqual(1, len(self.redis.calls))
        ops = self.redis.ops(0)
        self.assertEqual([["a", f"u{n}", f"s{n}", "n1", 30000] for n in range(20)], ops[:20])
        self.assertEqual(["l", "u0", "x"], ops[20])
        self.answer(0, [1] * 20 + [[20, [["s0", "n1"], {}]]], 20)
        self.assertEqual([True] * 20, [self.successResultOf(d) for d in adds])
        self.assertEqual({"u0": [SessionRef(session="s0", node="n1")]},
                         self.successResultOf(found))

    def test_failed_batch_fails_each(self) -> None:
        """A failed registry batch fails each add and locate with Internal."""
        add = self.registry.add("u", "s", "n1")
        found = self.registry.locate(["u"])
        self.clock.advance(0)
        self.redis.calls[0][2].errback(ConnectionError("gone"))
        self.failureResultOf(add, Internal)
        self.failureResultOf(found, Internal)

    def test_subscribed_reads_the_version_first(self) -> None:
        """Once subscribed, the cache starts only when the version reached is read."""
        self.registry._subscribed()
        self.assertFalse(self.registry._live)
        self.assertEqual([self.prefix + "sessver"], [key for key, _ in self.redis.gets])
        self.redis.gets[0][1].callback("7")
        self.assertTrue(self.registry._live)
        self.assertEqual(7, self.registry._applied)

    def test_no_cache_without_events(self) -> None:
        """Before the change events flow, every locate asks Redis."""
        for _ in range(2):
            self.locate_answered(["bob"], [{}], 5, 5)
        self.assertEqual(2, len(self.redis.calls))

    def test_cache_answers_once_current(self) -> None:
        """With events flowing and every seen change heard, a second locate asks nothing."""
        self.registry._caught_up(5)
        self.assertEqual({"bob": [SessionRef(session="s", node="n1")]},
                         self.locate_answered(["bob"], [["s", "n1"]], 5, 5))
        d = self.registry.locate(["bob"])
        self.assertEqual({"bob": [SessionRef(session="s", node="n1")]},
                         self.successResultOf(d))
        self.clock.advance(0)
        self.assertEqual(1, len(self.redis.calls))

    def test_unheard_change_asks_redis(self) -> None:
        """A version seen (e.g. in a store batch) but not yet heard makes locate ask Redis."""
        self.registry._caught_up(5)
        self.locate_answered(["bob"], [{}], 5, 5)
        saw_session_version(self.prefix, 6)
        self.locate_answered(["bob"], [["s", "n2"]], 6, 6)
        self.assertEqual(2, len(self.redis.calls))
        self.registry._changed("6\x00bob")
        self.locate_answered(["bob"], [["s", "n2"]], 6, 6)
        self.assertEqual({"bob": [SessionRef(session="s", node="n2")]},
                         self.successResultOf(self.registry.locate(["bob"])))
        self.assertEqual(3, len(self.redis.calls))

    def test_event_before_answer_not_cached(self) -> None:
        """A change heard while a locate is in flight, newer than its answer, keeps the
        answer out of the cache."""
        self.registry._caught_up(5)
        d = self.registry.locate(["bob"])
        self.clock.advance(0)
        self.registry._changed("6\x00bob")
        self.answer(0, [[5, [{}]]], 5)
        self.assertEqual({}, self.successResultOf(d))
        self.assertNotIn("bob", self.registry._cache)

    def test_event_drops_entry_and_expiry(self) -> None:
        """An event naming a cached user drops it; an entry older than cache_ttl is not used."""
        self.registry._caught_up(5)
        self.locate_answered(["bob", "dan"], [{}, {}], 5, 5)
        self.registry._changed("6\x00bob")
        self.assertNotIn("bob", self.registry._cache)
        self.assertIn("dan", self.registry._cache)
        self.clock.advance(self.registry.cache_ttl + 0.1)
        d = self.registry.locate(["dan"])
        self.clock.advance(0)
        self.assertEqual(2, len(self.redis.calls))
        self.answer(1, [[6, [{}]]], 6)
        self.assertEqual({}, self.successResultOf(d))

    def test_lost_subscription_empties_cache(self) -> None:
        """Losing the event connection empties the cache and stops answering from it."""
        self.registry._caught_up(5)
        self.locate_answered(["bob"], [{}], 5, 5)
        self.registry._unsubscribed()
        self.assertEqual({}, self.registry._cache)
        self.locate_answered(["bob"], [{}], 5, 5)
        self.assertEqual(2, len(self.redis.calls))

    def test_own_add_drops_entry(self) -> None:
        """An add through this registry drops the user's entry as soon as it is answered."""
        self.registry._caught_up(5)
        self.locate_answered(["bob"], [{}], 5, 5)
        d = self.registry.add("bob", "s", "n1")
        self.clock.advance(0)
        self.answer(1, [1], 6)
        self.assertTrue(self.successResultOf(d))
        self.assertNotIn("bob", self.registry._cache)
