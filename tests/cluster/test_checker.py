"""The cluster tests' checker itself: it must see a loss, a repeat and a reordering."""
from __future__ import annotations

from twisted.trial import unittest

from dim.client.cache import ChatMessage
from dim.client.events import SENT, MessageReceived
from tests.cluster.kit import Conversation, Person


def person(user: str) -> Person:
    """A Person that never connects (no I/O happens before start())."""
    return Person("http://127.0.0.1:9", user, "token")


class CheckerTests(unittest.TestCase):
    """Conversation.check counts what the cluster tests assert to be zero."""

    def setUp(self) -> None:
        self.a, self.b = person("a"), person("b")
        self.chat = Conversation([self.a, self.b], rate=1)

    def send(self, n: int, seq: int | None) -> str:
        """a sends ``a#n`` to b; with a seq, it got ``sent``."""
        m = self.a.send("b", f"a#{n}")
        if seq is not None:
            m.seq, m.mid, m.state = seq, f"m{n}", SENT
        self.chat.messages.append((self.a, m, self.b, n))
        return m.id

    def show(self, id: str, n: int, seq: int) -> None:
        """b is shown ``a#n`` at inbox seq ``seq``."""
        self.b._event(MessageReceived(ChatMessage(seq=seq, mid=f"m{n}", id=id, sender="a",
                                                  ts=0, to="b", body=f"a#{n}")))

    def test_clean(self) -> None:
        """Every sent message shown once, in order: all counts are zero."""
        ids = [self.send(n, n) for n in (1, 2)]
        self.show(ids[0], 1, 1)
        self.show(ids[1], 2, 2)
        tally = self.chat.check()
        self.assertEqual((tally.sent, tally.lost, tally.twice, tally.out_of_order,
                          tally.unconfirmed), (2, [], [], [], 0))

    def test_lost_twice_unordered_unconfirmed(self) -> None:
        """A sent-but-never-shown, a shown-twice, an inverted pair and a never-sent count."""
        ids = [self.send(n, n) for n in (1, 2, 3)]
        self.send(4, None)
        self.show(ids[1], 2, 1)
        self.show(ids[0], 1, 2)
        self.show(ids[0], 1, 2)
        tally = self.chat.check()
        self.assertEqual(tally.lost, [("a", "b", "a#3")])
        self.assertEqual(tally.twice, [("a", "b", "a#1")])
        self.assertEqual(len(tally.out_of_order), 2)
        self.assertEqual(tally.unconfirmed, 1)
