"""The gateway's HTTP API as seen from a client.

:class:`GatewayClient` wraps the contract's calls (register, login, route, messages, user,
nodes, health) in methods that return Deferreds of the decoded JSON answer.  A 4xx/5xx answer
becomes the :class:`~dim.errors.DimError` subclass named by the error body's code, so callers
handle one error tree whether a failure came from the gateway or a node.  The HTTP library is
injected (``treq`` itself, or a ``treq.testing.StubTreq`` in tests).
"""
from __future__ import annotations

import json
from typing import Any, Iterable
from urllib.parse import quote

import treq
from twisted.internet.defer import Deferred, inlineCallbacks

from dim import errors

#: The contract's status codes, for error answers whose body names no known code.
_BY_STATUS: dict[int, type[errors.DimError]] = {
    400: errors.BadRequest, 401: errors.Unauthorized, 403: errors.Forbidden,
    404: errors.NotFound, 409: errors.Conflict, 413: errors.TooLarge,
    429: errors.RateLimited, 503: errors.Unavailable,
}


def error_from_answer(status: int, body: bytes) -> errors.DimError:
    """The DimError an HTTP error answer stands for (its body's code, else its status)."""
    code, message = None, None
    try:
        obj = json.loads(body)
        err = obj.get("error") if isinstance(obj, dict) else None
        if isinstance(err, dict):
            code, message = err.get("code"), err.get("message")
    except ValueError:
        pass
    cls = errors.BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        cls = _BY_STATUS.get(status, errors.Internal)
    if not isinstance(message, str) or not message:
        message = f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}".strip()
    return cls(message)


class GatewayClient:
    """Calls the gateway's HTTP API; every method returns a Deferred of the JSON answer.

    ``token`` is set by :meth:`login` (or by the caller, from a saved session) and sent as a
    bearer token on every authenticated call.  ``request_options`` go to every request (for
    example ``{"persistent": False, "timeout": 20}`` in tests that must leave no connection).
    """

    def __init__(self, base_url: str, treq_module: Any = treq, token: str | None = None,
                 request_options: dict[str, Any] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self._treq = treq_module
        self.request_options = dict(request_options or {})

    def _url(self, path: str) -> str:
        return self.base_url + path

    def _headers(self, auth: bool) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if auth:
            if not self.token:
                raise errors.Unauthorized("not logged in")
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    @inlineCallbacks
    def _call(self, method: str, path: str, *, body: Any = None,
              params: dict[str, Any] | None = None, auth: bool = True):  # type: ignore[no-untyped-def]
        headers = self._headers(auth)
        kwargs: dict[str, Any] = {**self.request_options, "headers": headers}
        if body is not None:
            kwargs["data"] = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if params:
            kwargs["params"] = {k: str(v) for k, v in params.items()}
        response = yield self._treq.request(method, self._url(path), **kwargs)
        content = yield self._treq.content(response)
        if response.code >= 400:
            raise error_from_answer(response.code, content)
        if not content:
            return {}
        try:
            return json.loads(content)
        except ValueError:
            raise errors.Internal(f"the gateway answered {path} with something not JSON")

    def register(self, user: str, password: str) -> Deferred[dict[str, Any]]:
        """Create an account: ``{user}``; Conflict if taken, BadRequest if invalid."""
        return self._call("POST", "/v1/register", body={"user": user, "password": password},
                          auth=False)

    def login(self, user: str, password: str) -> Deferred[dict[str, Any]]:
        """Log in: ``{token, user, expires, node}``; remembers the token for later calls."""
        d = self._call("POST", "/v1/login", body={"user": user, "password": password},
                       auth=False)

        def remember(answer: dict[str, Any]) -> dict[str, Any]:
            self.token = answer.get("token") or self.token
            return answer
        return d.addCallback(remember)

    def route(self, exclude: Iterable[str] = ()) -> Deferred[dict[str, Any]]:
        """Ask for a node to connect to, avoiding ``exclude``: ``{node: {id, host, port}}``."""
        return self._call("POST", "/v1/route", body={"exclude": list(exclude)})

    def messages(self, after: int = 0, limit: int = 100) -> Deferred[dict[str, Any]]:
        """Inbox messages with seq > ``after``: ``{messages, last_seq}``."""
        return self._call("GET", "/v1/messages", params={"after": after, "limit": limit})

    def user(self, name: str) -> Deferred[dict[str, Any]]:
        """One user's public record: ``{user, online, ...}``; NotFound if there is none."""
        return self._call("GET", "/v1/users/" + quote(name, safe=""))

    def nodes(self) -> Deferred[dict[str, Any]]:
        """The nodes the gateway knows: ``{nodes: [{id, host, port, connections}]}``."""
        return self._call("GET", "/v1/nodes", auth=False)

    def health(self) -> Deferred[dict[str, Any]]:
        """The gateway's health: ``{status: "ok"}``."""
        return self._call("GET", "/v1/health", auth=False)
