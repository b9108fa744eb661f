"""Password hashing with Argon2id, kept off the reactor thread.

Argon2 is slow on purpose (tens of milliseconds and tens of MiB per hash with the library's
defaults), so every hash and verify runs in a thread pool and the reactor only sees
Deferreds.  The owner of the :class:`PasswordHasher` starts and stops the pool.
"""
from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from dim.errors import RateLimited

T = TypeVar("T")

#: How many hashes and verifications may wait or run at once before new ones are refused.
DEFAULT_MAX_PENDING = 256

#: The password the dummy hash is made of; verified against for unknown users so that a
#: login for a user who does not exist costs as much as one with a wrong password.
_DUMMY_PASSWORD = "dim-no-such-user-password"


class PasswordHasher:
    """Hashes and verifies passwords with Argon2id in a thread pool.

    ``pool`` is a started :class:`~twisted.python.threadpool.ThreadPool`; ``reactor`` receives
    the results (an ``IReactorFromThreads``; when None, the global reactor is looked up at
    the first call, after any reactor installation).  The Argon2 parameters default to
    argon2-cffi's own defaults; tests pass tiny ones so they run fast.  At most
    ``max_pending`` operations wait or run at once: beyond that, new ones fail at once with
    :class:`dim.errors.RateLimited` instead of queueing without bound under a login flood.
    """

    def __init__(self, pool: ThreadPool, reactor: Any = None, *,
                 time_cost: int | None = None, memory_cost: int | None = None,
                 parallelism: int | None = None, hash_len: int | None = None,
                 salt_len: int | None = None,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        params: dict[str, int] = {}
        for name, value in (("time_cost", time_cost), ("memory_cost", memory_cost),
                            ("parallelism", parallelism), ("hash_len", hash_len),
                            ("salt_len", salt_len)):
            if value is not None:
                params[name] = value
        self._argon2 = argon2.PasswordHasher(**params)
        self._pool = pool
        self._reactor = reactor
        self._dummy_hash: str | None = None
        self._dummy_lock = threading.Lock()
        self.max_pending = max_pending
        #: Operations handed to the pool and not finished yet.
        self.pending = 0

    def _in_pool(self, f: Callable[..., T], *args: Any) -> Deferred[T]:
        reactor = self._reactor
        if reactor is None:
            from twisted.internet import reactor as global_reactor
            reactor = self._reactor = global_reactor
        if self.pending >= self.max_pending:
            return fail(RateLimited("too many logins at once; retry shortly"))
        self.pending += 1

        def done(result: Any) -> Any:
            self.pending -= 1
            return result

        return deferToThreadPool(reactor, self._pool, f, *args).addBoth(done)

    def hash(self, password: str) -> Deferred[str]:
        """Hash a password; fires with the encoded Argon2id hash."""
        return self._in_pool(self._argon2.hash, password)

    def verify(self, password_hash: str, password: str) -> Deferred[bool]:
        """Check a password against a hash; fires True or False (never fails on a mismatch
        or a malformed hash)."""
        return self._in_pool(self._verify, password_hash, password)

    def verify_dummy(self, password: str) -> Deferred[bool]:
        """Spend the same work as :meth:`verify` against a hash nobody has; fires False.

        Used for unknown users so that response times do not tell which users exist.
        """
        return self._in_pool(self._verify_dummy, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether a hash was made with other parameters than this hasher's (cheap)."""
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _verify_dummy(self, password: str) -> bool:
        with self._dummy_lock:
            if self._dummy_hash is None:
                self._dummy_hash = self._argon2.hash(_DUMMY_PASSWORD)
            dummy = self._dummy_hash
        self._verify(dummy, password)
        return False
