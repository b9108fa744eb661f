"""Tests of :mod:`dim.tokens` (JWT bearer tokens) and :mod:`dim.passwords` (Argon2id)."""
from __future__ import annotations

import queue
import threading
from typing import Any
from collections.abc import Callable

import jwt
from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from dim.errors import RateLimited, Unauthorized
from dim.passwords import PasswordHasher
from dim.store.memory import MemoryStore
from dim.tokens import TokenAuthority
from tests.fakes.tokens import FAST_ARGON2, SECRET, InlinePool, InlineReactor, fast_hasher


class QueueReactor:
    """The ``callFromThread`` part of a reactor: calls queue up until the test runs them."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]
        self.calls = queue.Queue()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.calls.put((f, args, kw))

    def run_one(self, timeout: float = 10.0) -> None:
        """Run the next queued call on the test's thread."""
        f, args, kw = self.calls.get(timeout=timeout)
        f(*args, **kw)


class TokenAuthorityTests(SynchronousTestCase):
    """TokenAuthority issues tokens that verify, expire by the clock and can be revoked."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = MemoryStore()
        self.tokens = TokenAuthority(SECRET, self.store, ttl=3600, clock=self.clock)

    def test_issue_then_verify(self) -> None:
        """A fresh token verifies to its user, and expires ttl seconds from now."""
        token, expires = self.tokens.issue("alice")
        self.assertEqual(expires, 1_700_000_000 + 3600)
        self.assertIsInstance(expires, int)
        self.assertEqual(self.successResultOf(self.tokens.verify(token)), "alice")

    def test_claims(self) -> None:
        """A token is HS256 with sub, iat, exp and a random jti."""
        token, expires = self.tokens.issue("alice")
        other, _ = self.tokens.issue("alice")
        self.assertEqual(jwt.get_unverified_header(token)["alg"], "HS256")
        claims = jwt.decode(token, SECRET, algorithms=["HS256"],
                            options={"verify_exp": False, "verify_iat": False})
        self.assertEqual(claims["sub"], "alice")
        self.assertEqual(claims["iat"], 1_700_000_000)
        self.assertEqual(claims["exp"], expires)
        self.assertGreaterEqual(len(claims["jti"]), 16)
        other_claims = jwt.decode(other, SECRET, algorithms=["HS256"],
                                  options={"verify_exp": False, "verify_iat": False})
        self.assertNotEqual(claims["jti"], other_claims["jti"])

    def test_expired_by_clock(self) -> None:
        """A token is good until just before exp and Unauthorized from exp on."""
        token, _ = self.tokens.issue("alice")
        self.clock.advance(3599)
        self.assertEqual(self.successResultOf(self.tokens.verify(token)), "alice")
        self.clock.advance(1)
        f = self.failureResultOf(self.tokens.verify(token), Unauthorized)
        self.assertIn("expired", f.value.message)

    def test_revoked(self) -> None:
        """A revoked token fails to verify; another token of the same user still works."""
        token, _ = self.tokens.issue("alice")
        other, _ = self.tokens.issue("alice")
        self.successResultOf(self.tokens.revoke(token))
        f = self.failureResultOf(self.tokens.verify(token), Unauthorized)
        self.assertIn("revoked", f.value.message)
        self.assertEqual(self.successResultOf(self.tokens.verify(other)), "alice")

    def test_revoke_garbage(self) -> None:
        """Revoking something that is not a token of ours fails with Unauthorized."""
        self.failureResultOf(self.tokens.revoke("nonsense"), Unauthorized)

    def test_wrong_secret(self) -> None:
        """A token signed with another secret is Unauthorized."""
        forged = TokenAuthority(b"another-secret-of-32-bytes-or-more",
                                self.store, clock=self.clock).issue("alice")[0]
        self.failureResultOf(self.tokens.verify(forged), Unauthorized)

    def test_tampered(self) -> None:
        """Changing the payload of a token breaks its signature."""
        token, _ = self.tokens.issue("alice")
        bob = jwt.encode({"sub": "bob", "iat": 0, "exp": 2_000_000_000, "jti": "x"},
                         b"guess-of-a-secret-value-32-bytes-x", algorithm="HS256")
        header, _, sig = token.split(".")
        self.failureResultOf(self.tokens.verify(f"{header}.{bob.split('.')[1]}.{sig}"),
                             Unauthorized)

    def test_alg_none_refused(self) -> None:
        """An unsigned (alg none) token is Unauthorized."""
        unsigned = jwt.encode({"sub": "alice", "iat": 0, "exp": 2_000_000_000, "jti": "x"},
                              None, algorithm="none")
        self.failureResultOf(self.tokens.verify(unsigned), Unauthorized)

    def test_missing_claims(self) -> None:
        """A well-signed token without jti (or exp, or sub) is Unauthorized."""
        for claims in ({"sub": "a", "iat": 0, "exp": 2_000_000_000},
                       {"sub": "a", "iat": 0, "jti": "x"},
                       {"iat": 0, "exp": 2_000_000_000, "jti": "x"},
                       {"sub": "", "iat": 0, "exp": 2_000_000_000, "jti": "x"}):
            token = jwt.encode(claims, SECRET, algorithm="HS256")
            self.failureResultOf(self.tokens.verify(token), Unauthorized)

    def test_not_a_token(self) -> None:
        """Empty, non-string and malformed tokens are Unauthorized."""
        for token in ("", None, 42, "a.b.c", "x" * 50):
            self.failureResultOf(self.tokens.verify(token), Unauthorized)

    def test_shared_secret_across_authorities(self) -> None:
        """Another authority with the same secret and store (another node) verifies it."""
        token, _ = self.tokens.issue("alice")
        node = TokenAuthority(SECRET, self.store, clock=self.clock)
        self.assertEqual(self.successResultOf(node.verify(token)), "alice")
        self.successResultOf(self.tokens.revoke(token))
        self.failureResultOf(node.verify(token), Unauthorized)

    def test_empty_secret_refused(self) -> None:
        """An authority cannot be made with an empty secret."""
        self.assertRaises(ValueError, TokenAuthority, b"", self.store,
                          clock=self.clock)


class PasswordHasherTests(SynchronousTestCase):
    """PasswordHasher hashes with Argon2id in its pool and verifies without raising."""

    def setUp(self) -> None:
        self.hasher, self.pool = fast_hasher()

    def test_hash_and_verify(self) -> None:
        """A hash verifies its password and no other."""
        h = self.successResultOf(self.hasher.hash("correct horse"))
        self.assertTrue(h.startswith("$argon2id$"))
        self.assertTrue(self.successResultOf(self.hasher.verify(h, "correct horse")))
        self.assertFalse(self.successResultOf(self.hasher.verify(h, "correct horsE")))

    def test_salted(self) -> None:
        """Two hashes of one password differ (random salt) and both verify."""
        a = self.successResultOf(self.hasher.hash("password1"))
        b = self.successResultOf(self.hasher.hash("password1"))
        self.assertNotEqual(a, b)
        self.assertTrue(self.successResultOf(self.hasher.verify(b, "password1")))

    def test_malformed_hash(self) -> None:
        """A malformed hash verifies nothing and raises nothing."""
        self.assertFalse(self.successResultOf(self.hasher.verify("not-a-hash", "x")))

    def test_work_goes_to_pool(self) -> None:
        """hash, verify and verify_dummy all run in the pool."""
        h = self.successResultOf(self.hasher.hash("password1"))
        self.successResultOf(self.hasher.verify(h, "password1"))
        self.assertFalse(self.successResultOf(self.hasher.verify_dummy("password1")))
        self.assertEqual(len(self.pool.calls), 3)

    def test_needs_rehash(self) -> None:
        """A hash made with other parameters needs a rehash; one of ours does not."""
        h = self.successResultOf(self.hasher.hash("password1"))
        self.assertFalse(self.hasher.needs_rehash(h))
        stronger = PasswordHasher(InlinePool(), InlineReactor(),  # type: ignore[arg-type]
                                  time_cost=2, memory_cost=16, parallelism=1)
        self.assertTrue(stronger.needs_rehash(h))
        self.assertTrue(stronger.needs_rehash("garbage"))

    def test_real_thread_pool(self) -> None:
        """With a real ThreadPool the hash runs on a pool thread and fires on ours."""
        pool = ThreadPool(minthreads=1, maxthreads=1, name="test-passwords")
        pool.start()
        self.addCleanup(pool.stop)
        reactor = QueueReactor()
        hasher = PasswordHasher(pool, reactor, **FAST_ARGON2)
        seen: list[threading.Thread] = []
        d = hasher.hash("password1")
        d.addCallback(lambda h: (seen.append(threading.current_thread()), h)[1])
        self.assertNoResult(d)
        reactor.run_one()
        self.assertEqual(seen, [threading.current_thread()])
        h = self.successResultOf(d)
        v = hasher.verify(h, "password1")
        reactor.run_one()
        self.assertTrue(self.successResultOf(v))

    def test_pending_bounded(self) -> None:
        """Beyond max_pending unfinished operations, new ones fail with RateLimited."""
        pool = ThreadPool(minthreads=1, maxthreads=1, name="test-passwords-bound")
        pool.start()
        self.addCleanup(pool.stop)
        reactor = QueueReactor()
        hasher = PasswordHasher(pool, reactor, max_pending=2, **FAST_ARGON2)
        first, second = hasher.hash("password1"), hasher.hash("password2")
        self.assertEqual(hasher.pending, 2)
        self.failureResultOf(hasher.verify_dummy("password3"), RateLimited)
        reactor.run_one()
        reactor.run_one()
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(hasher.pending, 0)
        third = hasher.hash("password3")
        reactor.run_one()
        self.assertTrue(self.successResultOf(third).startswith("$argon2id$"))
