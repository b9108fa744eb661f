"""The list of conversations: newest first, with unread counts."""
from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content
from textual.message import Message
from textual.widgets import ListItem, ListView, Static

from dim.client.cache import Conversation


def conversation_line(peer: str, unread: int) -> str:
    """How one conversation is listed."""
    return f"{peer} ({unread})" if unread else peer


class ConversationItem(ListItem):
    """One conversation in the list."""

    def __init__(self, peer: str, unread: int) -> None:
        self.peer = peer
        self.unread = unread
        self.plain = conversation_line(peer, unread)
        super().__init__(Static(Content(self.plain)), classes="-unread" if unread else "")


class ConversationList(ListView):
    """Conversations, newest first; selecting one opens it."""

    @dataclass
    class Opened(Message):
        """The person chose a conversation."""

        peer: str

    async def show(self, conversations: list[Conversation], extra: list[str] = (),  # type: ignore[assignment]
             current: str | None = None) -> None:
        """Replace the list; ``extra`` peers (opened, not yet in the cache) go first."""
        known = {c.peer for c in conversations}
        rows = [(p, 0) for p in extra if p not in known] + [(c.peer, c.unread) for c in conversations]
        now = [(item.peer, item.unread) for item in self.query(ConversationItem)]
        if now == rows:
            return
        await self.clear()
        await self.extend(ConversationItem(peer, unread) for peer, unread in rows)
        for i, (peer, _) in enumerate(rows):
            if peer == current:
                self.index = i

    def lines(self) -> list[str]:
        """What the list shows, top to bottom."""
        return [item.plain for item in self.query(ConversationItem)]

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Opened(event.item.peer))
