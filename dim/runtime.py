"""Small services that tie the life of a resource to a twistd service tree."""
from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import maybeDeferred


class ResourceService(Service):
    """Starts a resource when the service starts and closes it when the service stops.

    ``on_stop`` may return a Deferred; twistd waits for it before the process exits (the
    store flushing its last transaction, a thread pool finishing its jobs).
    """

    def __init__(self, name: str, on_start: Callable[[], Any] | None = None,
                 on_stop: Callable[[], Any] | None = None) -> None:
        self.setName(name)
        self._on_start, self._on_stop = on_start, on_stop

    def startService(self) -> None:
        super().startService()
        if self._on_start is not None:
            self._on_start()

    def stopService(self) -> Any:
        super().stopService()
        if self._on_stop is not None:
            return maybeDeferred(self._on_stop)
        return None


def advertised(port: Any, advertise: str | None) -> tuple[str, int]:
    """The host and port clients should use for a listening port.

    ``advertise`` ("HOST:PORT") wins; otherwise the bound address, with a wildcard interface
    replaced by 127.0.0.1.
    """
    if advertise:
        host, _, number = advertise.rpartition(":")
        return host, int(number)
    addr = port.getHost()
    host = addr.host if addr.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    return host, addr.port
