"""Part 2 across nodes: notifications, presence, typing, read marks and groups travel over
Kafka, and a node's death is announced as presence by the gateway."""
from __future__ import annotations

import signal

from twisted.internet import defer

from tests.cluster.kit import ClusterTestCase
from tests.harness import http


class PeopleAcrossNodesTests(ClusterTestCase):
    """Two people on different nodes find each other and see each other's signals."""

    timeout = 180

    @defer.inlineCallbacks
    def test_contacts_presence_typing_read_across_nodes(self):
        """notify, presence, typing and read cross nodes; kill -9 shows the user offline."""
        base = self.cluster.base
        a = yield self.login("alice")
        b = yield self.login("bob")
        alice = yield self.connect(a["token"], self.n1)
        bob = yield self.connect(b["token"], self.n2)

        r = yield http("POST", f"{base}/v1/contacts", {"user": "bob"}, token=a["token"])
        self.assertEqual(r.code, 200)
        request = yield bob.expect("notify", event="contact_request", timeout=15)
        self.assertEqual(request["from"], "alice")
        yield http("POST", f"{base}/v1/contacts", {"user": "alice"}, token=b["token"])
        yield alice.expect("notify", event="contact_added", user="bob", timeout=15)

        alice.send({"type": "typing", "to": "bob"})
        typing = yield bob.expect("typing", timeout=15)
        self.assertEqual(typing["from"], "alice")

        alice.send({"type": "send", "id": "r1", "to": "bob", "body": "across"})
        sent = yield alice.expect("sent", id="r1")
        msg = yield bob.expect("msg", id="r1")
        bob.send({"type": "read", "seq": msg["seq"]})
        read = yield alice.expect("read", mid=sent["mid"], timeout=15)
        self.assertEqual(read["by"], "bob")

        self.cluster.nodes[self.n2].kill(signal.SIGKILL)
        gone = yield alice.expect("presence", user="bob", online=False, timeout=30)
        self.assertFalse(gone["online"])

    @defer.inlineCallbacks
    def test_group_across_three_nodes(self):
        """A group of three on three nodes: everyone gets msg with its own seq and notify."""
        base = self.cluster.base
        logins = {}
        clients = {}
        for user, node in (("ann", self.n1), ("ben", self.n2), ("cat", self.n3)):
            logins[user] = yield self.login(user)
            clients[user] = yield self.connect(logins[user]["token"], node)
        r = yield http("POST", f"{base}/v1/groups", {"name": "trio", "members": ["ben", "cat"]},
                       token=logins["ann"]["token"])
        self.assertEqual(r.code, 201)
        gid = r.body["group"]["id"]
        for user in ("ben", "cat"):
            yield clients[user].expect("notify", event="group_changed", group=gid, timeout=15)
        clients["ann"].send({"type": "send", "id": "g1", "group": gid, "body": "hi all"})
        sent = yield clients["ann"].expect("sent", id="g1")
        for user in ("ben", "cat"):
            m = yield clients[user].expect("msg", id="g1", timeout=15)
            self.assertEqual((m["group"], m["from"], m["seq"]), (gid, "ann", 1))
            clients[user].send({"type": "ack", "seq": m["seq"]})
        receipts = set()
        for _ in range(2):
            d = yield clients["ann"].expect("delivered", mid=sent["mid"], timeout=15)
            receipts.add(d["by"])
        self.assertEqual(receipts, {"ben", "cat"})


class FilesAcrossNodesTests(ClusterTestCase):
    """A file uploaded through the cluster gateway reaches a recipient on another node."""

    timeout = 180

    @defer.inlineCallbacks
    def test_file_across_nodes(self):
        """Upload, send kind file from n1, receive on n2, download with a range; others 403."""
        import hashlib
        import os

        import treq

        base = self.cluster.base
        a = yield self.login("ann")
        b = yield self.login("ben")
        e = yield self.login("eve")
        ann = yield self.connect(a["token"], self.n1)
        ben = yield self.connect(b["token"], self.n2)
        blob = os.urandom(200_000)
        resp = yield treq.post(f"{base}/v1/files?name=data.bin", data=blob, persistent=False,
                               headers={"Authorization": f"Bearer {a['token']}",
                                        "Content-Type": "application/octet-stream"})
        self.assertEqual(resp.code, 201)
        record = (yield resp.json())["file"]
        self.assertEqual(record["sha256"], hashlib.sha256(blob).hexdigest())
        ann.send({"type": "send", "id": "f1", "to": "ben", "kind": "file", "body": "",
                  "file": {k: record[k] for k in ("id", "name", "size", "mime")}})
        yield ann.expect("sent", id="f1")
        msg = yield ben.expect("msg", id="f1", timeout=15)
        self.assertEqual(msg["file"]["id"], record["id"])
        for token, headers, code, body in ((b["token"], {}, 200, blob),
                                           (b["token"], {"Range": "bytes=150000-"}, 206,
                                            blob[150000:]),
                                           (e["token"], {}, 403, None)):
            resp = yield treq.get(f"{base}/v1/files/{record['id']}", persistent=False,
                                  headers={"Authorization": f"Bearer {token}", **headers})
            content = yield resp.content()
            self.assertEqual(resp.code, code)
            if body is not None:
                self.assertEqual(content, body)
