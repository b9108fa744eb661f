"""End-to-end tests of part 3 (conversations) against ``twistd -n dim``, over TCP and HTTP."""
from __future__ import annotations

from twisted.internet import defer

from tests.fakes.embedded import EmbeddedTestCase, FileTransfers
from tests.harness import http


class ConversationReadTests(EmbeddedTestCase):
    """Read pointers per conversation, shared by every device, with server unread counts."""

    @defer.inlineCallbacks
    def test_read_one_conversation_across_devices(self):
        """bob reads alice's conversation on one device: the other device hears it, alice
        gets read marks, and the server counts carol's message as still unread."""
        alice = yield self.user("alice30")
        carol = yield self.user("carol30")
        bob = yield self.user("bob30")
        bob2 = yield self.second_session(bob, "phone")
        alice.send({"type": "send", "id": "a1", "to": "bob30", "body": "hello"})
        sent = yield alice.expect("sent", id="a1")
        carol.send({"type": "send", "id": "c1", "to": "bob30", "body": "hi"})
        yield carol.expect("sent", id="c1")
        first = yield bob.expect("msg", id="a1")
        yield bob.expect("msg", id="c1")

        r = yield http("GET", f"{self.dim.base}/v1/conversations", token=bob.token)
        self.assertEqual(r.code, 200)
        self.assertEqual([("carol30", 1), ("alice30", 1)],
                         [(c["with"], c["unread"]) for c in r.body["conversations"]])

        bob.send({"type": "read", "seq": first["seq"], "with": "alice30"})
        echo = yield bob2.expect("read", by="bob30", **{"with": "alice30"})
        self.assertEqual(echo["seq"], first["seq"])
        read = yield alice.expect("read", mid=sent["mid"])
        self.assertEqual(read["by"], "bob30")

        r = yield http("GET", f"{self.dim.base}/v1/conversations", token=bob.token)
        self.assertEqual([("carol30", 0, 1), ("alice30", first["seq"], 0)],
                         [(c["with"], c["read_seq"], c["unread"])
                          for c in r.body["conversations"]])
        r = yield http("GET", f"{self.dim.base}/v1/messages", token=carol.token)
        [listed] = r.body["messages"]
        self.assertFalse(listed["read"])

    @defer.inlineCallbacks
    def test_history_by_conversation(self):
        """A new device loads one conversation's newest page and scrolls back over HTTP."""
        alice = yield self.user("alice31")
        carol = yield self.user("carol31")
        bob = yield self.user("bob31")
        for n in range(4):
            alice.send({"type": "send", "id": f"a{n}", "to": "bob31", "body": f"a{n}"})
            yield alice.expect("sent", id=f"a{n}")
            carol.send({"type": "send", "id": f"c{n}", "to": "bob31", "body": f"c{n}"})
            yield carol.expect("sent", id=f"c{n}")
        base = f"{self.dim.base}/v1/messages"
        r = yield http("GET", f"{base}?with=alice31&before=99&limit=3", token=bob.token)
        self.assertEqual(r.code, 200)
        self.assertEqual((["a1", "a2", "a3"], True, 8),
                         ([m["id"] for m in r.body["messages"]], r.body["more"],
                          r.body["last_seq"]))
        oldest = r.body["messages"][0]["seq"]
        r = yield http("GET", f"{base}?with=alice31&before={oldest}&limit=3", token=bob.token)
        self.assertEqual((["a0"], False), ([m["id"] for m in r.body["messages"]],
                                           r.body["more"]))
        r = yield http("GET", f"{base}?with=alice31&group=1", token=bob.token)
        self.assertEqual(r.code, 400)

    @defer.inlineCallbacks
    def test_reply_and_mention(self):
        """A reply and a group mention travel over TCP; bad ones get bad_request."""
        alice = yield self.user("alice32")
        bob = yield self.user("bob32")
        carol = yield self.user("carol32")
        r = yield http("POST", f"{self.dim.base}/v1/groups",
                       {"name": "G", "members": ["bob32"]}, token=alice.token)
        group = r.body["group"]["id"]
        alice.send({"type": "send", "id": "a1", "to": "bob32", "body": "question"})
        sent = yield alice.expect("sent", id="a1")
        bob.send({"type": "send", "id": "b1", "to": "alice32", "body": "answer",
                  "reply_to": sent["mid"]})
        msg = yield alice.expect("msg", id="b1")
        self.assertEqual(msg["reply_to"], sent["mid"])
        carol.send({"type": "send", "id": "c1", "to": "alice32", "body": "x",
                    "reply_to": sent["mid"]})
        error = yield carol.expect("error", ref="c1")
        self.assertEqual(error["code"], "bad_request")

        alice.send({"type": "send", "id": "g1", "group": group, "body": "hi @bob32",
                    "mentions": ["bob32"]})
        msg = yield bob.expect("msg", id="g1")
        self.assertEqual(msg["mentions"], ["bob32"])
        alice.send({"type": "send", "id": "g2", "group": group, "body": "hi",
                    "mentions": ["carol32"]})
        error = yield alice.expect("error", ref="g2")
        self.assertEqual(error["code"], "bad_request")
        r = yield http("GET", f"{self.dim.base}/v1/conversations", token=bob.token)
        first = r.body["conversations"][0]
        self.assertEqual((first.get("group"), first["unread"], first["mentions"]),
                         (group, 1, 1))
        r = yield http("GET", f"{self.dim.base}/v1/messages?with=alice32", token=bob.token)
        self.assertEqual([None, sent["mid"]],
                         [m.get("reply_to") for m in r.body["messages"]])


class ChangeTests(FileTransfers, EmbeddedTestCase):
    """edit, recall and react over TCP, seen in the listings over HTTP."""


    @defer.inlineCallbacks
    def test_edit_react_recall(self):
        """An edit and a reaction change the listed original; a recalled file is gone for
        its recipient; errors are the contract's and change nothing."""
        alice = yield self.user("alice33")
        bob = yield self.user("bob33")
        alice.send({"type": "send", "id": "a1", "to": "bob33", "body": "helo"})
        sent = yield alice.expect("sent", id="a1")
        mid = sent["mid"]
        alice.send({"type": "edit", "id": "e1", "mid": mid, "body": "hello"})
        edited = yield alice.expect("sent", id="e1")
        msg = yield bob.expect("msg", id="e1")
        self.assertEqual((msg["kind"], msg["ref"], msg["body"]), ("edit", mid, "hello"))
        alice.send({"type": "edit", "id": "e1", "mid": mid, "body": "again"})
        again = yield alice.expect("sent", id="e1")
        self.assertEqual(again, edited)
        bob.send({"type": "react", "id": "x1", "mid": mid, "emoji": "👍", "on": True})
        yield bob.expect("sent", id="x1")
        bob.send({"type": "edit", "id": "x2", "mid": mid, "body": "mine"})
        error = yield bob.expect("error", ref="x2")
        self.assertEqual(error["code"], "forbidden")
        bob.send({"type": "react", "id": "x3", "mid": mid, "emoji": "x" * 17})
        error = yield bob.expect("error", ref="x3")
        self.assertEqual(error["code"], "bad_request")
        bob.send({"type": "recall", "id": "x4", "mid": "nope"})
        error = yield bob.expect("error", ref="x4")
        self.assertEqual(error["code"], "not_found")
        alice.send({"type": "edit", "id": "x5", "mid": mid, "body": ""})
        error = yield alice.expect("error", ref="x5")
        self.assertEqual(error["code"], "bad_request")
        r = yield http("GET", f"{self.dim.base}/v1/messages?with=alice33", token=bob.token)
        original = r.body["messages"][0]
        self.assertEqual((original["body"], original["edited"], original["reactions"]),
                         ("hello", edited["ts"], {"👍": ["bob33"]}))
        self.assertEqual(["text", "edit", "reaction"], [m["kind"] for m in r.body["messages"]])

        file = yield self.upload(alice.token, "p.txt", b"secret", "text/plain")
        alice.send({"type": "send", "id": "f1", "to": "bob33", "kind": "file", "body": "",
                    "file": {k: file[k] for k in ("id", "name", "size", "mime")}})
        with_file = yield alice.expect("sent", id="f1")
        yield bob.expect("msg", id="f1")
        resp, _ = yield self.download(bob.token, file["id"])
        self.assertEqual(resp.code, 200)
        alice.send({"type": "recall", "id": "r1", "mid": with_file["mid"]})
        yield alice.expect("sent", id="r1")
        yield bob.expect("msg", id="r1")
        resp, _ = yield self.download(bob.token, file["id"])
        self.assertEqual(resp.code, 403)
        resp, content = yield self.download(alice.token, file["id"])
        self.assertEqual((resp.code, content), (200, b"secret"))
        r = yield http("GET", f"{self.dim.base}/v1/messages?with=alice33&before=99&limit=2",
                       token=bob.token)
        recalled, recall = r.body["messages"]
        self.assertEqual((recalled["recalled"], recalled["body"], "file" in recalled),
                         (True, "", False))
        self.assertEqual(recall["kind"], "recall")


class SearchTests(EmbeddedTestCase):
    """GET /v1/messages/search on the embedded store (FTS5 trigram and short scans)."""

    @defer.inlineCallbacks
    def test_search(self):
        """Sent messages are found by any substring, in any case or script, edits count."""
        alice = yield self.user("alice34")
        bob = yield self.user("bob34")
        for n, body in enumerate(("Hello World", "東京で会いましょう", "typo")):
            alice.send({"type": "send", "id": f"a{n}", "to": "bob34", "body": body})
            sent = yield alice.expect("sent", id=f"a{n}")
        alice.send({"type": "edit", "id": "e1", "mid": sent["mid"], "body": "fixed world"})
        yield alice.expect("sent", id="e1")
        base = f"{self.dim.base}/v1/messages/search"
        for query, ids in (("q=WORLD", ["a2", "a0"]), ("q=%E4%BA%AC", ["a1"]),
                           ("q=%E4%BC%9A%E3%81%84%E3%81%BE", ["a1"]), ("q=typo", []),
                           ("q=world&with=alice34", ["a2", "a0"])):
            r = yield http("GET", f"{base}?{query}", token=bob.token)
            self.assertEqual((r.code, [m["id"] for m in r.body["messages"]]), (200, ids),
                             query)
        r = yield http("GET", f"{base}?q=", token=bob.token)
        self.assertEqual(r.code, 400)
