"""Where the real services of an integration test run, read from the environment.

``scripts/stack up`` prints the variables this module reads; each falls back to the stack's
default address:

- ``DIM_REDIS``: a redis:// URL (default ``redis://127.0.0.1:6379``, database 0);
- ``DIM_ZOOKEEPER``: a kazoo host string (default ``127.0.0.1:2181``);
- ``DIM_KAFKA``: Kafka bootstrap servers, comma separated (default ``127.0.0.1:9092``);
- ``DIM_ZOOKEEPER_AUTH``: the digest credential ``USER:PASSWORD`` of DIM's znodes (none by
  default);
- ``DIM_KAFKA_SASL``: the Kafka login ``MECHANISM:USER:PASSWORD`` (none by default).

The password of Redis, when it has one, is in ``DIM_REDIS`` (``redis://:PASSWORD@host:port``).

:func:`require` fails a test fast, with a message naming the service and the way to start
it, when nothing accepts connections at an address (tests must fail, never skip, when a
service is absent).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

DEFAULT_REDIS = "redis://127.0.0.1:6379"
DEFAULT_ZOOKEEPER = "127.0.0.1:2181"
DEFAULT_KAFKA = "127.0.0.1:9092"

#: seconds an integration test waits for a TCP connection before failing
CONNECT_TIMEOUT = 2.0


class ServiceUnavailable(AssertionError):
    """A service an integration test needs does not accept connections (fails the test)."""


@dataclass(frozen=True)
class RedisAddress:
    """Where Redis runs: host, port, database number and optional password."""

    host: str
    port: int
    db: int = 0
    password: str | None = None


def _host_port(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.strip().rpartition(":")
    if not host:
        return text.strip(), default_port
    return host.strip("[]"), int(port)


def redis_url() -> str:
    """The Redis URL (``DIM_REDIS``)."""
    return os.environ.get("DIM_REDIS") or DEFAULT_REDIS


def redis_address() -> RedisAddress:
    """``DIM_REDIS`` taken apart into what txredisapi's Connection wants."""
    parts = urlsplit(redis_url())
    if parts.scheme not in ("redis", ""):
        raise ValueError(f"DIM_REDIS must be a redis:// URL, not {redis_url()!r}")
    path = parts.path.strip("/")
    return RedisAddress(host=parts.hostname or "127.0.0.1", port=parts.port or 6379,
                        db=int(path) if path else 0,
                        password=unquote(parts.password) if parts.password else None)


def zookeeper_hosts() -> str:
    """The ZooKeeper connection string for kazoo (``DIM_ZOOKEEPER``)."""
    return os.environ.get("DIM_ZOOKEEPER") or DEFAULT_ZOOKEEPER


def zookeeper_auth() -> tuple[str, str] | None:
    """The digest credential (user, password) of ``DIM_ZOOKEEPER_AUTH``, or None."""
    from dim.runtime import zookeeper_digest

    return zookeeper_digest(os.environ.get("DIM_ZOOKEEPER_AUTH"))


def zookeeper_client_args() -> dict[str, Any]:
    """What a KazooClient needs to be DIM (``auth_data``) on these services."""
    auth = zookeeper_auth()
    return {"auth_data": [("digest", f"{auth[0]}:{auth[1]}")]} if auth else {}


def kafka_security() -> dict[str, str]:
    """The librdkafka settings of ``DIM_KAFKA_SASL`` (empty without it)."""
    from dim.runtime import kafka_security as security

    return security(os.environ.get("DIM_KAFKA_SASL"))


def kafka_config() -> dict[str, str]:
    """``bootstrap.servers`` and the login: what every Kafka client of a test needs."""
    return {"bootstrap.servers": kafka_bootstrap(), **kafka_security()}


def zookeeper_addresses() -> list[tuple[str, int]]:
    """Every (host, port) of ``DIM_ZOOKEEPER`` (a chroot suffix is ignored)."""
    hosts = zookeeper_hosts().split("/", 1)[0]
    return [_host_port(h, 2181) for h in hosts.split(",") if h.strip()]


def kafka_bootstrap() -> str:
    """The Kafka bootstrap servers (``DIM_KAFKA``), as confluent-kafka wants them."""
    return os.environ.get("DIM_KAFKA") or DEFAULT_KAFKA


def kafka_addresses() -> list[tuple[str, int]]:
    """Every (host, port) of ``DIM_KAFKA``."""
    return [_host_port(h, 9092) for h in kafka_bootstrap().split(",") if h.strip()]


def kafka_replication() -> int:
    """A replication factor suited to the brokers listed: min(3, their number)."""
    return min(3, len(kafka_addresses()))


def require(name: str, addresses: list[tuple[str, int]],
            timeout: float = CONNECT_TIMEOUT) -> None:
    """Raise :class:`ServiceUnavailable` unless every address accepts a TCP connection."""
    for host, port in addresses:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                pass
        except OSError as error:
            raise ServiceUnavailable(
                f"{name} is not reachable at {host}:{port} ({error}); start the services "
                f"with `eval \"$(scripts/stack up)\"` or run the tests with scripts/test"
            ) from error


def require_redis() -> RedisAddress:
    """Fail unless Redis accepts connections; return its address."""
    address = redis_address()
    require("Redis (DIM_REDIS)", [(address.host, address.port)])
    return address


def require_zookeeper() -> str:
    """Fail unless ZooKeeper accepts connections; return its kazoo host string."""
    require("ZooKeeper (DIM_ZOOKEEPER)", zookeeper_addresses())
    return zookeeper_hosts()


def require_kafka() -> str:
    """Fail unless every Kafka broker accepts connections; return the bootstrap servers."""
    require("Kafka (DIM_KAFKA)", kafka_addresses())
    return kafka_bootstrap()
