"""Tests of the gateway's cluster pusher: one envelope per node holding sessions."""
from __future__ import annotations

import msgspec
from twisted.trial import unittest

from dim.cluster import envelope as E
from dim.cluster.local import ForwarderHub, LocalSessionRegistry
from dim.cluster.pusher import ForwardingPusher
from dim.errors import Unavailable
from dim.protocol import frames as F


class ForwardingPusherTests(unittest.TestCase):
    """Frames reach the nodes of the sessions, grouped by node."""

    def setUp(self) -> None:
        self.sessions = LocalSessionRegistry()
        for user, session, node in (("alice", "s1", "n1"), ("alice", "s2", "n2"),
                                    ("bob", "s3", "n1")):
            self.sessions.add(user, session, node)
        self.hub = ForwarderHub()
        self.forwarder = self.hub.forwarder("gateway")
        self.got: dict[str, list[E.Envelope]] = {}
        for node in ("n1", "n2"):
            self.got[node] = []
            self.hub.forwarder(node).set_receiver(
                lambda payload, node=node: self.got[node].append(E.decode(payload)))

    def test_one_envelope_per_node(self) -> None:
        """Users on the same node share one envelope; a user on two nodes is in both."""
        frame = F.Notify(event="group_changed", group="g1")
        self.successResultOf(ForwardingPusher(self.sessions, self.forwarder).push(
            {"alice": [frame], "bob": [frame], "carol": [frame]}))
        self.assertEqual(sorted(to for _, to, _ in self.hub.log), ["n1", "n2"])
        item = E.item(frame)
        self.assertEqual(self.got["n1"], [E.Envelope(parts=[E.Part(to={"alice": [item],
                                                                         "bob": [item]})])])
        self.assertEqual(self.got["n2"], [E.Envelope(parts=[E.Part(to={"alice": [item]})])])
        self.assertEqual(item.type, "notify")
        self.assertEqual(msgspec.json.decode(item.frame),
                         {"type": "notify", "event": "group_changed", "group": "g1"})

    def test_offline_users_skipped(self) -> None:
        """Nothing is sent for users with no session."""
        self.successResultOf(ForwardingPusher(self.sessions, self.forwarder).push(
            {"carol": [F.Presence(user="x", online=True)]}))
        self.assertEqual(self.hub.log, [])

    def test_failed_node_logged_others_sent(self) -> None:
        """A node whose envelope fails is logged; the other nodes still get theirs."""
        self.hub.failing["n2"] = Unavailable("broker down")
        self.successResultOf(ForwardingPusher(self.sessions, self.forwarder).push(
            {"alice": [F.Notify(event="contact_added", user="bob")]}))
        self.assertEqual([to for _, to, _ in self.hub.log], ["n1"])
        self.assertEqual(len(self.got["n1"]), 1)
        self.assertEqual(self.got["n2"], [])
        self.assertEqual(len(self.flushLoggedErrors(Unavailable)), 1)
