"""Password hashing with Argon2id, kept off the reactor thread.

Argon2 is slow on purpose (tens of milliseconds and tens of MiB per hash with the library's
defaults), so every hash and verify runs in a thread pool and the reactor only sees
Deferreds.  The owner of the :class:`PasswordHasher` starts and stops the pool.

The hashing queue is shared fairly between clients: each operation names its client (the
gateway passes the client address), each client may have at most ``per_client`` operations
waiting or running, and the pool's threads take the clients' operations in turn (round
robin), so one client's flood of parallel logins neither fills the queue nor delays another
client by more than one operation per busy client.
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any, TypeVar
from collections.abc import Callable

import argon2
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from dim.errors import RateLimited

T = TypeVar("T")

#: How many hashes and verifications may wait or run at once before new ones are refused.
DEFAULT_MAX_PENDING = 256
#: How many hashes and verifications one client may have waiting or running at once.
DEFAULT_PER_CLIENT = 8

#: The password the dummy hash is made of; verified against for unknown users so that a
#: login for a user who does not exist costs as much as one with a wrong password.
_DUMMY_PASSWORD = "dim-no-such-user-password"


class PasswordHasher:
    """Hashes and verifies passwords with Argon2id in a thread pool.

    ``pool`` is a started :class:`~twisted.python.threadpool.ThreadPool`; ``reactor`` receives
    the results (an ``IReactorFromThreads``).  The Argon2 parameters default to
    argon2-cffi's own defaults; tests pass tiny ones so they run fast.  At most
    ``max_pending`` operations wait or run at once: beyond that, new ones fail at once with
    :class:`dim.errors.RateLimited` instead of queueing without bound under a login flood,
    and at most ``per_client`` of one client (the ``client`` argument of each call); the
    pool runs at most ``workers`` at once (its size by default), taking clients in turn.
    """

    def __init__(self, pool: ThreadPool, reactor: Any, *,
                 time_cost: int | None = None, memory_cost: int | None = None,
                 parallelism: int | None = None, hash_len: int | None = None,
                 salt_len: int | None = None,
                 max_pending: int = DEFAULT_MAX_PENDING,
                 per_client: int = DEFAULT_PER_CLIENT, workers: int | None = None) -> None:
        params: dict[str, Any] = {}
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
        self.per_client = per_client
        self.workers = workers if workers is not None else max(1, int(getattr(pool, "max", 2)))
        #: Operations waiting or running, of every client.
        self.pending = 0
        #: Operations running in the pool.
        self.running = 0
        self._by_client: dict[str, int] = {}
        self._waiting: OrderedDict[str, deque[tuple[Callable[..., Any], tuple[Any, ...],
                                                    Deferred[Any]]]] = OrderedDict()

    def _in_pool(self, f: Callable[..., T], *args: Any, client: str = "") -> Deferred[T]:
        if self.pending >= self.max_pending:
            return fail(RateLimited("too many logins at once; retry shortly"))
        if self._by_client.get(client, 0) >= self.per_client:
            error = RateLimited("too many logins at once from this client; retry shortly")
            error.retry_after = 1
            return fail(error)
        self.pending += 1
        self._by_client[client] = self._by_client.get(client, 0) + 1
        d: Deferred[T] = Deferred()
        self._waiting.setdefault(client, deque()).append((f, args, d))
        self._dispatch()
        return d

    def _dispatch(self) -> None:
        """Hand waiting operations to the pool, one client after another, while it has room."""
        while self.running < self.workers and self._waiting:
            client, queue = next(iter(self._waiting.items()))
            f, args, d = queue.popleft()
            if queue:
                self._waiting.move_to_end(client)
            else:
                del self._waiting[client]
            self.running += 1
            ran = maybeDeferred(deferToThreadPool, self._reactor, self._pool, f, *args)
            ran.addBoth(self._finished, client)
            ran.chainDeferred(d)

    def _finished(self, result: Any, client: str) -> Any:
        self.running -= 1
        self.pending -= 1
        left = self._by_client.get(client, 1) - 1
        if left > 0:
            self._by_client[client] = left
        else:
            self._by_client.pop(client, None)
        self._dispatch()
        return result

    def hash(self, password: str, client: str = "") -> Deferred[str]:
        """Hash a password for ``client``; fires with the encoded Argon2id hash."""
        return self._in_pool(self._argon2.hash, password, client=client)

    def verify(self, password_hash: str, password: str, client: str = "") -> Deferred[bool]:
        """Check a password against a hash for ``client``; fires True or False (never fails
        on a mismatch or a malformed hash)."""
        return self._in_pool(self._verify, password_hash, password, client=client)

    def verify_dummy(self, password: str, client: str = "") -> Deferred[bool]:
        """Spend the same work as :meth:`verify` against a hash nobody has; fires False.

        Used for unknown users so that response times do not tell which users exist.
        """
        return self._in_pool(self._verify_dummy, password, client=client)

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
