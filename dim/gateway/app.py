"""The gateway's HTTP API: accounts, tokens, node routing, the inbox over HTTP, and (part 2)
people, groups and files.

:class:`Gateway` is a Klein application in the "non-global state" pattern: ``app`` is a class
attribute, and the store, token authority, password hasher, registries, file storage and
pusher are given to ``__init__``.  Serve it with ``gateway.site()`` (uploads stream to disk);
``Site(gateway.resource())`` works too but lets twisted.web buffer upload bodies first.

The routes of part 2 live in :mod:`dim.gateway.people`, :mod:`dim.gateway.groups` and
:mod:`dim.gateway.files` as functions of (gateway, request, ...); the class below lists every
route of the one Klein app.  Every failure is a :class:`dim.errors.DimError` raised by a route
and turned into an HTTP status and ``{"error": {"code", "message"}}`` in one place
(:meth:`Gateway.domain_error`; an upload refused before its body is read uses the same
:func:`dim.gateway.errors.error_json`).  A 429 carries ``Retry-After``.

The operator's limits (:class:`dim.gateway.limits.GatewayLimits`) throttle logins and
registrations here, and bound requests and connections in the Site of :meth:`Gateway.site`
and :meth:`Gateway.http_factory`.
"""
from __future__ import annotations

import functools
from typing import Any, TypeVar, cast
from collections.abc import Callable

import msgspec
from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Request, Site
from werkzeug.exceptions import HTTPException

from dim.cluster.interface import INodeRegistry, IPusher, ISessionRegistry, NodeInfo
from dim.errors import (
    BadRequest,
    Conflict,
    DimError,
    Forbidden,
    RateLimited,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from dim.files import FileStorage
from dim.gateway import conversations, files, groups, metrics, openapi, people
from dim.gateway.conversations import message_dict
from dim.gateway.errors import error_document
from dim.gateway.fields import USER_NAME, query_int
from dim.gateway.limits import (
    GatewayLimits,
    LoginThrottle,
    TokenBuckets,
    address_key,
    client_address,
)
from dim.gateway.routing import STRATEGIES, RoutingStrategy
from dim.gateway.uploads import GatewayHTTPFactory, HTTPSite, StreamingRequestFactory
from dim.passwords import PasswordHasher
from dim.protocol import frames as F
from dim.store.interface import IStore
from dim.tokens import TokenAuthority

MIN_PASSWORD = 8
MAX_PASSWORD = 256
DEFAULT_MESSAGES_LIMIT = 100
MAX_MESSAGES_LIMIT = 1000
#: The largest upload, by default.
DEFAULT_MAX_FILE_SIZE = 20 * 1024 * 1024
#: The most members a group may have, by default.
DEFAULT_MAX_GROUP_MEMBERS = 500
#: The largest JSON request body the gateway reads.
MAX_JSON_BODY = 64 * 1024
#: The one message of a failed login, whether the user is unknown or the password wrong.
LOGIN_FAILED = "unknown user or wrong password"

JSON_CONTENT_TYPE = b"application/json"

R = TypeVar("R")


def node_dict(node: NodeInfo) -> dict[str, Any]:
    """A node as the gateway's answers show it to clients (``tls`` only when true)."""
    out: dict[str, Any] = {"id": node.id, "host": node.host, "port": node.port}
    if node.tls:
        out["tls"] = True
    return out


def _measured(route: str) -> Callable[[Callable[..., R]], Callable[..., R]]:
    """Count a route's answers and their latency by status in :mod:`dim.gateway.metrics`."""

    def decorate(f: Callable[..., R]) -> Callable[..., R]:
        @functools.wraps(f)
        def measured(self: Gateway, request: IRequest, *args: Any, **kwargs: Any) -> R:
            start = self.clock.seconds()
            web: Request = cast(Request, request)

            def finished(_: object) -> None:
                metrics.observe(route, web.code, self.clock.seconds() - start)

            web.notifyFinish().addBoth(finished)
            return f(self, request, *args, **kwargs)

        return measured

    return decorate


def _routed(app: Klein, method: str, url: str, name: str, metric: str,
            f: Callable[..., R]) -> Callable[..., R]:
    """Make ``f`` (a function of the gateway, the request and the URL's arguments) the
    endpoint ``name`` of ``app`` for ``method url``, measured as ``metric``."""
    endpoint: Any = _measured(metric)(f)
    return cast(Callable[..., R], app.route(url, methods=[method], endpoint=name)(endpoint))


class Gateway:
    """The HTTP gateway of DIM: accounts, routing, messages, people, groups, files, nodes.

    ``routing`` names a strategy of :data:`dim.gateway.routing.STRATEGIES`; ``clock``
    (IReactorTime) times requests and stamps new records.
    ``files`` is where uploads are kept (None: the file calls answer 503);
    ``max_file_size`` bounds an upload in bytes; ``max_group_members`` bounds a group (its
    owner included); ``pusher`` (an :class:`dim.cluster.interface.IPusher`) carries ``notify``
    frames to users' sessions (None: nothing is pushed).  ``limits`` are the operator's
    limits on logins, registrations and HTTP connections (:class:`GatewayLimits`).
    """

    app = Klein()
    log = Logger()

    def __init__(self, store: IStore, tokens: TokenAuthority, passwords: PasswordHasher,
                 nodes: INodeRegistry, sessions: ISessionRegistry,
                 routing: str = "round_robin", *, clock: Any,
                 files: FileStorage | None = None,
                 max_file_size: int = DEFAULT_MAX_FILE_SIZE,
                 max_group_members: int = DEFAULT_MAX_GROUP_MEMBERS,
                 pusher: IPusher | None = None,
                 limits: GatewayLimits | None = None,
                 health: Callable[[], list[str]] | None = None) -> None:
        if routing not in STRATEGIES:
            raise ValueError(f"unknown routing strategy {routing!r}; "
                             f"one of {', '.join(sorted(STRATEGIES))}")
        if max_file_size < 1 or max_group_members < 1:
            raise ValueError("max_file_size and max_group_members must be 1 or more")
        self.store = store
        self.tokens = tokens
        self.passwords = passwords
        self.nodes = nodes
        self.sessions = sessions
        self.routing: RoutingStrategy = STRATEGIES[routing]()
        self.clock = clock
        self.files = files
        self.max_file_size = max_file_size
        self.max_group_members = max_group_members
        self.pusher = pusher
        self.limits = limits if limits is not None else GatewayLimits()
        self.logins = LoginThrottle(self.clock, self.limits)
        self.registrations = TokenBuckets(self.clock, self.limits.registrations_burst,
                                          self.limits.registrations_per_hour)
        if hasattr(self.passwords, "per_client"):
            self.passwords.per_client = self.limits.hash_share
        #: What this process finds wrong with the services it uses (for /v1/health).
        self.health_problems = health

    def resource(self) -> IResource:
        """The Twisted Web resource serving this gateway (``Site(gateway.resource())``)."""
        return self.app.resource()

    def site(self, **kwargs: Any) -> Site:
        """A Site serving this gateway: uploads stream to file storage as they arrive once
        their token is checked, other bodies are capped at :data:`MAX_JSON_BODY` while they
        are read, and every request must be in within the limits' deadlines (keyword
        arguments go to :class:`twisted.web.server.Site`, e.g. ``reactor``)."""
        kwargs.setdefault("timeout", self.limits.idle_timeout)
        return HTTPSite(self.resource(), self.limits,
                        requestFactory=StreamingRequestFactory(
                            self.files, self.max_file_size, self.tokens.verify, MAX_JSON_BODY),
                        **kwargs)

    def http_factory(self, **kwargs: Any) -> GatewayHTTPFactory:
        """What a port should listen with: :meth:`site` behind the cap on concurrent
        connections per client address."""
        return GatewayHTTPFactory(self.site(**kwargs), self.limits)

    def client(self, request: IRequest) -> str:
        """The request's client, as the limits count it: its address (see
        :func:`dim.gateway.limits.client_address`), or its /64 for IPv6."""
        return address_key(client_address(request, self.limits.trusted_proxies))

    def now_ms(self) -> int:
        """The clock's time in milliseconds since the epoch."""
        return int(self.clock.seconds() * 1000)

    def announce_offline(self, user: str) -> defer.Deferred[None]:
        """Tell the mutual contacts of ``user`` that it went offline.

        Nodes announce their own sessions coming and going; the gateway does it for users
        whose last session was on a node that died and so could not tell anyone.
        """
        d = defer.maybeDeferred(self.store.contacts, user)
        d.addCallback(lambda contacts: self.notify(
            {c.user: [F.Presence(user=user, online=False)]
             for c in contacts if c.pending is None}))
        d.addErrback(lambda f: self.log.failure("telling {user}'s contacts of presence failed",
                                                f, user=user))
        return d

    def notify(self, targets: dict[str, list[F._Frame]]) -> None:
        """Push frames to users' sessions through the pusher, if any, without waiting; a
        failure is logged (notifications are hints: the HTTP API has the state)."""
        if self.pusher is None or not targets:
            return
        d = defer.maybeDeferred(self.pusher.push, targets)
        d.addErrback(lambda f: self.log.failure("pushing {count} notification(s) failed", f,
                                                count=len(targets)))

    # ------------------------------------------------------------ helpers for routes

    def json_body(self, request: IRequest, required: bool = True) -> dict[str, Any]:
        """The request body as a JSON object; BadRequest when it is not one.

        With ``required=False`` an empty body reads as ``{}``.
        """
        raw = request.content.read(MAX_JSON_BODY + 1) if request.content is not None else b""
        if len(raw) > MAX_JSON_BODY:
            raise TooLarge(f"the request body is over {MAX_JSON_BODY} bytes")
        if not raw.strip():
            if required:
                raise BadRequest("a JSON object body is required")
            return {}
        try:
            body = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            raise BadRequest("the body is not valid JSON") from None
        except RecursionError:
            raise BadRequest("the body's JSON is nested too deeply") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    def bearer_token(self, request: IRequest) -> str:
        """The token of the request's ``Authorization: Bearer <token>`` header;
        Unauthorized when there is none."""
        header = request.getHeader(b"authorization")
        if not header:
            raise Unauthorized("missing Authorization: Bearer token")
        scheme, _, token = header.decode("latin-1").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("the Authorization header must be: Bearer <token>")
        return token

    async def authenticated_user(self, request: IRequest) -> str:
        """The user of the request's bearer token; Unauthorized without a valid one."""
        return await self.tokens.verify(self.bearer_token(request))

    def respond(self, request: IRequest, body: Any, status: int = 200) -> bytes:
        """Set the status and JSON content type, and encode ``body``."""
        request.setResponseCode(status)
        request.setHeader(b"content-type", JSON_CONTENT_TYPE)
        return msgspec.json.encode(body)

    def choose_node(self, user: str, exclude: frozenset[str] = frozenset()) -> NodeInfo | None:
        """A live node for ``user`` by the routing strategy, leaving out ``exclude``."""
        live = [n for n in self.nodes.nodes() if n.id not in exclude]
        return self.routing.choose(live, user)

    # ------------------------------------------------------------ errors, in one place

    @app.handle_errors(DimError)
    def domain_error(self, request: IRequest, failure: Failure) -> bytes:
        """A DIM error: its status and ``{"error": {"code", "message"}}``."""
        err = cast(DimError, failure.value)
        retry_after = getattr(err, "retry_after", None)
        if err.status == 429:
            request.setHeader(b"retry-after", str(int(retry_after or 1)).encode("ascii"))
        return self.respond(request, error_document(err.code, err.message), err.status)

    @app.handle_errors(HTTPException)
    def http_error(self, request: IRequest, failure: Failure) -> bytes:
        """No such route (404) or method (405), in the same JSON shape."""
        err = cast(HTTPException, failure.value)
        code = "not_found" if err.code == 404 else "bad_request"
        message = "no such endpoint" if err.code == 404 else (err.description or err.name)
        return self.respond(request, error_document(code, message), err.code or 500)

    @app.handle_errors(Exception)
    def unexpected_error(self, request: IRequest, failure: Failure) -> bytes:
        """Anything else is a bug: log it and answer 500 ``internal``."""
        self.log.failure("gateway request {method} {uri} failed", failure,
                         method=request.method, uri=request.uri)
        return self.respond(request, error_document("internal", "internal server error"), 500)

    # ------------------------------------------------------------ routes

    @app.route("/v1/register", methods=["POST"])
    @_measured("register")
    async def register(self, request: IRequest) -> bytes:
        """Create an account: 201 ``{user}``; 409 taken; 400 invalid; 429 over the
        registrations of the client's address."""
        address = self.client(request)
        self.registrations.take(address, "registrations")
        body = self.json_body(request)
        user, password = body.get("user"), body.get("password")
        if not isinstance(user, str) or not USER_NAME.fullmatch(user):
            raise BadRequest("user must be 1-32 of A-Z a-z 0-9 _ . -")
        if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
            raise BadRequest(f"password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
        if await self.store.user_exists(user):
            raise Conflict(f"the user name {user} is taken")
        password_hash = await self.passwords.hash(password, client=address)
        await self.store.create_user(user, password_hash, int(self.clock.seconds() * 1000))
        return self.respond(request, {"user": user}, 201)

    @app.route("/v1/login", methods=["POST"])
    @_measured("login")
    async def login(self, request: IRequest) -> bytes:
        """Check a password and issue a token: 200 ``{token, user, expires, node}``; 401.

        ``node`` is where the client should connect, chosen by the routing strategy; it is
        null when no node is live (the token is still good: ask ``/v1/route`` later).
        An unknown user costs the same password verification as a wrong password, and both
        get the same answer.  429 with ``Retry-After`` while the account or the client's
        address must wait after failures (see :class:`dim.gateway.limits.LoginThrottle`).
        """
        address = self.client(request)
        body = self.json_body(request)
        user, password = body.get("user"), body.get("password")
        if not isinstance(user, str) or not isinstance(password, str):
            raise BadRequest("user and password must be strings")
        try:
            keys = self.logins.admit([f"user:{user[:64]}", f"addr:{address}"])
        except RateLimited:
            metrics.LOGINS.labels(outcome="throttled").inc()
            raise
        ok: bool | None = None
        try:
            ok = await self.check_password(user, password, address)
        finally:
            self.logins.done(keys, ok)
        if not ok:
            metrics.LOGINS.labels(outcome="failed").inc()
            raise Unauthorized(LOGIN_FAILED)
        epoch, _ = await self.store.token_epoch(user)
        token, expires = self.tokens.issue(user, epoch)
        node = self.choose_node(user)
        metrics.LOGINS.labels(outcome="ok").inc()
        return self.respond(request, {"token": token, "user": user, "expires": expires,
                                      "node": node_dict(node) if node else None})

    async def check_password(self, user: str, password: str, address: str) -> bool:
        """Whether ``password`` is the password of ``user`` (an unknown user costs the same
        work and is False); rehashes a good password made with old parameters."""
        password_hash = None
        if USER_NAME.fullmatch(user) and len(password) <= MAX_PASSWORD:
            password_hash = await self.store.get_password_hash(user)
        if password_hash is None:
            await self.passwords.verify_dummy(password, client=address)
            return False
        if not await self.passwords.verify(password_hash, password, client=address):
            return False
        if self.passwords.needs_rehash(password_hash):
            try:
                await self.store.set_password_hash(
                    user, await self.passwords.hash(password, client=address))
            except Exception:
                self.log.failure("rehashing the password of {user} failed", user=user)
        return True

    @app.route("/v1/password", methods=["PUT"])
    @_measured("password")
    async def change_password(self, request: IRequest) -> bytes:
        """Change the caller's password (``old``, ``new``) and revoke every other token of
        the caller: 200 ``{}``; 400 invalid; 401; 403 wrong old password; 429 throttled."""
        user = await self.authenticated_user(request)
        token = self.bearer_token(request)
        address = self.client(request)
        body = self.json_body(request)
        old, new = body.get("old"), body.get("new")
        if not isinstance(old, str):
            raise BadRequest("old must be the current password")
        if not isinstance(new, str) or not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
            raise BadRequest(f"new must be {MIN_PASSWORD}-{MAX_PASSWORD} characters")
        keys = self.logins.admit([f"user:{user}", f"addr:{address}"])
        ok: bool | None = None
        try:
            ok = await self.check_password(user, old, address)
        finally:
            self.logins.done(keys, ok)
        if not ok:
            raise Forbidden("the old password is wrong")
        await self.store.set_password_hash(user, await self.passwords.hash(new, client=address))
        await self.tokens.revoke_others(token)
        return self.respond(request, {})

    @app.route("/v1/logout", methods=["POST"])
    @_measured("logout")
    async def logout(self, request: IRequest) -> bytes:
        """Revoke the request's token: 200 ``{}``; 401."""
        await self.authenticated_user(request)
        await self.tokens.revoke(self.bearer_token(request))
        return self.respond(request, {})

    @app.route("/v1/route", methods=["POST"])
    @_measured("route")
    async def route(self, request: IRequest) -> bytes:
        """A node to connect to, leaving out ``exclude``: 200 ``{node}``; 401; 503."""
        user = await self.authenticated_user(request)
        body = self.json_body(request, required=False)
        exclude = body.get("exclude", [])
        if exclude is None:
            exclude = []
        if not isinstance(exclude, list) or not all(isinstance(e, str) for e in exclude):
            raise BadRequest("exclude must be a list of node ids")
        node = self.choose_node(user, frozenset(exclude))
        if node is None:
            raise Unavailable("no node is available")
        return self.respond(request, {"node": node_dict(node)})

    @app.route("/v1/messages", methods=["GET"])
    @_measured("messages")
    async def messages(self, request: IRequest) -> bytes:
        """The caller's inbox after ``after``: 200 ``{messages, last_seq, more}``; 401; 400.

        ``limit`` defaults to 100 and is clamped to 1000.  With ``with`` or ``group``, only
        that conversation's entries; with ``before``, the newest ``limit`` entries below it
        (in seq order), and ``more`` says whether older ones remain.
        """
        user = await self.authenticated_user(request)
        after = query_int(request, "after", 0)
        limit = query_int(request, "limit", DEFAULT_MESSAGES_LIMIT)
        before = query_int(request, "before", -1) if request.args.get(b"before") else None
        conv = conversations.query_conversation(request)
        if after < 0:
            raise BadRequest("after must be 0 or more")
        if limit < 1:
            raise BadRequest("limit must be 1 or more")
        if before is not None and before < 1:
            raise BadRequest("before must be 1 or more")
        limit = min(limit, MAX_MESSAGES_LIMIT)
        if conv is not None:
            entries, more = await self.store.fetch_conversation(user, conv, after, before,
                                                                limit)
            last_seq = await self.store.last_seq(user)
        elif before is not None:
            start = max(after, before - 1 - limit)
            entries, last_seq = await self.store.fetch(user, start, max(before - 1 - start, 0))
            more = start > after and bool(entries)
        else:
            entries, last_seq = await self.store.fetch(user, after, limit)
            more = bool(entries) and entries[-1].seq < last_seq
        return self.respond(request, {"messages": [message_dict(e) for e in entries],
                                      "last_seq": last_seq, "more": more})

    # ------------------------------------------------------------ people (dim.gateway.people)

    search_messages = _routed(app, "GET", "/v1/messages/search", "search_messages",
                              "messages_search", conversations.search)
    list_conversations = _routed(app, "GET", "/v1/conversations", "conversations",
                                 "conversations", conversations.conversations)

    search_users = _routed(app, "GET", "/v1/users", "search_users", "users", people.search)
    user = _routed(app, "GET", "/v1/users/<string:name>", "user", "user", people.user)
    get_profile = _routed(app, "GET", "/v1/profile", "get_profile", "profile",
                          people.get_profile)
    put_profile = _routed(app, "PUT", "/v1/profile", "put_profile", "profile_update",
                          people.put_profile)
    list_contacts = _routed(app, "GET", "/v1/contacts", "list_contacts", "contacts",
                            people.list_contacts)
    add_contact = _routed(app, "POST", "/v1/contacts", "add_contact", "contact_add",
                          people.add_contact)
    remove_contact = _routed(app, "DELETE", "/v1/contacts/<string:name>", "remove_contact",
                             "contact_remove", people.remove_contact)

    # ------------------------------------------------------------ groups (dim.gateway.groups)

    create_group = _routed(app, "POST", "/v1/groups", "create_group", "group_create",
                           groups.create)
    list_groups = _routed(app, "GET", "/v1/groups", "list_groups", "groups",
                          groups.list_groups)
    show_group = _routed(app, "GET", "/v1/groups/<string:group_id>", "show_group", "group",
                         groups.show)
    rename_group = _routed(app, "PUT", "/v1/groups/<string:group_id>", "rename_group",
                           "group_rename", groups.rename)
    add_group_members = _routed(app, "POST", "/v1/groups/<string:group_id>/members",
                                "add_group_members", "group_add", groups.add_members)
    remove_group_member = _routed(app, "DELETE",
                                  "/v1/groups/<string:group_id>/members/<string:name>",
                                  "remove_group_member", "group_remove", groups.remove_member)

    # ------------------------------------------------------------ files (dim.gateway.files)

    upload_file = _routed(app, "POST", "/v1/files", "upload_file", "file_upload", files.upload)
    download_file = _routed(app, "GET", "/v1/files/<string:file_id>", "download_file",
                            "file_download", files.download)

    # ------------------------------------------------------------ nodes, health, metrics

    @app.route("/v1/nodes", methods=["GET"])
    @_measured("nodes")
    def list_nodes(self, request: IRequest) -> bytes:
        """The live nodes and their connection counts: 200 ``{nodes}``."""
        return self.respond(request, {"nodes": [
            {**node_dict(n), "connections": n.connections}
            for n in sorted(self.nodes.nodes(), key=lambda n: n.id)]})

    @app.route("/v1/health", methods=["GET"])
    @_measured("health")
    def health(self, request: IRequest) -> bytes:
        """Liveness: 200 ``{status: "ok"}``, or 200 ``{status: "degraded", problems}`` when
        this gateway or a node reports trouble with Kafka or ZooKeeper (each node's in its
        znode, so a node that lost ZooKeeper shows once it is back, or by its absence)."""
        problems = list(self.health_problems()) if self.health_problems is not None else []
        for node in sorted(self.nodes.nodes(), key=lambda n: n.id):
            problems.extend(f"node {node.id}: {problem}" for problem in node.problems)
        if problems:
            return self.respond(request, {"status": "degraded", "problems": problems})
        return self.respond(request, {"status": "ok"})

    @app.route("/v1/openapi.json", methods=["GET"])
    def openapi_document(self, request: IRequest) -> bytes:
        """The OpenAPI 3 description of this API (unauthenticated)."""
        return self.respond(request, openapi.DOCUMENT)

    @app.route("/metrics", methods=["GET"])
    def prometheus(self, request: IRequest) -> bytes:
        """Prometheus exposition of the default registry."""
        request.setHeader(b"content-type", metrics.CONTENT_TYPE.encode("ascii"))
        return metrics.exposition()
