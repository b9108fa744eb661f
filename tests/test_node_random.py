"""A randomized run of two nodes: many sessions sending, acking, syncing and dropping.

Whatever the interleaving, each live session must have got every message of its user's inbox
stored after its welcome (as ``msg``, or as ``sent`` for the one it sent), every ``sent`` must
match the inbox, and nothing may be left scheduled once everyone is gone.
"""
from __future__ import annotations

import random

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from dim.cluster.local import LocalSessionRegistry
from dim.protocol import frames as F
from dim.store.memory import MemoryStore
from tests.fakes.node import EPOCH, USERS, FakeClient, ForwarderHub, Node


class Tracked:
    """A logged-in fake client and what it has seen."""

    def __init__(self, client: FakeClient, user: str, welcome_seq: int) -> None:
        self.client = client
        self.user = user
        self.welcome_seq = welcome_seq
        self.seen: dict[int, str] = {}   # seq -> mid
        self.sent: dict[str, tuple[str, int]] = {}  # id -> (mid, seq)
        self.max_seq = welcome_seq
        self.delivered: list[str] = []

    def read(self) -> None:
        for frame in self.client.received():
            if isinstance(frame, F.Msg):
                assert frame.to is not None
                old = self.seen.setdefault(frame.seq, frame.mid)
                assert old == frame.mid, (self.user, frame.seq, old, frame.mid)
                self.max_seq = max(self.max_seq, frame.seq)
            elif isinstance(frame, F.Sent):
                old = self.sent.setdefault(frame.id, (frame.mid, frame.seq))
                assert old == (frame.mid, frame.seq), (frame, old)
                self.seen.setdefault(frame.seq, frame.mid)
                self.max_seq = max(self.max_seq, frame.seq)
            elif isinstance(frame, F.Delivered):
                self.delivered.append(frame.mid)
            elif isinstance(frame, (F.Synced, F.Pong)):
                pass
            else:
                raise AssertionError(f"unexpected frame {frame!r}")


class RandomRunTests(SynchronousTestCase):
    """Random interleavings of the contract's operations keep its promises."""

    def run_seed(self, seed: int, steps: int = 400) -> None:
        rng = random.Random(seed)
        clock = Clock()
        clock.advance(EPOCH)
        store = MemoryStore()
        for user in USERS:
            store.create_user(user, "hash", 0)
        sessions = LocalSessionRegistry()
        hub = ForwarderHub()
        nodes = [Node(f"n{i}", clock, store, sessions, hub.forwarder(f"n{i}")) for i in (1, 2)]
        live: list[Tracked] = []
        counter = 0

        def last_seq(user: str) -> int:
            return self.successResultOf(store.last_seq(user))

        for _ in range(steps):
            op = rng.random()
            if op < 0.12 or not live:
                user = rng.choice(USERS)
                client = rng.choice(nodes).login(user)
                live.append(Tracked(client, user, last_seq(user)))
            elif op < 0.55:
                t = rng.choice(live)
                if t.sent and rng.random() < 0.1:
                    cid = rng.choice(list(t.sent))  # a retry of an earlier id
                    to = rng.choice(USERS)
                else:
                    counter += 1
                    cid = f"c{counter}"
                    to = rng.choice(USERS)
                t.client.send(F.Send(id=cid, to=to, body=f"{t.user}->{to}"))
            elif op < 0.72:
                t = rng.choice(live)
                t.read()
                t.client.send(F.Ack(seq=t.max_seq))
            elif op < 0.8:
                t = rng.choice(live)
                t.client.send(F.Sync(after=max(0, t.max_seq - rng.randint(0, 5)),
                                     limit=rng.randint(1, 10)))
            elif op < 0.88:
                t = live.pop(rng.randrange(len(live)))
                t.client.lose()
            else:
                clock.advance(rng.choice([0.5, 1, 3, 4, 5]))
            for t in live:
                t.read()

        for t in live:
            t.read()
            want = set(range(t.welcome_seq + 1, last_seq(t.user) + 1))
            missing = want - set(t.seen)
            self.assertEqual(missing, set(), f"seed {seed}: {t.user} missed {sorted(missing)}")
            entries, _ = self.successResultOf(store.fetch(t.user, 0, 100000))
            by_seq = {e.seq: e.message.mid for e in entries}
            for seq, mid in t.seen.items():
                self.assertEqual(by_seq[seq], mid)
        for t in live:
            t.client.lose()
        clock.advance(100)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertEqual(len(sessions), 0)
        for node in nodes:
            self.assertEqual(node.core.local, {})
            self.assertEqual(node.core.connections, set())

    def test_many_seeds(self) -> None:
        """Fifteen random runs of 400 steps each keep every promise."""
        for seed in range(15):
            self.run_seed(seed)
