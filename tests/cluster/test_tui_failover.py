"""The terminal client itself survives the death of its node in a cluster.

The real ``ChatApp`` with the real client core logs in to a gateway and three nodes; its node
gets kill -9 while someone keeps writing.  The app must show a reconnect, land on another
node, and show every message exactly once.  Textual and Twisted share the asyncio loop, so
this runs under ``--reactor=asyncio``, as the test command runs it.
"""
from __future__ import annotations

import asyncio
import signal
import time

from twisted.internet import reactor

from dim.client import events as E
from dim.client import chat as C
from dim.client.cache import MessageCache
from dim.client.gateway import GatewayClient
from tests.cluster.kit import ClusterTestCase
from tests.harness import WireClient
from tests.fakes.tui import async_test, bar, logged_in, shown, submit
from tui.app import ChatApp

PASSWORD = "correct horse battery"


def wait(d):
    """A Deferred as something an asyncio task can await."""
    return d.asFuture(asyncio.get_running_loop())


class TerminalFailoverTests(ClusterTestCase):
    """kill -9 of the app's node: a visible reconnect, then the missed messages, once each."""

    timeout = 180

    @async_test
    async def test_app_reconnects_and_shows_each_message_once(self) -> None:
        """Messages sent while the app's node is dead appear once after it reconnects."""
        self.assertTrue(hasattr(reactor, "_asyncioEventloop"),
                        "the terminal client needs the asyncio reactor: trial --reactor=asyncio")
        base = self.cluster.base
        await self.login("alice")
        bob_login = await self.login("bob")
        gateway = GatewayClient(base, request_options={"persistent": False, "timeout": 20})
        # Jitter pinned near its top, so the first retry waits about 0.45 s: long enough to
        # see the countdown, whatever the random draw would have been.
        client = C.ChatClient(gateway, reactor, config=None, device="terminal", rng=lambda: 0.9,
                              cache_factory=lambda url, name: MessageCache(":memory:", name))
        app = ChatApp(client, user="alice", password=PASSWORD)
        async with app.run_test() as pilot:
            await logged_in(pilot)
            await self.until(lambda: client.state == E.CONNECTED, pilot, "alice connected")
            first = client.node.id
            others = [n for n in self.cluster.ids if n != first]
            bob = await self.connect(bob_login["token"], others[0])
            await submit(pilot, "/open bob")
            bob.send({"type": "send", "id": "b0", "to": "alice", "body": "before the crash"})
            await wait(bob.expect("sent", id="b0"))
            await self.until(lambda: "before the crash" in " ".join(shown(app)), pilot,
                             "the first message shown")

            bars: list[str] = []
            def sample() -> None:
                try:
                    bars.append(bar(app))
                except Exception as e:
                    bars.append(f"{type(app.screen).__name__}: {e!r}")
            app.set_interval(0.02, sample)
            self.cluster.nodes[first].kill(signal.SIGKILL)
            for i in range(1, 6):
                bob.send({"type": "send", "id": f"b{i}", "to": "alice", "body": f"missed {i}"})
                await wait(bob.expect("sent", id=f"b{i}"))
            await self.until(lambda: client.state == E.CONNECTED and client.node.id != first,
                             pilot, "alice on another node")
            self.assertTrue(any("reconnecting in" in b for b in bars), sorted(set(bars)))
            self.assertIn(f"connected to node {client.node.id}", bar(app))
            expected = ["before the crash"] + [f"missed {i}" for i in range(1, 6)]
            await self.until(lambda: all(any(e in line for line in shown(app)) for e in expected),
                             pilot, "every missed message shown")
            await pilot.pause(1.0)
            lines = shown(app)
            for body in expected:
                self.assertEqual(sum(line.endswith(f"bob: {body}") for line in lines), 1, lines)
            self.assertEqual(len(lines), len(expected), lines)
            client.stop()

    async def until(self, predicate, pilot, what: str, timeout: float = 60.0) -> None:
        """Let the app run until ``predicate()`` holds; fail naming ``what`` otherwise."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"not within {timeout} s: {what}")
            await pilot.pause(0.05)
            await asyncio.sleep(0)

    async def connect(self, token: str, node: str, device: str | None = None) -> WireClient:
        """A raw contract client on ``node`` (awaitable from a coroutine)."""
        return await wait(super().connect(token, node, device))

    async def login(self, user: str) -> dict:
        """Register and log in over HTTP (awaitable from a coroutine)."""
        return await wait(super().login(user))
