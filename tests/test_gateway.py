"""Tests of :mod:`dim.gateway.app`: every call of the gateway's HTTP API through StubTreq."""
from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer

from dim.cluster.interface import NodeInfo
from dim.gateway import metrics
from dim.gateway.app import Gateway
from dim.tokens import TokenAuthority
from tests.fakes.gateway import GatewayTestCase, NOW


class RegisterTests(GatewayTestCase):
    """POST /v1/register: 201, 409, 400."""

    def test_created(self) -> None:
        """A valid registration answers 201 {user} as JSON and stores an Argon2id hash."""
        answer = self.register()
        self.assertEqual(answer.status, 201)
        self.assertEqual(answer.content_type, "application/json")
        self.assertEqual(answer.json, {"user": "alice"})
        stored = self.successResultOf(self.store.get_password_hash("alice"))
        self.assertTrue(stored.startswith("$argon2id$"))
        self.assertNotIn("password1", stored)

    def test_taken(self) -> None:
        """Registering a taken name answers 409 conflict."""
        self.register()
        self.assertError(self.register(password="different1"), 409, "conflict")

    def test_user_lengths(self) -> None:
        """User names of 1 and 32 characters are accepted; 0 and 33 are 400."""
        self.assertEqual(self.register("a").status, 201)
        self.assertEqual(self.register("b" * 32).status, 201)
        self.assertError(self.register(""), 400, "bad_request")
        self.assertError(self.register("c" * 33), 400, "bad_request")

    def test_user_chars(self) -> None:
        """Letters, digits, _ . - are allowed; anything else is 400."""
        self.assertEqual(self.register("Az09_.-").status, 201)
        for bad in ("al ice", "al/ice", "alice!", "ålice", "al@ice", "alice\n", "\u0430lice"):
            self.assertError(self.register(bad), 400, "bad_request")

    def test_password_lengths(self) -> None:
        """Passwords of 8 and 256 characters are accepted; 7 and 257 are 400."""
        self.assertEqual(self.register("p8", "x" * 8).status, 201)
        self.assertEqual(self.register("p256", "x" * 256).status, 201)
        self.assertError(self.register("p7", "x" * 7), 400, "bad_request")
        self.assertError(self.register("p257", "x" * 257), 400, "bad_request")
        self.assertFalse(self.successResultOf(self.store.user_exists("p7")))

    def test_password_counts_characters(self) -> None:
        """Password length is in characters, not bytes: 8 non-ASCII characters pass."""
        self.assertEqual(self.register("uni", "\u00e9" * 8).status, 201)

    def test_wrong_types(self) -> None:
        """Missing fields and fields of the wrong type are 400."""
        for body in ({}, {"user": "alice"}, {"password": "password1"},
                     {"user": 5, "password": "password1"},
                     {"user": "alice", "password": 12345678},
                     {"user": ["alice"], "password": "password1"}):
            self.assertError(self.call("POST", "/v1/register", body), 400, "bad_request")

    def test_not_an_object(self) -> None:
        """A body that is JSON but not an object is 400."""
        for body in ([], "alice", 1, None):
            self.assertError(self.call("POST", "/v1/register", raw=json.dumps(body).encode()),
                             400, "bad_request")

    def test_bad_json(self) -> None:
        """A body that is not JSON, or is empty, is 400."""
        for raw in (b"{", b"user=alice", b"\xff\xfe", b""):
            self.assertError(self.call("POST", "/v1/register", raw=raw), 400, "bad_request")

    def test_huge_body(self) -> None:
        """A body over 64 KiB is refused with 413 too_large."""
        raw = json.dumps({"user": "alice", "password": "x" * 70000}).encode()
        self.assertError(self.call("POST", "/v1/register", raw=raw), 413, "too_large")

    def test_wrong_method(self) -> None:
        """GET on a POST-only call is 405 with the JSON error shape."""
        answer = self.call("GET", "/v1/register")
        self.assertEqual(answer.status, 405)
        self.assertEqual(answer.content_type, "application/json")
        self.assertIn("error", answer.json)

    def test_unknown_path(self) -> None:
        """An unknown path is 404 not_found in the JSON error shape."""
        self.assertError(self.call("GET", "/v1/nothing-here"), 404, "not_found")


class LoginTests(GatewayTestCase):
    """POST /v1/login: 200 with token, expiry and node; 401."""

    def test_ok(self) -> None:
        """A right password answers 200 {token, user, expires, node}."""
        self.register()
        answer = self.call("POST", "/v1/login", {"user": "alice", "password": "password1"})
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.content_type, "application/json")
        self.assertEqual(set(answer.json), {"token", "user", "expires", "node"})
        self.assertEqual(answer.json["user"], "alice")
        self.assertEqual(answer.json["expires"], NOW + 3600)
        self.assertIsInstance(answer.json["expires"], int)
        self.assertEqual(answer.json["node"], {"id": "node-a", "host": "10.0.0.1", "port": 7001})
        self.assertEqual(self.successResultOf(self.tokens.verify(answer.json["token"])),
                         "alice")

    def test_wrong_password(self) -> None:
        """A wrong password answers 401 unauthorized."""
        self.register()
        answer = self.call("POST", "/v1/login", {"user": "alice", "password": "password2"})
        self.assertError(answer, 401, "unauthorized")

    def test_unknown_user_same_answer(self) -> None:
        """An unknown user gets the same 401 as a wrong password, after the same work."""
        self.register()
        wrong = self.call("POST", "/v1/login", {"user": "alice", "password": "password2"})
        calls = len(self.pool.calls)
        unknown = self.call("POST", "/v1/login", {"user": "bob", "password": "password2"})
        self.assertError(unknown, 401, "unauthorized")
        self.assertEqual(unknown.json, wrong.json)
        self.assertEqual(len(self.pool.calls), calls + 1)

    def test_invalid_name_is_401(self) -> None:
        """A name no one could have registered is just an unknown user: 401."""
        for user in ("", "x" * 33, "bad name"):
            self.assertError(self.call("POST", "/v1/login",
                                       {"user": user, "password": "password1"}),
                             401, "unauthorized")

    def test_bad_body(self) -> None:
        """Missing fields, wrong types and bad JSON are 400."""
        self.assertError(self.call("POST", "/v1/login", {"user": "alice"}), 400, "bad_request")
        self.assertError(self.call("POST", "/v1/login", {"user": 1, "password": "x"}),
                         400, "bad_request")
        self.assertError(self.call("POST", "/v1/login", raw=b"[1]"), 400, "bad_request")
        self.assertError(self.call("POST", "/v1/login", raw=b"nope"), 400, "bad_request")

    def test_no_node(self) -> None:
        """With no live node, login still succeeds with node null."""
        self.register()
        self.nodes.remove("node-a")
        self.nodes.remove("node-b")
        answer = self.call("POST", "/v1/login", {"user": "alice", "password": "password1"})
        self.assertEqual(answer.status, 200)
        self.assertIsNone(answer.json["node"])

    def test_rehash(self) -> None:
        """A hash made with other parameters is replaced on a successful login."""
        self.register()
        import argon2
        old = argon2.PasswordHasher(time_cost=2, memory_cost=16, parallelism=1).hash(
            "password1")
        self.successResultOf(self.store.set_password_hash("alice", old))
        answer = self.call("POST", "/v1/login", {"user": "alice", "password": "password1"})
        self.assertEqual(answer.status, 200)
        new = self.successResultOf(self.store.get_password_hash("alice"))
        self.assertNotEqual(new, old)
        self.assertFalse(self.passwords.needs_rehash(new))


class AuthTests(GatewayTestCase):
    """Authenticated calls need a valid Bearer token."""

    AUTHENTICATED = [("POST", "/v1/route"), ("GET", "/v1/messages"),
                     ("GET", "/v1/users/alice"), ("POST", "/v1/logout")]

    def test_missing_header(self) -> None:
        """Every authenticated call without Authorization is 401 unauthorized."""
        self.register()
        for method, path in self.AUTHENTICATED:
            self.assertError(self.call(method, path), 401, "unauthorized")

    def test_bad_scheme(self) -> None:
        """An Authorization header that is not Bearer <token> is 401."""
        token = self.login()
        for value in (f"Basic {token}", "Bearer", "Bearer ", token):
            answer = self.call("GET", "/v1/messages", headers={"Authorization": value})
            self.assertError(answer, 401, "unauthorized")

    def test_scheme_case(self) -> None:
        """The Bearer scheme is case-insensitive."""
        token = self.login()
        answer = self.call("GET", "/v1/messages", headers={"Authorization": f"bearer {token}"})
        self.assertEqual(answer.status, 200)

    def test_bad_token(self) -> None:
        """A garbage or forged token is 401 on every authenticated call."""
        self.register()
        forged = TokenAuthority(b"not-the-secret-but-long-enough-32b", self.store,
                                clock=self.clock).issue("alice")[0]
        for token in ("garbage", forged):
            for method, path in self.AUTHENTICATED:
                self.assertError(self.call(method, path, token=token), 401, "unauthorized")

    def test_expired(self) -> None:
        """A token is good until its expiry by the clock, then 401."""
        token = self.login()
        self.clock.advance(3599)
        self.assertEqual(self.call("GET", "/v1/messages", token=token).status, 200)
        self.clock.advance(1)
        for method, path in self.AUTHENTICATED:
            self.assertError(self.call(method, path, token=token), 401, "unauthorized")

    def test_logout_revokes(self) -> None:
        """POST /v1/logout answers 200 {} and the token is 401 from then on."""
        token = self.login()
        other = self.login()
        answer = self.call("POST", "/v1/logout", token=token)
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json, {})
        for method, path in self.AUTHENTICATED:
            self.assertError(self.call(method, path, token=token), 401, "unauthorized")
        self.assertEqual(self.call("GET", "/v1/messages", token=other).status, 200)

    def test_unauthenticated_calls(self) -> None:
        """nodes and health need no token."""
        self.assertEqual(self.call("GET", "/v1/nodes").status, 200)
        self.assertEqual(self.call("GET", "/v1/health").status, 200)


class RouteTests(GatewayTestCase):
    """POST /v1/route: 200 {node}; 503 when none is left."""

    def test_route(self) -> None:
        """Without a body, route answers one of the live nodes."""
        token = self.login()
        answer = self.call("POST", "/v1/route", token=token)
        self.assertEqual(answer.status, 200)
        self.assertIn(answer.json["node"]["id"], ("node-a", "node-b"))
        self.assertEqual(set(answer.json), {"node"})
        self.assertEqual(set(answer.json["node"]), {"id", "host", "port"})

    def test_exclude(self) -> None:
        """An excluded node is never chosen."""
        token = self.login()
        for _ in range(6):
            answer = self.call("POST", "/v1/route", {"exclude": ["node-a"]}, token=token)
            self.assertEqual(answer.json["node"],
                             {"id": "node-b", "host": "10.0.0.2", "port": 7002})

    def test_exclude_unknown(self) -> None:
        """Excluding an id that is not a live node changes nothing."""
        token = self.login()
        answer = self.call("POST", "/v1/route", {"exclude": ["gone"]}, token=token)
        self.assertEqual(answer.status, 200)

    def test_all_excluded(self) -> None:
        """Excluding every node answers 503 unavailable."""
        token = self.login()
        answer = self.call("POST", "/v1/route", {"exclude": ["node-a", "node-b"]}, token=token)
        self.assertError(answer, 503, "unavailable")

    def test_no_nodes(self) -> None:
        """With no live node, route answers 503 unavailable."""
        token = self.login()
        self.nodes.remove("node-a")
        self.nodes.remove("node-b")
        self.assertError(self.call("POST", "/v1/route", {}, token=token), 503, "unavailable")

    def test_follows_registry(self) -> None:
        """A node that joins the registry is routed to."""
        token = self.login()
        self.nodes.add(NodeInfo(id="node-c", host="10.0.0.3", port=7003))
        answer = self.call("POST", "/v1/route", {"exclude": ["node-a", "node-b"]}, token=token)
        self.assertEqual(answer.json["node"]["id"], "node-c")

    def test_bad_exclude(self) -> None:
        """exclude that is not a list of strings is 400."""
        token = self.login()
        for body in ({"exclude": "node-a"}, {"exclude": [1]}, {"exclude": {"a": 1}}):
            self.assertError(self.call("POST", "/v1/route", body, token=token),
                             400, "bad_request")
        self.assertError(self.call("POST", "/v1/route", raw=b"{", token=token),
                         400, "bad_request")


class ConsistentRouteTests(GatewayTestCase):
    """With consistent hashing, a user gets the same node from login and route."""

    routing = "consistent_hash"

    def test_sticky(self) -> None:
        """login and every route call name the same node for one user."""
        self.register()
        login = self.call("POST", "/v1/login", {"user": "alice", "password": "password1"})
        for _ in range(5):
            answer = self.call("POST", "/v1/route", token=login.json["token"])
            self.assertEqual(answer.json["node"], login.json["node"])

    def test_unknown_strategy(self) -> None:
        """An unknown routing name is refused at construction."""
        self.assertRaises(ValueError, Gateway, self.store, self.tokens, self.passwords,
                          self.nodes, self.sessions, routing="nope", clock=self.clock)


class MessagesTests(GatewayTestCase):
    """GET /v1/messages: the caller's inbox, paged by after and limit."""

    def setUp(self) -> None:
        super().setUp()
        self.token = self.login("alice")
        self.register("bob")
        for i in range(5):
            self.successResultOf(self.store.store_message(
                "bob", f"c{i}", ["alice"], None, f"hello {i}", "text", None, 1000 + i))

    def test_default(self) -> None:
        """Without parameters, all messages come in seq order with msg fields."""
        answer = self.call("GET", "/v1/messages", token=self.token)
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json["last_seq"], 5)
        msgs = answer.json["messages"]
        self.assertEqual([m["seq"] for m in msgs], [1, 2, 3, 4, 5])
        first = msgs[0]
        self.assertEqual(first["type"], "msg")
        self.assertEqual(first["from"], "bob")
        self.assertEqual(first["to"], "alice")
        self.assertEqual(first["id"], "c0")
        self.assertEqual(first["body"], "hello 0")
        self.assertEqual(first["kind"], "text")
        self.assertEqual(first["ts"], 1000)
        self.assertIsInstance(first["mid"], str)
        self.assertIs(first["delivered"], False)
        self.assertIs(first["read"], False)
        self.assertNotIn("group", first)
        self.assertNotIn("file", first)

    def test_paging(self) -> None:
        """after and limit page through the inbox; last_seq stays the newest seq."""
        answer = self.call("GET", "/v1/messages?after=1&limit=2", token=self.token)
        self.assertEqual([m["seq"] for m in answer.json["messages"]], [2, 3])
        self.assertEqual(answer.json["last_seq"], 5)
        self.assertTrue(answer.json["more"])
        answer = self.call("GET", "/v1/messages?after=3&limit=2", token=self.token)
        self.assertEqual([m["seq"] for m in answer.json["messages"]], [4, 5])
        self.assertFalse(answer.json["more"])
        answer = self.call("GET", "/v1/messages?after=5", token=self.token)
        self.assertEqual(answer.json, {"messages": [], "last_seq": 5, "more": False})

    def test_limit_clamped(self) -> None:
        """A limit above 1000 is clamped to 1000 rather than refused."""
        calls: list[tuple[str, int, int]] = []
        fetch = self.store.fetch

        def spy(user: str, after: int, limit: int) -> defer.Deferred[Any]:
            calls.append((user, after, limit))
            return fetch(user, after, limit)

        self.patch(self.store, "fetch", spy)
        self.assertEqual(self.call("GET", "/v1/messages?limit=5000", token=self.token).status,
                         200)
        self.assertEqual(self.call("GET", "/v1/messages", token=self.token).status, 200)
        self.assertEqual(calls, [("alice", 0, 1000), ("alice", 0, 100)])

    def test_bad_numbers(self) -> None:
        """Non-numbers, negative after and limit below 1 are 400."""
        for query in ("after=x", "limit=ten", "after=-1", "limit=0", "limit=-5", "after=1.5",
                      "limit=", "after=99999999999999999999999"):
            self.assertError(self.call("GET", f"/v1/messages?{query}", token=self.token),
                             400, "bad_request")

    def test_marks_and_group_and_file(self) -> None:
        """delivered/read marks show up, and group messages carry group and file."""
        self.successResultOf(self.store.read("alice", 2))
        self.successResultOf(self.store.store_message(
            "bob", "g1", ["alice"], "grp1", "", "image",
            {"id": "f1", "name": "a.png", "size": 3, "mime": "image/png"}, 2000))
        answer = self.call("GET", "/v1/messages?after=1&limit=2", token=self.token)
        m2, m3 = answer.json["messages"]
        self.assertEqual((m2["delivered"], m2["read"]), (True, True))
        self.assertEqual((m3["delivered"], m3["read"]), (False, False))
        answer = self.call("GET", "/v1/messages?after=5", token=self.token)
        (g,) = answer.json["messages"]
        self.assertEqual(g["group"], "grp1")
        self.assertNotIn("to", g)
        self.assertEqual(g["kind"], "image")
        self.assertEqual(g["file"], {"id": "f1", "name": "a.png", "size": 3,
                                     "mime": "image/png"})

    def test_sender_sees_own(self) -> None:
        """The sender's inbox holds its own sent messages too."""
        token = self.login("bob")
        answer = self.call("GET", "/v1/messages", token=token)
        self.assertEqual(len(answer.json["messages"]), 5)
        self.assertEqual(answer.json["messages"][0]["from"], "bob")


class UsersTests(GatewayTestCase):
    """GET /v1/users/NAME: 200 {user, online, name, status, avatar}; 404."""

    def test_offline_then_online(self) -> None:
        """online follows the session registry."""
        token = self.login("alice")
        self.register("bob")
        answer = self.call("GET", "/v1/users/bob", token=token)
        self.assertEqual(answer.status, 200)
        profile = {"user": "bob", "name": "bob", "status": "", "avatar": None}
        self.assertEqual(answer.json, {**profile, "online": False})
        self.successResultOf(self.sessions.add("bob", "s1", "node-a"))
        answer = self.call("GET", "/v1/users/bob", token=token)
        self.assertEqual(answer.json, {**profile, "online": True})

    def test_unknown(self) -> None:
        """An unknown or impossible user name is 404 not_found."""
        token = self.login("alice")
        self.assertError(self.call("GET", "/v1/users/nobody", token=token), 404, "not_found")
        self.assertError(self.call("GET", "/v1/users/" + "x" * 40, token=token),
                         404, "not_found")


class NodesHealthMetricsTests(GatewayTestCase):
    """GET /v1/nodes, /v1/health and /metrics."""

    def test_nodes(self) -> None:
        """nodes lists every live node with its connection count."""
        answer = self.call("GET", "/v1/nodes")
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json, {"nodes": [
            {"id": "node-a", "host": "10.0.0.1", "port": 7001, "connections": 3},
            {"id": "node-b", "host": "10.0.0.2", "port": 7002, "connections": 5}]})
        self.nodes.remove("node-a")
        self.assertEqual([n["id"] for n in self.call("GET", "/v1/nodes").json["nodes"]],
                         ["node-b"])

    def test_health(self) -> None:
        """health answers 200 {status: ok}."""
        answer = self.call("GET", "/v1/health")
        self.assertEqual((answer.status, answer.json), (200, {"status": "ok"}))
        self.assertEqual(answer.content_type, "application/json")

    def test_health_degraded(self) -> None:
        """health says degraded, with each problem, when a node or the gateway reports one."""
        self.nodes.remove("node-b")
        self.nodes.add(NodeInfo(id="node-b", host="10.0.0.2", port=7002,
                                problems=["kafka: no broker reachable"]))
        problems = ["gateway: zookeeper: suspended"]
        self.gateway.health_problems = lambda: problems
        answer = self.call("GET", "/v1/health")
        self.assertEqual((answer.status, answer.json), (200, {
            "status": "degraded",
            "problems": ["gateway: zookeeper: suspended",
                         "node node-b: kafka: no broker reachable"]}))
        problems.clear()
        self.nodes.remove("node-b")
        self.assertEqual(self.call("GET", "/v1/health").json, {"status": "ok"})

    def test_metrics(self) -> None:
        """/metrics exposes request counts by route and status."""
        before = metrics.REQUESTS.labels(route="health", status="200")._value.get()
        self.call("GET", "/v1/health")
        self.call("POST", "/v1/route")
        answer = self.call("GET", "/metrics")
        self.assertEqual(answer.status, 200)
        self.assertTrue(answer.content_type.startswith("text/plain"))
        text = answer.raw.decode()
        self.assertIn('dim_gateway_requests_total{route="route",status="401"}', text)
        self.assertIn("dim_gateway_request_seconds_bucket", text)
        self.assertEqual(metrics.REQUESTS.labels(route="health", status="200")._value.get(),
                         before + 1)


class OverloadTests(GatewayTestCase):
    """A flood of logins beyond the hashing queue is refused, not queued."""

    def test_rate_limited(self) -> None:
        """With the password queue full, login answers 429 rate_limited."""
        self.register()
        self.passwords.pending = self.passwords.max_pending
        answer = self.call("POST", "/v1/login", {"user": "alice", "password": "password1"})
        self.assertError(answer, 429, "rate_limited")


class InternalErrorTests(GatewayTestCase):
    """Unexpected exceptions become 500 internal, logged."""

    def test_internal(self) -> None:
        """A store that raises a non-DIM error gives 500 with code internal."""
        token = self.login()

        def broken(user: str, after: int, limit: int) -> defer.Deferred[Any]:
            return defer.fail(RuntimeError("disk on fire"))

        self.patch(self.store, "fetch", broken)
        answer = self.call("GET", "/v1/messages", token=token)
        self.assertError(answer, 500, "internal")
        self.assertNotIn("disk on fire", answer.raw.decode())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
