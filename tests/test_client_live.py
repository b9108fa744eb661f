"""The client core against a real ``twistd -n dim`` (a child process, real TCP and HTTP).

:func:`live_client` and :class:`LiveChat` are the fixtures for any test that drives the real
client core against a running DIM: give them a gateway URL.
"""
from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial import unittest

from dim.client import session as S
from dim.client.cache import MessageCache
from dim.client.gateway import GatewayClient
from tests.harness import EmbeddedDim
from tests.test_client_session import EventRecorder

PASSWORD = "correct horse battery"
WAIT = 20.0


class LiveChat:
    """One user's ChatClient on the real reactor, with its events recorded."""

    def __init__(self, base_url: str, user: str, device: str = "test") -> None:
        self.user = user
        self.gateway = GatewayClient(base_url, request_options={"persistent": False, "timeout": 20})
        self.client = S.ChatClient(self.gateway, reactor, config=None, device=device,
                                   cache_factory=lambda url, name: MessageCache(":memory:", name))
        self.events = EventRecorder(self.client)

    def wait_for(self, kind: type, timeout: float = WAIT, **fields: Any) -> defer.Deferred[Any]:
        """The first event of class ``kind`` whose fields match (already seen, or coming)."""
        def match(e: Any) -> bool:
            return isinstance(e, kind) and all(getattr(e, k) == v for k, v in fields.items())
        return self.events.wait_for(match, timeout, reactor)

    def received(self) -> list[str]:
        """Bodies of the messages received, in the order they were reported."""
        return [e.entry.body for e in self.events.of(S.MessageReceived)]

    def stop(self) -> None:
        """Disconnect for good."""
        self.client.stop()


@defer.inlineCallbacks
def live_client(base_url: str, user: str, register: bool = True, device: str = "test"):
    """A connected LiveChat for ``user`` (registered first unless ``register`` is false)."""
    chat = LiveChat(base_url, user, device)
    try:
        if register:
            yield chat.client.register(user, PASSWORD)
        else:
            yield chat.client.login(user, PASSWORD)
        yield chat.wait_for(S.Connected)
    except BaseException as e:
        chat.stop()
        raise AssertionError(f"{user} did not connect ({e!r}); events: {chat.events.events}"
                             ) from e
    return chat


class LiveSessionTests(unittest.TestCase):
    """ChatClient and ClientSession against the embedded dim."""

    timeout = 120

    def setUp(self) -> None:
        self.dim = EmbeddedDim(Path(self.mktemp()).resolve(), heartbeat=2)
        self.dim.start()
        self.addCleanup(self.dim.process.stop)
        self.chats: list[LiveChat] = []

    def tearDown(self) -> None:
        for chat in self.chats:
            chat.stop()

    @defer.inlineCallbacks
    def chat(self, user: str):  # type: ignore[no-untyped-def]
        """A registered, connected LiveChat, stopped at the end of the test."""
        c = yield live_client(self.dim.base, user)
        self.chats.append(c)
        return c

    @defer.inlineCallbacks
    def test_send_receive_delivered(self):  # type: ignore[no-untyped-def]
        """alice's message reaches bob once, and alice sees it sent, then delivered."""
        alice = yield self.chat("alice")
        bob = yield self.chat("bob")
        out = alice.client.send("bob", "hello bob")
        yield alice.wait_for(S.MessageStatus, id=out.id, state=S.SENT)
        yield bob.wait_for(S.MessageReceived)
        yield alice.wait_for(S.MessageStatus, id=out.id, state=S.DELIVERED)
        self.assertEqual(bob.received(), ["hello bob"])
        self.assertEqual([c.peer for c in bob.client.conversations()], ["alice"])

    @defer.inlineCallbacks
    def test_message_to_nobody_fails(self):  # type: ignore[no-untyped-def]
        """A message to a user that does not exist is marked failed with the node's reason."""
        alice = yield self.chat("alice")
        out = alice.client.send("nobody", "hello?")
        yield alice.wait_for(S.MessageStatus, id=out.id, state=S.FAILED)
        self.assertIn("not_found", out.error)

    @defer.inlineCallbacks
    def test_survives_a_restart_of_dim(self):  # type: ignore[no-untyped-def]
        """After kill -9 and restart, both reconnect; what was typed offline arrives once."""
        alice = yield self.chat("alice")
        bob = yield self.chat("bob")
        first = alice.client.send("bob", "before")
        yield bob.wait_for(S.MessageReceived)
        yield alice.wait_for(S.MessageStatus, id=first.id, state=S.DELIVERED)
        self.dim.process.kill(signal.SIGKILL)
        yield alice.wait_for(S.Disconnected)
        offline = alice.client.send("bob", "while down")
        self.dim.start()
        yield alice.wait_for(S.MessageStatus, id=offline.id, state=S.SENT, timeout=60)
        yield bob.wait_for(S.MessageReceived, timeout=60, entry=_Anything(body="while down"))
        self.assertEqual(bob.received(), ["before", "while down"])
        self.assertGreaterEqual(len(alice.events.of(S.Connected)), 2)


class _Anything:
    """Equal to any object whose named attributes have the given values."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def __eq__(self, other: object) -> bool:
        return all(getattr(other, k, None) == v for k, v in self.fields.items())
