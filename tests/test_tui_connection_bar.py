"""Tests of the connection bar's words, which a person reads to know what the client does."""
from __future__ import annotations

from twisted.trial import unittest

from dim.client import events as E
from tui.widgets.connection_bar import describe


class DescribeTests(unittest.TestCase):
    """Every state reads right, and a reconnect always shows a countdown while it waits."""

    def test_connected(self) -> None:
        """Connected names the node and the user."""
        self.assertEqual(describe(E.CONNECTED, "n1", "alice", None, 0),
                         "● connected to node n1 as alice")

    def test_countdown_in_seconds(self) -> None:
        """A wait of a second or more counts down in whole seconds."""
        self.assertEqual(describe(E.RECONNECTING, None, None, 12.6, 3, now=10.0),
                         "↻ reconnecting in 3 s (attempt 3)")

    def test_countdown_in_tenths_below_a_second(self) -> None:
        """The first retries wait under a second: the countdown shows tenths, not 0."""
        self.assertEqual(describe(E.RECONNECTING, None, None, 10.46, 1, now=10.0),
                         "↻ reconnecting in 0.5 s (attempt 1)")
        self.assertEqual(describe(E.RECONNECTING, None, None, 10.2, 1, now=10.0),
                         "↻ reconnecting in 0.2 s (attempt 1)")

    def test_trying_now(self) -> None:
        """Once the wait is over the bar says it is reconnecting, without a countdown."""
        self.assertEqual(describe(E.RECONNECTING, None, None, 10.0, 2, now=10.01),
                         "↻ reconnecting (attempt 2)")

    def test_offline(self) -> None:
        """No session at all reads offline."""
        self.assertEqual(describe(E.OFFLINE, None, None, None, 0), "○ offline")
