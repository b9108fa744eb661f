"""The node's side of conversations: ``read`` of one conversation, its receipts and echo."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dim.protocol import frames as F
from tests.fakes.node import Node, contacts_store, drain


class ConversationReadTests(SynchronousTestCase):
    """read with with/group reads that conversation only, tells senders and other devices."""

    def setUp(self) -> None:
        self.node = Node(store=contacts_store())
        self.alice = self.node.login("alice")
        self.carol = self.node.login("carol")
        self.bob = self.node.login("bob")
        self.bob2 = self.node.login("bob")
        self.alice.send(F.Send(id="a1", to="bob", body="one"))
        self.carol.send(F.Send(id="c1", to="bob", body="two"))
        self.alice.send(F.Send(id="a2", to="bob", body="three"))
        self.sent = self.alice.of_type(F.Sent)
        drain(self.carol, self.bob, self.bob2)

    def unread(self, user: str) -> dict[str, tuple[int, int]]:
        """``{conv: (read_seq, unread)}`` of ``user`` as the store keeps them."""
        convs = self.successResultOf(self.node.store.conversations(user, 50))
        return {c.conv: (c.read_seq, c.unread) for c in convs}

    def test_read_one_conversation(self) -> None:
        """Reading the conversation with alice clears it and leaves carol's unread."""
        self.bob.send(F.Read(seq=3, with_="alice"))
        self.assertEqual(
            self.alice.received(),
            [F.Delivered(id="a1", mid=self.sent[0].mid, by="bob"),
             F.Delivered(id="a2", mid=self.sent[1].mid, by="bob"),
             F.ReadNotice(id="a1", mid=self.sent[0].mid, by="bob"),
             F.ReadNotice(id="a2", mid=self.sent[1].mid, by="bob")])
        self.assertEqual(self.carol.received(), [])
        self.assertEqual(self.unread("bob"), {"alice": (3, 0), "carol": (0, 1)})

    def test_other_sessions_told_with_conversation(self) -> None:
        """The reader's other sessions get read {seq, by, with}; the reader nothing."""
        self.bob.send(F.Read(seq=3, with_="alice"))
        self.assertEqual(self.bob2.received(), [F.ReadNotice(seq=3, by="bob", with_="alice")])
        self.assertEqual(self.bob.received(), [])
        self.assertEqual(
            F.ReadNotice(seq=3, by="bob", with_="alice").to_dict(),
            {"type": "read", "seq": 3, "by": "bob", "with": "alice"})

    def test_backwards_read_says_nothing(self) -> None:
        """A read pointer only moves forward: reading lower again tells nobody."""
        self.bob.send(F.Read(seq=3, with_="alice"))
        drain(self.alice, self.bob2)
        self.bob2.send(F.Read(seq=1, with_="alice"))
        self.bob2.send(F.Read(seq=3, with_="alice"))
        self.assertEqual(self.alice.received(), [])
        self.assertEqual(self.bob.received(), [])
        self.assertEqual(self.unread("bob")["alice"], (3, 0))

    def test_group_conversation_read(self) -> None:
        """read with group reads the group's entries and echoes the group."""
        self.alice.send(F.Send(id="g0", to="bob", body="x"))
        group = self.successResultOf(self.node.store.create_group("alice", "G", ["bob"], 0))
        self.alice.send(F.Send(id="g1", group=group.id, body="hi all"))
        drain(self.alice, self.bob, self.bob2)
        self.bob.send(F.Read(seq=5, group=group.id))
        self.assertEqual(self.bob2.received(), [F.ReadNotice(seq=5, by="bob", group=group.id)])
        self.assertEqual(self.unread("bob")["#" + group.id], (5, 0))
        self.assertEqual(self.unread("bob")["alice"], (0, 3))

    def test_both_with_and_group_is_bad_request(self) -> None:
        """A read naming both with and group gets bad_request and changes nothing."""
        self.bob.send(F.Read(seq=3, with_="alice", group="1"))
        errors = self.bob.of_type(F.Error)
        self.assertEqual(["bad_request"], [e.code for e in errors])
        self.assertEqual(self.unread("bob"), {"alice": (0, 2), "carol": (0, 1)})

    def test_whole_inbox_read_keeps_part_two_meaning(self) -> None:
        """A read without with/group still reads every conversation up to seq."""
        self.bob.send(F.Read(seq=2))
        self.assertEqual(self.bob2.received(), [F.ReadNotice(seq=2, by="bob")])
        self.assertEqual(self.unread("bob"), {"alice": (2, 1), "carol": (2, 0)})


class ReplyMentionTests(SynchronousTestCase):
    """send with reply_to and mentions: carried by msg, or bad_request storing nothing."""

    def setUp(self) -> None:
        self.node = Node(store=contacts_store())
        self.alice = self.node.login("alice")
        self.bob = self.node.login("bob")
        self.carol = self.node.login("carol")
        self.group = self.successResultOf(
            self.node.store.create_group("alice", "G", ["bob", "carol"], 0)).id
        self.alice.send(F.Send(id="a1", to="bob", body="one"))
        self.first = self.alice.of_type(F.Sent)[0]
        drain(self.alice, self.bob, self.carol)

    def last_seq(self, user: str) -> int:
        """The user's last seq in the store."""
        return self.successResultOf(self.node.store.last_seq(user))

    def test_reply_carried(self) -> None:
        """A reply in the same conversation reaches the peer with reply_to."""
        self.bob.send(F.Send(id="b1", to="alice", body="re", reply_to=self.first.mid))
        [msg] = self.alice.of_type(F.Msg)
        self.assertEqual((self.first.mid, "re"), (msg.reply_to, msg.body))
        self.assertEqual(msg.to_dict()["reply_to"], self.first.mid)

    def test_bad_reply(self) -> None:
        """reply_to of an unknown mid or another conversation is bad_request with ref."""
        self.carol.send(F.Send(id="c1", to="alice", body="re", reply_to=self.first.mid))
        self.bob.send(F.Send(id="b2", group=self.group, body="re", reply_to=self.first.mid))
        self.bob.send(F.Send(id="b3", to="alice", body="re", reply_to="nope"))
        self.assertEqual([("bad_request", "c1")],
                         [(e.code, e.ref) for e in self.carol.of_type(F.Error)])
        self.assertEqual([("bad_request", "b2"), ("bad_request", "b3")],
                         [(e.code, e.ref) for e in self.bob.of_type(F.Error)])
        self.assertEqual((1, 0), (self.last_seq("bob"), self.last_seq("carol")))
        self.assertEqual([], self.alice.of_type(F.Msg))

    def test_mentions_carried_and_counted(self) -> None:
        """A group message's mentions reach the members and count for the mentioned."""
        self.alice.send(F.Send(id="g1", group=self.group, body="hi @carol",
                               mentions=["carol"]))
        [msg] = self.carol.of_type(F.Msg)
        self.assertEqual(["carol"], msg.mentions)
        convs = self.successResultOf(self.node.store.conversations("carol", 5))
        self.assertEqual((1, 1), (convs[0].unread, convs[0].mentions))

    def test_bad_mentions(self) -> None:
        """A mention of a non-member, in a direct send, or over 50 is bad_request."""
        self.alice.send(F.Send(id="m1", group=self.group, body="x", mentions=["dave"]))
        self.alice.send(F.Send(id="m2", to="bob", body="x", mentions=["bob"]))
        many = [f"u{n}" for n in range(51)]
        self.alice.send(F.Send(id="m3", group=self.group, body="x", mentions=many))
        self.assertEqual(["m1", "m2", "m3"],
                         [e.ref for e in self.alice.of_type(F.Error)
                          if e.code == "bad_request"])
        self.assertEqual(1, self.last_seq("bob"))


class ChangeTests(SynchronousTestCase):
    """edit, recall and react: sent to the changer, msg to every holder, errors as listed."""

    def setUp(self) -> None:
        self.node = Node(store=contacts_store())
        self.alice = self.node.login("alice")
        self.alice2 = self.node.login("alice")
        self.bob = self.node.login("bob")
        self.carol = self.node.login("carol")
        self.alice.send(F.Send(id="a1", to="bob", body="helo"))
        self.mid = self.alice.of_type(F.Sent)[0].mid
        drain(self.alice, self.alice2, self.bob, self.carol)

    def listed(self, user: str, seq: int) -> F.Msg:
        """The msg frame of ``user``'s entry at ``seq``, as sync would list it."""
        from dim.store.interface import entry_frame
        entries, _ = self.successResultOf(self.node.store.fetch(user, seq - 1, 1))
        return entry_frame(entries[0])

    def test_edit(self) -> None:
        """An edit answers sent, reaches bob and alice's other device, and changes the
        original as listed; the same id again gets the same sent and stores nothing."""
        self.alice.send(F.Edit(id="e1", mid=self.mid, body="hello"))
        [sent] = self.alice.of_type(F.Sent)
        self.assertEqual(2, sent.seq)
        [msg] = self.bob.of_type(F.Msg)
        self.assertEqual(("edit", self.mid, "hello", 2), (msg.kind, msg.ref, msg.body, msg.seq))
        self.assertEqual(["edit"], [m.kind for m in self.alice2.of_type(F.Msg)])
        original = self.listed("bob", 1)
        self.assertEqual(("hello", sent.ts), (original.body, original.edited))
        self.alice.send(F.Edit(id="e1", mid=self.mid, body="other"))
        self.assertEqual([sent], self.alice.of_type(F.Sent))
        self.assertEqual([], self.bob.of_type(F.Msg))
        self.assertEqual("hello", self.listed("bob", 1).body)

    def test_recall_and_react(self) -> None:
        """bob reacts, alice recalls: each a new entry; the original shows both states."""
        self.bob.send(F.React(id="x1", mid=self.mid, emoji="👍"))
        [msg] = self.alice.of_type(F.Msg)
        self.assertEqual(("reaction", "👍", True), (msg.kind, msg.body, msg.on))
        self.assertEqual({"👍": ["bob"]}, self.listed("alice", 1).reactions)
        self.alice.send(F.Recall(id="r1", mid=self.mid))
        self.assertEqual(["recall"], [m.kind for m in self.bob.of_type(F.Msg)])
        original = self.listed("bob", 1).to_dict()
        self.assertEqual(("", True), (original["body"], original["recalled"]))
        convs = self.successResultOf(self.node.store.conversations("bob", 5))
        self.assertEqual((3, 1), (convs[0].last.seq, convs[0].unread))

    def test_errors(self) -> None:
        """Someone else's message is forbidden, an unknown or unreachable mid not_found,
        an empty edit or an over-long emoji bad_request; nothing is stored."""
        self.bob.send(F.Edit(id="e1", mid=self.mid, body="mine"))
        self.bob.send(F.Recall(id="e2", mid=self.mid))
        self.bob.send(F.Edit(id="e3", mid="zzz", body="x"))
        self.carol.send(F.React(id="e4", mid=self.mid, emoji="👍"))
        self.alice.send(F.Edit(id="e5", mid=self.mid, body="  "))
        self.alice.send(F.React(id="e6", mid=self.mid, emoji="x" * 17))
        self.alice.send(F.React(id="e7", mid=self.mid, emoji=""))
        got = [(e.ref, e.code) for c in (self.bob, self.carol, self.alice)
               for e in c.of_type(F.Error)]
        self.assertEqual([("e1", "forbidden"), ("e2", "forbidden"), ("e3", "not_found"),
                          ("e4", "not_found"), ("e5", "bad_request"), ("e6", "bad_request"),
                          ("e7", "bad_request")], got)
        self.assertEqual(1, self.successResultOf(self.node.store.last_seq("bob")))
        self.assertEqual("helo", self.listed("bob", 1).body)


class ChangeLimitTests(SynchronousTestCase):
    """edit, recall and react count against their own per-user rate limits."""

    def test_over_the_limit(self) -> None:
        """Past the burst, each of edit, recall and react gets rate_limited, not stored."""
        from dim.node.throttle import Limit, Limits, UserLimiter
        limiter = UserLimiter(Limits({"edit": Limit(0.001, 1), "recall": Limit(0.001, 1),
                                      "react": Limit(0.001, 1)}))
        node = Node(store=contacts_store(), limiter=limiter)
        alice = node.login("alice")
        alice.send(F.Send(id="a1", to="bob", body="x"))
        mid = alice.of_type(F.Sent)[0].mid
        for frames in ((F.Edit(id="e1", mid=mid, body="y"), F.Edit(id="e2", mid=mid, body="z")),
                       (F.React(id="r1", mid=mid, emoji="a"), F.React(id="r2", mid=mid,
                                                                       emoji="b")),
                       (F.Recall(id="c1", mid=mid), F.Recall(id="c2", mid=mid))):
            for frame in frames:
                alice.send(frame)
        self.assertEqual([("e2", "rate_limited"), ("r2", "rate_limited"),
                          ("c2", "rate_limited")],
                         [(e.ref, e.code) for e in alice.of_type(F.Error)])
        self.assertEqual(4, self.successResultOf(node.store.last_seq("bob")))
