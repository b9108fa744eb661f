"""Reply, mention, edit, recall and react in dim-chat, driven by Pilot against the fake client
core: what the person presses and what the conversation then shows."""
from __future__ import annotations

import itertools

from twisted.trial import unittest

from dim import errors
from tui.screens.confirm import ConfirmScreen
from tui.screens.reaction import ReactionScreen
from tui.widgets.message_log import MessageLog, emoji_text
from tests.fakes.tui import (FakeChatCore, async_test, chatting, group_core, input_of, log_of,
                             notice, row_of, sent, shown, styles_of, submit, text_of,
                             type_text)


def assert_no_overlap(test: unittest.TestCase, log: MessageLog) -> None:
    """Each row is as tall as its lines and starts below the one before it."""
    rows = log.rows()
    for row in rows:
        test.assertEqual(row.region.height, len(str(row.render()).split("\n")), row.plain)
    for above, below in itertools.pairwise(rows):
        test.assertGreaterEqual(below.region.y, above.region.y + above.region.height)


class ReplyTests(unittest.TestCase):
    """r on a selected message answers it; the answer shows what it answers."""

    @async_test
    async def test_reply_to_a_selected_message(self) -> None:
        """alt+up selects bob's message, r starts a reply (said above the input), Enter sends
        it with reply_to, and the sent message shows the quoted original above it."""
        core = FakeChatCore()
        async with chatting(core, size=(100, 30)) as (app, pilot):
            asked = core.receive("bob", "can you review my patch?")
            core.receive("bob", "no hurry")
            await submit(pilot, "/open bob")
            await pilot.press("alt+up", "up")
            await pilot.pause()
            self.assertIs(log_of(app).selected, row_of(app, "review"))
            await pilot.press("r")
            await pilot.pause()
            self.assertIs(app.focused, input_of(app))
            self.assertIsNone(log_of(app).selected)
            self.assertIn("Replying to bob: can you review my patch?",
                          text_of(app, "#compose"))
            await submit(pilot, "on it")
            out = list(core.outgoing_by_id.values())[-1]
            self.assertEqual((out.body, out.reply_to), ("on it", asked.mid))
            self.assertFalse(app.screen.query_one("#compose").display)
            reply = row_of(app, "on it")
            self.assertEqual(reply.quote, "bob: can you review my patch?")
            self.assertIn("╭ bob: can you review my patch?", str(reply.render()))
            await submit(pilot, "plain again")
            self.assertIsNone(list(core.outgoing_by_id.values())[-1].reply_to)
            assert_no_overlap(self, log_of(app))

    @async_test
    async def test_received_reply_quotes_and_follows_the_original(self) -> None:
        """A reply that comes in quotes its original, also one not on screen (from the
        cache); when the original is edited the quote follows."""
        core = FakeChatCore()
        async with chatting(core, "bob", size=(100, 30)) as (app, pilot):
            mid = await sent(pilot, core, "lunch at noon? the usual place by the station")
            core.receive("bob", "yes!", reply_to=mid)
            await pilot.pause()
            self.assertEqual(row_of(app, "yes!").quote,
                             "alice: lunch at noon? the usual place by the station")
            core.change_from("alice", "edit", mid, "lunch at one? the usual place by the station")
            await pilot.pause()
            self.assertEqual(row_of(app, "yes!").quote,
                             "alice: lunch at one? the usual place by the station")
            core.receive("bob", "about that", reply_to="m-unknown")
            await pilot.pause()
            self.assertEqual(row_of(app, "about that").quote, "a message not loaded here")
            await pilot.resize_terminal(50, 24)
            await pilot.pause(0.1)
            row = row_of(app, "yes!")
            quote_line = str(row.render()).split("\n")[0]
            self.assertTrue(quote_line.endswith("…"), quote_line)
            self.assertLessEqual(len(quote_line), row.content_size.width)
            self.assertEqual(row.region.height, 2, "the quote stays on one line")

    @async_test
    async def test_quote_of_an_original_not_shown_follows_it(self) -> None:
        """A reply whose original is above the loaded page quotes it from the cache, and
        follows its recall."""
        from tui.screens import chat as chat_screen
        self.patch(chat_screen, "HISTORY_PAGE", 1)
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            first = core.receive("bob", "old question")
            core.receive("bob", "answer me", reply_to=first.mid)
            await submit(pilot, "/open bob")
            self.assertEqual(len(log_of(app).rows()), 1)
            self.assertEqual(row_of(app, "answer me").quote, "bob: old question")
            core.change_from("bob", "recall", first.mid)
            await pilot.pause()
            self.assertEqual(row_of(app, "answer me").quote, "bob: message recalled")

    @async_test
    async def test_escape_cancels_a_reply(self) -> None:
        """Escape drops the reply under way; the next message answers nothing."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "hi")
            await submit(pilot, "/open bob")
            await pilot.press("alt+up", "r")
            await pilot.pause()
            self.assertTrue(app.screen.query_one("#compose").display)
            await pilot.press("escape")
            await pilot.pause()
            self.assertFalse(app.screen.query_one("#compose").display)
            await submit(pilot, "hello")
            self.assertIsNone(list(core.outgoing_by_id.values())[-1].reply_to)


class MentionTests(unittest.TestCase):
    """@ and Tab complete group members; mentions are sent and highlighted."""

    @async_test
    async def test_complete_send_and_highlight_a_mention(self) -> None:
        """In a group, @ca Tab completes to @carol; the message goes with mentions
        ["carol"] and @carol is highlighted; in a direct chat nothing is mentioned."""
        core = group_core()
        async with chatting(core, "#team", size=(100, 30)) as (app, pilot):
            await type_text(pilot, "thanks @ca")
            await pilot.press("tab")
            self.assertEqual(input_of(app).text, "thanks @carol ")
            await type_text(pilot, "thanks @carol and @nobody")
            await pilot.press("enter")
            await pilot.pause()
            out = list(core.outgoing_by_id.values())[-1]
            self.assertEqual(out.mentions, ["carol"])
            styles = styles_of(row_of(app, "thanks"))
            self.assertEqual(styles.get("bold $accent"), ["@carol"])
            self.assertNotIn("@nobody", [p for pieces in styles.values() for p in pieces])
            await type_text(pilot, "@")
            await pilot.press("tab")
            first = input_of(app).text
            await pilot.press("tab")
            self.assertEqual({first, input_of(app).text}, {"@bob ", "@carol "})
            await submit(pilot, "/open bob")
            await type_text(pilot, "hey @bo")
            await pilot.press("tab")
            self.assertEqual(input_of(app).text, "hey @bo")
            await submit(pilot, "hey @bob")
            self.assertIsNone(list(core.outgoing_by_id.values())[-1].mentions)

    @async_test
    async def test_mention_of_me_is_highlighted(self) -> None:
        """A group message mentioning the person is marked and its @alice stands out; in
        another conversation it puts ! in the activity list."""
        core = group_core()
        async with chatting(core, "bob", size=(100, 30)) as (app, pilot):
            core.receive("bob", "@alice see this", group="g1", mentions=["alice"])
            await pilot.pause(0.1)
            self.assertIn("!#team(1)", text_of(app, "#connection"))
            await submit(pilot, "/open #team")
            self.assertTrue(row_of(app, "see this").has_class("-mention"))
            core.receive("bob", "@carol only", group="g1", mentions=["carol"])
            await pilot.pause()
            self.assertFalse(row_of(app, "only").has_class("-mention"))
            core.receive("bob", "@alice and @carol: standup", group="g1",
                         mentions=["alice", "carol"])
            await pilot.pause()
            row = row_of(app, "standup")
            self.assertTrue(row.has_class("-mention"))
            styles = styles_of(row)
            self.assertEqual(styles.get("bold reverse $warning"), ["@alice"])
            self.assertEqual(styles.get("bold $accent"), ["@carol"])


class EditTests(unittest.TestCase):
    """Up on an empty input edits the last own message; e edits a selected one."""

    @async_test
    async def test_up_on_an_empty_input_edits_the_last_message(self) -> None:
        """Up with nothing typed puts the last own message in the input; Enter saves the
        edit, shown with "(edited)"; Up with text typed only moves the cursor."""
        core = FakeChatCore()
        async with chatting(core, "bob", size=(100, 30)) as (app, pilot):
            await sent(pilot, core, "first")
            mid = await sent(pilot, core, "helo wrld")
            core.receive("bob", "what?")
            await pilot.pause()
            await type_text(pilot, "line one\nline two")
            await pilot.press("up")
            await pilot.pause()
            self.assertEqual(input_of(app).text, "line one\nline two")
            self.assertIsNone(app.screen.editing)
            await type_text(pilot, "")
            await pilot.press("up")
            await pilot.pause()
            self.assertEqual(input_of(app).text, "helo wrld")
            self.assertIn("Editing your message", text_of(app, "#compose"))
            await type_text(pilot, "hello world")
            await pilot.press("enter")
            await pilot.pause()
            self.assertEqual(core.changes, [("edit", mid, "hello world", True)])
            self.assertIn("alice: hello world (edited)  ✓ sent", shown(app)[1])
            self.assertIn(" (edited)", styles_of(row_of(app, "hello world"))["dim"])
            self.assertFalse(app.screen.query_one("#compose").display)
            self.assertEqual(len(log_of(app).rows()), 3, "an edit is not a message of its own")

    @async_test
    async def test_escape_and_unchanged_edits_change_nothing(self) -> None:
        """Escape leaves an edit (the input empties); saving the same text sends nothing;
        with no own message Up says so."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            core.receive("bob", "hi")
            await submit(pilot, "/open bob")
            await pilot.press("up")
            await pilot.pause()
            self.assertIn("No message of yours to edit", notice(app))
            await sent(pilot, core, "hey")
            await pilot.press("up")
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
            self.assertEqual(input_of(app).text, "")
            self.assertIsNone(app.screen.editing)
            await pilot.press("up", "enter")
            await pilot.pause()
            self.assertIn("Not changed", notice(app))
            self.assertEqual(core.changes, [])

    @async_test
    async def test_edit_a_selected_older_message(self) -> None:
        """e on a selected own message edits that one; on someone else's it is refused."""
        core = FakeChatCore()
        async with chatting(core, "bob", size=(100, 30)) as (app, pilot):
            older = await sent(pilot, core, "tpyo here")
            await sent(pilot, core, "newer")
            core.receive("bob", "bob's")
            await pilot.pause()
            await pilot.press("alt+up")
            await pilot.pause()
            await pilot.press("e")
            await pilot.pause()
            self.assertIn("Only your own messages can be edited", notice(app))
            await pilot.press("up", "up", "e")
            await pilot.pause()
            self.assertEqual(input_of(app).text, "tpyo here")
            await type_text(pilot, "typo here")
            await pilot.press("enter")
            await pilot.pause()
            self.assertEqual(core.changes, [("edit", older, "typo here", True)])
            self.assertTrue(row_of(app, "typo here").plain.endswith("(edited)"))
            self.assertFalse(row_of(app, "newer").edited)

    @async_test
    async def test_a_refused_edit_is_said(self) -> None:
        """An edit the node refuses is said, and the message stays as it was."""
        core = FakeChatCore()
        async with chatting(core, "bob") as (app, pilot):
            await sent(pilot, core, "original")
            core.refuse_changes = errors.Forbidden("only its sender changes a message")
            await pilot.press("up")
            await pilot.pause()
            await type_text(pilot, "changed")
            await pilot.press("enter")
            await pilot.pause(0.1)
            self.assertIn("Not edited: only its sender changes a message", notice(app))
            self.assertIn("alice: original  ", shown(app)[-1])
            self.assertFalse(row_of(app, "original").edited)

    @async_test
    async def test_an_edit_from_elsewhere_shows(self) -> None:
        """bob's edit of his message redraws it with "(edited)"; no row of its own."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            m = core.receive("bob", "see you at 5")
            await submit(pilot, "/open bob")
            core.change_from("bob", "edit", m.mid, "see you at 6")
            await pilot.pause()
            self.assertEqual(len(log_of(app).rows()), 1)
            self.assertTrue(shown(app)[0].endswith("bob: see you at 6 (edited)"), shown(app))


class RecallTests(unittest.TestCase):
    """d on a selected own message recalls it after a confirmation."""

    @async_test
    async def test_recall_asks_first(self) -> None:
        """d asks; n keeps the message; y recalls it, shown as "message recalled"; someone
        else's message cannot be recalled."""
        core = FakeChatCore()
        async with chatting(core, size=(100, 30)) as (app, pilot):
            core.receive("bob", "bob's own")
            await submit(pilot, "/open bob")
            mid = await sent(pilot, core, "oops, wrong chat")
            await pilot.press("alt+up", "up", "d")
            await pilot.pause()
            self.assertIn("Only your own messages can be recalled", notice(app))
            await pilot.press("down", "d")
            await pilot.pause()
            self.assertIsInstance(app.screen, ConfirmScreen)
            self.assertIn("oops, wrong chat", text_of(app, "#confirm-what"))
            await pilot.press("n")
            await pilot.pause()
            self.assertEqual(core.changes, [])
            self.assertIn("oops, wrong chat", shown(app)[-1])
            await pilot.press("alt+up", "d")
            await pilot.pause()
            await pilot.press("y")
            await pilot.pause()
            self.assertEqual(core.changes, [("recall", mid, "", True)])
            self.assertIn("alice: message recalled  ✓ sent", shown(app)[-1])
            self.assertEqual(styles_of(log_of(app).rows()[-1]).get("dim italic"),
                             ["message recalled"])
            self.assertIs(app.focused, input_of(app))
            await pilot.press("up")
            await pilot.pause()
            self.assertIn("No message of yours to edit", notice(app))

    @async_test
    async def test_recall_by_the_dialog_buttons(self) -> None:
        """The dialog's No button keeps the message, its Yes button recalls it."""
        core = FakeChatCore()
        async with chatting(core, "bob", size=(100, 30)) as (app, pilot):
            mid = await sent(pilot, core, "second thoughts")
            await pilot.press("alt+up", "d")
            await pilot.pause()
            await pilot.click("#no")
            await pilot.pause()
            self.assertNotIsInstance(app.screen, ConfirmScreen)
            self.assertEqual(core.changes, [])
            await pilot.press("alt+up", "d")
            await pilot.pause()
            await pilot.click("#yes")
            await pilot.pause()
            self.assertEqual(core.changes, [("recall", mid, "", True)])
            self.assertTrue(row_of(app, "message recalled").recalled)

    @async_test
    async def test_a_recalled_file_is_not_offered(self) -> None:
        """Once bob recalls his file, it shows as recalled and /save finds nothing."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            m = core.receive("bob", "", kind="file", file={"id": "f9", "name": "plan.pdf",
                                                            "size": 2048,
                                                            "mime": "application/pdf"})
            await submit(pilot, "/open bob")
            self.assertEqual(len(log_of(app).files()), 1)
            core.change_from("bob", "recall", m.mid)
            await pilot.pause()
            self.assertEqual(log_of(app).files(), [])
            self.assertTrue(shown(app)[0].endswith("bob: message recalled"), shown(app))
            await submit(pilot, "/save")
            self.assertIn("No file to save here", notice(app))
            self.assertEqual(core.saved, [])


class ReactTests(unittest.TestCase):
    """+ on a selected message reacts; reactions show under it with counts."""

    @async_test
    async def test_react_and_counts(self) -> None:
        """+ then 1 adds 👍; others' reactions add to the counts under the message; the
        person's own reaction chosen again is taken back; rows never overlap."""
        core = group_core()
        async with chatting(core, "#team", size=(100, 30)) as (app, pilot):
            m = core.receive("bob", "release is out", group="g1")
            core.receive("carol", "nice", group="g1")
            await pilot.pause()
            await pilot.press("alt+up", "up", "plus")
            await pilot.pause()
            self.assertIsInstance(app.screen, ReactionScreen)
            await pilot.press("1", "enter")
            await pilot.pause()
            self.assertEqual(core.changes, [("reaction", m.mid, "👍", True)])
            row = row_of(app, "release is out")
            self.assertEqual(row.reaction_line(), "👍 1")
            self.assertEqual(styles_of(row).get("bold $accent"), ["👍 1"])
            core.change_from("bob", "reaction", m.mid, "👍")
            core.change_from("carol", "reaction", m.mid, "🎉")
            await pilot.pause()
            self.assertEqual(row.reaction_line(), "👍 2  🎉 1")
            self.assertIn("\n      👍 2  🎉 1", str(row.render()))
            self.assertEqual(len(log_of(app).rows()), 2)
            assert_no_overlap(self, log_of(app))
            await pilot.press("alt+up", "up", "plus")
            await pilot.pause()
            self.assertIn("👍", str(app.screen.query_one("#reaction-mine").render()))
            await pilot.press("1", "enter")
            await pilot.pause()
            self.assertEqual(core.changes[-1], ("reaction", m.mid, "👍", False))
            self.assertEqual(row.reaction_line(), "👍 1  🎉 1")

    @async_test
    async def test_reaction_prompt_takes_any_emoji_and_cancels(self) -> None:
        """Any short text is a reaction; too long is refused in the prompt; Escape
        cancels."""
        core = FakeChatCore()
        async with chatting(core) as (app, pilot):
            m = core.receive("bob", "hi")
            await submit(pilot, "/open bob")
            await pilot.press("alt+up", "plus")
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
            self.assertEqual(core.changes, [])
            await pilot.press("alt+up", "plus")
            await pilot.pause()
            await pilot.press("enter")
            await pilot.pause()
            self.assertIn("Type 1-6", str(app.screen.query_one("#reaction-error").render()))
            await pilot.press(*"🦀", "enter")
            await pilot.pause()
            self.assertEqual(core.changes, [("reaction", m.mid, "🦀", True)])

    def test_joined_emoji_are_drawn_apart(self) -> None:
        """A reaction drawn without joiners and variation selectors, so its width is known."""
        self.assertEqual(emoji_text("❤️"), "❤")
        self.assertEqual(emoji_text("👍"), "👍")
        self.assertEqual(emoji_text("\ufe0f"), "?")
