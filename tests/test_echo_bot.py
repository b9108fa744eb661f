"""The echo bot of the client docs (dim/client/examples/echo_bot.py) against a real
``twistd -n dim``: in this process, and from its command line."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.trial import unittest

from dim.client import events as E
from dim.client.examples import echo_bot
from dim.client.examples.echo_bot import EchoBot
from dim.client.gateway import GatewayClient
from dim.client.session import ClientSession
from dim.protocol import frames as F
from tests.fakes.client import PASSWORD, WAIT, EventRecorder, NodeSide, RouteScript, msg
from tests.fakes.embedded import EmbeddedTestCase
from tests.harness import REPO, register_and_login, sleep


def gateway(base: str) -> GatewayClient:
    """A gateway client that leaves no HTTP connection open after the test."""
    return GatewayClient(base, request_options={"persistent": False, "timeout": 20})


class EchoBotUnitTests(unittest.TestCase):
    """The bot against a scripted node: what it answers, and what it leaves alone."""

    def test_answer(self) -> None:
        """A direct message is answered with its body, as a reply; no resend once stored.
        (The example of docs/client.md, Testing a client.)"""
        reactor = MemoryReactorClock()
        session = ClientSession(RouteScript(), reactor, "echo", "token")
        bot = EchoBot(session)
        session.start({"id": "n1", "host": "127.0.0.1", "port": 9000})
        node = NodeSide(reactor)
        node.welcome()
        node.send(msg(1, sender="bob", body="hi"))           # bob's message arrives
        [answer, ack] = node.received()                       # the bot answered and acked it
        self.assertEqual((answer.to, answer.body), ("bob", "hi"))
        node.send(F.Sent(id=answer.id, mid="m2", seq=2, ts=1))
        self.assertEqual(bot.answered, 1)
        reactor.advance(8)                                    # no resend once it was stored
        self.assertNotIn("send", node.types())
        self.assertEqual((answer.reply_to, ack.seq), ("m1", 1))
        node.send(F.Delivered(id=answer.id, mid="m2", by="bob"))
        self.assertEqual(bot.delivered, 1)

    def test_leaves_alone(self) -> None:
        """Group messages, its own from another device and files get no answer."""
        reactor = MemoryReactorClock()
        session = ClientSession(RouteScript(), reactor, "echo", "token")
        bot = EchoBot(session)
        session.start({"id": "n1", "host": "127.0.0.1", "port": 9000})
        node = NodeSide(reactor)
        node.welcome()
        node.send(msg(1, sender="bob", group="g1", to=None), msg(2, sender="echo"),
                  msg(3, sender="bob", kind="file", body="x",
                      file=F.FileRef(id="f", name="a.bin", size=1, mime="x/y")))
        self.assertEqual(node.types(), ["ack"])
        self.assertEqual(bot.answered, 0)

    def test_failed_answer_is_logged_not_raised(self) -> None:
        """An answer the node refuses is a warning; the bot goes on answering."""
        reactor = MemoryReactorClock()
        session = ClientSession(RouteScript(), reactor, "echo", "token")
        bot = EchoBot(session)
        session.start({"id": "n1", "host": "127.0.0.1", "port": 9000})
        node = NodeSide(reactor)
        node.welcome()
        node.send(msg(1, sender="bob", body="one"))
        [refused, _] = node.received()
        node.send(F.Error(code="forbidden", message="bob blocks bots", ref=refused.id))
        node.send(msg(2, sender="carol", body="two"))
        [answer] = [f for f in node.received() if isinstance(f, F.Send)]
        node.send(F.Sent(id=answer.id, mid="m3", seq=3, ts=1))
        self.assertEqual((answer.to, bot.answered), ("carol", 1))
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_docs_show_this_bot(self) -> None:
        """docs/client.md shows the bot's source as it is, and this module's unit example."""
        docs = (REPO / "docs" / "client.md").read_text()
        self.assertIn("```python\n" + Path(echo_bot.__file__).read_text() + "```", docs)
        import inspect
        example = inspect.getsource(EchoBotUnitTests.test_answer).split('"""')[2]
        shown = example.split("self.assertNotIn")[0].replace("\n        ", "\n    ")
        self.assertIn(shown.strip(), docs)


class EchoBotTests(EmbeddedTestCase):
    """The bot answers each direct message with the same body, once, from its start on."""

    heartbeat = 2

    @defer.inlineCallbacks
    def person(self, user: str):  # type: ignore[no-untyped-def]
        """A registered user's connected ClientSession, with its events recorded."""
        login = yield register_and_login(self.dim.base, user, PASSWORD)
        session = ClientSession(gateway(self.dim.base), reactor, user, login["token"],
                                device="test")
        events = EventRecorder(session)
        session.start(login["node"])
        self.addCleanup(session.stop)
        yield events.wait_for(lambda e: isinstance(e, E.Connected), WAIT)
        return session, events

    @staticmethod
    def echo_of(events: EventRecorder, body: str) -> defer.Deferred[Any]:
        """The next message from the bot with ``body``."""
        return events.wait_for(lambda e: isinstance(e, E.MessageReceived)
                               and e.entry.sender == "echo" and e.entry.body == body, WAIT)

    @defer.inlineCallbacks
    def test_bot_answers_with_the_same_body(self):  # type: ignore[no-untyped-def]
        """alice's messages come back from the bot, with sent and delivered on both sides;
        one sent before the bot started is not answered."""
        alice, events = yield self.person("alice")
        yield register_and_login(self.dim.base, "echo", PASSWORD)
        early = yield alice.send("echo", "before the bot")
        bot = yield echo_bot.start_bot(reactor, gateway(self.dim.base), "echo", PASSWORD)
        self.addCleanup(bot.session.stop)
        for body in ("ping", "второй 2"):
            sent = yield alice.send("echo", body)
            self.assertGreater(sent.seq, early.seq)
            answer = yield self.echo_of(events, body)
            yield sent.delivered.addTimeout(WAIT, reactor)  # the bot acknowledged it
        self.assertEqual([e.entry.body for e in events.of(E.MessageReceived)],
                         ["ping", "второй 2"])
        self.assertEqual(answer.entry.to, "alice")
        self.assertEqual(bot.answered, 2)
        for _ in range(int(WAIT * 10)):  # alice acknowledges the answers: delivered
            if bot.delivered == 2:
                break
            yield sleep(0.1)
        self.assertEqual(bot.delivered, 2)

    @defer.inlineCallbacks
    def test_command_line(self):  # type: ignore[no-untyped-def]
        """``python -m dim.client.examples.echo_bot URL echo --register`` runs the bot."""
        out = Path(self.mktemp())
        with out.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", echo_bot.__name__, self.dim.base, "echo", "--register"],
                cwd=REPO, env={**os.environ, "DIM_BOT_PASSWORD": PASSWORD},
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

        def stop() -> None:
            proc.terminate()
            proc.wait(timeout=30)
        self.addCleanup(stop)
        for _ in range(int(WAIT * 10)):
            if "echo is listening" in out.read_text() or proc.poll() is not None:
                break
            yield sleep(0.1)
        self.assertIn("echo is listening", out.read_text())
        alice, events = yield self.person("alice")
        yield alice.send("echo", "hello bot")
        yield self.echo_of(events, "hello bot")
        for _ in range(int(WAIT * 10)):
            if "answered alice" in out.read_text():
                break
            yield sleep(0.1)
        self.assertIn("answered alice", out.read_text())
