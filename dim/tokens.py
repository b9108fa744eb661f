"""Bearer tokens: signed JWTs that any node can check with the shared secret and the store.

A token is a PyJWT HS256 token with the claims ``sub`` (the user), ``iat`` and ``exp``
(seconds since the epoch), ``jti`` (a random id) and ``ep`` (the user's token epoch when it
was issued; absent means 0).  Expiry is checked against an injected clock, revocation
(logout) against :meth:`dim.store.interface.IStore.is_revoked`, and the epoch against
:meth:`dim.store.interface.IStore.token_epoch`: a password change starts a new epoch, which
invalidates every older token but the one that made the change.

Tokens are secrets: nothing here logs one, and errors never quote one.
"""
from __future__ import annotations

import secrets
import time
from typing import Any

import jwt
from twisted.internet.defer import inlineCallbacks

from dim.errors import Unauthorized
from dim.store.interface import IStore

ALGORITHM = "HS256"
DEFAULT_TTL = 86400 * 7
_REQUIRED_CLAIMS = ["sub", "iat", "exp", "jti"]


class WallClock:
    """The time of day (``seconds()`` like IReactorTime), for code that runs without a reactor."""

    def seconds(self) -> float:
        """Seconds since the epoch, now."""
        return time.time()


class TokenAuthority:
    """Issues, verifies and revokes the bearer tokens of DIM.

    ``secret`` is shared by every gateway and node of a deployment; ``store`` keeps the ids
    of revoked tokens; ``ttl`` is a token's lifetime in seconds; ``clock`` provides
    ``seconds()`` (an IReactorTime, or :class:`WallClock` where no reactor runs).
    """

    def __init__(self, secret: bytes, store: IStore, ttl: int = DEFAULT_TTL, *,
                 clock: Any) -> None:
        if not secret:
            raise ValueError("the token secret must not be empty")
        self._secret = secret
        self._store = store
        self.ttl = ttl
        self._clock = clock

    def issue(self, user: str, epoch: int = 0) -> tuple[str, int]:
        """A new token for ``user`` in token epoch ``epoch`` (see
        :meth:`dim.store.interface.IStore.token_epoch`) and its expiry time (integer seconds
        since the epoch)."""
        now = int(self._clock.seconds())
        expires = now + self.ttl
        claims: dict[str, Any] = {"sub": user, "iat": now, "exp": expires,
                                  "jti": secrets.token_urlsafe(16)}
        if epoch:
            claims["ep"] = epoch
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), expires

    def _claims(self, token: Any) -> dict[str, Any]:
        """The token's claims once its signature and shape are checked (not its expiry)."""
        if not isinstance(token, str) or not token:
            raise Unauthorized("missing token")
        try:
            claims = jwt.decode(
                token, self._secret, algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                         "require": _REQUIRED_CLAIMS})
        except jwt.PyJWTError:
            raise Unauthorized("invalid token") from None
        if not (isinstance(claims.get("sub"), str) and claims["sub"]
                and isinstance(claims.get("jti"), str)
                and type(claims.get("ep", 0)) is int
                and isinstance(claims.get("exp"), int)
                and not isinstance(claims.get("exp"), bool)):
            raise Unauthorized("invalid token")
        return claims

    @inlineCallbacks
    def verify(self, token: Any) -> Any:
        """Fire with the token's user, or fail with Unauthorized if the token is malformed,
        badly signed, expired or revoked."""
        claims = self._claims(token)
        if claims["exp"] <= self._clock.seconds():
            raise Unauthorized("token expired")
        revoked = yield self._store.is_revoked(claims["jti"])
        if revoked:
            raise Unauthorized("token revoked")
        epoch, kept = yield self._store.token_epoch(claims["sub"])
        if claims.get("ep", 0) != epoch and claims["jti"] != kept:
            raise Unauthorized("token revoked by a password change")
        return claims["sub"]

    @inlineCallbacks
    def revoke_others(self, token: Any) -> Any:
        """Revoke every token of ``token``'s user except ``token`` itself (a password
        change); fires with the user."""
        claims = self._claims(token)
        yield self._store.bump_token_epoch(claims["sub"], claims["jti"])
        return claims["sub"]

    @inlineCallbacks
    def revoke(self, token: Any) -> Any:
        """Revoke a token until it expires (logout); fails with Unauthorized if it is not a
        token this authority signed."""
        claims = self._claims(token)
        yield self._store.revoke_token(claims["jti"], claims["exp"])
