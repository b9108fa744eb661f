"""GET /v1/conversations: the caller's conversations with the server's read state."""
from __future__ import annotations

from tests.fakes.gateway import GatewayTestCase


class AliceBobCarol(GatewayTestCase):
    """alice, bob and carol are logged in; alice's token is ``token``."""

    def setUp(self) -> None:
        super().setUp()
        self.token = self.login("alice")
        self.login("bob")
        self.login("carol")


class ConversationListTests(AliceBobCarol):
    """The list is newest first, with read pointers, unread counts and the newest entry."""

    def setUp(self) -> None:
        super().setUp()
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


class ConversationMessagesTests(AliceBobCarol):
    """GET /v1/messages with with/group and before: one conversation, scrolled back."""

    def setUp(self) -> None:
        super().setUp()
        for n in range(5):
            self.store.store_message("bob", f"b{n}", ["alice"], None, "x", "text", None, n)
            self.store.store_message("carol", f"c{n}", ["alice"], None, "y", "text", None, n)
        group = self.successResultOf(self.store.create_group("carol", "G", ["alice"], 9))
        self.group = group.id
        self.store.store_message("carol", "g1", ["alice"], group.id, "z", "text", None, 9)

    def page(self, query: str) -> tuple[list[int], bool, int]:
        """The seqs, ``more`` and ``last_seq`` of one listing."""
        answer = self.call("GET", "/v1/messages?" + query, token=self.token)
        self.assertEqual(answer.status, 200, answer.raw)
        body = answer.json
        return [m["seq"] for m in body["messages"]], body["more"], body["last_seq"]

    def test_one_conversation(self) -> None:
        """with lists that peer's entries only, paged by after and limit."""
        self.assertEqual(([1, 3, 5], True, 11), self.page("with=bob&limit=3"))
        self.assertEqual(([7, 9], False, 11), self.page("with=bob&after=5"))
        self.assertEqual(([11], False, 11), self.page(f"group={self.group}"))

    def test_scroll_back(self) -> None:
        """before gives the newest entries below it, in seq order, and whether more remain."""
        self.assertEqual(([8, 10], True, 11), self.page("with=carol&before=11&limit=2"))
        self.assertEqual(([4, 6], True, 11), self.page("with=carol&before=8&limit=2"))
        self.assertEqual(([2], False, 11), self.page("with=carol&before=4&limit=2"))

    def test_scroll_back_whole_inbox(self) -> None:
        """before without a conversation scrolls back through the whole inbox."""
        self.assertEqual(([8, 9, 10], True, 11), self.page("before=11&limit=3"))
        self.assertEqual(([1, 2], False, 11), self.page("before=3&limit=3"))

    def test_bad_queries(self) -> None:
        """Both with and group, a bad user name, an empty group or before 0 are 400."""
        for query in (f"with=bob&group={self.group}", "with=b%20b", "group=",
                      "with=bob&before=0", "with=bob&before=x"):
            self.assertError(self.call("GET", "/v1/messages?" + query, token=self.token),
                             400, "bad_request")


class SearchTests(AliceBobCarol):
    """GET /v1/messages/search: the caller's own current bodies, newest first."""

    def setUp(self) -> None:
        super().setUp()
        send = self.store.store_message
        send("bob", "b1", ["alice"], None, "Hello there", "text", None, 1)
        send("carol", "c1", ["alice"], None, "東京 hello", "text", None, 2)
        send("carol", "c2", ["bob"], None, "hello bob only", "text", None, 3)

    def search(self, query: str) -> list[str]:
        """The client ids a search finds."""
        answer = self.call("GET", "/v1/messages/search?" + query, token=self.token)
        self.assertEqual(answer.status, 200, answer.raw)
        return [m["id"] for m in answer.json["messages"]]

    def test_found(self) -> None:
        """Any case, any script, newest first, only the caller's, filtered and limited."""
        self.assertEqual(["c1", "b1"], self.search("q=HELLO"))
        self.assertEqual(["c1"], self.search("q=%E6%9D%B1"))
        self.assertEqual(["b1"], self.search("q=hello&with=bob"))
        self.assertEqual(["c1"], self.search("q=hello&limit=1"))
        self.assertEqual([], self.search("q=only"))

    def test_bad(self) -> None:
        """No q, an empty or over-long q, both with and group, a bad limit are 400."""
        for query in ("", "q=", "q=" + "x" * 201, "q=a&with=bob&group=1", "q=a&limit=0"):
            self.assertError(self.call("GET", "/v1/messages/search?" + query,
                                       token=self.token), 400, "bad_request")
        self.assertEqual(401, self.call("GET", "/v1/messages/search?q=a").status)
