"""Tests of :mod:`dim.cluster.threads`: a real thread pool, a hand-driven reactor queue."""
from __future__ import annotations

import queue
import threading
from typing import Any
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from dim.cluster.threads import ThreadBridge


class QueueReactor:
    """The ``callFromThread`` part of a reactor: calls queue up until the test runs them."""

    def __init__(self) -> None:
        self.calls: queue.Queue[tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]]
        self.calls = queue.Queue()
        self.thread = threading.current_thread()

    def callFromThread(self, f: Callable[..., Any], *args: Any, **kw: Any) -> None:
        self.calls.put((f, args, kw))

    def run_one(self, timeout: float = 5.0) -> None:
        """Run the next queued call on this (the 'reactor') thread."""
        f, args, kw = self.calls.get(timeout=timeout)
        f(*args, **kw)


class ThreadBridgeTests(SynchronousTestCase):
    """ThreadBridge runs blocking work on its pool and hops results back."""

    def setUp(self) -> None:
        self.reactor = QueueReactor()
        self.bridge = ThreadBridge("test-bridge", max_threads=2, reactor=self.reactor)
        self.bridge.start()
        self.addCleanup(self.bridge.stop)

    def test_call_runs_on_pool_thread_and_fires_on_reactor_thread(self) -> None:
        """call() runs f on a pool thread and fires its Deferred via callFromThread."""
        seen: list[threading.Thread] = []

        def work(a: int, b: int = 0) -> int:
            seen.append(threading.current_thread())
            return a + b

        d = self.bridge.call(work, 2, b=3)
        self.assertNoResult(d)
        self.reactor.run_one()
        self.assertEqual(self.successResultOf(d), 5)
        self.assertEqual(len(seen), 1)
        self.assertIsNot(seen[0], self.reactor.thread)

    def test_call_failure_becomes_failed_deferred(self) -> None:
        """An exception raised on the pool thread fails the Deferred with it."""

        def boom() -> None:
            raise ValueError("nope")

        d = self.bridge.call(boom)
        self.reactor.run_one()
        self.failureResultOf(d, ValueError)

    def test_calls_run_concurrently_up_to_max_threads(self) -> None:
        """Two blocking calls run at the same time on a two-thread pool."""
        barrier = threading.Barrier(2, timeout=5)
        d1 = self.bridge.call(barrier.wait)
        d2 = self.bridge.call(barrier.wait)
        self.reactor.run_one()
        self.reactor.run_one()
        self.assertEqual(sorted([self.successResultOf(d1), self.successResultOf(d2)]), [0, 1])

    def test_to_reactor_from_foreign_thread(self) -> None:
        """to_reactor() from another thread schedules the call on the reactor thread."""
        got: list[tuple[int, threading.Thread]] = []
        t = threading.Thread(
            target=self.bridge.to_reactor,
            args=(lambda x: got.append((x, threading.current_thread())), 7))
        t.start()
        t.join(5)
        self.assertEqual(got, [])
        self.reactor.run_one()
        self.assertEqual(got, [(7, self.reactor.thread)])

    def test_call_before_start_raises(self) -> None:
        """A bridge that is not started refuses calls instead of queueing them forever."""
        bridge = ThreadBridge("idle", reactor=self.reactor)
        self.assertRaises(RuntimeError, bridge.call, lambda: None)

    def test_start_stop_idempotent(self) -> None:
        """start() and stop() may be called twice; running reflects the state."""
        self.bridge.start()
        self.assertTrue(self.bridge.running)
        self.bridge.stop()
        self.bridge.stop()
        self.assertFalse(self.bridge.running)
