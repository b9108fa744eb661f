"""End-to-end tests of part 2 (people, groups, files) against ``twistd -n dim``."""
from __future__ import annotations

import hashlib
import os

from twisted.internet import defer

from tests.fakes.embedded import EmbeddedTestCase, FileTransfers
from tests.harness import WireClient, http


class PeopleTests(EmbeddedTestCase):
    """Contacts, presence, typing and read marks between real sessions."""

    @defer.inlineCallbacks
    def befriend(self, a: WireClient, b: WireClient, a_name: str, b_name: str):
        """a asks b, b accepts; both get the notifications."""
        base = self.dim.base
        r = yield http("POST", f"{base}/v1/contacts", {"user": b_name}, token=a.token)
        self.assertEqual((r.code, r.body["contact"]["pending"]), (200, "out"))
        note = yield b.expect("notify", event="contact_request")
        self.assertEqual(note["from"], a_name)
        r = yield http("POST", f"{base}/v1/contacts", {"user": a_name}, token=b.token)
        self.assertEqual((r.code, r.body["contact"]["pending"]), (200, None))
        yield a.expect("notify", event="contact_added", user=b_name)
        yield b.expect("notify", event="contact_added", user=a_name)

    @defer.inlineCallbacks
    def test_contacts_presence_typing_read(self):
        """Two people become contacts, see each other come and go, typing and read marks."""
        alice = yield self.user("alice20")
        bob = yield self.user("bob20")
        yield self.befriend(alice, bob, "alice20", "bob20")
        r = yield http("GET", f"{self.dim.base}/v1/contacts", token=alice.token)
        [entry] = r.body["contacts"]
        self.assertEqual((entry["user"], entry["online"], entry["pending"]),
                         ("bob20", True, None))

        carol = yield self.second_session(bob, "tablet")
        yield carol.close()
        self.assertEqual(alice.take("presence"), [], "a second session changes no presence")
        yield bob.close()
        gone = yield alice.expect("presence", user="bob20")
        self.assertFalse(gone["online"])
        token = yield self.relogin("bob20")
        bob = yield WireClient.login("127.0.0.1", self.dim.node_port, token)
        bob.token = token
        self.clients.append(bob)
        back = yield alice.expect("presence", user="bob20", online=True)
        self.assertTrue(back["online"])

        alice.send({"type": "typing", "to": "bob20"})
        typing = yield bob.expect("typing")
        self.assertEqual((typing["from"], typing["to"]), ("alice20", "bob20"))

        alice.send({"type": "send", "id": "r1", "to": "bob20", "body": "read me"})
        sent = yield alice.expect("sent", id="r1")
        msg = yield bob.expect("msg")
        bob2 = yield self.second_session(bob, "phone")
        bob.send({"type": "read", "seq": msg["seq"]})
        read = yield alice.expect("read", mid=sent["mid"])
        self.assertEqual((read["id"], read["by"]), ("r1", "bob20"))
        yield alice.expect("delivered", mid=sent["mid"])
        self_read = yield bob2.expect("read", by="bob20")
        self.assertEqual(self_read["seq"], msg["seq"])
        r = yield http("GET", f"{self.dim.base}/v1/messages", token=alice.token)
        [listed] = r.body["messages"]
        self.assertEqual((listed["delivered"], listed["read"]), (True, True))

    @defer.inlineCallbacks
    def relogin(self, name: str):
        """A fresh token for an existing user."""
        r = yield http("POST", f"{self.dim.base}/v1/login",
                       {"user": name, "password": "correct horse battery"})
        return r.body["token"]

    @defer.inlineCallbacks
    def test_search_and_profile(self):
        """Profiles can be edited and found by display name, case-insensitively."""
        alice = yield self.user("alice21")
        r = yield http("PUT", f"{self.dim.base}/v1/profile",
                       {"name": "Alice Liddell", "status": "down the rabbit hole"},
                       token=alice.token)
        self.assertEqual(r.code, 200)
        r = yield http("GET", f"{self.dim.base}/v1/users?q=LIDDELL", token=alice.token)
        self.assertEqual([u["user"] for u in r.body["users"]], ["alice21"])
        r = yield http("GET", f"{self.dim.base}/v1/users/alice21", token=alice.token)
        self.assertEqual((r.body["name"], r.body["status"], r.body["avatar"]),
                         ("Alice Liddell", "down the rabbit hole", None))
        r = yield http("POST", f"{self.dim.base}/v1/contacts", {"user": "alice21"},
                       token=alice.token)
        self.assertEqual((r.code, r.body["error"]["code"]), (400, "bad_request"))


class GroupTests(EmbeddedTestCase):
    """Three people hold a group conversation; a removed member gets nothing new."""

    @defer.inlineCallbacks
    def test_group_conversation(self):
        """Group send fans out with each member's own seq; receipts come per member."""
        a = yield self.user("ann30")
        b = yield self.user("ben30")
        c = yield self.user("cat30")
        r = yield http("POST", f"{self.dim.base}/v1/groups",
                       {"name": "trio", "members": ["ben30", "cat30"]}, token=a.token)
        self.assertEqual(r.code, 201)
        group = r.body["group"]
        self.assertEqual((group["owner"], sorted(group["members"])),
                         ("ann30", ["ann30", "ben30", "cat30"]))
        for member in (b, c):
            yield member.expect("notify", event="group_changed", group=group["id"])
        b.send({"type": "send", "id": "pre", "to": "cat30", "body": "direct first"})
        yield b.expect("sent", id="pre")
        yield c.expect("msg", id="pre")
        a.send({"type": "send", "id": "g1", "group": group["id"], "body": "hello trio"})
        sent = yield a.expect("sent", id="g1")
        mb = yield b.expect("msg", id="g1")
        mc = yield c.expect("msg", id="g1")
        self.assertEqual((mb["group"], mb["seq"], mc["seq"]), (group["id"], 2, 2))
        self.assertEqual(sent["seq"], 1)
        b.send({"type": "ack", "seq": mb["seq"]})
        c.send({"type": "read", "seq": mc["seq"]})
        receipts = set()
        for _ in range(2):
            d = yield a.expect("delivered", mid=sent["mid"])
            receipts.add(d["by"])
        self.assertEqual(receipts, {"ben30", "cat30"})
        yield a.expect("read", mid=sent["mid"], by="cat30")

        r = yield http("DELETE", f"{self.dim.base}/v1/groups/{group['id']}/members/cat30",
                       token=a.token)
        self.assertEqual(r.code, 200)
        yield c.expect("notify", event="group_changed")
        a.send({"type": "send", "id": "g2", "group": group["id"], "body": "without cat"})
        yield a.expect("sent", id="g2")
        yield b.expect("msg", id="g2")
        c.send({"type": "send", "id": "g3", "group": group["id"], "body": "let me in"})
        err = yield c.expect("error", ref="g3")
        self.assertEqual(err["code"], "forbidden")
        c.send({"type": "sync", "after": 0})
        yield c.expect("synced")
        self.assertNotIn("g2", [m["id"] for m in c.take("msg")])

        c.send({"type": "send", "id": "g4", "group": "no-such-group", "body": "?"})
        err = yield c.expect("error", ref="g4")
        self.assertEqual(err["code"], "not_found")


class FileTests(FileTransfers, EmbeddedTestCase):
    """An image and a file travel through upload, message and download."""

    @defer.inlineCallbacks
    def test_image_and_file_transfer(self):
        """Recipients download what was sent to them, with ranges; strangers get 403."""
        ann = yield self.user("ann40")
        ben = yield self.user("ben40")
        eve = yield self.user("eve40")
        png = (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06"
               b"\x00\x00\x00\x1f\x15\xc4\x89" + os.urandom(64))
        image = yield self.upload(ann.token, "dot.png", png, "image/png")
        self.assertEqual((image["mime"], image["size"], image["sha256"]),
                         ("image/png", len(png), hashlib.sha256(png).hexdigest()))
        blob = os.urandom(300_000)
        doc = yield self.upload(ann.token, "notes.bin", blob, "application/octet-stream")
        for f, kind in ((image, "image"), (doc, "file")):
            ref = {k: f[k] for k in ("id", "name", "size", "mime")}
            ann.send({"type": "send", "id": f"f-{kind}", "to": "ben40", "kind": kind,
                      "file": ref, "body": ""})
            yield ann.expect("sent", id=f"f-{kind}")
            msg = yield ben.expect("msg", id=f"f-{kind}")
            self.assertEqual((msg["kind"], msg["file"]["id"]), (kind, f["id"]))
        resp, content = yield self.download(ben.token, doc["id"])
        self.assertEqual(resp.code, 200)
        self.assertEqual(hashlib.sha256(content).hexdigest(), doc["sha256"])
        self.assertIn(b"notes.bin", resp.headers.getRawHeaders("Content-Disposition")[0]
                      .encode())
        resp, part = yield self.download(ben.token, doc["id"], {"Range": "bytes=1000-"})
        self.assertEqual((resp.code, part), (206, blob[1000:]))
        resp, _ = yield self.download(eve.token, doc["id"])
        self.assertEqual(resp.code, 403)
        ann.send({"type": "send", "id": "forged", "to": "ben40", "kind": "file",
                  "file": {"id": doc["id"], "name": "other.bin", "size": 1, "mime": "x/y"}})
        err = yield ann.expect("error", ref="forged")
        self.assertEqual(err["code"], "bad_request")
        eve.send({"type": "send", "id": "stolen", "to": "ben40", "kind": "file",
                  "file": {k: doc[k] for k in ("id", "name", "size", "mime")}})
        err = yield eve.expect("error", ref="stolen")
        self.assertEqual(err["code"], "bad_request")
