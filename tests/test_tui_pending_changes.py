"""Edits, recalls and reactions in dim-chat before the node stored them (offline, or before
its ``sent``), driven by Pilot against the fake client core: they show on the message at once
as pending, settle when stored, and are undone with a notice when they fail."""
from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from dim.client import events as E
from tests.fakes.tui import (FakeChatCore, async_test, chatting, group_core, log_of, notice,
                             row_of, sent, shown, styles_of, submit, type_text)


async def edit_last(pilot: Any, text: str) -> None:
    """Up on the empty input, the new text, Enter."""
    await pilot.press("up")
    await pilot.pause()
    await type_text(pilot, text)
    await pilot.press("enter")
    await pilot.pause()


class PendingTests(unittest.TestCase):
    """Each change shows at once, pending, and settles when the node stored it."""

    @async_test
    async def test_edit_shows_at_once_then_settles(self) -> None:
        """The edited text shows at once with "(editing…)"; stored, "(edited)"."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            mid = await sent(pilot, core, "original")
            core.change_gate = defer.Deferred()
            await edit_last(pilot, "changed")
            self.assertEqual(core.changes, [("edit", mid, "changed", True)])
            self.assertIn("alice: changed (editing…)", shown(app)[-1])
            core.change_gate.callback(None)
            await pilot.pause(0.1)
            self.assertIn("alice: changed (edited)", shown(app)[-1])
            self.assertNotIn("editing", shown(app)[-1])
            self.assertEqual(log_of(app).waiting, {})

    @async_test
    async def test_recall_shows_at_once_then_settles(self) -> None:
        """A recall shows "(recalling…)" at once; stored, "message recalled"."""
        core = FakeChatCore()
        async with chatting(core, "bob", size=(100, 30)) as (app, pilot):
            await sent(pilot, core, "oops")
            core.change_gate = defer.Deferred()
            await pilot.press("alt+up", "d")
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
            self.assertIn("alice: oops (recalling…)", shown(app)[-1])
            core.change_gate.callback(None)
            await pilot.pause(0.1)
            self.assertIn("alice: message recalled", shown(app)[-1])
            self.assertNotIn("recalling", shown(app)[-1])

    @async_test
    async def test_reaction_dimmed_until_stored(self) -> None:
        """A reaction shows dimmed with "…" at once, counted with the others'; stored, as
        the person's own; taking it back shows dimmed too until stored."""
        core = group_core()
        async with chatting(core, "#team", size=(100, 30)) as (app, pilot):
            m = core.receive("bob", "release is out", group="g1")
            core.change_from("carol", "reaction", m.mid, "👍")
            await pilot.pause()
            core.change_gate = defer.Deferred()
            await pilot.press("alt+up", "plus")
            await pilot.pause()
            await pilot.press("1", "enter")
            await pilot.pause()
            row = row_of(app, "release is out")
            self.assertEqual(row.reaction_line(), "👍 2…")
            self.assertEqual(styles_of(row).get("dim italic"), ["👍 2…"])
            core.change_gate.callback(None)
            await pilot.pause(0.1)
            self.assertEqual(row.reaction_line(), "👍 2")
            self.assertEqual(styles_of(row).get("bold $accent"), ["👍 2"])
            core.change_gate = defer.Deferred()
            await pilot.press("alt+up", "plus")
            await pilot.pause()
            await pilot.press("1", "enter")
            await pilot.pause()
            self.assertEqual(core.changes[-1], ("reaction", m.mid, "👍", False))
            self.assertEqual(row.reaction_line(), "👍 1…")
            core.change_gate.callback(None)
            await pilot.pause(0.1)
            self.assertEqual(row.reaction_line(), "👍 1")

    @async_test
    async def test_pending_edit_kept_across_conversations(self) -> None:
        """Back in the conversation while an edit is still on its way, it still shows."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            await sent(pilot, core, "original")
            core.change_gate = defer.Deferred()
            await edit_last(pilot, "changed")
            await submit(pilot, "/open carol")
            await submit(pilot, "/open bob")
            self.assertIn("alice: changed (editing…)", shown(app)[-1])
            core.change_gate.callback(None)
            await pilot.pause(0.1)
            self.assertIn("alice: changed (edited)", shown(app)[-1])


class FailedTests(unittest.TestCase):
    """A change that fails is undone on the message, and said."""

    @async_test
    async def test_edit_that_times_out_is_undone(self) -> None:
        """No answer from the node: the text is back as it was, and the notice says why."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            await sent(pilot, core, "original")
            core.change_gate = defer.Deferred()
            await edit_last(pilot, "changed")
            self.assertIn("changed (editing…)", shown(app)[-1])
            core.change_gate.errback(E.SendTimedOut("c9", 8))
            await pilot.pause(0.1)
            self.assertIn("alice: original  ", shown(app)[-1])
            self.assertNotIn("edit", shown(app)[-1])
            self.assertIn("Not edited: no answer from the node", notice(app))

    @async_test
    async def test_recall_refused_is_undone(self) -> None:
        """A recall the node refuses: the message shows as it was, and the refusal is said."""
        core = FakeChatCore()
        async with chatting(core, "bob", size=(100, 30)) as (app, pilot):
            await sent(pilot, core, "keep me")
            core.change_gate = defer.Deferred()
            await pilot.press("alt+up", "d")
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
            self.assertIn("(recalling…)", shown(app)[-1])
            core.change_gate.errback(E.SendRefused.of("forbidden", "too late to recall"))
            await pilot.pause(0.1)
            self.assertIn("alice: keep me  ", shown(app)[-1])
            self.assertNotIn("recall", shown(app)[-1])
            self.assertIn("Not recalled: too late to recall", notice(app))

    @async_test
    async def test_reaction_of_an_expired_session_is_undone(self) -> None:
        """A reaction whose session expired before it was stored disappears, and is said."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "hi")
            await submit(pilot, "/open bob")
            core.change_gate = defer.Deferred()
            await pilot.press("alt+up", "plus")
            await pilot.pause()
            await pilot.press("1", "enter")
            await pilot.pause()
            row = row_of(app, "hi")
            self.assertEqual(row.reaction_line(), "👍 1…")
            core.change_gate.errback(E.WriteExpired("c9", "token expired"))
            await pilot.pause(0.1)
            self.assertEqual(row.reaction_line(), "")
            self.assertIn("No reaction: ", notice(app))
            self.assertIn("expired", notice(app))
