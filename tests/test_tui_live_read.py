"""dim-chat with the real client core against a real ``twistd -n dim`` (a child process, real
TCP and HTTP), driven by Pilot: the conversation list shows the server's counts, a read on
the person's phone clears them in the chat at once, and what the chat shows is marked read
for the phone too."""
from __future__ import annotations

from functools import partial

from twisted.internet import defer, reactor

from dim.client import events as E
from dim.client.cache import MessageCache
from dim.client.chat import ChatClient
from dim.client.gateway import GatewayClient
from tests.fakes.embedded import LiveChatTestCase
from tests.fakes.client import PASSWORD, LiveChat, _Anything
from tests.fakes import tui as fakes_tui
from tests.fakes.tui import as_deferred, chatting, shown, submit
from tui.widgets.conversation_list import ConversationList
from tui.widgets.message_log import MessageLog


#: The live tests wait longer: the network and a real node are in the way.
eventually = partial(fakes_tui.eventually, timeout=15.0)


def unread_of(chat: LiveChat) -> dict[str, int]:
    """A core's ``{conversation: unread}``, zeros left out."""
    return {c.peer: c.unread for c in chat.client.conversations() if c.unread}


class LiveReadTests(LiveChatTestCase):
    """bob in dim-chat and on his phone; alice writes to him."""

    @defer.inlineCallbacks
    def test_counts_and_read_marks_between_chat_and_phone(self):  # type: ignore[no-untyped-def]
        """Three from alice show as "(3)"; the phone reads two: "(1)" at once; opening the
        conversation in the chat shows it and marks it read, which the phone sees."""
        alice = yield self.chat("alice")
        phone = yield self.chat("bob", device="phone")
        for body in ("one", "two", "three"):
            alice.client.send("bob", body)
        got = yield phone.wait_for(E.MessageReceived, entry=_Anything(body="three"))
        core = ChatClient(GatewayClient(self.dim.base,
                                        request_options={"persistent": False, "timeout": 20}),
                          reactor, device="laptop",
                          cache_factory=lambda url, name: MessageCache(":memory:", name))
        self.addCleanup(core.stop)
        yield as_deferred(self.drive(core, phone, got.entry.seq))

    async def drive(self, core: ChatClient, phone: LiveChat, newest: int) -> None:
        """The chat's side of the test, on the reactor's asyncio loop."""
        async with chatting(core, size=(100, 30), user="bob", password=PASSWORD) as (app, pilot):
            conversations = app.screen.query_one(ConversationList)
            await eventually(pilot, lambda: conversations.lines() == ["alice (3)"],
                             "the chat lists alice with three unread")
            self.assertTrue(phone.client.mark_read("alice", newest - 1))
            await eventually(pilot, lambda: conversations.lines() == ["alice (1)"],
                             "the phone's read clears two in the chat")
            await submit(pilot, "/open alice")
            await eventually(pilot, lambda: [line.split(": ", 1)[1] for line in shown(app)]
                             == ["one", "two", "three"], "the conversation shows")
            await eventually(pilot, lambda: conversations.lines() == ["alice"],
                             "the chat marks what it shows read")
            await eventually(pilot, lambda: unread_of(phone) == {},
                             "the phone clears the one the chat showed")
            self.assertEqual(core.read_seq("alice"), newest)

    @defer.inlineCallbacks
    def test_paging_and_search_on_a_new_device(self):  # type: ignore[no-untyped-def]
        """A chat with an empty cache opens alice's conversation at its newest page from the
        server, loads the page before on PgUp at the top, each message once, and /search
        jumps to an old message."""
        alice = yield self.chat("alice")
        yield self.chat("bob")
        sent = [alice.client.send("bob", f"note {i}" + (" 大阪" if i == 3 else ""))
                for i in range(70)]
        yield alice.wait_for(E.MessageStatus, id=sent[-1].id, state=E.SENT)
        core = ChatClient(GatewayClient(self.dim.base,
                                        request_options={"persistent": False, "timeout": 20}),
                          reactor, device="laptop",
                          cache_factory=lambda url, name: MessageCache(":memory:", name))
        self.addCleanup(core.stop)
        yield as_deferred(self.page_and_search(core))

    async def page_and_search(self, core: ChatClient) -> None:
        """The chat's side: open, page back, search, jump."""
        async with chatting(core, "alice", size=(100, 30), user="bob",
                            password=PASSWORD) as (app, pilot):
            await eventually(pilot, lambda: len(shown(app)) == 50, "the newest page")
            self.assertTrue(shown(app)[0].endswith("note 20"), shown(app)[0])
            await pilot.press("home")
            await pilot.pause(0.1)
            await pilot.press("pageup")
            await eventually(pilot, lambda: len(shown(app)) == 70, "the page before")
            self.assertEqual(len(set(shown(app))), 70)
            self.assertTrue(shown(app)[0].endswith("note 0"))
            await submit(pilot, "/open bob")
            await submit(pilot, "/search 阪")
            await eventually(pilot, lambda: hasattr(app.screen, "lines")
                             and len(app.screen.lines()) == 1, "one found")
            await pilot.press("enter")
            await eventually(pilot, lambda: app.screen.peer == "alice", "alice's conversation")
            log = app.screen.query_one(MessageLog)
            await eventually(pilot, lambda: any(r.has_class("-found") for r in log.rows()),
                             "the message found is marked")
            found = next(r for r in log.rows() if r.has_class("-found"))
            self.assertEqual(found.body, "note 3 大阪")
