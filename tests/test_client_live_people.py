"""Part 2 of the client core against a real ``twistd -n dim``: contacts, presence, typing,
read marks across users and devices, a group of three, and an image and a file sent, saved
and compared by sha256."""
from __future__ import annotations

import hashlib
import os

from twisted.internet import defer

from dim import errors
from dim.client import events as E
from dim.client.conversations import ConversationReadUpTo
from tests.fakes.embedded import LiveChatTestCase
from tests.harness import sleep
from tests.fakes.client import _Anything, png


def sha256_of(path: str) -> str:
    """The sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class LivePeopleTests(LiveChatTestCase):
    """Two and three people and their devices on the embedded dim."""

    def setUp(self) -> None:
        super().setUp()
        self.work = self.dim.workdir

    @defer.inlineCallbacks
    def test_contacts_presence_typing_and_read_marks(self):  # type: ignore[no-untyped-def]
        """A request and its acceptance reach both; presence, typing and read marks flow."""
        alice = yield self.chat("alice")
        bob = yield self.chat("bob")
        contact = yield alice.client.add_contact("bob")
        self.assertEqual(contact["pending"], "out")
        yield bob.wait_for(E.Notified, event="contact_request")
        yield self.until(lambda: [c["pending"] for c in bob.client.contacts()] == ["in"],
                         "bob sees alice's request")
        yield bob.client.add_contact("alice")
        yield alice.wait_for(E.Notified, event="contact_added")
        yield self.until(lambda: alice.client.is_online("bob") is True, "alice sees bob online")
        yield bob.client.update_profile(name="Bob Builder", status="at work")
        yield alice.client.refresh_people()
        self.assertEqual(alice.client.display_name("bob"), "Bob Builder")
        self.assertEqual(alice.client.contacts()[0]["status"], "at work")

        # typing, then a message read by bob: alice sees it read
        alice.client.typing("bob")
        yield bob.wait_for(E.PeerTyping, user="alice", peer="alice")
        out = alice.client.send("bob", "are you there?")
        got = yield bob.wait_for(E.MessageReceived, entry=_Anything(body="are you there?"))
        yield alice.wait_for(E.MessageStatus, id=out.id, state=E.DELIVERED)
        self.assertEqual(bob.client.conversations()[0].unread, 1)
        bob.client.mark_read("alice", got.entry.seq)
        yield alice.wait_for(E.ReadReceipt, mid=out.mid, by="bob")
        yield alice.wait_for(E.MessageStatus, id=out.id, state=E.READ)
        self.assertEqual(out.read_by, {"bob"})

        # presence: bob's only session goes, then comes back
        bob.stop()
        yield alice.wait_for(E.PresenceChanged, user="bob", online=False)
        self.assertIs(alice.client.is_online("bob"), False)
        bob_again = yield self.chat("bob", register=False)
        yield alice.wait_for(E.PresenceChanged, user="bob", online=True)
        yield self.until(lambda: alice.client.is_online("bob") is True, "bob online again")
        yield self.until(lambda: [c["user"] for c in bob_again.client.contacts()] == ["alice"],
                         "bob's new session fetched his contacts")

    @defer.inlineCallbacks
    def test_unread_clears_on_every_device(self):  # type: ignore[no-untyped-def]
        """bob reads on his phone: his laptop's unread count clears, and alice sees read."""
        alice = yield self.chat("alice")
        laptop = yield self.chat("bob", device="laptop")
        phone = yield self.chat("bob", register=False, device="phone")
        out = alice.client.send("bob", "one")
        out2 = alice.client.send("bob", "two")
        for device in (laptop, phone):
            got = yield device.wait_for(E.MessageReceived, entry=_Anything(body="two"))
        self.assertEqual(laptop.client.conversations()[0].unread, 2)
        phone.client.mark_read("alice", got.entry.seq)
        yield laptop.wait_for(ConversationReadUpTo)
        self.assertEqual(laptop.client.conversations()[0].unread, 0)
        yield alice.wait_for(E.MessageStatus, id=out2.id, state=E.READ)
        self.assertEqual(out.state, E.READ)

    @defer.inlineCallbacks
    def test_group_of_three(self):  # type: ignore[no-untyped-def]
        """alice makes a group with bob and carol; a group message reaches both, with
        per-member delivery and read marks, and member names are looked up."""
        alice = yield self.chat("alice")
        bob = yield self.chat("bob")
        carol = yield self.chat("carol")
        yield carol.client.update_profile(name="Carol C")
        group = yield alice.client.create_group("team", ["bob", "carol"])
        self.assertEqual(sorted(group["members"]), ["alice", "bob", "carol"])
        for member in (bob, carol):
            yield member.wait_for(E.Notified, event="group_changed")
            yield self.until(lambda m=member: [g["name"] for g in m.client.groups()] == ["team"],
                             f"{member.user} lists the group")
        yield self.until(lambda: bob.client.display_name("carol") == "Carol C", "carol's name")
        peer = "#" + group["id"]
        self.assertEqual(bob.client.display_name(peer), "# team")
        out = alice.client.send(peer, "hello team")
        seqs: dict[str, int] = {}
        for member in (bob, carol):
            got = yield member.wait_for(E.MessageReceived, entry=_Anything(body="hello team"))
            self.assertEqual((got.entry.group, got.entry.sender), (group["id"], "alice"))
            seqs[member.user] = got.entry.seq
            self.assertEqual([c.peer for c in member.client.conversations()], [peer])
        yield self.until(lambda: out.delivered_by == {"bob", "carol"}, "delivered to both")
        bob.client.mark_read(peer, seqs["bob"])
        yield alice.wait_for(E.ReadReceipt, mid=out.mid, by="bob")
        self.assertEqual(out.read_by, {"bob"})
        self.assertEqual(out.state, E.DELIVERED)  # read by all only once carol reads too
        reply = carol.client.send(peer, "hi alice")
        yield alice.wait_for(E.MessageReceived, entry=_Anything(body="hi alice"))
        yield bob.wait_for(E.MessageReceived, entry=_Anything(body="hi alice"))
        yield self.until(lambda: reply.delivered_by == {"alice", "bob"}, "reply delivered")
        # carol leaves: she no longer gets the group's messages
        yield carol.client.leave_group(peer)
        yield alice.wait_for(E.Notified, event="group_changed")
        yield self.until(lambda: len(alice.client.group(peer)["members"]) == 2, "carol gone")
        last = alice.client.send(peer, "just us")
        yield bob.wait_for(E.MessageReceived, entry=_Anything(body="just us"))
        yield alice.wait_for(E.MessageStatus, id=last.id, state=E.DELIVERED)
        yield sleep(0.5)
        self.assertNotIn("just us", carol.received())

    @defer.inlineCallbacks
    def test_image_and_file_sent_and_saved(self):  # type: ignore[no-untyped-def]
        """An image and a 3 MiB file go up with progress, arrive as image and file, and are
        saved (one resumed from a partial download) with the same sha256."""
        alice = yield self.chat("alice")
        bob = yield self.chat("bob")
        outbox = self.work / "outbox"
        outbox.mkdir()
        image = outbox / "cat.png"
        image.write_bytes(png())
        blob = outbox / "data.bin"
        blob.write_bytes(os.urandom(3 * 1024 * 1024))
        bob.client.download_dir = str(self.work / "downloads")

        up: list[tuple[int, int]] = []
        out = yield alice.client.send_file("bob", str(image), lambda a, b: up.append((a, b)))
        self.assertEqual((out.kind, out.file["mime"], out.file["name"]), ("image", "image/png",
                                                                          "cat.png"))
        yield alice.wait_for(E.MessageStatus, id=out.id, state=E.SENT)
        got = yield bob.wait_for(E.MessageReceived, entry=_Anything(kind="image"))
        self.assertEqual(got.entry.file["size"], image.stat().st_size)
        saved = yield bob.client.save_file(got.entry.file)
        self.assertEqual(os.path.basename(saved), "cat.png")
        self.assertEqual(sha256_of(saved), sha256_of(str(image)))

        up.clear()
        out = yield alice.client.send_file("bob", str(blob), lambda a, b: up.append((a, b)))
        self.assertEqual(out.kind, "file")
        self.assertEqual(up[-1], (blob.stat().st_size, blob.stat().st_size))
        self.assertGreater(len(up), 10)  # streamed in pieces, not one write
        got = yield bob.wait_for(E.MessageReceived, entry=_Anything(kind="file"))
        # An interrupted download left the first MiB behind: the save resumes with Range.
        from dim.client.transfer import partial_path
        os.makedirs(bob.client.download_dir, exist_ok=True)
        with open(partial_path(bob.client.download_dir, got.entry.file["id"]), "wb") as f:
            f.write(blob.read_bytes()[:1024 * 1024])
        down: list[tuple[int, int]] = []
        saved = yield bob.client.save_file(got.entry.file, lambda a, b: down.append((a, b)))
        self.assertEqual(down[0], (1024 * 1024, blob.stat().st_size))
        self.assertEqual(down[-1], (blob.stat().st_size, blob.stat().st_size))
        self.assertEqual(sha256_of(saved), sha256_of(str(blob)))
        # the image as alice's avatar: everyone logged in may fetch it
        profile = yield alice.client.set_avatar(str(image))
        self.assertTrue(profile["avatar"])
        carol = yield self.chat("carol")
        carol.client.download_dir = str(self.work / "carol")
        avatar = yield carol.client.save_file({"id": profile["avatar"], "name": "alice.png"})
        self.assertEqual(sha256_of(avatar), sha256_of(str(image)))
        with self.assertRaises(errors.DimError):
            yield alice.client.set_avatar(str(blob))
        again = yield bob.client.save_file(got.entry.file)
        self.assertEqual(os.path.basename(again), "data (1).bin")
        self.assertEqual(sha256_of(again), sha256_of(str(blob)))
