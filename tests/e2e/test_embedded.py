"""End-to-end tests of ``twistd -n dim`` in a subprocess, over real TCP and HTTP."""
from __future__ import annotations

import signal
from pathlib import Path

from twisted.internet import defer
from twisted.trial import unittest

from tests.harness import EmbeddedDim, WireClient, http, register_and_login, sleep
from tests.fakes.embedded import EmbeddedTestCase


class ChatTests(EmbeddedTestCase):
    """Two people chat through one embedded process."""

    @defer.inlineCallbacks
    def test_two_users_chat(self):
        """send -> sent, msg to the recipient, ack -> delivered to the sender."""
        alice = yield self.user("alice1")
        bob = yield self.user("bob1")
        self.assertEqual(alice.welcome["user"], "alice1")
        alice.send({"type": "send", "id": "a-1", "to": "bob1", "body": "hello bob"})
        sent = yield alice.expect("sent", id="a-1")
        msg = yield bob.expect("msg")
        self.assertEqual((msg["from"], msg["to"], msg["body"], msg["id"], msg["mid"]),
                         ("alice1", "bob1", "hello bob", "a-1", sent["mid"]))
        self.assertEqual(sent["seq"], 1)
        self.assertEqual(msg["seq"], 1)
        bob.send({"type": "ack", "seq": msg["seq"]})
        delivered = yield alice.expect("delivered")
        self.assertEqual(delivered, {"type": "delivered", "id": "a-1", "mid": sent["mid"],
                                     "by": "bob1"})
        bob.send({"type": "send", "id": "b-1", "to": "alice1", "body": "hi alice"})
        reply = yield alice.expect("msg")
        self.assertEqual((reply["body"], reply["seq"]), ("hi alice", 2))

    @defer.inlineCallbacks
    def test_duplicate_send_same_sent(self):
        """A repeated id stores nothing new and gets the same sent."""
        alice = yield self.user("alice2")
        bob = yield self.user("bob2")
        for _ in range(2):
            alice.send({"type": "send", "id": "dup", "to": "bob2", "body": "once"})
        first = yield alice.expect("sent", id="dup")
        second = yield alice.expect("sent", id="dup")
        self.assertEqual((first["mid"], first["seq"]), (second["mid"], second["seq"]))
        yield bob.expect("msg")
        bob.send({"type": "sync", "after": 0})
        synced = yield bob.expect("synced")
        self.assertEqual(synced["last_seq"], 1)

    @defer.inlineCallbacks
    def test_offline_delivery_through_sync(self):
        """Messages to an offline user reach it by sync, in order, with correct seqs."""
        alice = yield self.user("alice3")
        yield register_and_login(self.dim.base, "bob3")
        for i in range(5):
            alice.send({"type": "send", "id": f"o-{i}", "to": "bob3", "body": f"m{i}"})
        for i in range(5):
            yield alice.expect("sent", id=f"o-{i}")
        bob = yield self.user("bob3")
        self.assertEqual(bob.welcome["last_seq"], 5)
        bob.send({"type": "sync", "after": 2, "limit": 2})
        m3 = yield bob.expect("msg", seq=3)
        m4 = yield bob.expect("msg", seq=4)
        synced = yield bob.expect("synced")
        self.assertEqual((m3["body"], m4["body"]), ("m2", "m3"))
        self.assertEqual(synced, {"type": "synced", "after": 2, "last_seq": 5, "more": True})
        bob.send({"type": "sync", "after": 4})
        yield bob.expect("msg", seq=5)
        synced = yield bob.expect("synced")
        self.assertFalse(synced["more"])

    @defer.inlineCallbacks
    def test_multi_device(self):
        """Every session of both users sees the message; the sending one gets sent instead."""
        a1 = yield self.user("alice4", "phone")
        a2 = yield self.second_session(a1, "laptop")
        b1 = yield self.user("bob4", "phone")
        b2 = yield self.second_session(b1, "laptop")
        a1.send({"type": "send", "id": "md", "to": "bob4", "body": "everywhere"})
        sent = yield a1.expect("sent", id="md")
        mine = yield a2.expect("msg")
        self.assertEqual((mine["seq"], mine["mid"]), (sent["seq"], sent["mid"]))
        for b in (b1, b2):
            m = yield b.expect("msg")
            self.assertEqual(m["mid"], sent["mid"])
        self.assertEqual(a1.take("msg"), [])
        b2.send({"type": "ack", "seq": 1})
        for a in (a1, a2):
            yield a.expect("delivered", mid=sent["mid"])

    @defer.inlineCallbacks
    def test_history_and_user_over_http(self):
        """GET /v1/messages lists the inbox with delivered marks; /v1/users shows online."""
        alice = yield self.user("alice5")
        bob = yield self.user("bob5")
        alice.send({"type": "send", "id": "h1", "to": "bob5", "body": "history"})
        yield alice.expect("sent")
        m = yield bob.expect("msg")
        bob.send({"type": "ack", "seq": m["seq"]})
        yield alice.expect("delivered")
        r = yield http("GET", f"{self.dim.base}/v1/messages?after=0", token=alice.token)
        self.assertEqual(r.code, 200)
        self.assertEqual(r.body["last_seq"], 1)
        [entry] = r.body["messages"]
        self.assertEqual((entry["body"], entry["from"], entry["delivered"]),
                         ("history", "alice5", True))
        r = yield http("GET", f"{self.dim.base}/v1/users/bob5", token=alice.token)
        self.assertEqual(r.body["online"], True)
        r = yield http("GET", f"{self.dim.base}/v1/nodes")
        self.assertEqual(r.code, 200)
        self.assertGreaterEqual(r.body["nodes"][0]["connections"], 2)

    @defer.inlineCallbacks
    def test_cannot_read_other_inbox(self):
        """A session only ever sees its own user's inbox, whatever it asks for."""
        alice = yield self.user("alice6")
        eve = yield self.user("eve6")
        alice.send({"type": "send", "id": "secret", "to": "alice6", "body": "note to self"})
        yield alice.expect("sent")
        eve.send({"type": "sync", "after": 0})
        synced = yield eve.expect("synced")
        self.assertEqual((synced["last_seq"], eve.take("msg")), (0, []))
        eve.send({"type": "send", "id": "x", "to": "alice6", "body": "?", "from": "bob6"})
        forged = yield alice.expect("msg")
        self.assertEqual(forged["from"], "eve6")


class BadInputTests(EmbeddedTestCase):
    """Misbehaving connections get the contract's errors and never disturb others."""

    @defer.inlineCallbacks
    def test_oversize_frame_closes_only_that_connection(self):
        """frame_too_large closes the offender; a bystander goes on chatting."""
        alice = yield self.user("alice7")
        bob = yield self.user("bob7")
        bad = yield WireClient.connect("127.0.0.1", self.dim.node_port)
        self.clients.append(bad)
        bad.write_raw(b"", length=10_000_000)
        err = yield bad.expect("error")
        self.assertEqual(err["code"], "frame_too_large")
        yield bad.expect_closed()
        alice.send({"type": "send", "id": "ok", "to": "bob7", "body": "still here"})
        yield alice.expect("sent")
        yield bob.expect("msg")

    @defer.inlineCallbacks
    def test_junk_and_zero_length(self):
        """Junk bytes and a zero-length frame are bad_frame and close the connection."""
        for payload, length in ((b"\x00\x01garbage", None), (b"", 0)):
            c = yield WireClient.connect("127.0.0.1", self.dim.node_port)
            self.clients.append(c)
            c.write_raw(payload, length)
            err = yield c.expect("error")
            self.assertEqual(err["code"], "bad_frame")
            yield c.expect_closed()

    @defer.inlineCallbacks
    def test_frame_before_hello(self):
        """Any frame before hello is unauthorized and closes the connection."""
        c = yield WireClient.connect("127.0.0.1", self.dim.node_port)
        self.clients.append(c)
        c.send({"type": "sync", "after": 0})
        err = yield c.expect("error")
        self.assertEqual(err["code"], "unauthorized")
        yield c.expect_closed()

    @defer.inlineCallbacks
    def test_bad_token(self):
        """A hello with a forged token is unauthorized and closes the connection."""
        c = yield WireClient.connect("127.0.0.1", self.dim.node_port)
        self.clients.append(c)
        c.send({"type": "hello", "v": 1, "token": "forged.token.value"})
        err = yield c.expect("error")
        self.assertEqual(err["code"], "unauthorized")
        yield c.expect_closed()

    @defer.inlineCallbacks
    def test_recoverable_errors_keep_connection(self):
        """unknown_type, bad_request, not_found and too_large leave the connection open."""
        alice = yield self.user("alice8")
        yield self.user("bob8")
        alice.send({"type": "dance", "id": "d"})
        alice.send({"type": "send", "id": "b", "to": "bob8"})
        alice.send({"type": "send", "id": "n", "to": "nobody8", "body": "x"})
        alice.send({"type": "send", "id": "t", "to": "bob8", "body": "x" * 20000})
        codes = set()
        for _ in range(4):
            e = yield alice.expect("error")
            codes.add((e["code"], e.get("ref")))
        self.assertEqual(codes, {("unknown_type", "d"), ("bad_request", "b"),
                                 ("not_found", "n"), ("too_large", "t")})
        alice.send({"type": "ping"})
        pong = yield alice.expect("pong")
        self.assertEqual(pong["last_seq"], 0)
        alice.send({"type": "send", "id": "fine", "to": "bob8", "body": "x"})
        sent = yield alice.expect("sent", id="fine")
        self.assertEqual(sent["seq"], 1)
        alice.send({"type": "ping"})
        pong = yield alice.expect("pong")
        self.assertEqual(pong["last_seq"], 1)


class HeartbeatTests(EmbeddedTestCase):
    """A silent connection is closed after 3H with idle_timeout."""

    heartbeat = 1

    @defer.inlineCallbacks
    def test_idle_timeout_and_ping(self):
        """With H=1, a pinging session stays and a silent one is closed after about 3 s."""
        quiet = yield self.user("quiet9")
        chatty = yield self.user("chatty9")
        self.assertEqual(quiet.welcome["heartbeat"], 1)
        for _ in range(8):
            chatty.send({"type": "ping"})
            yield sleep(0.5)
        err = yield quiet.expect("error")
        self.assertEqual(err["code"], "idle_timeout")
        yield quiet.expect_closed()
        self.assertTrue(chatty.connected)


class DurabilityTests(unittest.TestCase):
    """kill -9 after sent loses nothing; SIGTERM sends goaway and exits cleanly."""

    timeout = 120

    @defer.inlineCallbacks
    def test_kill_between_sent_and_login(self):
        """Everything that got sent before kill -9 is there for the recipient after restart."""
        workdir = Path(self.mktemp()).resolve()
        # 200 sends at once are over the default per-user limit: allow them all.
        dim = EmbeddedDim(workdir, extra=["--limit", "send=1000:1000"])
        dim.start()
        try:
            alice_login = yield register_and_login(dim.base, "alice10")
            yield register_and_login(dim.base, "bob10")
            alice = yield WireClient.login("127.0.0.1", dim.node_port, alice_login["token"])
            for i in range(200):
                alice.send({"type": "send", "id": f"k{i}", "to": "bob10", "body": f"n{i}"})
            last = None
            for i in range(200):
                last = yield alice.expect("sent", id=f"k{i}")
            self.assertEqual(last["seq"], 200)
            dim.process.kill(signal.SIGKILL)
            yield alice.expect_closed()
            dim.process.launch()
            bob_login = yield register_and_login(dim.base, "bob10")
            bob = yield WireClient.login("127.0.0.1", dim.node_port, bob_login["token"])
            self.assertEqual(bob.welcome["last_seq"], 200)
            bob.send({"type": "sync", "after": 0, "limit": 1000})
            synced = yield bob.expect("synced")
            bodies = [f["body"] for f in bob.take("msg")]
            self.assertEqual(bodies, [f"n{i}" for i in range(200)])
            self.assertFalse(synced["more"])
            yield bob.close()
        finally:
            dim.process.kill()

    @defer.inlineCallbacks
    def test_sigterm_sends_goaway(self):
        """On SIGTERM every client gets goaway, and the process shuts down cleanly.

        twistd ends by re-raising the signal it stopped for, so the status is -SIGTERM.
        """
        workdir = Path(self.mktemp()).resolve()
        dim = EmbeddedDim(workdir)
        dim.start()
        try:
            login = yield register_and_login(dim.base, "alice11")
            c = yield WireClient.login("127.0.0.1", dim.node_port, login["token"])
            dim.process.send(signal.SIGTERM)
            goaway = yield c.expect("goaway", timeout=15)
            self.assertTrue(goaway["reason"])
            yield c.expect_closed()
            for _ in range(100):
                if not dim.process.alive:
                    break
                yield sleep(0.1)
            self.assertEqual(dim.process.returncode, -signal.SIGTERM, dim.process.log_tail())
            self.assertIn("Server Shut Down.", dim.process.log_tail(5))
            self.assertNotIn("Traceback", dim.process.log.read_text())
        finally:
            dim.process.kill()


class DaemonTests(unittest.TestCase):
    """``twistd dim`` without -n daemonizes (forks) and still works, and stops on SIGTERM."""

    timeout = 120

    @defer.inlineCallbacks
    def test_daemonized(self):
        """A daemonized dim stores and delivers messages; SIGTERM to its pid file stops it."""
        import os
        import subprocess
        import sys

        from dim.launch import free_ports, wait_for_port
        from tests.harness import REPO

        work = Path(self.mktemp()).resolve()
        work.mkdir(parents=True)
        http_port, node_port = free_ports(2)
        pidfile = work / "dim.pid"
        subprocess.run(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "--pidfile", str(pidfile), "--logfile", str(work / "dim.log"), "dim",
             "--gateway", f"tcp:{http_port}:interface=127.0.0.1",
             "--node", f"tcp:{node_port}:interface=127.0.0.1", "--data", str(work / "data")],
            cwd=REPO, check=True, timeout=60,
            env={**os.environ, "DIM_SECRET": "daemon-test-secret-of-at-least-32-bytes"})
        pid = int(pidfile.read_text())
        try:
            wait_for_port(http_port)
            base = f"http://127.0.0.1:{http_port}"
            a = yield register_and_login(base, "alice12")
            yield register_and_login(base, "bob12")
            alice = yield WireClient.login("127.0.0.1", node_port, a["token"])
            alice.send({"type": "send", "id": "d1", "to": "bob12", "body": "from a daemon"})
            sent = yield alice.expect("sent", id="d1")
            self.assertEqual(sent["seq"], 1)
            os.kill(pid, signal.SIGTERM)
            yield alice.expect("goaway", timeout=15)
            yield alice.expect_closed()
            for _ in range(150):
                if not pidfile.exists():
                    break
                yield sleep(0.1)
            self.assertFalse(pidfile.exists(), (work / "dim.log").read_text()[-2000:])
        finally:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
