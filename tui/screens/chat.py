"""The chat screen: conversations on the left, the open conversation and the input on the right."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Footer, Static

from dim import errors
from dim.client import session as S
from tui import wait_for
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.conversation_list import ConversationList
from tui.widgets.message_input import MessageInput
from tui.widgets.message_log import MessageLog

if TYPE_CHECKING:
    from tui.app import ChatCore

HELP = """Commands:
  /open USER        open the conversation with USER
  /msg USER TEXT    send TEXT to USER (without opening it)
  /retry            send this conversation's failed messages again (also ctrl+r)
  /older            load older messages (also ctrl+o)
  /logout           log out and forget the saved login
  /help             this help
  /quit             leave (also ctrl+q)
Enter sends; ctrl+j or shift+enter starts a new line."""

HISTORY_PAGE = 50


class ChatScreen(Screen[None]):
    """Conversations, the open one, and the input; shows what the client core reports."""

    CSS_PATH = "chat.tcss"
    BINDINGS = [
        Binding("ctrl+r", "retry", "Retry failed"),
        Binding("ctrl+o", "older", "Older"),
        Binding("ctrl+q", "app.quit", "Quit"),
    ]

    def __init__(self, client: ChatCore) -> None:
        super().__init__()
        self.client = client
        self.peer: str | None = None
        self.opened: list[str] = []
        self._refresh_pending = False

    @property
    def me(self) -> str:
        """The logged-in user."""
        return self.client.user or ""

    def compose(self) -> ComposeResult:
        yield ConnectionBar(id="connection")
        with Horizontal(id="main"):
            yield ConversationList(id="conversations")
            with Vertical(id="conversation"):
                yield Static("No conversation open: /open USER, or pick one on the left.",
                             id="title")
                yield MessageLog(id="log")
                yield Static("", id="notice")
                yield MessageInput(id="input")
        yield Footer()

    async def on_mount(self) -> None:
        await self.refresh_conversations()
        self.query_one(MessageInput).focus()

    # ------------------------------------------------------------ showing

    def say(self, text: str) -> None:
        """Show a line of help, error or progress above the input."""
        self.query_one("#notice", Static).update(Content(text))

    async def refresh_conversations(self) -> None:
        """Redraw the conversation list from the client core."""
        self._refresh_pending = False
        extra = [p for p in reversed(self.opened)]
        await self.query_one(ConversationList).show(self.client.conversations(), extra, self.peer)

    def refresh_conversations_soon(self) -> None:
        """Redraw the list shortly, once for a burst of events."""
        if not self._refresh_pending:
            self._refresh_pending = True
            self.set_timer(0.05, self.refresh_conversations)

    async def open(self, peer: str) -> None:
        """Open the conversation with ``peer``: its cached history, then what is pending."""
        self.peer = peer
        if peer not in self.opened:
            self.opened.append(peer)
        self.query_one("#title", Static).update(Content(f"Conversation with {peer}"))
        log = self.query_one(MessageLog)
        await log.reset(self.me)
        try:
            history = await wait_for(self.client.history(peer, None, HISTORY_PAGE))
        except Exception as e:  # the cache and gateway failed: show what we can
            history = []
            self.say(f"Could not load history: {e}")
        await log.add_older(history)
        for out in self.client.pending(peer):
            await log.add_outgoing(out, self.me)
        self.client.mark_seen(peer)
        await self.refresh_conversations()
        log.scroll_end(animate=False)
        self.query_one(MessageInput).focus()

    # ------------------------------------------------------------ the person

    async def on_message_log_older_wanted(self, event: MessageLog.OlderWanted) -> None:
        await self.action_older()

    async def on_conversation_list_opened(self, event: ConversationList.Opened) -> None:
        await self.open(event.peer)

    async def on_message_input_submitted(self, event: MessageInput.Submitted) -> None:
        text = event.text.rstrip("\n")
        if text.startswith("/"):
            await self.command(text)
        elif self.peer is None:
            self.say("Open a conversation first: /open USER (or /help).")
        else:
            await self.send(self.peer, text)

    async def send(self, peer: str, text: str) -> None:
        """Send ``text`` to ``peer`` and show it if that conversation is open."""
        try:
            out = self.client.send(peer, text)
        except errors.DimError as e:
            self.say(f"Not sent: {e.message}")
            return
        if peer == self.peer:
            await self.query_one(MessageLog).add_outgoing(out, self.me)
        elif peer not in self.opened:
            self.opened.append(peer)
        self.refresh_conversations_soon()

    async def command(self, text: str) -> None:
        """Run one slash command."""
        parts = text.split(maxsplit=2)
        name, args = parts[0].lower(), parts[1:]
        if name == "/open" and len(args) == 1:
            peer = args[0]
            await self.open(peer)
            self.check_user(peer)
        elif name == "/msg" and len(args) == 2:
            await self.send(args[0], args[1])
            self.say(f"Sent to {args[0]}.")
        elif name == "/help":
            self.say(HELP)
        elif name == "/quit":
            await self.app.action_quit()
        elif name == "/retry":
            self.action_retry()
        elif name == "/older":
            await self.action_older()
        elif name == "/logout":
            self.app.logout()  # type: ignore[attr-defined]
        else:
            self.say(f"Unknown command {text!r}; /help lists them.")

    def check_user(self, peer: str) -> None:
        """Warn, without blocking, if ``peer`` is not a user."""
        async def check() -> None:
            try:
                info = await wait_for(self.client.user_info(peer))
            except errors.NotFound:
                self.say(f"There is no user {peer!r}.")
                return
            except Exception:
                return
            if self.peer == peer and isinstance(info, dict):
                state = "online" if info.get("online") else "offline"
                self.query_one("#title", Static).update(
                    Content(f"Conversation with {peer} ({state})"))
        self.run_worker(check(), exclusive=False)

    def action_retry(self) -> None:
        """Send the open conversation's failed messages again."""
        failed = self.query_one(MessageLog).failed_ids()
        if not failed:
            self.say("Nothing to retry.")
            return
        for id in failed:
            self.client.retry(id)
        self.say(f"Retrying {len(failed)} message(s).")

    async def action_older(self) -> None:
        """Load older messages of the open conversation above what is shown."""
        if self.peer is None:
            return
        log = self.query_one(MessageLog)
        before = log.oldest_seq
        if before is None or before <= 1:
            self.say("No older messages.")
            return
        older = await wait_for(self.client.history(self.peer, before, HISTORY_PAGE))
        if not older:
            self.say("No older messages.")
            return
        await log.add_older(older)
        self.say(f"Loaded {len(older)} older message(s).")

    # ------------------------------------------------------------ the client core

    async def handle_event(self, event: Any) -> None:
        """Show one client-core event."""
        log = self.query_one(MessageLog)
        if isinstance(event, S.MessageReceived):
            peer = event.entry.peer(self.me)
            if peer == self.peer:
                await log.add_message(event.entry)
                self.client.mark_seen(peer)
            elif event.entry.sender != self.me:
                self.app.ring()  # type: ignore[attr-defined]
            self.refresh_conversations_soon()
        elif isinstance(event, S.MessageStatus):
            if event.message.peer() == self.peer:
                await log.add_outgoing(event.message, self.me)
            if event.state == S.FAILED and event.message.error:
                self.say(f"Not sent: {event.message.error}. ctrl+r retries.")
            if event.state == S.SENT:
                self.refresh_conversations_soon()
        elif isinstance(event, S.Delivered):
            log.mark_delivered(event.mid)
        elif isinstance(event, S.SyncFinished):
            self.refresh_conversations_soon()
        elif isinstance(event, S.ServerError) and not event.ref:
            self.say(f"Server: {event.code}: {event.message}")

