"""End-to-end back-pressure on ``twistd -n dim``: a client that never reads costs the node a
bounded amount of memory, is closed with ``slow_consumer``, and loses nothing."""
from __future__ import annotations

import time

import psutil
from twisted.internet import defer

from tests.fakes.embedded import EmbeddedTestCase
from tests.harness import WireClient, register_and_login, sleep

#: Messages the sender writes while the recipient reads nothing, and their body size: about
#: 72 MB in all, which a node without a bound would hold in its output buffers.
MESSAGES = 6000
BODY = "x" * 12000
#: The most the node's memory may grow meanwhile.
MAX_GROWTH = 50 * 1024 * 1024


class NeverReadingClientTests(EmbeddedTestCase):
    """A recipient that stops reading while another user floods it with messages."""

    timeout = 180
    # the flood is far above a person's send limit on purpose
    extra = ["--slow-consumer-grace", "2", "--limit", "send=1000000:1000000"]

    @defer.inlineCallbacks
    def login(self, name: str):
        """Register and log in ``name`` and connect it to the node."""
        login = yield register_and_login(self.dim.base, name)
        c = yield WireClient.login("127.0.0.1", self.dim.node_port, login["token"])
        c.token = login["token"]
        self.clients.append(c)
        return c

    @defer.inlineCallbacks
    def flood(self, sender: WireClient, to: str, tag: str, node: psutil.Process):
        """Send MESSAGES messages to ``to`` in windows, waiting for each window's sent;
        the node's peak RSS meanwhile."""
        peak = node.memory_info().rss
        window = 200
        for start in range(0, MESSAGES, window):
            for i in range(start, min(start + window, MESSAGES)):
                sender.send({"type": "send", "id": f"{tag}-{i}", "to": to, "body": BODY})
            yield sender.expect("sent", id=f"{tag}-{min(start + window, MESSAGES) - 1}",
                                timeout=60)
            sender.frames.clear()
            peak = max(peak, node.memory_info().rss)
        return peak

    @defer.inlineCallbacks
    def test_memory_bounded_and_nothing_lost(self):
        """After the same flood to a reading client warmed the node's caches, 72 MB sent to
        a client that reads nothing grow the node's RSS by less than 50 MB; the client is
        closed with slow_consumer, a third user is unaffected, and a reconnect finds every
        message in the inbox."""
        sender = yield self.login("flooder")
        stalled = yield self.login("sleeper")
        carol = yield self.login("carol")
        node = psutil.Process(self.dim.process.pid)
        yield self.flood(sender, "carol", "warm", node)
        yield sleep(0.5)
        carol.frames.clear()
        before = node.memory_info().rss
        stalled.proto.transport.pauseProducing()  # reads nothing from now on
        peak = yield self.flood(sender, "sleeper", "f", node)
        began = time.monotonic()
        sender.send({"type": "send", "id": "to-carol", "to": "carol", "body": "hello"})
        msg = yield carol.expect("msg", id="to-carol")
        honest_ms = 1000 * (time.monotonic() - began)
        self.assertEqual(msg["body"], "hello")
        growth = peak - before
        print(f"\nnever-reading client: {MESSAGES} messages ({MESSAGES * len(BODY) / 1e6:.0f} MB)"
              f" sent to it, node RSS grew {growth / 2**20:.1f} MiB; another user's message "
              f"took {honest_ms:.1f} ms")
        self.assertLess(growth, MAX_GROWTH,
                        f"the node grew by {growth / 2**20:.1f} MiB for a client that "
                        "reads nothing")
        yield sleep(3.5)  # past the grace period, the next sweep closes it
        stalled.proto.transport.resumeProducing()
        error = yield stalled.expect("error", timeout=30)
        self.assertEqual(error["code"], "slow_consumer")
        yield stalled.expect_closed(timeout=30)
        again = yield WireClient.login("127.0.0.1", self.dim.node_port, stalled.token)
        self.clients.append(again)
        self.assertEqual(again.welcome["last_seq"], MESSAGES)
