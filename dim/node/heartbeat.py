"""Liveness of client connections: one sweep per node closes the silent ones.

A client must send ``hello`` within 10 s of connecting and must be heard from at least every
3H seconds (it pings after H seconds of writing nothing).  Rather than one timer per
connection, :class:`HeartbeatMonitor` runs one :class:`LoopingCall` for the whole node and
checks every connection's timestamps on each sweep.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from dim import errors
from dim.node import metrics
from dim.node.connection import ClientConnection, ConnectionState

_log = Logger()

#: Seconds a client has, from connecting, to be welcomed.
HELLO_TIMEOUT = 10.0
#: Seconds a closing connection may take to flush what it was sent before it is dropped.
CLOSE_TIMEOUT = 10.0
#: Seconds a client may leave its socket's send buffer full before it is closed with
#: ``slow_consumer``.
SLOW_CONSUMER_GRACE = 15.0


class HeartbeatMonitor:
    """Closes connections that sent no hello in time or fell silent for 3H seconds.

    It also closes with ``slow_consumer`` connections whose client has not read what it was
    sent for ``slow_consumer_grace`` seconds (the node stops pushing to them meanwhile), and
    aborts closing connections that could not flush within CLOSE_TIMEOUT.

    ``connections`` returns the node's current connections.  ``on_sweep``, if given, is
    called after every ``heartbeat`` seconds of sweeping (the node renews its sessions there).
    """

    def __init__(self, connections: Callable[[], Iterable[ClientConnection]],
                 clock: IReactorTime, heartbeat: float = 30, hello_timeout: float = HELLO_TIMEOUT,
                 interval: float = 1.0, on_sweep: Callable[[], Any] | None = None,
                 slow_consumer_grace: float = SLOW_CONSUMER_GRACE) -> None:
        self.connections = connections
        self.slow_consumer_grace = slow_consumer_grace
        self.clock = clock
        self.heartbeat = heartbeat
        self.idle_timeout = 3 * heartbeat
        self.hello_timeout = hello_timeout
        self.interval = interval
        self.on_sweep = on_sweep
        self._last_renewal = 0.0
        self._loop = LoopingCall(self.sweep)
        self._loop.clock = clock

    @property
    def running(self) -> bool:
        """Whether the sweeps are scheduled."""
        return self._loop.running

    def start(self) -> None:
        """Sweep every ``interval`` seconds from now on."""
        if not self._loop.running:
            self._last_renewal = self.clock.seconds()
            self._loop.start(self.interval, now=False).addErrback(
                lambda f: _log.failure("heartbeat sweeps stopped", f))

    def stop(self) -> None:
        """Stop sweeping."""
        if self._loop.running:
            self._loop.stop()

    def sweep(self) -> None:
        """Close every connection that is late; renew sessions once per heartbeat."""
        now = self.clock.seconds()
        for conn in list(self.connections()):
            try:
                self._check(conn, now)
            except Exception:
                _log.failure("checking a connection failed")
        if self.on_sweep is not None and now - self._last_renewal >= self.heartbeat:
            self._last_renewal = now
            try:
                self.on_sweep()
            except Exception:
                _log.failure("heartbeat renewal failed")

    def _check(self, conn: ClientConnection, now: float) -> None:
        if conn.state is ConnectionState.CLOSED:
            return
        if not conn.is_open:
            # Closing, but the client does not read what is left to flush.
            if conn.closing_since is not None and now - conn.closing_since >= CLOSE_TIMEOUT:
                conn.abort()
            return
        congested = conn.write_congested_since
        if congested is not None and now - congested >= self.slow_consumer_grace:
            _log.info("closing a client that read nothing for {s:g} s", s=now - congested)
            metrics.count("slow_consumers")
            conn.close(errors.SlowConsumer(
                f"what this connection was sent went unread for {now - congested:g} s"))
            return
        if conn.state is ConnectionState.READY:
            if now - conn.last_heard >= self.idle_timeout:
                conn.close(errors.IdleTimeout(
                    f"nothing was heard for {self.idle_timeout:g} s (3 heartbeats)"))
        elif now - conn.connected_at >= self.hello_timeout:
            if conn.state is ConnectionState.NEW:
                message = f"hello did not arrive in time ({self.hello_timeout:g} s)"
            else:
                message = f"authentication did not finish in time ({self.hello_timeout:g} s)"
            conn.close(errors.IdleTimeout(message))
