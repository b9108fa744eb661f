"""Back-pressure: what a node buffers for a client that does not read stays bounded."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dim.node import connection as connection_module
from dim.node.connection import unsent_bytes
from dim.protocol import frames as F
from tests.fakes.node import FakeClient, Node


def _stall(client: FakeClient, unsent: int) -> None:
    """Make the client's transport report ``unsent`` bytes waiting for the socket, as a
    Twisted TCP transport does when its peer reads nothing."""
    transport = client.transport
    transport.dataBuffer = b"x" * unsent  # type: ignore[attr-defined]
    transport.offset = 0  # type: ignore[attr-defined]
    transport._tempDataLen = 0  # type: ignore[attr-defined]


def _drain(client: FakeClient) -> None:
    """The client read everything: nothing waits any more."""
    _stall(client, 0)


class BackpressureTests(SynchronousTestCase):
    """Live pushes stop for a client that does not keep up; an over-full one is closed."""

    def setUp(self) -> None:
        self.node = Node()
        self.alice = self.node.login("alice")
        self.bob = self.node.login("bob")
        self.sends = 0

    def send(self, n: int, body: str = "hi") -> None:
        for _ in range(n):
            self.sends += 1
            self.alice.send(F.Send(id=f"m{self.sends}", to="bob", body=body))

    def test_unsent_bytes_of_transports(self) -> None:
        """The backlog is read from Twisted's buffers, and is 0 for transports without."""
        self.assertEqual(unsent_bytes(object()), 0)
        _stall(self.bob, 1000)
        self.bob.transport.offset = 100  # type: ignore[attr-defined]
        self.bob.transport._tempDataLen = 7  # type: ignore[attr-defined]
        self.assertEqual(unsent_bytes(self.bob.transport), 907)

    def test_pushes_held_back_but_stored(self) -> None:
        """Over the push limit a recipient gets no msg, yet every message is stored and a
        sync after catching up brings all of them."""
        _stall(self.bob, connection_module.PUSH_LIMIT + 1)
        self.send(5)
        self.assertEqual(self.bob.of_type(F.Msg), [])
        self.assertEqual(len(self.alice.of_type(F.Sent)), 5)
        self.assertEqual(self.bob.conn.session.unacknowledged, [])
        _drain(self.bob)
        self.bob.send(F.Sync(after=0))
        got = self.bob.received()
        self.assertEqual([f.seq for f in got if isinstance(f, F.Msg)], [1, 2, 3, 4, 5])
        self.assertEqual(got[-1], F.Synced(after=0, last_seq=5, more=False))

    def test_pushes_resume_after_drain(self) -> None:
        """Once the client catches up, live pushes flow again and the gap shows."""
        _stall(self.bob, connection_module.PUSH_LIMIT + 1)
        self.send(2)
        _drain(self.bob)
        self.send(1)
        [msg] = self.bob.of_type(F.Msg)
        self.assertEqual(msg.seq, 3)

    def test_no_retransmit_to_a_stalled_client(self) -> None:
        """A msg due again is not written while the client is behind."""
        self.send(1)
        self.assertEqual(len(self.bob.of_type(F.Msg)), 1)
        _stall(self.bob, connection_module.PUSH_LIMIT + 1)
        self.node.clock.advance(5)
        self.assertEqual(self.bob.of_type(F.Msg), [])

    def test_over_max_output_closed(self) -> None:
        """A connection with more than max_output bytes unread is closed with
        slow_consumer at its next write; the other clients carry on."""
        carol = self.node.login("carol")
        _stall(self.bob, connection_module.MAX_OUTPUT + 1)
        self.bob.send(F.Sync(after=0))
        [err] = self.bob.of_type(F.Error)
        self.assertEqual(err.code, "slow_consumer")
        self.assertTrue(self.bob.closing)
        self.alice.send(F.Send(id="x", to="carol", body="still here"))
        [msg] = carol.of_type(F.Msg)
        self.assertEqual(msg.body, "still here")
        self.assertFalse(carol.closing)
