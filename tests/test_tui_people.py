"""dim-chat's part 2 driven by Pilot against the fake client core: contacts, requests,
search, profile, typing, read marks, unread across devices, groups and files."""
from __future__ import annotations

import os
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from dim.client import events as E
from tui.app import ChatApp
from tui.screens import chat as chat_screen
from tui.screens.profile import ProfileScreen
from tui.screens.search import SearchScreen
from tui.widgets.contact_list import ContactList
from tui.widgets.conversation_list import ConversationList
from tui.widgets.member_list import MemberList
from tui.widgets.transfer_bar import TransferBar
from tests.fakes.tui import FakeChatCore, async_test, chatting, shown, submit
from tests.fakes.tui import core_with_people, notice, text_of


def contacts(app: ChatApp) -> list[str]:
    """The lines of the contacts pane."""
    return app.screen.query_one(ContactList).lines()


class ContactPaneTests(unittest.TestCase):
    """The contacts pane and contact commands."""

    @async_test
    async def test_pane_shows_names_status_presence(self) -> None:
        """Requests first, then online with a filled dot, initials and status; presence redraws."""
        core = core_with_people()
        async with chatting(core) as (app, pilot):
            self.assertEqual(contacts(app), [
                "? [DD] Dave D (dave) asks: a accept, d decline",
                "● [BB] Bob Builder (bob) - at work",
                "○ [C] Carol (carol)"])
            core.contact_map["carol"]["online"] = True
            core.emit(E.PresenceChanged("carol", True))
            await pilot.pause()
            self.assertIn("● [C] Carol (carol)", contacts(app))

    @async_test
    async def test_accept_and_decline_keys(self) -> None:
        """a on a request accepts it (add_contact), d on a request declines it."""
        core = core_with_people()
        async with chatting(core) as (app, pilot):
            pane = app.screen.query_one(ContactList)
            await pilot.press("f2")
            self.assertIs(app.focused, pane)
            await pilot.press("a")
            await pilot.pause()
            self.assertEqual(core.calls, [("add_contact", "dave")])
            self.assertIn("dave is a contact", notice(app))
            self.assertIn("● [DD] Dave D (dave)", contacts(app))
            core.contact_map["erin"] = {"user": "erin", "name": "erin", "online": False,
                                        "pending": "in"}
            core.users["erin"] = "e" * 8
            core.emit(E.Notified("contact_request", {"from": "erin"}))
            core.emit(E.RosterChanged("contacts"))
            await pilot.pause()
            self.assertIn("erin asks to be your contact", notice(app))
            pane.index = 0
            await pilot.press("d")
            await pilot.pause()
            self.assertEqual(core.calls[-1], ("remove_contact", "erin"))
            self.assertFalse(any("erin" in line for line in contacts(app)))

    @async_test
    async def test_add_remove_commands(self) -> None:
        """/add asks (pending out), /remove removes, an unknown user is named."""
        core = core_with_people()
        async with chatting(core) as (app, pilot):
            core.contact_map.pop("dave")
            await submit(pilot, "/add dave")
            self.assertIn("Asked dave", notice(app))
            self.assertIn("… [DD] Dave D (dave) (asked)", contacts(app))
            await submit(pilot, "/remove carol")
            self.assertFalse(any("carol" in line for line in contacts(app)))
            await submit(pilot, "/add nobody")
            self.assertIn("not_found", notice(app))

    @async_test
    async def test_enter_on_contact_opens_conversation(self) -> None:
        """Enter on a contact opens the conversation, titled with name and presence."""
        core = core_with_people()
        async with chatting(core) as (app, pilot):
            pane = app.screen.query_one(ContactList)
            pane.focus()
            pane.index = 1
            await pilot.press("enter")
            await pilot.pause()
            self.assertEqual(app.screen.peer, "bob")
            self.assertEqual(text_of(app, "#title"), "Conversation with bob - Bob Builder (online)")

    @async_test
    async def test_search_open_and_add(self) -> None:
        """/who lists matches; Enter opens one; a adds one as a contact."""
        core = core_with_people()
        async with chatting(core) as (app, pilot):
            await submit(pilot, "/who a")
            self.assertIsInstance(app.screen, SearchScreen)
            self.assertEqual(app.screen.lines(), ["[A] alice", "[C] Carol (carol)",
                                                  "[DD] Dave D (dave)"])
            await pilot.press("down", "enter")
            await pilot.pause()
            self.assertNotIsInstance(app.screen, SearchScreen)
            self.assertEqual(app.screen.peer, "carol")
            await submit(pilot, "/who bo")
            await pilot.press("a")
            await pilot.pause()
            self.assertEqual(core.calls[-1], ("add_contact", "bob"))

    @async_test
    async def test_people_refreshed_periodically(self) -> None:
        """The periodic refetch runs and leaves the app running while the fetch is in flight."""
        self.patch(chat_screen, "PEOPLE_REFRESH", 0.1)
        core = core_with_people()
        async with chatting(core) as (app, pilot):
            await pilot.pause(0.35)
            self.assertGreaterEqual(core.refreshes, 2)
            await submit(pilot, "/open bob")
            self.assertEqual(app.screen.peer, "bob")
        self.assertIsNone(app.return_code or None)

    @async_test
    async def test_avatar_pictures_in_the_pane(self) -> None:
        """A contact's avatar is fetched once into the cache and shown beside the name."""
        from tests.fakes.client import png
        from textual_image.widget import Image
        os.environ["XDG_CACHE_HOME"] = os.path.abspath(self.mktemp())
        self.addCleanup(os.environ.pop, "XDG_CACHE_HOME")
        core = core_with_people()
        core.file_bytes = png(8, 8)
        core.contact_map["bob"]["avatar"] = "f-bob"
        async with chatting(core) as (app, pilot):
            await pilot.pause(0.2)
            self.assertEqual([f["id"] for f in core.saved], ["f-bob"])
            pane = app.screen.query_one(ContactList)
            self.assertEqual(len(pane.query(Image)), 1)
            self.assertIn("● [BB] Bob Builder (bob) - at work", contacts(app))
            core.emit(E.RosterChanged("contacts"))
            await pilot.pause(0.1)
            self.assertEqual(len(core.saved), 1)

    @async_test
    async def test_avatar_command(self) -> None:
        """/avatar uploads an image as the avatar, and refuses a missing file or a non-image."""
        where = self.mktemp()
        os.makedirs(where)
        for name in ("me.png", "notes.txt"):
            with open(os.path.join(where, name), "wb") as f:
                f.write(b"x")
        core = core_with_people()
        async with chatting(core) as (app, pilot):
            await submit(pilot, f"/avatar {where}/me.png")
            self.assertIn("Avatar set", notice(app))
            self.assertEqual(core.profile["avatar"], "f-avatar")
            await submit(pilot, f"/avatar {where}/notes.txt")
            self.assertIn("bad_request", notice(app))
            await submit(pilot, f"/avatar {where}/none.png")
            self.assertIn("No such file", notice(app))

    @async_test
    async def test_profile_dialog(self) -> None:
        """/profile edits the display name and status and saves only what changed."""
        core = core_with_people()
        async with chatting(core) as (app, pilot):
            await submit(pilot, "/profile")
            self.assertIsInstance(app.screen, ProfileScreen)
            app.screen.query_one("#name").value = "Alice Liddell"
            app.screen.query_one("#status").value = "down the hole"
            await pilot.click("#save")
            await pilot.pause()
            self.assertEqual(core.calls[-1], ("update_profile", "Alice Liddell", "down the hole"))
            self.assertIn("Profile saved", notice(app))
            await submit(pilot, "/profile")
            await pilot.press("escape")
            await pilot.pause()
            self.assertEqual(len([c for c in core.calls if c[0] == "update_profile"]), 1)


class SignalTests(unittest.TestCase):
    """Typing, read marks and unread counts."""

    @async_test
    async def test_typing_shown_and_cleared(self) -> None:
        """'bob is typing...' shows, a new typing keeps it, it clears after the quiet time."""
        self.patch(chat_screen, "TYPING_SHOWN", 1.0)
        core = core_with_people()
        async with chatting(core, "bob") as (app, pilot):
            core.emit(E.PeerTyping("bob", "bob"))
            core.emit(E.PeerTyping("carol", "carol"))  # another conversation: not shown here
            await pilot.pause()
            self.assertEqual(text_of(app, "#typing"), "Bob Builder is typing...")
            await pilot.pause(0.6)
            core.emit(E.PeerTyping("bob", "bob"))  # keeps it shown for another second
            await pilot.pause(0.6)
            self.assertEqual(text_of(app, "#typing"), "Bob Builder is typing...")
            await pilot.pause(1.0)
            self.assertEqual(text_of(app, "#typing"), "")
            core.emit(E.PeerTyping("bob", "bob"))
            await pilot.pause()
            core.receive("bob", "done typing")
            await pilot.pause()
            self.assertEqual(text_of(app, "#typing"), "")

    @async_test
    async def test_typing_in_the_input_tells_the_core(self) -> None:
        """Typing text tells the core (which throttles); commands do not."""
        core = core_with_people()
        async with chatting(core, "bob") as (app, pilot):
            core.typed.clear()
            await pilot.press("h", "i")
            self.assertEqual(core.typed, ["bob", "bob"])
            await pilot.press("enter")
            core.typed.clear()
            await pilot.press("/", "h")
            self.assertEqual(core.typed, [])

    @async_test
    async def test_read_mark_on_own_message(self) -> None:
        """An own message goes sent, delivered, then read."""
        core = core_with_people()
        async with chatting(core, "bob") as (app, pilot):
            await submit(pilot, "see this?")
            (out,) = core.outgoing_by_id.values()
            core.confirm(out.id)
            core.deliver(out.id)
            await pilot.pause()
            self.assertTrue(shown(app)[-1].endswith("✓✓ delivered"), shown(app))
            out.state = E.READ
            core.emit(E.ReadReceipt(out.id, out.mid or "", "bob"))
            await pilot.pause()
            self.assertTrue(shown(app)[-1].endswith("✓✓ read"), shown(app))

    @async_test
    async def test_unread_clears_when_another_device_reads(self) -> None:
        """A self-read from another device clears the unread count here."""
        core = core_with_people()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "one")
            core.receive("bob", "two")
            await pilot.pause(0.1)
            conversations = app.screen.query_one(ConversationList)
            self.assertEqual(conversations.lines(), ["Bob Builder (2)"])
            assert core.cache is not None
            core.cache.mark_read_upto(2)
            core.emit(E.ReadUpTo(2))
            await pilot.pause(0.1)
            self.assertEqual(conversations.lines(), ["Bob Builder"])


class GroupTests(unittest.TestCase):
    """Groups in the list, the members pane, group marks and /group commands."""

    def core(self) -> FakeChatCore:
        """The people core plus a group team of alice, bob, carol and dave."""
        core = core_with_people()
        core.group_map = {"g1": {"id": "g1", "name": "team", "owner": "alice",
                                 "members": ["alice", "bob", "carol", "dave"]}}
        return core

    @async_test
    async def test_group_conversation(self) -> None:
        """A group is listed; open shows members with presence; names and delivery counts."""
        core = self.core()
        # wide enough for the members pane
        async with chatting(core, size=(140, 40)) as (app, pilot):
            self.assertIn("# team", app.screen.query_one(ConversationList).lines())
            await submit(pilot, "/open # team")
            self.assertEqual(app.screen.peer, "#g1")
            self.assertEqual(text_of(app, "#title"), "Group team (4 members)")
            members = app.screen.query_one(MemberList)
            self.assertTrue(members.display)
            self.assertEqual(members.plain_lines, [
                "● alice [owner, you]", "● Bob Builder (bob)", "○ Carol (carol)",
                "· Dave D (dave)"])
            core.receive("bob", "hello team", group="g1")
            await pilot.pause()
            self.assertTrue(shown(app)[-1].endswith("Bob Builder: hello team"), shown(app))
            await submit(pilot, "hi all")
            out = list(core.outgoing_by_id.values())[-1]
            self.assertEqual((out.group, out.to), ("g1", None))
            core.confirm(out.id)
            core.emit(E.Delivered(out.id, out.mid or "", "bob"))
            core.emit(E.Delivered(out.id, out.mid or "", "carol"))
            core.emit(E.ReadReceipt(out.id, out.mid or "", "bob"))
            await pilot.pause()
            self.assertTrue(shown(app)[-1].endswith("✓✓ delivered to 2 of 3, read by 1"),
                            shown(app))
            await submit(pilot, "/open bob")
            self.assertFalse(members.display)

    @async_test
    async def test_group_commands(self) -> None:
        """/group new opens the new group; add, remove, rename change it; leave closes it."""
        core = self.core()
        async with chatting(core) as (app, pilot):
            await submit(pilot, "/group new crew bob carol")
            self.assertEqual(core.calls[-1], ("create_group", "crew", ["bob", "carol"]))
            self.assertEqual(app.screen.peer, "#g2")
            self.assertEqual(text_of(app, "#title"), "Group crew (3 members)")
            await submit(pilot, "/group add dave")
            self.assertEqual(text_of(app, "#title"), "Group crew (4 members)")
            await submit(pilot, "/group remove bob")
            self.assertEqual(text_of(app, "#title"), "Group crew (3 members)")
            await submit(pilot, "/group rename the crew")
            self.assertEqual(text_of(app, "#title"), "Group the crew (3 members)")
            await pilot.pause(0.1)
            self.assertIn("# the crew", app.screen.query_one(ConversationList).lines())
            await submit(pilot, "/group leave")
            self.assertIsNone(app.screen.peer)
            self.assertNotIn("g2", core.group_map)
            await submit(pilot, "/group add bob")
            self.assertIn("Open a group first", notice(app))


class FileTests(unittest.TestCase):
    """Sending a file with a progress bar, showing and saving received ones."""

    @async_test
    async def test_send_image_with_progress(self) -> None:
        """/send shows the progress bar while uploading, then the image message."""
        path = os.path.join(self.mktemp(), "cat.png")
        os.makedirs(os.path.dirname(path))
        with open(path, "wb") as f:
            f.write(b"\x89PNG" + b"0" * 2044)
        core = core_with_people()
        core.upload_gate = defer.Deferred()
        async with chatting(core, "bob") as (app, pilot):
            # Run the command as a worker: pressing Enter would wait for the held upload.
            app.screen.run_worker(app.screen.command(f"/send {path}"))
            await pilot.pause(0.1)
            bar = app.screen.query_one(TransferBar)
            self.assertTrue(bar.display)
            self.assertEqual(bar.percent, 50.0)
            core.upload_gate.callback(None)
            await pilot.pause(0.1)
            self.assertFalse(bar.display)
            self.assertRegex(shown(app)[-1], r"alice: \[image: cat\.png, 2\.0 KB\]  … sending$")
            self.assertIn("Uploaded cat.png", notice(app))
            await submit(pilot, "/send /no/such/file")
            self.assertIn("No such file", notice(app))

    @async_test
    async def test_received_file_saved(self) -> None:
        """A received file reads [file: name, size]; ctrl+s saves it and says where."""
        core = core_with_people()
        async with chatting(core, "bob") as (app, pilot):
            await submit(pilot, "/save")
            self.assertIn("No file to save", notice(app))
            ref = {"id": "f9", "name": "notes.txt", "size": 3, "mime": "text/plain"}
            core.receive("bob", "", kind="file", file=ref)
            core.receive("bob", "look", kind="image",
                         file={"id": "f10", "name": "a.png", "size": 5000, "mime": "image/png"})
            await pilot.pause()
            self.assertTrue(shown(app)[-2].endswith("Bob Builder: [file: notes.txt, 3 B]"),
                            shown(app))
            self.assertTrue(shown(app)[-1].endswith("Bob Builder: [image: a.png, 4.9 KB] look"),
                            shown(app))
            await submit(pilot, "/save notes.txt")
            self.assertEqual(core.saved, [ref])
            self.assertIn("Saved notes.txt to /tmp/downloads/notes.txt", notice(app))
            await pilot.press("ctrl+s")
            await pilot.pause()
            self.assertEqual(core.saved[-1]["name"], "a.png")

    @async_test
    async def test_view_image(self) -> None:
        """/view fetches the newest image once into the cache and shows it in a dialog."""
        from tests.fakes.client import png
        from tui.screens.image import ImageScreen
        os.environ["XDG_CACHE_HOME"] = os.path.abspath(self.mktemp())
        self.addCleanup(os.environ.pop, "XDG_CACHE_HOME")
        core = core_with_people()
        core.file_bytes = png(8, 8)
        async with chatting(core, "bob") as (app, pilot):
            await submit(pilot, "/view")
            self.assertIn("No image to view", notice(app))
            core.receive("bob", "", kind="image",
                         file={"id": "f10", "name": "a.png", "size": len(core.file_bytes),
                               "mime": "image/png"})
            await pilot.pause()
            await submit(pilot, "/view")
            self.assertIsInstance(app.screen, ImageScreen)
            self.assertTrue(app.screen.path.endswith(os.path.join("images", "f10", "a.png")))
            await pilot.press("escape")
            await pilot.pause()
            await submit(pilot, "/view a.png")
            self.assertIsInstance(app.screen, ImageScreen)
            self.assertEqual(len(core.saved), 1)  # the second view used the cached copy


class PictureSupportTests(unittest.TestCase):
    """Pictures switch off where textual-image cannot work."""

    def test_no_pictures_when_textual_image_fails(self) -> None:
        """If importing textual-image fails (a terminal with no size), image_class is None."""
        from tui import images

        def failing_import(name: str) -> Any:
            raise ZeroDivisionError("division by zero")
        self.patch(images, "_prepared", {})
        self.patch(images, "import_module", failing_import)
        self.assertFalse(images.prepare())
        self.assertIsNone(images.image_class())
