"""A gateway and three nodes as twistd processes: chat across nodes, devices on several nodes,
offline delivery, routing to live nodes only with every strategy, session lifetimes, a node
that lost its ZooKeeper session, and a node's clean shutdown."""
from __future__ import annotations

import signal
import time

from twisted.internet import defer

from dim import launch
from dim.launch import free_ports
from tests.cluster.kit import SECRET, ClusterTestCase
from tests.harness import http, sleep


class CrossNodeTests(ClusterTestCase):
    """Clients cannot tell which node holds whom."""

    @defer.inlineCallbacks
    def test_chat_across_nodes(self):
        """alice on n1 and bob on n2: send -> sent, msg, ack -> delivered, and a reply."""
        a = yield self.login("alice")
        b = yield self.login("bob")
        alice = yield self.connect(a["token"], self.n1)
        bob = yield self.connect(b["token"], self.n2)
        self.assertEqual((alice.welcome["node"], bob.welcome["node"]), (self.n1, self.n2))
        alice.send({"type": "send", "id": "x-1", "to": "bob", "body": "hello across"})
        sent = yield alice.expect("sent", id="x-1")
        msg = yield bob.expect("msg")
        self.assertEqual((msg["from"], msg["to"], msg["body"], msg["mid"], msg["seq"]),
                         ("alice", "bob", "hello across", sent["mid"], 1))
        bob.send({"type": "ack", "seq": msg["seq"]})
        delivered = yield alice.expect("delivered")
        self.assertEqual(delivered, {"type": "delivered", "id": "x-1", "mid": sent["mid"],
                                     "by": "bob"})
        bob.send({"type": "send", "id": "y-1", "to": "alice", "body": "hi back"})
        yield bob.expect("sent", id="y-1")
        reply = yield alice.expect("msg")
        self.assertEqual((reply["body"], reply["seq"]), ("hi back", 2))
        r = yield http("GET", f"{self.cluster.base}/v1/users/bob", token=a["token"])
        self.assertEqual(r.body["online"], True)
        r = yield http("GET", f"{self.cluster.base}/v1/messages?after=0", token=a["token"])
        self.assertEqual([(m["body"], m["delivered"]) for m in r.body["messages"]],
                         [("hello across", True), ("hi back", False)])

    @defer.inlineCallbacks
    def test_devices_on_three_nodes(self):
        """alice's phone on n1 and laptop on n2, bob's phone on n3: every session sees it."""
        a = yield self.login("carol")
        b = yield self.login("dave")
        phone = yield self.connect(a["token"], self.n1, "phone")
        laptop = yield self.connect(a["token"], self.n2, "laptop")
        bob_phone = yield self.connect(b["token"], self.n3, "phone")
        bob_laptop = yield self.connect(b["token"], self.n1, "laptop")
        phone.send({"type": "send", "id": "md", "to": "dave", "body": "to every device"})
        sent = yield phone.expect("sent", id="md")
        mine = yield laptop.expect("msg")
        self.assertEqual((mine["mid"], mine["seq"]), (sent["mid"], sent["seq"]))
        for c in (bob_phone, bob_laptop):
            m = yield c.expect("msg")
            self.assertEqual((m["mid"], m["body"]), (sent["mid"], "to every device"))
        self.assertEqual(phone.take("msg"), [])
        bob_phone.send({"type": "ack", "seq": 1})
        for c in (phone, laptop):
            d = yield c.expect("delivered", mid=sent["mid"])
            self.assertEqual(d["by"], "dave")

    @defer.inlineCallbacks
    def test_offline_delivery(self):
        """Messages to an offline user wait in its inbox and arrive by sync on another node."""
        a = yield self.login("erin")
        b = yield self.login("frank")
        erin = yield self.connect(a["token"], self.n1)
        for i in range(5):
            erin.send({"type": "send", "id": f"o{i}", "to": "frank", "body": f"m{i}"})
        for i in range(5):
            yield erin.expect("sent", id=f"o{i}")
        r = yield http("GET", f"{self.cluster.base}/v1/users/frank", token=a["token"])
        self.assertEqual(r.body["online"], False)
        frank = yield self.connect(b["token"], self.n3)
        self.assertEqual(frank.welcome["last_seq"], 5)
        frank.send({"type": "sync", "after": 0})
        bodies = []
        for seq in range(1, 6):
            m = yield frank.expect("msg", seq=seq)
            bodies.append(m["body"])
        synced = yield frank.expect("synced")
        self.assertEqual(bodies, [f"m{i}" for i in range(5)])
        self.assertEqual((synced["last_seq"], synced["more"]), (5, False))
        frank.send({"type": "ack", "seq": 5})
        for i in range(5):
            yield erin.expect("delivered", id=f"o{i}")


class RoutingTests(ClusterTestCase):
    """The gateway routes to live nodes only, honours exclude, and sees nodes leave."""

    @defer.inlineCallbacks
    def test_route_excludes_and_lists_live_nodes(self):
        """/v1/route never gives an excluded node; /v1/nodes lists the three with counts."""
        a = yield self.login("grace")
        seen = set()
        for _ in range(9):
            r = yield http("POST", f"{self.cluster.base}/v1/route", {"exclude": [self.n2]},
                           token=a["token"])
            self.assertEqual(r.code, 200, r)
            seen.add(r.body["node"]["id"])
        self.assertEqual(seen, {self.n1, self.n3})
        r = yield http("POST", f"{self.cluster.base}/v1/route",
                       {"exclude": list(self.cluster.ids)}, token=a["token"])
        self.assertEqual(r.code, 503)
        yield self.connect(a["token"], self.n3)
        deadline = time.monotonic() + 10
        while True:
            r = yield http("GET", f"{self.cluster.base}/v1/nodes")
            counts = {n["id"]: n["connections"] for n in r.body["nodes"]}
            if counts.get(self.n3) == 1 or time.monotonic() > deadline:
                break
            yield sleep(0.2)
        self.assertEqual(counts, {self.n1: 0, self.n2: 0, self.n3: 1})

    @defer.inlineCallbacks
    def test_sigterm_goaway_drain_deregister(self):
        """SIGTERM: clients get goaway, the node leaves /v1/nodes at once, exits cleanly, and
        its clients chat again through another node without losing a message."""
        a = yield self.login("heidi")
        b = yield self.login("ivan")
        heidi = yield self.connect(a["token"], self.n2)
        ivan = yield self.connect(b["token"], self.n1)
        node = self.cluster.nodes[self.n2]
        began = time.monotonic()
        node.send(signal.SIGTERM)
        goaway = yield heidi.expect("goaway", timeout=10)
        self.assertTrue(goaway["reason"])
        # While heidi is away, ivan writes to her.
        ivan.send({"type": "send", "id": "while-away", "to": "heidi", "body": "are you there"})
        yield ivan.expect("sent", id="while-away")
        yield heidi.expect_closed()
        gone = yield self.cluster.wait_listed({self.n1, self.n3}, timeout=10)
        vanished = time.monotonic() - began
        for _ in range(100):
            if not node.alive:
                break
            yield sleep(0.1)
        self.assertFalse(node.alive)
        log = node.log.read_text()
        self.assertNotIn("Traceback", log)
        for step in ("goaway to 1 connection", "drained", "deregistered", "stopped"):
            self.assertIn(step, log)
        # The znode goes with the clean stop, well before a ZooKeeper session timeout.
        self.assertLess(vanished, 4.0, f"gone after {gone:.2f} s of polling")
        r = yield http("POST", f"{self.cluster.base}/v1/route", {"exclude": []},
                       token=a["token"])
        self.assertNotEqual(r.body["node"]["id"], self.n2)
        again = yield self.connect(a["token"], r.body["node"]["id"])
        self.assertEqual(again.welcome["last_seq"], 1)
        again.send({"type": "sync", "after": 0})
        m = yield again.expect("msg", seq=1)
        self.assertEqual(m["body"], "are you there")

    @defer.inlineCallbacks
    def test_every_strategy_routes_to_live_nodes_only(self):
        """Gateways with each routing strategy stop routing to a node killed with -9 once it
        vanishes, and drop its sessions (its user shows offline)."""
        c = self.cluster
        extra = {}
        for strategy, port in zip(("random", "consistent_hash", "least_connections"),
                                  free_ports(3)):
            gw = launch.gateway(port, [
                "--redis", c.services.redis,
                "--zookeeper", c.services.zookeeper, "--cluster", c.name,
                "--routing", strategy, "--files", str(c.workdir / "files")],
                c.workdir / f"gateway-{strategy}.log", name=f"gateway-{strategy}",
                env={"DIM_SECRET": SECRET})
            gw.start()
            self.addCleanup(gw.stop)
            extra[strategy] = (gw, f"http://127.0.0.1:{port}")
        for gw, _ in extra.values():
            gw.wait_ready(60)
        a = yield self.login("judy")
        b = yield self.login("mallory")
        yield self.connect(b["token"], self.n2)
        r = yield http("GET", f"{c.base}/v1/users/mallory", token=a["token"])
        self.assertTrue(r.body["online"])
        c.nodes[self.n2].kill(signal.SIGKILL)
        yield c.wait_listed({self.n1, self.n3}, timeout=20)
        bases = [c.base] + [base for _, base in extra.values()]
        deadline = time.monotonic() + 20
        for base in bases:
            while True:  # each gateway watches ZooKeeper on its own
                r = yield http("GET", f"{base}/v1/nodes")
                listed = {n["id"] for n in r.body["nodes"]}
                if listed == {self.n1, self.n3}:
                    break
                self.assertLess(time.monotonic(), deadline, f"{base} still lists {listed}")
                yield sleep(0.1)
        for base in bases:
            chosen = set()
            for user in ("judy", "mallory"):
                token = a["token"] if user == "judy" else b["token"]
                for _ in range(6):
                    r = yield http("POST", f"{base}/v1/route", {}, token=token)
                    self.assertEqual(r.code, 200, r)
                    chosen.add(r.body["node"]["id"])
            self.assertNotIn(self.n2, chosen, base)
        r = yield http("GET", f"{c.base}/v1/users/mallory", token=a["token"])
        self.assertFalse(r.body["online"])


class SessionLifetimeTests(ClusterTestCase):
    """Sessions in Redis live only while their node's heartbeat renews them."""

    nodes = 3
    node_args = ["--session-ttl", "5"]

    @defer.inlineCallbacks
    def test_heartbeat_keeps_sessions_alive(self):
        """With a 5 s session lifetime and H = 2, a connected user is still online after
        12 s: the node's heartbeat sweep renews its sessions in Redis."""
        a = yield self.login("niaj")
        b = yield self.login("olivia")
        olivia = yield self.connect(b["token"], self.n3)
        for _ in range(6):
            yield sleep(2)
            olivia.send({"type": "ping"})
            pong = yield olivia.expect("pong")
            self.assertEqual(pong["last_seq"], 0)  # read from Redis
        r = yield http("GET", f"{self.cluster.base}/v1/users/olivia", token=a["token"])
        self.assertTrue(r.body["online"])
        niaj = yield self.connect(a["token"], self.n1)
        niaj.send({"type": "send", "id": "late", "to": "olivia", "body": "still there?"})
        yield niaj.expect("sent", id="late")
        m = yield olivia.expect("msg")
        self.assertEqual(m["body"], "still there?")


class ZooKeeperSessionLossTests(ClusterTestCase):
    """A node that was frozen past its ZooKeeper session comes back whole."""

    heartbeat = 5

    @defer.inlineCallbacks
    def test_frozen_node_registers_again_with_its_sessions(self):
        """SIGSTOP a node for longer than --zk-timeout: the gateway drops it and its
        sessions; on SIGCONT it registers again, re-adds its sessions, and its client gets
        messages from other nodes as before."""
        c = self.cluster
        a = yield self.login("peggy")
        b = yield self.login("rupert")
        peggy = yield self.connect(a["token"], self.n1)
        rupert = yield self.connect(b["token"], self.n3)
        node = c.nodes[self.n3]
        node.send(signal.SIGSTOP)
        try:
            yield c.wait_listed({self.n1, self.n2}, timeout=20)
            deadline = time.monotonic() + 10
            while True:
                r = yield http("GET", f"{c.base}/v1/users/rupert", token=a["token"])
                if not r.body["online"]:
                    break
                self.assertLess(time.monotonic(), deadline, "rupert still online")
                yield sleep(0.2)
        finally:
            node.send(signal.SIGCONT)
        yield c.wait_listed(set(c.ids), timeout=30)
        deadline = time.monotonic() + 10
        while True:
            r = yield http("GET", f"{c.base}/v1/users/rupert", token=a["token"])
            if r.body["online"]:
                break
            self.assertLess(time.monotonic(), deadline, "rupert's session was not re-added")
            yield sleep(0.2)
        peggy.send({"type": "send", "id": "back", "to": "rupert", "body": "welcome back"})
        yield peggy.expect("sent", id="back")
        m = yield rupert.expect("msg")
        self.assertEqual(m["body"], "welcome back")
        self.assertIn("registered again after losing its znode", node.log.read_text())
