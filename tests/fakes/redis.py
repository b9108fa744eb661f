"""A stand-in Redis that records the commands it is sent."""
from __future__ import annotations

import hashlib
import os
import uuid
from typing import Any

import msgspec
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from dim.errors import Unavailable
from dim.store.redis import BATCH, RedisStore, check_reachable, open_redis


class RecordingRedis:
    """Answers SCRIPT LOAD; keeps every EVALSHA with a Deferred the test fires."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[Any], defer.Deferred[Any]]] = []
        self.shas: dict[str, str] = {}
        self.gets: list[tuple[str, defer.Deferred[Any]]] = []

    def get(self, key: str) -> defer.Deferred[Any]:
        """GET: a Deferred the test fires."""
        d: defer.Deferred[Any] = defer.Deferred()
        self.gets.append((key, d))
        return d

    def script_load(self, body: str) -> defer.Deferred[str]:
        """SCRIPT LOAD: the script's SHA-1."""
        sha = hashlib.sha1(body.encode()).hexdigest()
        self.shas[sha] = body
        return defer.succeed(sha)

    def evalsha(self, sha: str, keys: list[str], args: list[Any]) -> defer.Deferred[Any]:
        """EVALSHA: recorded, with a Deferred the test fires."""
        d: defer.Deferred[Any] = defer.Deferred()
        self.calls.append((self.shas[sha], list(args), d))
        return d

    def ops(self, index: int) -> list[list[Any]]:
        """The operations of the index-th script call, as the script reads them."""
        body, args, _ = self.calls[index]
        self.assert_batch(body)
        return msgspec.msgpack.decode(args[1])

    @staticmethod
    def assert_batch(body: str) -> None:
        """Fail unless ``body`` is the store's batch script."""
        if body != BATCH:
            raise AssertionError("not the batch script")


@defer.inlineCallbacks
def delete_prefix(url: str, prefix: str):
    """Delete every key under ``prefix`` (test clean-up; nothing to do if Redis is down)."""
    from twisted.internet import reactor

    redis = open_redis(url, poolsize=1, connect_timeout=1.0)
    try:
        try:
            yield defer.ensureDeferred(check_reachable(redis, url, 1.0, reactor))
        except Unavailable:
            return
        cursor = "0"
        while True:
            cursor, keys = yield redis.scan(cursor, pattern=prefix + "*", count=1000)
            if keys:
                yield redis.delete(*keys)
            if str(cursor) == "0":
                break
    finally:
        yield redis.disconnect()


class RedisPrefixTestCase(TestCase):
    """A test whose stores share one fresh key prefix, deleted at the end."""

    timeout = 30

    def setUp(self) -> None:
        self.prefix = f"dimtest:{uuid.uuid4().hex[:12]}:"
        self.addCleanup(delete_prefix, REDIS_URL, self.prefix)

    @defer.inlineCallbacks
    def open(self):
        """A store (a node's connection) under the test's prefix, closed at the end."""
        store = yield RedisStore.connect(REDIS_URL, prefix=self.prefix, timeout=2.0, clock=reactor)
        self.addCleanup(store.close)
        return store


REDIS_URL = os.environ.get("DIM_REDIS", "redis://127.0.0.1:6379")
