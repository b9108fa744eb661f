"""Small services that tie the life of a resource to a twistd service tree."""
from __future__ import annotations

from typing import Any
from collections.abc import Callable

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()


class OrderedMultiService(MultiService):
    """A MultiService that stops its children one at a time, last added first.

    ``MultiService`` stops every child at once, so a store could close while the node that
    uses it is still draining.  Here each child finishes stopping before the next starts to.
    """

    def stopService(self) -> Deferred[None]:
        Service.stopService(self)
        d: Deferred[None] = succeed(None)
        for service in reversed(list(self)):
            d.addCallback(_stop, service)
            d.addErrback(_stop_failed, service)
        return d


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


def speaks_tls(description: str) -> bool:
    """Whether a server endpoint description (strports) listens with TLS (``ssl:...``)."""
    return description.strip().split(":", 1)[0].lower() == "ssl"


#: Where the cluster services are when neither an option nor the environment says.
DEFAULT_SERVICES = {"redis": ("DIM_REDIS", "redis://127.0.0.1:6379"),
                    "kafka": ("DIM_KAFKA", "127.0.0.1:9092"),
                    "zookeeper": ("DIM_ZOOKEEPER", "127.0.0.1:2181")}


def service_defaults(options: Any, names: list[str]) -> None:
    """Fill each unset service address option in ``names`` (redis, kafka, zookeeper) from
    its environment variable (``DIM_REDIS``, ...), else the local default."""
    import os

    for option in names:
        variable, default = DEFAULT_SERVICES[option]
        if not options[option]:
            options[option] = os.environ.get(variable) or default


#: The back-pressure limits of a node (see docs/protocol.md, Back-pressure), as options.
OUTPUT_LIMIT_PARAMETERS: list[list[Any]] = [
    ["push-limit", None, 256 * 1024,
     "Unread bytes above which a client gets no live pushes (they stay in its inbox).",
     int],
    ["max-output", None, 8 * 1024 * 1024,
     "Unread bytes above which a client is closed with slow_consumer.", int],
    ["slow-consumer-grace", None, 15.0,
     "Seconds a client may leave its socket buffer full before slow_consumer.", float],
]


def check_output_limits(options: Any) -> None:
    """Refuse node options whose back-pressure limits make no sense (twistd usage errors)."""
    from twisted.python import usage

    if options["push-limit"] < 1024:
        raise usage.UsageError("--push-limit must be at least 1024 bytes")
    if options["max-output"] < options["push-limit"]:
        raise usage.UsageError("--max-output must be at least --push-limit")
    if options["slow-consumer-grace"] <= 0:
        raise usage.UsageError("--slow-consumer-grace must be positive")


def tidy_option_docs(options: Any) -> None:
    """Join the lines of the ``opt_`` methods' docstrings, as ``--help`` shows them."""
    for name, doc in list(options.docs.items()):
        if doc:
            options.docs[name] = " ".join(doc.split())


#: The credentials of the cluster services: option, environment variable, what it holds.
#: (Redis's password is part of its URL: ``redis://:PASSWORD@host:port``.)
CREDENTIAL_PARAMETERS: list[list[Any]] = [
    ["zookeeper-auth", None, None,
     "ZooKeeper digest credential USER:PASSWORD; DIM's znodes are then readable and writable "
     "by it alone (default: $DIM_ZOOKEEPER_AUTH, else none: open znodes)."],
    ["kafka-sasl", None, None,
     "Kafka SASL login MECHANISM:USER:PASSWORD, MECHANISM one of PLAIN, SCRAM-SHA-256, "
     "SCRAM-SHA-512 (default: $DIM_KAFKA_SASL, else none)."],
]

#: The SASL mechanisms DIM passes to librdkafka.
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class ServiceCredentialOptions:
    """The credential options of a process that uses the cluster services (a mixin for
    :class:`twisted.python.usage.Options`): ``--zookeeper-auth``, ``--kafka-sasl`` and any
    number of ``--kafka-option KEY=VALUE``.  Call :meth:`credential_defaults` in
    ``postOptions``."""

    def __init__(self) -> None:
        super().__init__()
        self["kafka-option"] = []  # type: ignore[index]
        tidy_option_docs(self)

    def opt_kafka_option(self, value: str) -> None:
        """A librdkafka setting KEY=VALUE for every Kafka client (repeatable), e.g.
        security.protocol=SASL_SSL or ssl.ca.location=/etc/dim/kafka-ca.pem."""
        key, sep, setting = value.partition("=")
        if not sep or not key.strip():
            from twisted.python import usage

            raise usage.UsageError(f"--kafka-option {value!r}: expected KEY=VALUE")
        self["kafka-option"].append((key.strip(), setting))  # type: ignore[index]

    def credential_defaults(self) -> None:
        """Fill unset credentials from the environment and check them: sets
        ``zookeeper-digest`` ((user, password) or None) and ``kafka-security`` (a dict)."""
        import os

        from twisted.python import usage

        options: Any = self
        for option, variable in (("zookeeper-auth", "DIM_ZOOKEEPER_AUTH"),
                                 ("kafka-sasl", "DIM_KAFKA_SASL")):
            if not options[option]:
                options[option] = os.environ.get(variable) or None
        try:
            options["zookeeper-digest"] = zookeeper_digest(options["zookeeper-auth"])
            options["kafka-security"] = kafka_security(options["kafka-sasl"],
                                                       options["kafka-option"])
        except ValueError as e:
            raise usage.UsageError(str(e)) from None


def zookeeper_digest(auth: str | None) -> tuple[str, str] | None:
    """``USER:PASSWORD`` as (user, password), or None; ValueError when malformed."""
    if not auth:
        return None
    user, sep, password = auth.partition(":")
    if not sep or not user or not password:
        raise ValueError("--zookeeper-auth (DIM_ZOOKEEPER_AUTH) must be USER:PASSWORD")
    return user, password


def kafka_security(sasl: str | None, extra: Any = ()) -> dict[str, str]:
    """librdkafka settings for a SASL login ``MECHANISM:USER:PASSWORD`` (or none), with the
    ``(key, value)`` pairs of ``extra`` over them.  SASL alone means SASL_PLAINTEXT; add
    ``security.protocol=SASL_SSL`` (and ``ssl.ca.location``) for TLS.  ValueError when
    malformed."""
    config: dict[str, str] = {}
    if sasl:
        mechanism, _, rest = sasl.partition(":")
        user, sep, password = rest.partition(":")
        if mechanism.upper() not in KAFKA_SASL_MECHANISMS or not sep or not user:
            raise ValueError("--kafka-sasl (DIM_KAFKA_SASL) must be MECHANISM:USER:PASSWORD "
                             f"with MECHANISM one of {', '.join(KAFKA_SASL_MECHANISMS)}")
        config = {"security.protocol": "SASL_PLAINTEXT", "sasl.mechanism": mechanism.upper(),
                  "sasl.username": user, "sasl.password": password}
    for key, value in extra:
        config[key] = value
    return config


def redact_url(url: str) -> str:
    """A service URL with any password in it replaced by ``***`` (for logs)."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if not parsed.password:
        return url
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{parsed.username or ''}:***@{host}" + (f":{parsed.port}" if parsed.port else "")
    return parsed._replace(netloc=netloc).geturl()


def cluster_namespace(cluster: str) -> dict[str, str]:
    """The Redis key prefix, ZooKeeper root and Kafka topic prefix of a cluster name.

    The default name ``dim`` gives the stores' own defaults (``dim:``, ``/dim/nodes``,
    ``dim.node.``); another name lets a second cluster (or a test) share the same services.
    """
    return {"redis_prefix": f"{cluster}:", "zk_root": f"/{cluster}/nodes",
            "topic_prefix": f"{cluster}.node."}


def exit_with(status: int) -> None:
    """Make the process exit with ``status`` once twistd has cleaned up (twistd exits 0
    after any reactor stop that is not a signal)."""
    import atexit
    import os
    import sys

    def leave() -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(status)
    atexit.register(leave)


def stop_reactor(reactor: Any) -> None:
    """Stop the reactor (once it runs, if it does not yet) unless it is already stopping."""
    def stop() -> None:
        try:
            reactor.stop()
        except Exception:
            pass
    if reactor.running:
        stop()
    else:
        reactor.callWhenRunning(stop)


class ClusterProcess(MultiService):
    """A cluster process (node or gateway) that connects to its services one at a time when
    it starts, and exits with status 1 and a line naming the service if one does not answer.

    Subclasses implement ``_start`` (a coroutine) and call :meth:`connecting` before each
    service and :meth:`bridge` for each thread pool; ``label`` names the process in logs.
    """

    label = "DIM process"

    def __init__(self, reactor: Any) -> None:
        super().__init__()
        self.reactor = reactor
        #: Fires once the process has connected to everything and listens.
        self.ready: Deferred[None] | None = None
        self._bridges: list[Any] = []
        self._stopping = False
        #: (name, address) of the service being connected to, for the failure message.
        self._service: tuple[str, str] | None = None

    def startService(self) -> None:
        super().startService()
        self.ready = Deferred.fromCoroutine(self._start())
        self.ready.addErrback(self._start_failed)

    async def _start(self) -> None:
        raise NotImplementedError

    def connecting(self, service: str, address: str) -> None:
        """Say which service the next step talks to, so a failure can name it."""
        self._service = (service, address)

    def bridge(self, name: str, max_threads: int) -> Any:
        """A started ThreadBridge, stopped (last) when the process stops."""
        from dim.cluster.threads import ThreadBridge

        bridge = ThreadBridge(name, max_threads=max_threads, reactor=self.reactor)
        bridge.start()
        self._bridges.append(bridge)
        return bridge

    def stop_bridges(self) -> None:
        """Stop every ThreadBridge, newest first (each waits for its threads)."""
        for bridge in reversed(self._bridges):
            bridge.stop()

    def _start_failed(self, failure: Any) -> None:
        from dim.errors import DimError

        if self._stopping:
            return
        reason = failure.value.message if failure.check(DimError) else failure.getErrorMessage()
        if self._service and self._service[1] not in reason:
            reason = f"{self._service[0]} at {self._service[1]}: {reason}"
        if not failure.check(DimError):
            _log.failure("{label}: start failed", failure, label=self.label)
        _log.error("{label} cannot start: {reason}; exiting", label=self.label, reason=reason)
        exit_with(1)
        stop_reactor(self.reactor)


class FrameLimitOptions:
    """The node's per-user frame rate limits as options (a mixin for
    :class:`twisted.python.usage.Options`): any number of ``--limit ACTION=RATE:BURST``.
    Call :meth:`frame_limit_defaults` in ``postOptions``; it sets ``frame-limits``."""

    def __init__(self) -> None:
        super().__init__()
        self["limit"] = []  # type: ignore[index]
        tidy_option_docs(self)

    def opt_limit(self, value: str) -> None:
        """Rate limit of one client frame type per user, ACTION=RATE:BURST (frames a second,
        at once), e.g. send=10:100; repeat for each action (send, typing, edit, recall,
        react).  Defaults: send=10:100, typing=1:3, edit=5:30, recall=5:30, react=10:60."""
        self["limit"].append(value)  # type: ignore[index]

    def frame_limit_defaults(self) -> None:
        """Parse the ``--limit`` options into ``frame-limits`` (a usage error if one is bad)."""
        from twisted.python import usage

        from dim.node.throttle import Limits

        options: Any = self
        try:
            options["frame-limits"] = Limits.parse(options["limit"])
        except ValueError as e:
            raise usage.UsageError(f"--limit {e}") from None


def _stop(_: object, service: IService) -> Deferred[None]:
    """Stop one child service."""
    return maybeDeferred(service.stopService)


def _stop_failed(failure: Failure, service: IService) -> None:
    """Log a child that failed to stop; the next one still stops."""
    _log.failure("stopping {name} failed", failure, name=service.name or repr(service))
