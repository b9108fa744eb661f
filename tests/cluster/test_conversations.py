"""Part 3 across nodes on Redis: conversation reads echo to another node's device, edits,
recalls and reactions reach every holder, and the gateway lists, pages and searches."""
from __future__ import annotations

from twisted.internet import defer

from tests.cluster.kit import ClusterTestCase
from tests.harness import http


class ConversationsAcrossNodesTests(ClusterTestCase):
    """Two devices of one user on two nodes keep the same read state; changes cross nodes."""

    timeout = 180

    @defer.inlineCallbacks
    def test_read_edit_react_search_across_nodes(self):
        """bob reads alice's conversation on one node, his device on another hears it; an
        edit and a reaction cross nodes; the gateway shows counts, pages and search."""
        base = self.cluster.base
        a = yield self.login("alice")
        b = yield self.login("bob")
        c = yield self.login("carol")
        alice = yield self.connect(a["token"], self.n1)
        carol = yield self.connect(c["token"], self.n1)
        bob = yield self.connect(b["token"], self.n2)
        bob2 = yield self.connect(b["token"], self.n3)

        alice.send({"type": "send", "id": "a1", "to": "bob", "body": "Hello 東京"})
        sent = yield alice.expect("sent", id="a1")
        carol.send({"type": "send", "id": "c1", "to": "bob", "body": "hi"})
        yield carol.expect("sent", id="c1")
        first = yield bob.expect("msg", id="a1", timeout=15)
        yield bob.expect("msg", id="c1", timeout=15)

        bob.send({"type": "read", "seq": first["seq"], "with": "alice"})
        echo = yield bob2.expect("read", by="bob", seq=first["seq"], timeout=15,
                                 **{"with": "alice"})
        self.assertEqual(echo["by"], "bob")
        yield alice.expect("read", mid=sent["mid"], timeout=15)
        r = yield http("GET", f"{base}/v1/conversations", token=b["token"])
        self.assertEqual([("carol", 1), ("alice", 0)],
                         [(x["with"], x["unread"]) for x in r.body["conversations"]])

        alice.send({"type": "edit", "id": "e1", "mid": sent["mid"], "body": "Hello 大阪"})
        yield alice.expect("sent", id="e1")
        edit = yield bob2.expect("msg", id="e1", timeout=15)
        self.assertEqual((edit["kind"], edit["ref"]), ("edit", sent["mid"]))
        bob2.send({"type": "react", "id": "x1", "mid": sent["mid"], "emoji": "👍"})
        yield bob2.expect("sent", id="x1")
        yield alice.expect("msg", id="x1", timeout=15)
        r = yield http("GET", f"{base}/v1/messages?with=alice&before=99&limit=5",
                       token=b["token"])
        original = r.body["messages"][0]
        self.assertEqual((original["body"], original["reactions"]),
                         ("Hello 大阪", {"👍": ["bob"]}))
        r = yield http("GET", f"{base}/v1/messages/search?q=%E5%A4%A7", token=b["token"])
        self.assertEqual(["a1"], [m["id"] for m in r.body["messages"]])
        r = yield http("GET", f"{base}/v1/messages/search?q=%E6%9D%B1", token=b["token"])
        self.assertEqual([], r.body["messages"])
