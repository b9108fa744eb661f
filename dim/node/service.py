"""The node as a Twisted service: a listening port, the heartbeat sweep, a clean stop.

:class:`NodeService` listens on a strports description with a factory of
:class:`~dim.node.connection.ClientConnection` bound to a :class:`~dim.node.delivery.NodeCore`,
runs the :class:`~dim.node.heartbeat.HeartbeatMonitor`, and on stop closes the port, sends
``goaway`` to every client and waits (bounded) for the connections to drain.
"""
from __future__ import annotations

from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger

from dim.node.connection import MAX_OUTPUT, PUSH_LIMIT, ConnectionFactory
from dim.node.delivery import NodeCore
from dim.node.heartbeat import HELLO_TIMEOUT, SLOW_CONSUMER_GRACE, HeartbeatMonitor

_log = Logger()


class _PortRecorder:
    """Wraps a server endpoint to keep the port it listens on and tell who waits for it."""

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint
        self.port: IListeningPort | None = None
        self._waiting: list[Deferred[IListeningPort]] = []

    def listen(self, factory: Any) -> Deferred[IListeningPort]:
        d = self.endpoint.listen(factory)
        d.addCallback(self._listening)
        return d

    def _listening(self, port: IListeningPort) -> IListeningPort:
        self.port = port
        waiting, self._waiting = self._waiting, []
        for w in waiting:
            w.callback(port)
        return port

    def when_listening(self) -> Deferred[IListeningPort]:
        if self.port is not None:
            d: Deferred[IListeningPort] = Deferred()
            d.callback(self.port)
            return d
        d = Deferred()
        self._waiting.append(d)
        return d


class NodeService(MultiService):
    """A DIM node: the client port, the heartbeat sweep, and a stop that drains."""

    def __init__(self, core: NodeCore, description: str, reactor: Any,
                 clock: IReactorTime | None = None, sweep_interval: float = 1.0,
                 hello_timeout: float = HELLO_TIMEOUT, push_limit: int = PUSH_LIMIT,
                 max_output: int = MAX_OUTPUT,
                 slow_consumer_grace: float = SLOW_CONSUMER_GRACE) -> None:
        super().__init__()
        self.core = core
        self.clock = clock if clock is not None else reactor
        self.factory = ConnectionFactory(core, self.clock, core.max_frame, push_limit,
                                         max_output)
        self.listener = strports.service(description, self.factory, reactor=reactor)
        self._recorder = _PortRecorder(self.listener.endpoint)
        self.listener.endpoint = self._recorder
        self.listener.setServiceParent(self)
        self.monitor = HeartbeatMonitor(lambda: core.connections, self.clock, core.heartbeat,
                                        hello_timeout=hello_timeout, interval=sweep_interval,
                                        on_sweep=core.refresh_sessions,
                                        slow_consumer_grace=slow_consumer_grace)

    def startService(self) -> None:
        super().startService()
        self.monitor.start()

    def stopService(self) -> Deferred[None]:
        """Stop listening, send ``goaway`` to all, wait for the connections to drain."""
        Service.stopService(self)
        d = maybeDeferred(self.listener.stopService)
        d.addErrback(lambda f: _log.failure("closing the client port failed", f))
        d.addCallback(lambda _: self.core.shutdown("shutdown"))

        def stop_rest(_: object) -> Deferred[Any]:
            self.monitor.stop()
            others = [maybeDeferred(s.stopService) for s in reversed(list(self))
                      if s is not self.listener and s.running]
            return DeferredList(others, consumeErrors=True)

        d.addBoth(stop_rest)
        d.addCallback(lambda _: None)
        return d

    def connection_count(self) -> int:
        """How many client connections are open."""
        return self.core.connection_count()

    @property
    def port(self) -> IListeningPort | None:
        """The listening port, once listening."""
        return self._recorder.port

    def listening(self) -> Deferred[IListeningPort]:
        """Fires with the listening port (to learn the number bound for ``tcp:0``)."""
        return self._recorder.when_listening()
