"""The terminal chat driven by Pilot against a fake client core (tests/fakes/tui.py)."""
from __future__ import annotations

import inspect

from textual import events
from twisted.trial import unittest

from dim.client import events as E
from dim.client import chat as C
from tui.app import ChatApp
from tui.core import ChatCore
from tui.screens.help import HelpScreen
from tui.screens.login import LoginScreen
from tui.widgets.conversation_list import ConversationList
from tui.widgets.message_input import MessageInput
from tui.widgets.message_log import MessageLog

from tests.fakes.tui import (NODE, FakeChatCore, async_test, bar, chatting, logged_in,
                              shown, submit)

class InterfaceTests(unittest.TestCase):
    """The fake stays faithful to the real client core."""

    def test_fake_matches_chat_client(self) -> None:
        """Every ChatCore member exists on ChatClient and the fake, with the same parameters."""
        members = [n for n in vars(ChatCore) if not n.startswith("_")]
        self.assertIn("send", members)
        for name in members:
            real = getattr(C.ChatClient, name, None)
            fake = getattr(FakeChatCore, name, None)
            if name == "user":
                continue  # an instance attribute on both
            self.assertIsNotNone(real, name)
            self.assertIsNotNone(fake, name)
            if callable(real) and not isinstance(real, property):
                self.assertEqual(list(inspect.signature(real).parameters),
                                 list(inspect.signature(fake).parameters), name)
                self.assertEqual(list(inspect.signature(getattr(ChatCore, name)).parameters),
                                 list(inspect.signature(real).parameters), name)


class LoginTests(unittest.TestCase):
    """The login screen."""

    @async_test
    async def test_login_opens_chat(self) -> None:
        """Typing a user and password and pressing Enter logs in and shows the chat."""
        core = FakeChatCore()
        app = ChatApp(core)
        async with app.run_test() as pilot:
            self.assertIsInstance(app.screen, LoginScreen)
            await pilot.click("#user")
            await pilot.press(*"alice")
            await pilot.press("enter")
            await pilot.press(*"secret123")
            await pilot.press("enter")
            await logged_in(pilot)
            self.assertEqual(core.logins, [("alice", "secret123")])
            self.assertIn("connected to node n1 as alice", bar(app))

    @async_test
    async def test_wrong_password_stays(self) -> None:
        """A refused login shows an error and stays on the login screen."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice")
        async with app.run_test() as pilot:
            await pilot.press(*"wrongpass")
            await pilot.press("enter")
            await pilot.pause()
            self.assertIsInstance(app.screen, LoginScreen)
            self.assertIn("Wrong user name or password",
                          str(app.screen.query_one("#login-error").render()))

    @async_test
    async def test_password_from_environment_logs_in(self) -> None:
        """Given a user and a password (DIM_PASSWORD), the app logs in without typing."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            self.assertEqual(core.logins, [("alice", "secret123")])

    @async_test
    async def test_register(self) -> None:
        """The Register button creates the account and logs in."""
        core = FakeChatCore()
        app = ChatApp(core)
        async with app.run_test() as pilot:
            await pilot.click("#user")
            await pilot.press(*"dave")
            await pilot.click("#password")
            await pilot.press(*"password9")
            await pilot.click("#confirm")
            await pilot.press(*"password9")
            await pilot.click("#register")
            await logged_in(pilot)
            self.assertEqual(core.users["dave"], "password9")

    @async_test
    async def test_saved_login_skips_the_form(self) -> None:
        """With a saved login the chat opens at once."""
        core = FakeChatCore()
        core.saved_login = "alice"
        app = ChatApp(core)
        async with app.run_test() as pilot:
            await logged_in(pilot)
            self.assertEqual(core.logins, [])

    @async_test
    async def test_expired_session_returns_to_login(self) -> None:
        """SessionExpired brings back the login screen with a reason."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            core.set_state(E.OFFLINE, E.SessionExpired("token expired"))
            await pilot.pause()
            await pilot.pause()
            self.assertIsInstance(app.screen, LoginScreen)


class ChatTests(unittest.TestCase):
    """Sending, receiving, unread counts, marks, retry and the connection bar."""

    @async_test
    async def test_send_shows_status_marks(self) -> None:
        """An own message shows sending, then sent, then delivered."""
        core = FakeChatCore({"alice": "secret123", "bob": "x" * 8})
        async with chatting(core, "bob") as (app, pilot):
            await submit(pilot, "hello bob")
            (out,) = core.outgoing_by_id.values()
            self.assertEqual((out.to, out.body), ("bob", "hello bob"))
            self.assertRegex(shown(app)[-1],
                             r"^(\d{4}-\d\d-\d\d )?\d\d:\d\d alice: hello bob  … sending$")
            core.confirm(out.id)
            await pilot.pause()
            self.assertTrue(shown(app)[-1].endswith("✓ sent"), shown(app))
            core.deliver(out.id)
            await pilot.pause()
            self.assertTrue(shown(app)[-1].endswith("✓✓ delivered"), shown(app))
            self.assertEqual(len(shown(app)), 1)

    @async_test
    async def test_newline_key_makes_multiline_message(self) -> None:
        """ctrl+j inserts a newline; Enter sends both lines as one message."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            await pilot.press("a", "ctrl+j", "b", "enter")
            await pilot.pause()
            (out,) = core.outgoing_by_id.values()
            self.assertEqual(out.body, "a\nb")
            self.assertEqual(app.screen.query_one(MessageInput).text, "")

    @async_test
    async def test_receive_in_open_conversation(self) -> None:
        """A message in the open conversation appears once, with time and sender, no bell."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            entry = core.receive("bob", "hi alice")
            core.emit(E.MessageReceived(entry))  # a duplicate report of the same seq
            await pilot.pause()
            self.assertEqual(len(shown(app)), 1)
            self.assertRegex(shown(app)[0], r"^(\d{4}-\d\d-\d\d )?\d\d:\d\d bob: hi alice$")
            self.assertEqual(app.bells, 0)

    @async_test
    async def test_logout_command_returns_to_the_login(self) -> None:
        """/logout forgets the saved login, goes offline and shows the login screen."""
        core = FakeChatCore()
        core.saved_login = "alice"
        async with chatting(core) as (app, pilot):
            await submit(pilot, "/logout")
            await pilot.pause()
            self.assertIsInstance(app.screen, LoginScreen)
            self.assertIsNone(core.saved_login)
            self.assertEqual(core.state, E.OFFLINE)

    @async_test
    async def test_unread_count_and_bell(self) -> None:
        """A message elsewhere rings the bell and counts unread until opened; newest first."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            core.receive("bob", "one")
            core.receive("carol", "two")
            core.receive("carol", "three")
            await pilot.pause(0.1)
            conversations = app.screen.query_one(ConversationList)
            self.assertEqual(conversations.lines(), ["carol (2)", "bob"])
            self.assertEqual(app.bells, 1)
            await submit(pilot, "/open carol")
            await pilot.pause(0.1)
            self.assertEqual(conversations.lines(), ["carol", "bob"])
            self.assertEqual([line.split(": ", 1)[1] for line in shown(app)], ["two", "three"])

    @async_test
    async def test_failed_then_retry(self) -> None:
        """A failed message says so; ctrl+r retries it and it shows sending again."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            await submit(pilot, "lost")
            (out,) = core.outgoing_by_id.values()
            core.fail(out.id)
            await pilot.pause()
            self.assertIn("✗ failed", shown(app)[-1])
            await pilot.press("ctrl+r")
            await pilot.pause()
            self.assertEqual(core.retried, [out.id])
            self.assertTrue(shown(app)[-1].endswith("… sending"), shown(app))

    @async_test
    async def test_retry_of_a_forgotten_failure(self) -> None:
        """ctrl+r on a failed message the client core no longer keeps says to send it again,
        and retries the others."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            await submit(pilot, "old")
            await submit(pilot, "new")
            old, new = core.outgoing_by_id.values()
            core.fail(old.id)
            core.fail(new.id)
            await pilot.pause()
            del core.outgoing_by_id[old.id]  # as the core forgets long-failed writes
            await pilot.press("ctrl+r")
            await pilot.pause()
            self.assertEqual(core.retried, [new.id])
            self.assertEqual(app.screen.notice(),
                             "Retrying 1 message(s). 1 failed too long ago to retry: "
                             "send them again.")
            self.assertTrue(shown(app)[-1].endswith("… sending"), shown(app))

    @async_test
    async def test_connection_bar_follows_state(self) -> None:
        """The bar shows connected, reconnecting in N s (attempt k), and offline."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            self.assertIn("connected to node n1", bar(app))
            core.set_state(E.RECONNECTING, E.Disconnected(NODE, "gone"))
            core.emit(E.Reconnecting(3.0, 2))
            await pilot.pause()
            self.assertIn("reconnecting in 3 s (attempt 2)", bar(app))
            core.set_state(E.OFFLINE, E.Offline("stopped"))
            await pilot.pause()
            self.assertIn("offline", bar(app))

    @async_test
    async def test_commands(self) -> None:
        """/help lists the commands; /msg sends without opening; unknown commands are named."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            await submit(pilot, "/help")
            self.assertIsInstance(app.screen, HelpScreen)
            self.assertIn("/open USER", str(app.screen.query_one("#help-text").render()))
            await pilot.press("escape")
            await pilot.pause()
            await submit(pilot, "/msg carol hi there")
            (out,) = core.outgoing_by_id.values()
            self.assertEqual((out.to, out.body), ("carol", "hi there"))
            self.assertIsNone(app.screen.peer)
            await submit(pilot, "/frobnicate")
            self.assertIn("Unknown command", str(app.screen.query_one("#notice").render()))

    @async_test
    async def test_history_and_older(self) -> None:
        """Opening shows the newest cached page; ctrl+o loads older messages above it."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            for i in range(1, 61):
                core.receive("bob", f"n{i}")
            await submit(pilot, "/open bob")
            self.assertEqual(len(shown(app)), 50)
            self.assertTrue(shown(app)[0].endswith("n11"))
            await pilot.press("ctrl+o")
            await pilot.pause()
            self.assertEqual(len(shown(app)), 60)
            self.assertTrue(shown(app)[0].endswith("n1"))
            self.assertTrue(shown(app)[-1].endswith("n60"))

    @async_test
    async def test_scrolling_up_at_the_top_loads_older(self) -> None:
        """Scrolling the mouse wheel up at the top of the log loads the older page."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            for i in range(1, 61):
                core.receive("bob", f"n{i}")
            await submit(pilot, "/open bob")
            log = app.screen.query_one(MessageLog)
            log.scroll_home(animate=False)
            await pilot.pause()
            log.post_message(events.MouseScrollUp(log, 1, 1, 0, -1, 0, False, False, False))
            await pilot.pause(0.1)
            self.assertEqual(len(shown(app)), 60)
            self.assertTrue(shown(app)[0].endswith("n1"))

    @async_test
    async def test_quit_command(self) -> None:
        """/quit leaves the app and stops the client core."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            await submit(pilot, "/quit")
        self.assertEqual(core.state, E.OFFLINE)
