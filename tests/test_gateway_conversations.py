"""GET /v1/conversations: the caller's conversations with the server's read state."""
from __future__ import annotations

from tests.test_gateway import GatewayTestCase


class ConversationListTests(GatewayTestCase):
    """The list is newest first, with read pointers, unread counts and the newest entry."""

    def setUp(self) -> None:
        super().setUp()
        self.token = self.login("alice")
        self.login("bob")
        self.login("carol")
        send = self.store.store_message
        send("bob", "b1", ["alice"], None, "one", "text", None, 1)
        send("carol", "c1", ["alice"], None, "two", "text", None, 2)
        send("bob", "b2", ["alice"], None, "three", "text", None, 3)
        group = self.successResultOf(self.store.create_group("carol", "G", ["alice"], 4))
        self.group = group.id
        send("carol", "g1", ["alice"], group.id, "all", "text", None, 5)

    def test_list(self) -> None:
        """Each conversation names its peer or group, newest activity first."""
        self.store.read_conversation("alice", "bob", 1)
        answer = self.call("GET", "/v1/conversations", token=self.token)
        self.assertEqual(answer.status, 200, answer.raw)
        convs = answer.json["conversations"]
        self.assertEqual(
            [({"group": self.group}, 4, 0, 1), ({"with": "bob"}, 3, 1, 1),
             ({"with": "carol"}, 2, 0, 1)],
            [({k: c[k] for k in ("with", "group") if k in c}, c["last"]["seq"],
              c["read_seq"], c["unread"]) for c in convs])
        self.assertEqual(0, convs[0]["mentions"])
        last = convs[1]["last"]
        self.assertEqual(("msg", "three", "b2", "bob", "alice", False, False),
                         (last["type"], last["body"], last["id"], last["from"], last["to"],
                          last["read"], last["delivered"]))

    def test_limit(self) -> None:
        """limit bounds the list; a bad limit is 400."""
        answer = self.call("GET", "/v1/conversations?limit=1", token=self.token)
        self.assertEqual(1, len(answer.json["conversations"]))
        self.assertError(self.call("GET", "/v1/conversations?limit=0", token=self.token),
                         400, "bad_request")
        self.assertError(self.call("GET", "/v1/conversations?limit=x", token=self.token),
                         400, "bad_request")

    def test_unauthenticated(self) -> None:
        """Without a token the list is 401."""
        self.assertEqual(401, self.call("GET", "/v1/conversations").status)
