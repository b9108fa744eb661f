"""Unread and mention counts of the client core against a real ``twistd -n dim`` (a child
process, real TCP and HTTP): two devices of one user show the same counts as the server
after any sequence of messages and of reads, whole or part way, on either device."""
from __future__ import annotations


from twisted.internet import defer

from dim.client import events as E
from dim.client.conversations import ConversationReadUpTo
from tests.fakes.client import _Anything
from tests.fakes.embedded import LiveChatTestCase
from tests.fakes.unread import UnreadAgreement, counts_of



class LiveUnreadTests(LiveChatTestCase, UnreadAgreement):
    """bob on a laptop and a phone; alice and carol write to him, alone and in a group."""

    timeout = 240

    def setUp(self) -> None:
        super().setUp()
        self.base = self.dim.base

    @defer.inlineCallbacks
    def test_read_on_one_device_clears_the_other_at_once(self):  # type: ignore[no-untyped-def]
        """bob reads the group on his phone up to what it shows: the laptop's count clears
        on the read echo alone, with its mention, while the direct conversation keeps its
        count; a read part way leaves the newer ones counted on both."""
        alice = yield self.chat("alice")
        laptop = yield self.chat("bob", device="laptop")
        phone = yield self.chat("bob", register=False, device="phone")
        group = yield alice.client.create_group("team", ["bob"])
        team = "#" + group["id"]
        for body, mentions in (("one", None), ("two @bob", ["bob"]), ("three", None)):
            alice.client.send(team, body, mentions=mentions)
        alice.client.send("bob", "direct")
        for device in (laptop, phone):
            got = yield device.wait_for(E.MessageReceived, entry=_Anything(body="direct"))
        yield self.until(lambda: counts_of(laptop) == {team: (3, 1), "alice": (1, 0)},
                         "the laptop counts three in the group, one mention, one direct")
        assert phone.client.cache is not None
        seqs = [m.seq for m in phone.client.cache.history(team, None, 10)]
        self.assertTrue(phone.client.mark_read(team, seqs[1]))
        echo = yield laptop.wait_for(ConversationReadUpTo, seq=seqs[1])
        self.assertEqual(echo.group, group["id"])
        yield self.until(lambda: counts_of(laptop) == {team: (1, 0), "alice": (1, 0)},
                         "the laptop clears the two read")
        self.assertEqual(counts_of(phone), {team: (1, 0), "alice": (1, 0)})
        self.assertTrue(laptop.client.mark_read(team, seqs[-1]))
        yield self.until(lambda: counts_of(phone) == {"alice": (1, 0)}, "the phone clears all")
        self.assertEqual(counts_of(laptop), {"alice": (1, 0)})
        self.assertEqual(got.entry.body, "direct")
