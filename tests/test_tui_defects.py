"""The twelve defects a new user met in dim-chat, each driven by Pilot (or called directly)
against the fake client core: every test failed before its fix.

The newer modules are imported inside the tests, so that each test fails on what it checks."""
from __future__ import annotations

import io
import os
import sys
import types
import warnings
from typing import Any

from twisted.python.failure import Failure
from twisted.trial import unittest

from dim.client import events as E
from dim.client import session as S
from tui.app import ChatApp
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.conversation_list import ConversationList
from tui.widgets.member_list import MemberList
from tui.widgets.message_input import MessageInput
from tui.widgets.message_log import MessageLog
from tests.fakes.tui import FakeChatCore, async_test, chatting, shown, submit
from tests.fakes.tui import USERS, notice, text_of
from tests.fakes.tui import group_core


def screen_text(app: ChatApp) -> str:
    """Everything the terminal shows now, as text (one line per row)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


class DefectTests(unittest.TestCase):
    """Each numbered defect stays fixed."""

    @async_test
    async def test_1_help_is_never_cut_off(self) -> None:
        """At 80x24 every line of /help can be brought on screen: each command and key."""
        from tui.commands import COMMANDS, KEYS
        core = FakeChatCore()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            await submit(pilot, "/help")
            await pilot.pause()
            seen = screen_text(app)
            for _ in range(10):
                await pilot.press("pagedown")
                await pilot.pause()
                seen += screen_text(app)
            for wanted in [c.name for c in COMMANDS] + [k for k, _ in KEYS]:
                self.assertIn(wanted, seen)

    def test_2_log_goes_to_a_file_not_the_terminal(self) -> None:
        """After start_logging a critical traceback goes to the log file, none to stderr."""
        from twisted.logger import LogBeginner, Logger, LogPublisher

        from tui import logfile
        publisher = LogPublisher()
        err = io.StringIO()
        stdio = types.SimpleNamespace(stdout=io.StringIO(), stderr=io.StringIO())
        beginner = LogBeginner(publisher, err, stdio, types.SimpleNamespace(
            showwarning=warnings.showwarning))
        path = os.path.join(self.mktemp(), "dim-chat.log")
        out = logfile.start_logging(path, beginner)
        self.addCleanup(out.close)
        log = Logger(observer=publisher)
        log.failure("upload", Failure(ValueError("read of closed file")))
        out.flush()
        self.assertEqual(err.getvalue() + stdio.stderr.getvalue(), "")
        with open(path, encoding="utf-8") as f:
            self.assertIn("read of closed file", f.read())
        self.assertTrue(logfile.log_path().endswith(os.path.join("dim-chat", "dim-chat.log")))

    @async_test
    async def test_3_refused_long_message_stays_in_the_input(self) -> None:
        """A message over 16 KiB is refused and the typed text is back in the input."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            text = "x" * (16 * 1024 + 10)
            await submit(pilot, text)
            self.assertEqual(core.outgoing_by_id, {})
            self.assertEqual(app.screen.query_one(MessageInput).text, text)
            self.assertIn("Not sent", notice(app))

    @async_test
    async def test_4_group_marks_survive_switching(self) -> None:
        """'read by all 2' on one's group message is still there after switching back."""
        core = group_core()
        async with chatting(core, "#team") as (app, pilot):
            await submit(pilot, "hi all")
            (out,) = core.outgoing_by_id.values()
            core.confirm(out.id)
            for by in ("bob", "carol"):
                core.deliver(out.id, by)
                assert core.cache is not None and out.mid is not None
                core.cache.add_receipt(out.mid, by, True)  # as the real core's session does
                core.emit(E.ReadReceipt(out.id, out.mid, by))
            await pilot.pause()
            self.assertTrue(shown(app)[-1].endswith("✓✓ read by all 2"), shown(app))
            await submit(pilot, "/open bob")
            await submit(pilot, "/open #team")
            self.assertTrue(shown(app)[-1].endswith("✓✓ read by all 2"), shown(app))

    @async_test
    async def test_5_one_name_per_person_everywhere(self) -> None:
        """A person is drawn by display name in person-to-person chats as in groups, and a
        name change redraws the open log."""
        core = group_core()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "in the group", group="g1")
            core.receive("bob", "just us")
            await submit(pilot, "/open bob")
            self.assertTrue(shown(app)[-1].endswith("Bob Builder: just us"), shown(app))
            await submit(pilot, "/open #team")
            self.assertTrue(shown(app)[-1].endswith("Bob Builder: in the group"), shown(app))
            core.names["bob"] = "Robert"
            core.contact_map["bob"]["name"] = "Robert"
            core.emit(E.RosterChanged("names"))
            await pilot.pause()
            self.assertTrue(shown(app)[-1].endswith("Robert: in the group"), shown(app))

    @async_test
    async def test_6_unknown_user_and_permanent_errors(self) -> None:
        """/open of no such user opens nothing; a refused message offers no retry and is
        told about once, not again at every reconnect."""
        core = FakeChatCore()
        async with chatting(core, "nosuchuser") as (app, pilot):
            self.assertIsNone(app.screen.peer)
            self.assertIn("There is no user 'nosuchuser'", notice(app))
            self.assertNotIn("nosuchuser", app.screen.query_one(ConversationList).lines())
            await submit(pilot, "/open bob")
            await submit(pilot, "hello")
            (out,) = core.outgoing_by_id.values()
            out.state, out.error = E.FAILED, "not_found: no such user"
            core.emit(E.MessageStatus(out.id, E.FAILED, out))
            await pilot.pause()
            self.assertNotIn("ctrl+r", shown(app)[-1])
            self.assertNotIn("ctrl+r", notice(app))
            await pilot.press("ctrl+r")
            await pilot.pause()
            self.assertEqual(core.retried, [])
            app.screen.say("")
            core.emit(E.Connected(E.NodeAddress("n2", "127.0.0.1", 9001), "alice", 0))
            core.emit(E.MessageStatus(out.id, E.FAILED, out))
            await pilot.pause()
            self.assertEqual(notice(app), "")

    @async_test
    async def test_7_group_rename_leave_and_lines(self) -> None:
        """A rename, a join and a leave show as lines; /open #oldname finds the renamed
        group; a group left keeps its name in the list, never its id."""
        core = group_core()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "hi", group="g1")
            await submit(pilot, "/open #team")
            core.rename_group("g1", "crew")
            core.add_member("g1", "dave")
            await pilot.pause()
            lines = shown(app)
            self.assertTrue(any("renamed from team to crew" in line for line in lines), lines)
            self.assertTrue(any("Dave D joined" in line for line in lines), lines)
            await submit(pilot, "/open bob")
            await submit(pilot, "/open #team")
            self.assertEqual(app.screen.peer, "#g1")
            self.assertTrue(shown(app), "the renamed group's history shows")
            await submit(pilot, "/group leave")
            await pilot.pause(0.1)
            listed = app.screen.query_one(ConversationList).lines()
            self.assertIn("# crew (left)", listed)
            self.assertNotIn("#g1", listed)
            await submit(pilot, "/open #nosuchgroup")
            self.assertIsNone(app.screen.peer)

    @async_test
    async def test_8_presence_of_non_contacts_and_the_legend(self) -> None:
        """A non-contact's "(online)" stays across roster changes and is asked again after
        a reconnect; the members pane explains its dots."""
        core = group_core()
        core.contact_map.pop("carol")
        async with chatting(core, "carol", size=(140, 40)) as (app, pilot):
            await pilot.pause()
            self.assertIn("(online)", text_of(app, "#title"))
            core.emit(E.RosterChanged("contacts"))
            await pilot.pause()
            self.assertIn("(online)", text_of(app, "#title"))
            asked = len(core.user_infos)
            core.online_users = {"bob"}  # carol went away meanwhile
            core.emit(E.Connected(E.NodeAddress("n2", "127.0.0.1", 9001), "alice", 0))
            await pilot.pause(0.1)
            self.assertGreater(len(core.user_infos), asked)
            self.assertIn("(offline)", text_of(app, "#title"))
            await submit(pilot, "/open #team")
            self.assertIn("not a contact", str(app.screen.query_one(MemberList).render()))

    def test_9_no_graphics_probe_inside_tmux(self) -> None:
        """Inside tmux textual-image is imported with no terminal to probe, and pictures
        are drawn in half cells."""
        from tui import images
        seen: list[tuple[str, bool]] = []

        def fake_import(name: str) -> Any:
            seen.append((name, sys.__stdout__ is None))
            return types.SimpleNamespace(Image="probed", HalfcellImage="halfcell")
        self.patch(images, "import_module", fake_import)
        self.patch(images, "_prepared", {})
        self.patch(os, "environ", {**os.environ, "TMUX": "/tmp/tmux-0/default,1,0"})
        images.prepare()
        self.assertEqual(images.image_class(), "halfcell")
        self.assertEqual(seen[0], ("textual_image.renderable", True))
        self.assertIsNotNone(sys.__stdout__)

    @async_test
    async def test_10_narrow_terminal_leaves_room_and_resize_keeps_place(self) -> None:
        """At 80x24 a group chat keeps at least 50 columns for messages; a resize keeps the
        log at the bottom, or at the message that was at the top."""
        core = group_core()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            for i in range(60):
                core.receive("bob", f"line {i}", group="g1")
            core.read_elsewhere("#g1", core.seq)  # read: it opens at the bottom
            await submit(pilot, "/open #team")
            log = app.screen.query_one(MessageLog)
            self.assertGreaterEqual(log.content_region.width, 50)
            await pilot.resize_terminal(120, 40)
            await pilot.pause(0.1)
            self.assertEqual(log.scroll_y, log.max_scroll_y)
            log.scroll_to(y=20, animate=False, immediate=True)
            await pilot.pause()
            top = log._row_at(log.scroll_y)
            assert top is not None
            await pilot.resize_terminal(100, 30)
            await pilot.pause(0.1)
            again = log._row_at(log.scroll_y)
            assert again is not None
            self.assertIs(again[0], top[0])

    @async_test
    async def test_11_idle_connected_chat_runs_no_timer(self) -> None:
        """The connection bar ticks only while a reconnect countdown runs."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            bar = app.screen.query_one(ConnectionBar)

            def running() -> list[Any]:
                return [t for t in bar._timers if t._task is not None and not t._task.done()]
            self.assertEqual(running(), [])
            core.set_state(E.RECONNECTING, E.Reconnecting(5.0, 2))
            await pilot.pause()
            self.assertEqual(len(running()), 1)
            core.set_state(E.CONNECTED, E.Connected(E.NodeAddress("n1", "127.0.0.1", 9000),
                                                    "alice", 0))
            await pilot.pause(0.2)
            self.assertEqual(running(), [])

    @async_test
    async def test_12_reconnect_now_during_the_countdown(self) -> None:
        """While the bar counts down it says F5 reconnects now; F5 and /reconnect do."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            core.set_state(E.RECONNECTING, E.Reconnecting(7.0, 4))
            await pilot.pause()
            self.assertIn("F5 reconnects now", app.screen.query_one(ConnectionBar).plain)
            await pilot.press("f5")
            await pilot.pause()
            self.assertEqual(core.reconnects, 1)
            self.assertIn("connected to node n1", app.screen.query_one(ConnectionBar).plain)
            await submit(pilot, "/reconnect")
            self.assertEqual(core.reconnects, 2)
        self.assertLessEqual(S.BACKOFF_CAP, 8.0)
        self.assertEqual(USERS["alice"], "secret123")
