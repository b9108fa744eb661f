"""The habits of weechat, gomuks and iamb in dim-chat, driven by Pilot against the fake
client core: scrolling from the input, new-message lines, completion, input history,
switching conversations, the activity list, nick colours, day lines, compact receipts, the
palette, panes, the last conversation, fading notices and the login screen."""
from __future__ import annotations

import os
import time

from twisted.internet import defer
from twisted.trial import unittest

from tui.app import ChatApp
from tui.commands import COMMANDS
from tui.palette import DimCommands
from tui.screens import chat as chat_screen
from tui.screens.login import LoginScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.message_log import nick_colour
from tests.fakes.tui import (FakeChatCore, async_test, chatting, group_core, input_of, log_of,
                             logged_in, notice, shown, submit, type_text)

DAY_MS = 24 * 3600 * 1000


class ScrollingTests(unittest.TestCase):
    """PgUp/PgDn, shift+up/down, Home/End, the new-messages line and the hint below."""

    @async_test
    async def test_scroll_keys_from_the_input(self) -> None:
        """PgUp/PgDn and shift+up/down scroll the log; Home/End jump when the input is empty,
        ctrl+home/ctrl+end always."""
        core = FakeChatCore()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            for i in range(40):
                core.receive("bob", f"n{i}")
            core.read_elsewhere("bob", core.seq)  # read: it opens at the bottom
            await submit(pilot, "/open bob")
            log = log_of(app)
            bottom = log.max_scroll_y
            self.assertEqual(log.scroll_y, bottom)
            await pilot.press("pageup")
            await pilot.pause()
            self.assertLess(log.scroll_y, bottom)
            paged = log.scroll_y
            await pilot.press("shift+up")
            await pilot.pause()
            self.assertEqual(log.scroll_y, paged - 1)
            await pilot.press("shift+down", "pagedown")
            await pilot.pause()
            self.assertEqual(log.scroll_y, bottom)
            await pilot.press("home")
            await pilot.pause()
            self.assertEqual(log.scroll_y, 0)
            await pilot.press("end")
            await pilot.pause()
            self.assertEqual(log.scroll_y, bottom)
            await type_text(pilot, "abc")
            await pilot.press("home")
            await pilot.pause()
            self.assertEqual(log.scroll_y, bottom)
            self.assertEqual(input_of(app).cursor_location, (0, 0))
            await pilot.press("ctrl+home")
            await pilot.pause()
            self.assertEqual(log.scroll_y, 0)
            self.assertEqual(input_of(app).text, "abc")

    @async_test
    async def test_new_messages_line_on_reopening(self) -> None:
        """Messages that came while elsewhere are marked by a "new messages" line."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            for i in range(3):
                core.receive("bob", f"old {i}")
            await submit(pilot, "/open bob")
            self.assertIsNone(log_of(app).new_line_at())
            await submit(pilot, "/open carol")
            first = core.receive("bob", "new 1")
            core.receive("bob", "new 2")
            await pilot.pause()
            await submit(pilot, "/open bob")
            self.assertEqual(log_of(app).new_line_at(), first.seq)
            self.assertIn("── new messages ──", str(log_of(app).rows()[3].render()))

    @async_test
    async def test_new_below_hint_when_scrolled_up(self) -> None:
        """Scrolled up, new messages show "N new below"; End goes down and clears it."""
        core = FakeChatCore()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            for i in range(40):
                core.receive("bob", f"n{i}")
            await submit(pilot, "/open bob")
            await pilot.press("home")
            await pilot.pause()
            core.receive("bob", "one")
            core.receive("bob", "two")
            await pilot.pause()
            below = app.screen.query_one("#below")
            self.assertTrue(below.display)
            self.assertIn("2 new below", str(below.render()))
            self.assertEqual(log_of(app).scroll_y, 0)
            await pilot.press("end")
            await pilot.pause()
            self.assertFalse(below.display)


class InputTests(unittest.TestCase):
    """Tab completion and recalling sent input."""

    @async_test
    async def test_tab_completes_commands_users_and_groups(self) -> None:
        """Tab completes /op to /open, a user after it, a #group, and a nick at the start;
        Tab again gives the next candidate."""
        core = group_core()
        async with chatting(core) as (app, pilot):
            await type_text(pilot, "/op")
            await pilot.press("tab")
            self.assertEqual(input_of(app).text, "/open ")
            await pilot.press(*"ca")
            await pilot.press("tab")
            self.assertEqual(input_of(app).text, "/open carol ")
            await type_text(pilot, "/open #te")
            await pilot.press("tab")
            self.assertEqual(input_of(app).text, "/open #team ")
            await type_text(pilot, "bo")
            await pilot.press("tab")
            self.assertEqual(input_of(app).text, "bob: ")
            await type_text(pilot, "/re")
            await pilot.press("tab")
            first = input_of(app).text
            await pilot.press("tab")
            self.assertEqual({first, input_of(app).text}, {"/remove ", "/retry "})
            self.assertIs(app.focused, input_of(app))
            await type_text(pilot, "zzz")
            await pilot.press("tab")
            self.assertEqual(input_of(app).text, "zzz")
            self.assertIs(app.focused, input_of(app), "Tab with text never leaves the input")

    @async_test
    async def test_ctrl_up_down_recall_sent_input(self) -> None:
        """ctrl+up recalls older sent lines, ctrl+down newer, then what was being typed; a
        doubled slash sends a line starting with one."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            await submit(pilot, "one")
            await submit(pilot, "two")
            await type_text(pilot, "draft")
            await pilot.press("ctrl+up")
            self.assertEqual(input_of(app).text, "two")
            await pilot.press("ctrl+up")
            self.assertEqual(input_of(app).text, "one")
            await pilot.press("ctrl+down")
            self.assertEqual(input_of(app).text, "two")
            await pilot.press("ctrl+down")
            self.assertEqual(input_of(app).text, "draft")
            await submit(pilot, "//etc/hosts is a file")
            self.assertEqual(list(core.outgoing_by_id.values())[-1].body, "/etc/hosts is a file")


class SwitchingTests(unittest.TestCase):
    """alt+N, ctrl+n/ctrl+p, alt+a and the activity list."""

    @async_test
    async def test_switch_by_number_and_in_turn(self) -> None:
        """alt+2 opens the second listed; ctrl+n and ctrl+p go down and up the list."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "b")
            core.receive("carol", "c")
            await pilot.pause(0.1)
            order = app.screen.order
            self.assertEqual(order, ["carol", "bob"])
            await pilot.press("alt+2")
            await pilot.pause(0.1)
            self.assertEqual(app.screen.peer, "bob")
            await pilot.press("ctrl+p")
            await pilot.pause(0.1)
            self.assertEqual(app.screen.peer, "carol")
            await pilot.press("ctrl+n")
            await pilot.pause(0.1)
            self.assertEqual(app.screen.peer, "bob")

    @async_test
    async def test_hotlist_and_next_active(self) -> None:
        """The bar lists conversations with unread messages (! for a mention); alt+a opens
        the mentioning one first, and opening it takes it off the list."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            core.receive("carol", "hello")
            core.receive("dave", "hey alice, look")
            await pilot.pause(0.1)
            bar = app.screen.query_one(ConnectionBar)
            number = {peer: n for n, peer in enumerate(app.screen.order, 1)}
            self.assertIn(f"Act: {number['dave']}:!dave(1) {number['carol']}:carol(1)",
                          bar.plain)
            await pilot.press("alt+a")
            await pilot.pause(0.1)
            self.assertEqual(app.screen.peer, "dave")
            number = {peer: n for n, peer in enumerate(app.screen.order, 1)}
            self.assertTrue(bar.plain.endswith(f"Act: {number['carol']}:carol(1)"), bar.plain)
            await pilot.press("alt+a")
            await pilot.pause(0.1)
            self.assertEqual(app.screen.peer, "carol")
            self.assertNotIn("Act:", bar.plain)


class LookTests(unittest.TestCase):
    """Nick colours, dimmed times, day-change lines and one compact receipt."""

    def test_nick_colours_are_stable_and_varied(self) -> None:
        """A user's colour is the same every time; different users mostly differ."""
        self.assertEqual(nick_colour("bob"), nick_colour("bob"))
        colours = {nick_colour(f"user{i}") for i in range(40)}
        self.assertGreater(len(colours), 6)

    @async_test
    async def test_times_dim_senders_coloured_and_day_lines(self) -> None:
        """The time is dim, the sender in its colour; a line names each day, today's only
        after an older one."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            yesterday = int(time.time() * 1000) - DAY_MS
            core.receive("bob", "before", ts=yesterday)
            core.receive("bob", "after", ts=yesterday + DAY_MS)
            await submit(pilot, "/open bob")
            log = log_of(app)
            self.assertEqual(log.day_lines(), [
                time.strftime("%A %d %B %Y", time.localtime(yesterday / 1000)),
                time.strftime("%A %d %B %Y")])
            row = log.rows()[0]
            content = row.render()
            styles = {str(span.style) for span in content.spans}  # type: ignore[attr-defined]
            self.assertIn("dim", styles)
            self.assertIn(f"bold {nick_colour('bob')}", styles)

    @async_test
    async def test_one_receipt_at_the_newest_own_message(self) -> None:
        """Only the newest of one's delivered messages carries the receipt."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            await submit(pilot, "first")
            await submit(pilot, "second")
            first, second = core.outgoing_by_id.values()
            for out in (first, second):
                core.confirm(out.id)
                core.deliver(out.id)
            await pilot.pause()
            lines = shown(app)
            self.assertTrue(lines[0].endswith("alice: first"), lines)
            self.assertTrue(lines[1].endswith("alice: second  ✓✓ delivered"), lines)


class CommandTests(unittest.TestCase):
    """/help CMD, the palette, ctrl+l, /reconnect and fading notices."""

    @async_test
    async def test_help_for_one_command(self) -> None:
        """/help send says what /send does; an unknown one is named."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            await submit(pilot, "/help send")
            self.assertIn("/send PATH: upload a file", notice(app))
            await submit(pilot, "/help nope")
            self.assertIn("No command 'nope'", notice(app))

    @async_test
    async def test_palette_lists_dim_commands_and_conversations(self) -> None:
        """ctrl+k opens the palette; its DIM provider finds commands and conversations and
        runs what is chosen."""
        from textual.command import CommandPalette
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "hi")
            await pilot.pause(0.1)
            chat = app.screen
            provider = DimCommands(chat)
            found = [hit async for hit in provider.search("reconnect")]
            self.assertTrue(found)
            found[0].command()
            await pilot.pause()
            self.assertEqual(core.reconnects, 1)
            discovered = [hit.text async for hit in provider.discover()]
            self.assertIn("Open bob", discovered)
            self.assertEqual(len(discovered), len(COMMANDS) + 1)
            await pilot.press("ctrl+k")
            await pilot.pause()
            self.assertIsInstance(app.screen, CommandPalette)

    @async_test
    async def test_redraw_and_reconnect(self) -> None:
        """ctrl+l redraws and leaves the chat as it was; /reconnect asks the core."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            await pilot.press("ctrl+l")
            await pilot.pause()
            self.assertEqual(app.screen.peer, "bob")
            await submit(pilot, "/reconnect")
            self.assertEqual(core.reconnects, 1)
            self.assertIn("Reconnecting now", notice(app))

    @async_test
    async def test_notices_fade(self) -> None:
        """A notice goes away by itself after a while."""
        self.patch(chat_screen, "NOTICE_SECONDS", 0.2)
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            await submit(pilot, "/frobnicate")
            self.assertIn("Unknown command", notice(app))
            await pilot.pause(0.5)
            self.assertEqual(notice(app), "")


class PaneTests(unittest.TestCase):
    """Panes that collapse, and the last conversation reopened."""

    @async_test
    async def test_f3_and_narrow_terminals_hide_the_side_pane(self) -> None:
        """F3 hides and shows the side pane; a very narrow terminal hides it by itself."""
        core = FakeChatCore()
        async with chatting(core, size=(100, 30)) as (app, pilot):
            side = app.screen.query_one("#side")
            self.assertTrue(side.display)
            await pilot.press("f3")
            await pilot.pause()
            self.assertFalse(side.display)
            await pilot.press("f3")
            await pilot.pause()
            self.assertTrue(side.display)
            await pilot.resize_terminal(50, 20)
            await pilot.pause(0.1)
            self.assertFalse(side.display)

    @async_test
    async def test_f4_toggles_the_members_pane(self) -> None:
        """F4 shows a group's members on a narrow terminal, and hides them again."""
        core = group_core()
        async with chatting(core, "#team", size=(80, 24)) as (app, pilot):
            members = app.screen.query_one("#members")
            self.assertFalse(members.display)
            await pilot.press("f4")
            await pilot.pause()
            self.assertTrue(members.display)
            await pilot.press("f4")
            await pilot.pause()
            self.assertFalse(members.display)

    @async_test
    async def test_last_conversation_reopened(self) -> None:
        """The conversation open at quitting is open again at the next start."""
        path = os.path.join(self.mktemp(), "chat.json")
        core = FakeChatCore()
        async with chatting(core, state_path=path) as (app, pilot):
            core.receive("bob", "remember me")
            await submit(pilot, "/open bob")
        again = ChatApp(core, user="alice", password="secret123", state_path=path)
        async with again.run_test() as pilot:
            await logged_in(pilot)
            await pilot.pause(0.1)
            self.assertEqual(again.screen.peer, "bob")
            self.assertTrue(shown(again)[-1].endswith("bob: remember me"))


class LoginHabitTests(unittest.TestCase):
    """The gateway on the login screen and in its errors; registering asks twice."""

    @async_test
    async def test_gateway_shown_and_named_in_errors(self) -> None:
        """The login screen names the gateway, and so does a failure to reach it."""
        core = FakeChatCore()
        core.login = lambda user, password: defer.fail(  # type: ignore[method-assign]
            ConnectionRefusedError("Connection refused"))
        app = ChatApp(core, user="alice", gateway_url="http://127.0.0.1:18080")
        async with app.run_test() as pilot:
            self.assertIsInstance(app.screen, LoginScreen)
            self.assertIn("http://127.0.0.1:18080", str(app.screen.query_one("#login-gateway")
                                                          .render()))
            self.assertIn("at least 8 characters", str(app.screen.query_one("#login-rules")
                                                       .render()))
            await pilot.press(*"secret123")
            await pilot.press("enter")
            await pilot.pause()
            error = str(app.screen.query_one("#login-error").render())
            self.assertIn("Cannot reach the gateway at http://127.0.0.1:18080", error)

    @async_test
    async def test_register_asks_for_the_password_twice(self) -> None:
        """Register without the second password, or with a different one, is refused here."""
        core = FakeChatCore()
        app = ChatApp(core)
        async with app.run_test() as pilot:
            await pilot.click("#user")
            await pilot.press(*"erin")
            await pilot.click("#password")
            await pilot.press(*"password9")
            await pilot.click("#register")
            await pilot.pause()
            self.assertIn("same password again", str(app.screen.query_one("#login-error")
                                                     .render()))
            await pilot.click("#confirm")
            await pilot.press(*"password8")
            await pilot.click("#register")
            await pilot.pause()
            self.assertIn("differ", str(app.screen.query_one("#login-error").render()))
            self.assertNotIn("erin", core.users)
