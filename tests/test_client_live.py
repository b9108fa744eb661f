"""The client core against a real ``twistd -n dim`` (a child process, real TCP and HTTP).

:func:`live_client` and :class:`LiveChat` are the fixtures for any test that drives the real
client core against a running DIM: give them a gateway URL.
"""
from __future__ import annotations

import signal

from twisted.internet import defer

from dim.client import events as E
from tests.fakes.client import _Anything
from tests.fakes.embedded import LiveChatTestCase


class LiveSessionTests(LiveChatTestCase):
    """ChatClient and ClientSession against the embedded dim."""

    @defer.inlineCallbacks
    def test_send_receive_delivered(self):  # type: ignore[no-untyped-def]
        """alice's message reaches bob once, and alice sees it sent, then delivered."""
        alice = yield self.chat("alice")
        bob = yield self.chat("bob")
        out = alice.client.send("bob", "hello bob")
        yield alice.wait_for(E.MessageStatus, id=out.id, state=E.SENT)
        yield bob.wait_for(E.MessageReceived)
        yield alice.wait_for(E.MessageStatus, id=out.id, state=E.DELIVERED)
        self.assertEqual(bob.received(), ["hello bob"])
        self.assertEqual([c.peer for c in bob.client.conversations()], ["alice"])

    @defer.inlineCallbacks
    def test_message_to_nobody_fails(self):  # type: ignore[no-untyped-def]
        """A message to a user that does not exist is marked failed with the node's reason."""
        alice = yield self.chat("alice")
        out = alice.client.send("nobody", "hello?")
        yield alice.wait_for(E.MessageStatus, id=out.id, state=E.FAILED)
        self.assertIn("not_found", out.error)

    @defer.inlineCallbacks
    def test_survives_a_restart_of_dim(self):  # type: ignore[no-untyped-def]
        """After kill -9 and restart, both reconnect; what was typed offline arrives once."""
        alice = yield self.chat("alice")
        bob = yield self.chat("bob")
        first = alice.client.send("bob", "before")
        yield bob.wait_for(E.MessageReceived)
        yield alice.wait_for(E.MessageStatus, id=first.id, state=E.DELIVERED)
        self.dim.process.kill(signal.SIGKILL)
        yield alice.wait_for(E.Disconnected)
        offline = alice.client.send("bob", "while down")
        self.dim.start()
        yield alice.wait_for(E.MessageStatus, id=offline.id, state=E.SENT, timeout=60)
        yield bob.wait_for(E.MessageReceived, timeout=60, entry=_Anything(body="while down"))
        self.assertEqual(bob.received(), ["before", "while down"])
        self.assertGreaterEqual(len(alice.events.of(E.Connected)), 2)


