"""Replies, mentions, edits, recalls and reactions of the client core against a real
``twistd -n dim`` (a child process, real TCP and HTTP): what one person does, another person,
the same person's other device and a device that comes later all see."""
from __future__ import annotations


from twisted.internet import defer

from dim import errors
from dim.client import events as E
from tests.fakes.client import _Anything
from tests.fakes.embedded import LiveChatTestCase


class LiveConversationTests(LiveChatTestCase):
    """Two people, one of them on two devices, on the embedded dim."""

    @defer.inlineCallbacks
    def test_reply_edit_react_recall_seen_by_others(self):  # type: ignore[no-untyped-def]
        """bob asks; alice replies, edits her reply, bob reacts to it, alice recalls it: bob
        and alice's other device see each step on the message itself, and a device that
        logs in afterwards loads it in its final state, with no change listed of its own."""
        alice = yield self.chat("alice", device="laptop")
        bob = yield self.chat("bob")
        phone = yield self.chat("alice", register=False, device="phone")
        ask = bob.client.send("alice", "lunch at noon?")
        got = yield alice.wait_for(E.MessageReceived, entry=_Anything(body="lunch at noon?"))
        asked = got.entry.mid
        self.assertEqual(asked, ask.mid)

        reply = alice.client.send("bob", "yes, at the usual place", reply_to=asked)
        got = yield bob.wait_for(E.MessageReceived,
                                 entry=_Anything(body="yes, at the usual place"))
        self.assertEqual(got.entry.reply_to, asked)
        yield phone.wait_for(E.MessageReceived, entry=_Anything(body="yes, at the usual place"))
        yield alice.wait_for(E.MessageStatus, id=reply.id, state=E.DELIVERED)
        mid = reply.mid

        sent = yield alice.client.edit(mid, "yes, at one instead")
        self.assertGreater(sent.seq, reply.seq)
        self.assertEqual(alice.client.message(mid).body, "yes, at one instead")
        for device in (bob, phone):
            changed = yield device.wait_for(E.MessageChanged, change=_Anything(kind="edit"))
            self.assertEqual((changed.message.mid, changed.message.body),
                             (mid, "yes, at one instead"))
            self.assertEqual(changed.message.edited, sent.ts)
            self.assertEqual(changed.message.reply_to, asked)

        yield bob.client.react(mid, "👍")
        for device in (alice, phone):
            changed = yield device.wait_for(E.MessageChanged, change=_Anything(kind="reaction"))
            self.assertEqual(changed.message.reactions, {"👍": ["bob"]})
        self.assertEqual(bob.client.message(mid).reactions, {"👍": ["bob"]})

        # Someone else's message can be neither edited nor recalled; nothing changes.
        yield self.assertFailure(bob.client.edit(mid, "hijacked"), errors.Forbidden)
        yield self.assertFailure(bob.client.recall(mid), errors.Forbidden)
        self.assertEqual(bob.client.message(mid).body, "yes, at one instead")

        yield alice.client.recall(mid)
        for device in (bob, phone):
            changed = yield device.wait_for(E.MessageChanged, change=_Anything(kind="recall"))
            self.assertTrue(changed.message.recalled)
            self.assertEqual(changed.message.body, "")
        self.assertTrue(alice.client.message(mid).recalled)
        for device in (alice, bob, phone):
            shown = [(m.sender, m.body, m.recalled) for m in device.client.cache.history(
                "bob" if device.user == "alice" else "alice")]
            self.assertEqual(shown, [("bob", "lunch at noon?", False), ("alice", "", True)],
                             device.user)
        # Changes come as entries of their own kind, which the chat never lists as messages.
        self.assertEqual([e.entry.body for e in bob.events.of(E.MessageReceived)
                          if not e.entry.is_change], ["yes, at the usual place"])

        later = yield self.chat("bob", register=False, device="tablet")
        history = yield later.client.history("alice")
        self.assertEqual([(m.sender, m.recalled, m.reply_to, m.reactions) for m in history],
                         [("bob", False, None, None), ("alice", True, asked, {"👍": ["bob"]})])

    @defer.inlineCallbacks
    def test_mentions_in_a_group(self):  # type: ignore[no-untyped-def]
        """A group message mentioning a member reaches them with its mentions; a mention of
        someone outside the group is refused."""
        alice = yield self.chat("alice")
        bob = yield self.chat("bob")
        yield self.chat("carol")
        group = yield alice.client.create_group("team", ["bob"])
        peer = "#" + group["id"]
        alice.client.send(peer, "@bob standup?", mentions=["bob"])
        got = yield bob.wait_for(E.MessageReceived, entry=_Anything(body="@bob standup?"))
        self.assertEqual(got.entry.mentions, ["bob"])
        self.assertEqual(bob.client.message(got.entry.mid).mentions, ["bob"])
        out = alice.client.send(peer, "@carol too", mentions=["carol"])
        yield alice.wait_for(E.MessageStatus, id=out.id, state=E.FAILED)
        self.assertIn("bad_request", out.error)
