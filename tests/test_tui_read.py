"""dim-chat's read side, driven by Pilot against the fake client core: unread and mention
counts in the list, read marks only up to what is on screen (and only while the app has the
person's attention), marks from another device, paging back by conversation, and /search
jumping to a message."""
from __future__ import annotations


from twisted.trial import unittest

from tui.app import ChatApp
from tui.screens import chat as chat_screen
from tui.screens.help import HelpScreen
from tui.screens.search import MessageSearchScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.conversation_list import ConversationItem, ConversationList
from tests.fakes.tui import async_test, chatting, eventually, group_core, log_of, shown, submit


def listed(app: ChatApp) -> list[str]:
    """The conversation list's lines."""
    return app.screen.query_one(ConversationList).lines()


class CountTests(unittest.TestCase):
    """(N) unread and @M mentions in the list."""

    @async_test
    async def test_unread_and_mentions_listed(self) -> None:
        """A group with three unread, two mentioning the person, lists "(3) @2" with the
        mentions highlighted; the bar marks it; reading it clears both."""
        core = group_core()
        async with chatting(core, "bob") as (app, pilot):
            core.receive("bob", "hi @alice", group="g1", mentions=["alice"])
            core.receive("carol", "lunch?", group="g1")
            core.receive("carol", "@alice?", group="g1", mentions=["alice"])
            core.receive("carol", "direct")
            await pilot.pause(0.1)
            await eventually(pilot, lambda: listed(app) == ["Bob Builder", "Carol (1)",
                                                            "# team (3) @2"],
                             "the counts are listed")
            item = next(i for i in app.screen.query(ConversationItem) if i.peer == "#g1")
            self.assertTrue(item.has_class("-mentioned"))
            self.assertIn("!#team(3)", app.screen.query_one(ConnectionBar).plain)
            await submit(pilot, "/open #team")
            await pilot.pause(0.1)
            await eventually(pilot, lambda: "# team" in listed(app),
                             "reading clears the group")
            self.assertEqual(core.marks[-1], ("#g1", 3))

    @async_test
    async def test_another_device_clears_at_once(self) -> None:
        """A read of one conversation on another device clears its count here at once,
        and only that conversation's."""
        core = group_core()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "one")
            two = core.receive("bob", "two")
            core.receive("carol", "three")
            await pilot.pause(0.1)
            await eventually(pilot, lambda: sorted(listed(app)) == ["# team", "Bob Builder (2)",
                                                                    "Carol (1)"],
                             "the counts are listed")
            core.read_elsewhere("bob", two.seq)
            await pilot.pause(0.1)
            await eventually(pilot, lambda: sorted(listed(app)) == ["# team", "Bob Builder",
                                                                    "Carol (1)"],
                             "the other device cleared bob")
            self.assertEqual(core.marks, [])  # this device claimed nothing


class OnScreenReadTests(unittest.TestCase):
    """A conversation is read only up to the newest message on screen."""

    @async_test
    async def test_marks_only_what_is_on_screen(self) -> None:
        """Opening starts at the first unread message and claims only what shows; paging
        down claims more; the end claims the newest."""
        core = group_core()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            messages = [core.receive("bob", f"n{i}") for i in range(40)]
            await pilot.pause(0.1)
            await eventually(pilot, lambda: "Bob Builder (40)" in listed(app),
                             "forty unread")
            await submit(pilot, "/open bob")
            await pilot.pause(0.1)
            log = log_of(app)
            self.assertEqual(log.scroll_y, 0)  # the first unread at the top
            seen = log.newest_visible_seq()
            assert seen is not None
            self.assertLess(seen, messages[-1].seq)
            self.assertEqual(core.marks, [("bob", seen)])
            left = messages[-1].seq - seen
            await eventually(pilot, lambda: f"Bob Builder ({left})" in listed(app),
                             "only those shown are read")
            await pilot.press("pagedown")
            await eventually(pilot, lambda: core.marks[-1][1] > seen, "PgDn marks more read")
            await pilot.press("end")
            await eventually(pilot, lambda: core.marks[-1] == ("bob", messages[-1].seq),
                             "the end marks the newest read")
            await eventually(pilot, lambda: "Bob Builder" in listed(app),
                             "all read")

    @async_test
    async def test_nothing_marked_while_away_or_covered(self) -> None:
        """A message arriving while the app is in the background, or while a dialog covers
        the chat, is not marked read until the person is back."""
        core = group_core()
        async with chatting(core, "bob") as (app, pilot):
            app.app_focus = False
            away = core.receive("bob", "while away")
            await pilot.pause(0.1)
            self.assertEqual(core.marks, [])
            self.assertIn("while away", shown(app)[-1])
            app.app_focus = True
            await eventually(pilot, lambda: core.marks == [("bob", away.seq)], "back: read")
            app.push_screen(HelpScreen())
            await pilot.pause()
            covered = core.receive("bob", "under the help")
            await pilot.pause(0.1)
            self.assertEqual(core.marks, [("bob", away.seq)])
            app.pop_screen()
            await eventually(pilot, lambda: core.marks[-1] == ("bob", covered.seq),
                             "uncovered: read")

    @async_test
    async def test_back_from_away_starts_at_what_came_meanwhile(self) -> None:
        """More messages than fit came while the terminal had no focus: on return the view
        starts at the first of them, under the new-messages line, and only what shows is
        read; a later return does not jump back up once they are read."""
        core = group_core()
        async with chatting(core, "bob", size=(80, 24)) as (app, pilot):
            app.app_focus = False
            came = [core.receive("bob", f"away {i}") for i in range(30)]
            await pilot.pause(0.1)
            self.assertEqual(core.marks, [])
            app.app_focus = True
            await pilot.pause(0.1)
            log = log_of(app)
            self.assertEqual(log.new_line_at(), came[0].seq)
            (peer, seen), = core.marks
            self.assertEqual(peer, "bob")
            self.assertLess(seen, came[-1].seq)
            self.assertGreaterEqual(seen, came[0].seq)
            await pilot.press("end")
            await eventually(pilot, lambda: core.marks[-1] == ("bob", came[-1].seq),
                             "the end marks the newest read")
            bottom = log.scroll_y
            app.app_focus = False
            await pilot.pause()
            app.app_focus = True
            await pilot.pause(0.1)
            self.assertEqual(log.scroll_y, bottom)

    @async_test
    async def test_scrolled_up_claims_no_new_message(self) -> None:
        """Scrolled up, a new message below the view is not read; going down reads it."""
        core = group_core()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            for i in range(40):
                core.receive("carol", f"old {i}")
            await submit(pilot, "/open carol")
            await pilot.press("end")
            await pilot.pause(0.1)
            await pilot.press("home")
            await pilot.pause(0.1)
            before = core.marks[-1]
            new = core.receive("carol", "below the view")
            await pilot.pause(0.1)
            self.assertEqual(core.marks[-1], before)
            await eventually(pilot, lambda: "Carol (1)" in listed(app),
                             "the new one stays unread")
            await pilot.press("end")
            await eventually(pilot, lambda: core.marks[-1] == ("carol", new.seq),
                             "the end marks the new one read")


class PagingTests(unittest.TestCase):
    """The newest page by conversation, and older pages on demand."""

    @async_test
    async def test_pages_from_the_server_without_duplicates(self) -> None:
        """Opening loads the conversation's newest page from the server; PgUp at the top
        loads the page before it, merging with what was cached, each message once."""
        core = group_core()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            for i in range(70):
                core.stored_earlier("bob", f"s{i}")
                core.stored_earlier("carol", f"other {i}")
            for i in range(3):
                core.receive("bob", f"live {i}")
            await submit(pilot, "/open bob")
            await pilot.press("end")
            await pilot.pause(0.1)
            lines = shown(app)
            self.assertEqual(len(lines), 50)
            self.assertTrue(lines[0].endswith("s23"), lines[0])
            self.assertTrue(lines[-1].endswith("live 2"))
            self.assertEqual(core.pages_asked[-1], ("bob", None, 50))
            await pilot.press("home")
            await pilot.pause(0.1)
            await pilot.press("pageup")
            await pilot.pause(0.1)
            lines = shown(app)
            self.assertEqual(len(lines), 73)
            self.assertEqual(len(set(lines)), 73)
            self.assertTrue(lines[0].endswith("s0"))
            self.assertFalse(any("other" in line for line in lines))
            self.assertGreater(log_of(app).scroll_y, 0)  # the view stayed where it was
            await pilot.press("home")
            await pilot.pause(0.1)
            await pilot.press("pageup")
            await pilot.pause(0.1)
            self.assertEqual(len(shown(app)), 73)
            self.assertIn("No older messages", str(app.screen.query_one("#notice").render()))

    @async_test
    async def test_pageup_in_the_focused_log_at_the_top_loads_older(self) -> None:
        """With the log itself focused, PgUp at its top loads the page before too."""
        core = group_core()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            for i in range(60):
                core.stored_earlier("bob", f"s{i}")
            await submit(pilot, "/open bob")
            log = log_of(app)
            log.focus()
            log.scroll_home(animate=False, immediate=True)
            await pilot.pause()
            self.assertEqual(len(shown(app)), 50)
            await pilot.press("pageup")
            await pilot.pause(0.1)
            self.assertEqual(len(shown(app)), 60)
            self.assertTrue(shown(app)[0].endswith("s0"))


class SearchTests(unittest.TestCase):
    """/search lists messages and jumps to the one chosen."""

    @async_test
    async def test_search_jumps_to_an_old_message(self) -> None:
        """/search finds a message far back in another conversation; Enter opens that
        conversation, loads back to it and shows it marked in the view."""
        core = group_core()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            core.stored_earlier("bob", "nothing here")
            target = core.stored_earlier("bob", "the Needle in a haystack")
            for i in range(150):
                core.stored_earlier("bob", f"filler {i}")
            core.receive("carol", "a needle elsewhere")
            await submit(pilot, "/open carol")
            await submit(pilot, "/search needle")
            self.assertEqual(core.searches, ["needle"])
            dialog = app.screen
            self.assertIsInstance(dialog, MessageSearchScreen)
            assert isinstance(dialog, MessageSearchScreen)
            self.assertEqual(len(dialog.lines()), 2)
            self.assertIn("Carol", dialog.lines()[0])
            self.assertIn("Bob Builder", dialog.lines()[1])
            await pilot.press("down", "enter")
            await pilot.pause(0.2)
            self.assertEqual(app.screen.peer, "bob")
            log = log_of(app)
            row = log.by_seq[target.seq]
            self.assertTrue(row.has_class("-found"))
            top, height = log.scroll_y, log.scrollable_content_region.height
            self.assertTrue(top <= row.virtual_region.y < top + height)
            lines = shown(app)
            self.assertEqual(len(lines), len(set(lines)))
            self.assertTrue(lines[-1].endswith("filler 149"))

    @async_test
    async def test_search_result_too_far_back_says_so(self) -> None:
        """A result further back than the jump loads is not shown with a hole below it:
        the chat says how to get there."""
        self.patch(chat_screen, "JUMP_PAGES", 1)
        core = group_core()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            target = core.stored_earlier("bob", "ancient needle")
            for i in range(200):
                core.stored_earlier("bob", f"filler {i}")
            await submit(pilot, "/search needle")
            await pilot.press("enter")
            await eventually(pilot, lambda: "more than 100 messages back"
                             in str(app.screen.query_one("#notice").render()), "it says so")
            log = log_of(app)
            self.assertNotIn(target.seq, log.by_seq)
            self.assertEqual(len(shown(app)), 150)

    @async_test
    async def test_search_finds_nothing(self) -> None:
        """A search with no result says so; Escape goes back."""
        core = group_core()
        async with chatting(core) as (app, pilot):
            await submit(pilot, "/search nowhere")
            self.assertIsInstance(app.screen, MessageSearchScreen)
            self.assertIn("nothing found", str(app.screen.query_one(".dialog-title").render()))
            await pilot.press("escape")
            await pilot.pause()
            self.assertNotIsInstance(app.screen, MessageSearchScreen)
