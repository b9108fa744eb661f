"""Tests of the gateway's cluster pusher: one envelope per node holding sessions."""
from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from dim.cluster.local import LocalSessionRegistry
from dim.cluster.pusher import ForwardingPusher


class RecordingForwarder:
    """An IForwarder that records what it was asked to send, and can fail for a node."""

    node = "gateway"

    def __init__(self, failing: str | None = None) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.failing = failing

    def forward(self, node: str, payload: bytes) -> defer.Deferred[None]:
        if node == self.failing:
            return defer.fail(RuntimeError("broker down"))
        self.sent.append((node, json.loads(payload)))
        return defer.succeed(None)

    def set_receiver(self, receiver: Any) -> None:
        pass


class ForwardingPusherTests(unittest.TestCase):
    """Frames reach the nodes of the sessions, grouped by node."""

    def setUp(self) -> None:
        self.sessions = LocalSessionRegistry()
        for user, session, node in (("alice", "s1", "n1"), ("alice", "s2", "n2"),
                                    ("bob", "s3", "n1")):
            self.sessions.add(user, session, node)

    def test_one_envelope_per_node(self) -> None:
        """Users on the same node share one envelope; a user on two nodes is in both."""
        forwarder = RecordingForwarder()
        frame = {"type": "notify", "event": "group_changed", "group": "g1"}
        self.successResultOf(ForwardingPusher(self.sessions, forwarder).push(
            {"alice": [frame], "bob": [frame], "carol": [frame]}))
        sent = dict(forwarder.sent)
        self.assertEqual(sorted(sent), ["n1", "n2"])
        self.assertEqual(sent["n1"], {"t": "frames", "to": {"alice": [frame], "bob": [frame]},
                                      "skip": None})
        self.assertEqual(sent["n2"]["to"], {"alice": [frame]})

    def test_offline_users_skipped(self) -> None:
        """Nothing is sent for users with no session."""
        forwarder = RecordingForwarder()
        self.successResultOf(ForwardingPusher(self.sessions, forwarder).push(
            {"carol": [{"type": "presence", "user": "x", "online": True}]}))
        self.assertEqual(forwarder.sent, [])

    def test_failed_node_logged_others_sent(self) -> None:
        """A node whose envelope fails is logged; the other nodes still get theirs."""
        forwarder = RecordingForwarder(failing="n2")
        self.successResultOf(ForwardingPusher(self.sessions, forwarder).push(
            {"alice": [{"type": "notify", "event": "contact_added", "user": "bob"}]}))
        self.assertEqual([node for node, _ in forwarder.sent], ["n1"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
