"""The gateway's limits on guessing and flooding: login throttling, registrations per address,
and the client address they are counted by.

Logins follow OWASP's guidance on authentication: no hard lockout, but growing delays.  Each
account and each client address may fail ``free`` times; after that, every further failure
makes the next attempt wait twice as long as the one before (``base_delay``, 2x, 4x... up to
``max_delay``).  An attempt made while a key must wait is answered 429 with ``Retry-After``
and costs no password check.  A success clears the account's failures (not the address's:
one valid account must not let a guesser reset its address).  Failures are forgotten after
``forget_after`` seconds without a new one.  While a key is past its free failures, only one
attempt of it is checked at a time, so parallel guesses gain nothing.

Registrations are a token bucket per client address: ``burst`` in a row, then
``per_hour`` an hour.

Behind a reverse proxy every connection comes from the proxy; :func:`client_address` takes the
address from ``X-Forwarded-For`` only when the connection comes from a proxy the operator named
as trusted, and then the rightmost address that is not one of the trusted proxies.
"""
from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from twisted.web.iweb import IRequest

from dim.errors import RateLimited

#: How many keys a limiter remembers at most (the oldest are forgotten first).
MAX_KEYS = 100_000


@dataclass(frozen=True)
class GatewayLimits:
    """The operator's limits of one gateway (every field has a default a person never meets).

    ``login_free_failures`` / ``login_address_free_failures``: failures before delays start,
    per account and per client address; ``login_base_delay`` and ``login_max_delay``: the
    first and the longest delay in seconds; ``login_forget_after``: seconds of quiet after
    which failures are forgotten.  ``registrations_burst`` in a row and
    ``registrations_per_hour`` after that, per address.  ``trusted_proxies``: addresses
    whose ``X-Forwarded-For`` is believed.  ``hash_share``: password checks one client may
    have waiting or running at once.  ``request_timeout``: seconds to send a request's
    headers and (non-upload) body; ``upload_timeout``: the same for an upload;
    ``idle_timeout``: seconds a keep-alive connection may sit idle;
    ``max_connections_per_address``: open connections from one address (0: no cap);
    ``max_image_pixels``: the most pixels of an uploaded image.
    """

    login_free_failures: int = 5
    login_address_free_failures: int = 50
    login_base_delay: float = 1.0
    login_max_delay: float = 900.0
    login_forget_after: float = 3600.0
    registrations_burst: int = 100
    registrations_per_hour: float = 20.0
    trusted_proxies: frozenset[str] = field(default_factory=frozenset)
    hash_share: int = 8
    request_timeout: float = 30.0
    upload_timeout: float = 600.0
    idle_timeout: float = 60.0
    max_connections_per_address: int = 256
    max_image_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        for name in ("login_free_failures", "login_address_free_failures",
                     "registrations_burst", "hash_share", "max_connections_per_address",
                     "max_image_pixels"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more")
        for name in ("login_base_delay", "login_max_delay", "login_forget_after",
                     "registrations_per_hour", "request_timeout", "upload_timeout",
                     "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0")
        if self.hash_share < 1:
            raise ValueError("hash_share must be 1 or more")
        for proxy in self.trusted_proxies:
            ipaddress.ip_address(proxy)


#: The twistd options of the limits (``dim`` and ``dim-gateway`` share them).
LIMIT_PARAMETERS: list[list[Any]] = [
    ["login-free-failures", None, 5,
     "Failed logins of one account before each further one doubles the wait (from 1 s).",
     int],
    ["login-address-free-failures", None, 50,
     "Failed logins from one client address before the waits start.", int],
    ["login-max-delay", None, 900.0, "Longest wait after failed logins, in seconds.", float],
    ["registrations-burst", None, 100, "Registrations in a row from one client address.",
     int],
    ["registrations-per-hour", None, 20.0,
     "Registrations an hour from one client address once the burst is spent.", float],
    ["trusted-proxy", None, "",
     "Comma-separated addresses of reverse proxies whose X-Forwarded-For names the client."],
    ["login-share", None, 8,
     "Password checks one client address may have waiting or running at once.", int],
    ["request-timeout", None, 30.0,
     "Seconds a client has to send a request's headers and body (uploads excepted).", float],
    ["upload-timeout", None, 600.0, "Seconds a client has to send an upload.", float],
    ["idle-timeout", None, 60.0, "Seconds an idle keep-alive HTTP connection is kept.",
     float],
    ["max-connections-per-address", None, 256,
     "HTTP connections open at once from one address (0: no cap).", int],
    ["max-image-pixels", None, 40_000_000, "Most pixels of an uploaded image.", int],
]


def limit_options(options: Any) -> GatewayLimits:
    """The limits given on a twistd command line (:data:`LIMIT_PARAMETERS`); a
    :class:`twisted.python.usage.UsageError` naming what is wrong."""
    from twisted.python import usage

    proxies = frozenset(p.strip() for p in options["trusted-proxy"].split(",") if p.strip())
    try:
        return GatewayLimits(
            login_free_failures=options["login-free-failures"],
            login_address_free_failures=options["login-address-free-failures"],
            login_max_delay=options["login-max-delay"],
            registrations_burst=options["registrations-burst"],
            registrations_per_hour=options["registrations-per-hour"],
            trusted_proxies=frozenset(str(ipaddress.ip_address(p)) for p in proxies),
            hash_share=options["login-share"],
            request_timeout=options["request-timeout"],
            upload_timeout=options["upload-timeout"],
            idle_timeout=options["idle-timeout"],
            max_connections_per_address=options["max-connections-per-address"],
            max_image_pixels=options["max-image-pixels"])
    except ValueError as e:
        raise usage.UsageError(f"bad limit: {e}") from None


def rate_limited(message: str, retry_after: float) -> RateLimited:
    """A RateLimited error carrying ``retry_after`` (whole seconds, at least 1), which the
    gateway sends as ``Retry-After``."""
    error = RateLimited(message)
    error.retry_after = max(1, math.ceil(retry_after))
    return error


def peer_host(request: IRequest) -> str:
    """The address of the connection's peer (the unix socket path or "" when it has none)."""
    peer = request.getClientAddress()
    return str(getattr(peer, "host", None) or getattr(peer, "name", None) or "")


def address_key(address: str) -> str:
    """What limits count an address as: itself, or for IPv6 its /64 network (one host
    usually holds a whole /64, so counting single addresses would let it rotate)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def client_address(request: IRequest, trusted_proxies: frozenset[str]) -> str:
    """The client's address: the peer's, or, when the peer is a trusted proxy, the rightmost
    address of ``X-Forwarded-For`` that is not a trusted proxy."""
    peer = peer_host(request)
    if peer not in trusted_proxies:
        return peer
    forwarded = request.requestHeaders.getRawHeaders(b"x-forwarded-for") or []
    hops = [h.strip() for line in forwarded
            for h in line.decode("latin-1").split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))
        except ValueError:
            return peer
        if address not in trusted_proxies:
            return address
    return peer


class _Failures:
    __slots__ = ("checking", "count", "last")

    def __init__(self) -> None:
        self.count = 0
        self.last = 0.0
        self.checking = 0


class LoginThrottle:
    """Failures per key (``"user:NAME"``, ``"addr:IP"``) and the delays they earn.

    Use: :meth:`admit` before the password check (raises RateLimited, or returns the keys to
    pass to :meth:`done`), then :meth:`done` with the outcome.
    """

    def __init__(self, clock: Any, limits: GatewayLimits) -> None:
        self.clock = clock
        self.limits = limits
        self._keys: OrderedDict[str, _Failures] = OrderedDict()

    def _free(self, key: str) -> int:
        return (self.limits.login_address_free_failures if key.startswith("addr:")
                else self.limits.login_free_failures)

    def delay(self, failures: int, free: int) -> float:
        """Seconds to wait after ``failures`` failures of a key allowed ``free``."""
        if failures <= free:
            return 0.0
        exponent = min(failures - free - 1, 60)
        return min(self.limits.login_max_delay, self.limits.login_base_delay * 2 ** exponent)

    def _entry(self, key: str, create: bool) -> _Failures | None:
        entry = self._keys.get(key)
        now = self.clock.seconds()
        if (entry is not None and not entry.checking
                and now - entry.last > self.limits.login_forget_after):
            del self._keys[key]
            entry = None
        if entry is None and create:
            entry = self._keys[key] = _Failures()
            while len(self._keys) > MAX_KEYS:
                self._keys.popitem(last=False)
        elif entry is not None:
            self._keys.move_to_end(key)
        return entry

    def wait(self, key: str) -> float:
        """Seconds before ``key`` may try again (0: now)."""
        entry = self._entry(key, create=False)
        if entry is None:
            return 0.0
        free = self._free(key)
        if entry.count >= free and entry.checking:
            return 1.0
        return max(0.0, entry.last + self.delay(entry.count, free) - self.clock.seconds())

    def admit(self, keys: list[str]) -> list[str]:
        """Let an attempt of ``keys`` through, or raise RateLimited with the longest wait."""
        waits = [self.wait(k) for k in keys]
        longest = max(waits, default=0.0)
        if longest > 0:
            raise rate_limited("too many failed logins; wait before trying again", longest)
        for key in keys:
            entry = self._entry(key, create=True)
            assert entry is not None
            entry.checking += 1
        return keys

    def done(self, keys: list[str], ok: bool | None) -> None:
        """The attempt ended: ``ok`` True (success), False (wrong password) or None (it
        could not be checked; counts as nothing)."""
        now = self.clock.seconds()
        for key in keys:
            entry = self._keys.get(key)
            if entry is None:
                continue
            entry.checking = max(0, entry.checking - 1)
            if ok is False:
                entry.count += 1
                entry.last = now
            elif ok and not key.startswith("addr:"):
                entry.count = 0
            if entry.count == 0 and not entry.checking:
                del self._keys[key]

    def failures(self, key: str) -> int:
        """Failures counted for ``key`` now."""
        entry = self._entry(key, create=False)
        return entry.count if entry is not None else 0


class TokenBuckets:
    """A token bucket per key: ``burst`` tokens, refilled at ``per_hour`` an hour."""

    def __init__(self, clock: Any, burst: int, per_hour: float) -> None:
        self.clock = clock
        self.burst = burst
        self.rate = per_hour / 3600.0
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, what: str) -> None:
        """Take one token for ``key``, or raise RateLimited saying when one will be there."""
        now = self.clock.seconds()
        tokens, then = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            raise rate_limited(f"too many {what} from this address; wait before trying again",
                               (1.0 - tokens) / self.rate)
        self._buckets[key] = (tokens - 1.0, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > MAX_KEYS:
            self._buckets.popitem(last=False)
