"""The gateway's HTTP API as seen from a client.

:class:`GatewayClient` wraps the contract's calls (register, login, route, messages, user,
nodes, health, and part 2's people, contacts, groups and files) in methods that return
Deferreds of the decoded JSON answer.  A 4xx/5xx answer becomes the
:class:`~dim.errors.DimError` subclass named by the error body's code, so callers handle one
error tree whether a failure came from the gateway or a node.  The HTTP library is injected
(``treq`` itself, or a ``treq.testing.StubTreq`` in tests).
"""
from __future__ import annotations

import json
import os
from typing import Any, BinaryIO
from collections.abc import Callable, Iterable
from urllib.parse import quote

import treq
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.web.client import FileBodyProducer
from twisted.web.iweb import IBodyProducer
from zope.interface import implementer

from dim import errors
from dim.client.transfer import ClosableReader

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
              params: dict[str, Any] | None = None, auth: bool = True):
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
            raise errors.Internal(
                f"the gateway answered {path} with something not JSON") from None

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

    def conversations(self, limit: int = 50) -> Deferred[dict[str, Any]]:
        """This user's conversations, newest activity first, with the server's read
        pointers and unread counts: ``{conversations: [{with | group, last, read_seq,
        unread, mentions}]}``."""
        return self._call("GET", "/v1/conversations", params={"limit": limit})

    def conversation_messages(self, with_: str | None = None, group: str | None = None,
                              before: int | None = None, after: int = 0,
                              limit: int = 100) -> Deferred[dict[str, Any]]:
        """One conversation's entries (``with_`` a user or ``group``): after ``after``, or
        with ``before`` the newest ``limit`` below it: ``{messages, last_seq, more}``."""
        params: dict[str, Any] = {"after": after, "limit": limit,
                                  **_conversation(with_, group)}
        if before is not None:
            params["before"] = before
        return self._call("GET", "/v1/messages", params=params)

    def search_messages(self, text: str, with_: str | None = None, group: str | None = None,
                        limit: int = 20) -> Deferred[dict[str, Any]]:
        """This user's messages whose current body contains ``text``, newest first (of one
        conversation when ``with_`` or ``group`` is given): ``{messages}``."""
        params: dict[str, Any] = {"q": text, "limit": limit}
        if with_ is not None or group is not None:
            params.update(_conversation(with_, group))
        return self._call("GET", "/v1/messages/search", params=params)

    def user(self, name: str) -> Deferred[dict[str, Any]]:
        """One user's public record: ``{user, online, ...}``; NotFound if there is none."""
        return self._call("GET", "/v1/users/" + quote(name, safe=""))

    def nodes(self) -> Deferred[dict[str, Any]]:
        """The nodes the gateway knows: ``{nodes: [{id, host, port, connections}]}``."""
        return self._call("GET", "/v1/nodes", auth=False)

    def health(self) -> Deferred[dict[str, Any]]:
        """The gateway's health: ``{status: "ok"}``."""
        return self._call("GET", "/v1/health", auth=False)

    # ------------------------------------------------------------ part 2: people

    def search_users(self, text: str, limit: int = 20) -> Deferred[dict[str, Any]]:
        """Users whose user or display name contains ``text``.

        The answer is ``{users: [{user, name, avatar}]}``."""
        return self._call("GET", "/v1/users", params={"q": text, "limit": limit})

    def profile(self) -> Deferred[dict[str, Any]]:
        """The caller's profile: ``{user, name, status, avatar}``."""
        return self._call("GET", "/v1/profile")

    def update_profile(self, **fields: Any) -> Deferred[dict[str, Any]]:
        """Change any of ``name``, ``status``, ``avatar``: the new profile.

        BadRequest if invalid."""
        unknown = set(fields) - {"name", "status", "avatar"}
        if unknown:
            raise errors.BadRequest(f"not a profile field: {', '.join(sorted(unknown))}")
        return self._call("PUT", "/v1/profile", body=fields)

    def contacts(self) -> Deferred[dict[str, Any]]:
        """Contacts and pending requests.

        The answer is ``{contacts: [{user, name, status, avatar, online, pending}]}``."""
        return self._call("GET", "/v1/contacts")

    def add_contact(self, user: str) -> Deferred[dict[str, Any]]:
        """Ask ``user`` to be a contact (or accept their request): ``{contact}``."""
        return self._call("POST", "/v1/contacts", body={"user": user})

    def remove_contact(self, user: str) -> Deferred[dict[str, Any]]:
        """Remove a contact, or a pending request either way; NotFound if there is none."""
        return self._call("DELETE", "/v1/contacts/" + quote(user, safe=""))

    # ------------------------------------------------------------ part 2: groups

    def create_group(self, name: str, members: Iterable[str] = ()) -> Deferred[dict[str, Any]]:
        """Make a group owned by the caller: ``{group: {id, name, owner, members}}``."""
        return self._call("POST", "/v1/groups", body={"name": name, "members": list(members)})

    def groups(self) -> Deferred[dict[str, Any]]:
        """The caller's groups: ``{groups: [...]}``."""
        return self._call("GET", "/v1/groups")

    def group(self, group_id: str) -> Deferred[dict[str, Any]]:
        """One group of the caller's: ``{group}``; Forbidden if not a member."""
        return self._call("GET", "/v1/groups/" + quote(group_id, safe=""))

    def rename_group(self, group_id: str, name: str) -> Deferred[dict[str, Any]]:
        """Rename a group (owner only): ``{group}``."""
        return self._call("PUT", "/v1/groups/" + quote(group_id, safe=""), body={"name": name})

    def add_members(self, group_id: str, users: Iterable[str]) -> Deferred[dict[str, Any]]:
        """Add members (owner only): ``{group}``."""
        return self._call("POST", f"/v1/groups/{quote(group_id, safe='')}/members",
                          body={"users": list(users)})

    def remove_member(self, group_id: str, user: str) -> Deferred[dict[str, Any]]:
        """Remove a member (the owner removes anyone, a member itself)."""
        return self._call("DELETE", f"/v1/groups/{quote(group_id, safe='')}/members/"
                          + quote(user, safe=""))

    # ------------------------------------------------------------ part 2: files

    @inlineCallbacks
    def upload(self, source: BinaryIO | ClosableReader, name: str,
               mime: str = "application/octet-stream",
               progress: Progress | None = None,
               cooperator: Any = None):
        """Upload the bytes of ``source`` as a file named ``name``, streamed from disk.

        ``progress(done, total)`` is called as bytes go out.  Returns the gateway's
        ``{id, name, size, mime, sha256}``; TooLarge over the gateway's limit.
        """
        headers = self._headers(True)
        headers["Content-Type"] = mime
        producer = ProgressBodyProducer(source, progress, cooperator)
        kwargs: dict[str, Any] = {**self.request_options, "headers": headers, "data": producer,
                                  "params": {"name": name}}
        response = yield self._treq.request("POST", self._url("/v1/files"), **kwargs)
        content = yield self._treq.content(response)
        if response.code >= 400:
            raise error_from_answer(response.code, content)
        try:
            answer = json.loads(content)
            return answer["file"]
        except (ValueError, KeyError, TypeError):
            raise errors.Internal("the gateway's upload answer has no file") from None

    @inlineCallbacks
    def download(self, file_id: str, path: str, progress: Progress | None = None):
        """Fetch file ``file_id`` into ``path``, resuming a partial ``path`` with Range.

        ``progress(done, total)`` is called as bytes arrive (``total`` is 0 when unknown).
        Returns the number of bytes in ``path`` at the end.
        """
        have = os.path.getsize(path) if os.path.exists(path) else 0
        headers = self._headers(True)
        if have:
            headers["Range"] = f"bytes={have}-"
        kwargs: dict[str, Any] = {**self.request_options, "headers": headers, "unbuffered": True}
        response = yield self._treq.request("GET", self._url("/v1/files/" + quote(file_id,
                                                                                  safe="")),
                                            **kwargs)
        if response.code == 416 and have:
            # The partial file is already whole (or longer than the file): start over once.
            yield self._treq.content(response)
            total = _range_total(response)
            if total is not None and total == have:
                if progress is not None:
                    progress(have, have)
                return have
            os.unlink(path)
            result = yield self.download(file_id, path, progress)
            return result
        if response.code >= 400:
            content = yield self._treq.content(response)
            raise error_from_answer(response.code, content)
        if response.code == 206:
            start = have
            total = _range_total(response) or 0
        else:
            start = 0
            # Content-Length is a connection header to twisted.web's client: it is the length.
            total = response.length if isinstance(response.length, int) else 0
        done = [start]
        with open(path, "ab" if start else "wb") as out:
            def write(chunk: bytes) -> None:
                out.write(chunk)
                done[0] += len(chunk)
                if progress is not None:
                    progress(done[0], total)
            if progress is not None:
                progress(start, total)
            yield self._treq.collect(response, write)
        return done[0]


Progress = Callable[[int, int], None]


def _conversation(with_: str | None, group: str | None) -> dict[str, str]:
    """The query naming one conversation; BadRequest unless exactly one is given."""
    if (with_ is None) == (group is None):
        raise errors.BadRequest("a conversation is one of a user and a group")
    return {"with": with_} if with_ is not None else {"group": str(group)}


def _range_total(response: Any) -> int | None:
    """The full size from a ``Content-Range: bytes a-b/total`` (or ``*/total``) header."""
    values = response.headers.getRawHeaders(b"content-range")
    if not values:
        return None
    _, _, total = values[0].decode("latin-1").rpartition("/")
    return int(total) if total.isdigit() else None


class _CountingConsumer:
    """Passes writes to the real consumer, counting the bytes for a progress callback."""

    def __init__(self, consumer: Any, owner: ProgressBodyProducer) -> None:
        self.consumer, self.owner = consumer, owner

    def write(self, data: bytes) -> None:
        self.consumer.write(data)
        self.owner._wrote(len(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.consumer, name)


@implementer(IBodyProducer)
class ProgressBodyProducer:
    """A request body read from a file a chunk at a time, telling ``progress`` how far it got.

    Built on twisted.web's FileBodyProducer, so the file is never read whole into memory and
    the transport's backpressure pauses it; ``cooperator`` is injectable for tests.
    """

    def __init__(self, source: BinaryIO | ClosableReader, progress: Progress | None = None,
                 cooperator: Any = None, read_size: int = 64 * 1024) -> None:
        kwargs: dict[str, Any] = {"readSize": read_size}
        if cooperator is not None:
            kwargs["cooperator"] = cooperator
        self._inner = FileBodyProducer(source, **kwargs)
        self.length = self._inner.length
        self.progress = progress
        self.sent = 0

    def _wrote(self, n: int) -> None:
        self.sent += n
        if self.progress is not None:
            self.progress(self.sent, self.length if isinstance(self.length, int) else 0)

    def startProducing(self, consumer: Any) -> Deferred[None]:
        """Write the file to ``consumer``; fires when all of it was written."""
        return self._inner.startProducing(_CountingConsumer(consumer, self))

    def pauseProducing(self) -> None:
        """The transport is full: stop reading for now."""
        self._inner.pauseProducing()

    def resumeProducing(self) -> None:
        """The transport drained: carry on."""
        self._inner.resumeProducing()

    def stopProducing(self) -> None:
        """The request is abandoned: stop for good."""
        self._inner.stopProducing()
