"""Opening a conversation in dim-chat, driven by Pilot against the fake client core: the
messages this device keeps show at once, the server's newest page is merged in when it
comes (each message once, the view where it was), nothing is marked read until it came, and
offline the kept messages show with a notice until the connection is back."""
from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from tests.fakes.tui import (FakeChatCore, async_test, chatting, eventually, log_of, notice,
                             shown, submit)


def bodies(app: Any) -> list[str]:
    """The texts of the open conversation's messages."""
    return [line.split(": ", 1)[1] for line in shown(app)]


class SlowLinkTests(unittest.TestCase):
    """The server's page is slow to come."""

    @async_test
    async def test_kept_messages_show_before_the_page(self) -> None:
        """On a slow link the kept messages show at once and nothing is marked read; the
        page then brings the one the cache lacked, between them, and only then is the
        conversation read up to what shows."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "one")
            gap = core.stored_earlier("bob", "missed here")
            three = core.receive("bob", "three")
            core.page_gate = defer.Deferred()
            await submit(pilot, "/open bob")
            await pilot.pause(0.1)
            self.assertEqual(bodies(app), ["one", "three"])
            self.assertEqual(core.marks, [])  # "three" shows, but "missed here" is not seen
            core.page_gate.callback(None)
            await eventually(pilot, lambda: bodies(app) == ["one", "missed here", "three"],
                             "the page is merged")
            await eventually(pilot, lambda: core.marks == [("bob", three.seq)],
                             "read once the page came")
            self.assertIn(gap.seq, log_of(app).by_seq)
            self.assertTrue(log_of(app).at_bottom)

    @async_test
    async def test_scrolled_up_view_stays_when_the_page_comes(self) -> None:
        """Scrolled up while the page is on its way: the message at the top of the view stays
        there when the page adds messages above and between, and each shows once."""
        core = FakeChatCore()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            for i in range(30):
                core.stored_earlier("bob", f"server {i}")
                core.receive("bob", f"kept {i}")
            core.page_gate = defer.Deferred()
            await submit(pilot, "/open bob")
            await pilot.pause(0.1)
            self.assertEqual(len(shown(app)), 30)
            log = log_of(app)
            await pilot.press("pageup")
            await pilot.pause(0.1)
            self.assertFalse(log.at_bottom)
            top = log._row_at(log.scroll_y)
            assert top is not None
            row, offset = top
            on_screen = row.virtual_region.y - log.scroll_y
            core.page_gate.callback(None)
            # The page and then the gaps between the kept messages come in several steps.
            await eventually(pilot, lambda: "server 29" in bodies(app), "the page is merged",
                             timeout=10.0)
            await pilot.pause(0.1)
            lines = shown(app)
            self.assertEqual(len(lines), len(set(lines)))
            self.assertIn("server 29", bodies(app))
            self.assertIn("kept 0", bodies(app))  # in view above: kept, not taken away
            self.assertEqual(row.virtual_region.y - log.scroll_y, on_screen)
            self.assertEqual(row.parent, log)

    @async_test
    async def test_not_scrolled_stays_at_the_newest(self) -> None:
        """Not scrolled: the view stays at the newest message when a whole page comes; the
        kept messages older than the page (which may hide gaps) are taken away, and PgUp at
        the top brings them back with the gaps filled."""
        core = FakeChatCore()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            for i in range(20):
                core.receive("bob", f"old kept {i}")
                core.stored_earlier("bob", f"old gap {i}")
            for i in range(50):
                core.stored_earlier("bob", f"new {i}")
            newest = core.receive("bob", "newest")
            core.read_pointers["bob"] = newest.seq - 1  # only the newest is unread
            core.page_gate = defer.Deferred()
            await submit(pilot, "/open bob")
            await pilot.pause(0.1)
            self.assertEqual(bodies(app), [f"old kept {i}" for i in range(20)] + ["newest"])
            self.assertEqual(core.marks, [])
            core.page_gate.callback(None)
            await eventually(pilot, lambda: "new 1" in bodies(app), "the page is merged")
            await pilot.pause(0.1)
            log = log_of(app)
            self.assertEqual(len(shown(app)), 50)
            self.assertTrue(log.at_bottom)
            self.assertEqual(bodies(app)[-1], "newest")
            self.assertNotIn("old kept 19", bodies(app))
            await eventually(pilot, lambda: core.marks == [("bob", newest.seq)],
                             "the newest is read")
            await pilot.press("home")
            await pilot.pause(0.1)
            await pilot.press("pageup")
            await eventually(pilot, lambda: "old gap 0" in bodies(app), "older with the gaps")
            self.assertEqual(bodies(app)[:4], ["old kept 0", "old gap 0", "old kept 1",
                                               "old gap 1"])
            self.assertEqual(len(shown(app)), len(set(shown(app))))

    @async_test
    async def test_kept_unread_in_view_stay_and_their_gaps_fill(self) -> None:
        """Opened at the first of many unread kept messages, not scrolled: that message
        stays at the top of the view when a whole page comes, and the messages the cache
        lacked between the kept ones and the page are fetched, each once, in order."""
        core = FakeChatCore()
        async with chatting(core, size=(80, 24)) as (app, pilot):
            for i in range(20):
                core.receive("bob", f"old kept {i}")
                core.stored_earlier("bob", f"old gap {i}")
            for i in range(50):
                core.stored_earlier("bob", f"new {i}")
            core.receive("bob", "newest")
            core.page_gate = defer.Deferred()
            await submit(pilot, "/open bob")
            await pilot.pause(0.1)
            log = log_of(app)
            self.assertEqual(log.scroll_y, 0)  # at the first unread
            first = log.rows()[0]
            core.page_gate.callback(None)
            await eventually(pilot, lambda: len(shown(app)) == 91, "the gaps are filled")
            await pilot.pause(0.1)
            expected = [f"old {k} {i}" for i in range(20) for k in ("kept", "gap")]
            self.assertEqual(bodies(app), expected + [f"new {i}" for i in range(50)]
                             + ["newest"])
            self.assertIs(log.rows()[0], first)
            self.assertEqual(log.scroll_y, 0)
            seen = log.newest_visible_seq()
            await eventually(pilot, lambda: core.marks == [("bob", seen)],
                             "read up to what shows")


class OfflineTests(unittest.TestCase):
    """The server cannot be asked."""

    @async_test
    async def test_offline_shows_kept_messages_with_a_notice(self) -> None:
        """Offline the kept messages show with a notice and nothing is marked read; once
        connected the page is fetched, merged and the conversation read."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "kept")
            core.stored_earlier("bob", "only on the server")
            last = core.receive("bob", "kept too")
            core.offline = True
            await submit(pilot, "/open bob")
            await pilot.pause(0.1)
            self.assertEqual(bodies(app), ["kept", "kept too"])
            self.assertIn("load when connected", notice(app))
            self.assertEqual(core.marks, [])
            core.offline = False
            core.reconnect()
            await eventually(pilot, lambda: bodies(app) == ["kept", "only on the server",
                                                            "kept too"], "merged on connect")
            await eventually(pilot, lambda: core.marks == [("bob", last.seq)], "read")

    @async_test
    async def test_a_link_that_breaks_keeps_the_kept_messages(self) -> None:
        """The page fails after a while: the kept messages stay, with the notice."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "kept")
            core.page_gate = defer.Deferred()
            await submit(pilot, "/open bob")
            await pilot.pause(0.1)
            core.page_gate.errback(ConnectionRefusedError("gone"))
            await eventually(pilot, lambda: "load when connected" in notice(app), "said")
            self.assertEqual(bodies(app), ["kept"])
            self.assertEqual(core.marks, [])
