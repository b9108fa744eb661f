"""The one bridge between the reactor and blocking clients (kazoo, confluent-kafka).

Blocking calls run on a dedicated :class:`~twisted.python.threadpool.ThreadPool` and come back
as Deferreds fired on the reactor thread; callbacks that arrive on a foreign thread (kazoo's
watchers, librdkafka's delivery reports) hop to the reactor with :meth:`ThreadBridge.to_reactor`.
Nothing else in DIM calls a blocking client method on the reactor thread.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool


class ThreadBridge:
    """A named pool of threads for blocking calls, with the hop back to the reactor.

    ``reactor`` must provide ``IReactorThreads`` (``callFromThread``).  :meth:`start` is
    idempotent, :meth:`stop` waits for running calls to finish (it blocks, so call it while
    no call is stuck forever).
    """

    def __init__(self, name: str, max_threads: int = 4, *, reactor: Any) -> None:
        self.name = name
        self.reactor = reactor
        self.pool = ThreadPool(minthreads=0, maxthreads=max_threads, name=name)
        self._running = False

    @property
    def running(self) -> bool:
        """Whether the pool accepts calls."""
        return self._running

    def start(self) -> None:
        """Start the pool's threads (idempotent)."""
        if not self._running:
            self.pool.start()
            self._running = True

    def stop(self) -> None:
        """Stop the pool, waiting for calls in progress (idempotent)."""
        if self._running:
            self._running = False
            self.pool.stop()

    def call(self, f: Callable[..., Any], *args: Any, **kw: Any) -> Deferred[Any]:
        """Run ``f(*args, **kw)`` on a pool thread; the Deferred fires on the reactor thread
        with its result or failure."""
        if not self._running:
            raise RuntimeError(f"thread bridge {self.name!r} is not started")
        return deferToThreadPool(self.reactor, self.pool, f, *args, **kw)

    def to_reactor(self, f: Callable[..., Any], *args: Any) -> None:
        """From any thread: have the reactor call ``f(*args)`` on its own thread soon."""
        self.reactor.callFromThread(f, *args)
