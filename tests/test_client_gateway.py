"""The client's gateway calls against a scripted HTTP resource, through treq's StubTreq."""
from __future__ import annotations


from twisted.trial import unittest

from dim import errors
from dim.client.gateway import error_from_answer
from tests.fakes.client import client


class GatewayClientTests(unittest.TestCase):
    """Each call's method, path, body and auth, and the error mapping."""

    def test_login_remembers_token(self) -> None:
        """login posts user and password and keeps the token for later calls."""
        gw, res = client((200, {"token": "T", "user": "alice", "expires": 1,
                                "node": {"id": "n1", "host": "127.0.0.1", "port": 9000}}),
                         (200, {"node": {"id": "n2", "host": "h", "port": 1}}))
        answer = self.successResultOf(gw.login("alice", "secret123"))
        self.assertEqual(answer["node"]["id"], "n1")
        self.assertEqual(res.requests[0]["json"], {"user": "alice", "password": "secret123"})
        self.assertEqual(res.requests[0]["auth"], "")
        self.assertEqual(gw.token, "T")
        self.successResultOf(gw.route(exclude=["n1"]))
        self.assertEqual(res.requests[1]["path"], "/v1/route")
        self.assertEqual(res.requests[1]["json"], {"exclude": ["n1"]})
        self.assertEqual(res.requests[1]["auth"], "Bearer T")

    def test_messages_query(self) -> None:
        """messages sends after and limit as query arguments."""
        gw, res = client((200, {"messages": [], "last_seq": 0}))
        gw.token = "T"
        self.successResultOf(gw.messages(after=5, limit=10))
        self.assertEqual((res.requests[0]["method"], res.requests[0]["path"]), ("GET",
                                                                                "/v1/messages"))
        self.assertEqual(res.requests[0]["args"], {"after": ["5"], "limit": ["10"]})

    def test_register_conflict(self) -> None:
        """A 409 with code conflict becomes errors.Conflict carrying the message."""
        gw, _ = client((409, {"error": {"code": "conflict", "message": "taken"}}))
        f = self.failureResultOf(gw.register("alice", "secret123"), errors.Conflict)
        self.assertEqual(f.value.message, "taken")

    def test_user_not_found(self) -> None:
        """A 404 for a user becomes errors.NotFound, and the name is quoted in the path."""
        gw, res = client((404, {"error": {"code": "not_found", "message": "no such user"}}))
        gw.token = "T"
        self.failureResultOf(gw.user("bo b"), errors.NotFound)
        self.assertEqual(res.requests[0]["path"], "/v1/users/bo%20b")

    def test_nodes_needs_no_token(self) -> None:
        """nodes is not authenticated."""
        gw, res = client((200, {"nodes": []}))
        self.assertEqual(self.successResultOf(gw.nodes()), {"nodes": []})
        self.assertEqual(res.requests[0]["auth"], "")

    def test_authenticated_call_without_token(self) -> None:
        """An authenticated call before login fails with Unauthorized, without a request."""
        gw, res = client()
        self.failureResultOf(gw.route(), errors.Unauthorized)
        self.assertEqual(res.requests, [])

    def test_error_without_body_maps_status(self) -> None:
        """An error answer that is not JSON is mapped by its status."""
        self.assertIsInstance(error_from_answer(503, b"down"), errors.Unavailable)
        self.assertIsInstance(error_from_answer(401, b""), errors.Unauthorized)
        self.assertIsInstance(error_from_answer(502, b"<html>"), errors.Internal)
        err = error_from_answer(400, b'{"error": {"code": "rate_limited", "message": "slow"}}')
        self.assertIsInstance(err, errors.RateLimited)


class ConversationCallTests(unittest.SynchronousTestCase):
    """The gateway client's conversation calls send the contract's queries."""

    def test_conversations(self) -> None:
        """conversations asks GET /v1/conversations with its limit."""
        gw, res = client((200, {"conversations": []}))
        gw.token = "T"
        self.successResultOf(gw.conversations(limit=7))
        self.assertEqual((res.requests[0]["path"], res.requests[0]["args"]),
                         ("/v1/conversations", {"limit": ["7"]}))

    def test_conversation_messages(self) -> None:
        """conversation_messages names the conversation and scrolls back with before."""
        gw, res = client((200, {"messages": [], "last_seq": 0, "more": False}))
        gw.token = "T"
        self.successResultOf(gw.conversation_messages(group="g1", before=40, limit=20))
        self.assertEqual(res.requests[0]["args"],
                         {"after": ["0"], "limit": ["20"], "group": ["g1"],
                          "before": ["40"]})
        self.assertRaises(errors.BadRequest, gw.conversation_messages)

    def test_search_messages(self) -> None:
        """search_messages sends q, the conversation if any, and limit."""
        gw, res = client((200, {"messages": []}))
        gw.token = "T"
        self.successResultOf(gw.search_messages("東京", with_="bob", limit=5))
        self.assertEqual((res.requests[0]["path"], res.requests[0]["args"]),
                         ("/v1/messages/search",
                          {"q": ["東京"], "limit": ["5"], "with": ["bob"]}))
