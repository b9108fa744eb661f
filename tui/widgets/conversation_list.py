"""The list of conversations (people and groups): newest first, with unread and mention
counts."""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

from textual.content import Content
from textual.message import Message
from textual.widgets import ListItem, ListView, Static

from dim.client.cache import Conversation


def conversation_line(label: str, unread: int, mentions: int = 0) -> str:
    """How one conversation is listed: its name, ``(N)`` unread and ``@M`` mentions."""
    line = f"{label} ({unread})" if unread else label
    return f"{line} @{mentions}" if mentions else line


class ConversationItem(ListItem):
    """One conversation in the list, drawn after its number (alt+N opens it); its mention
    count stands out."""

    def __init__(self, peer: str, unread: int, label: str | None = None,
                 number: int | None = None, mentions: int = 0) -> None:
        self.peer = peer
        self.unread = unread
        self.mentions = mentions
        self.plain = conversation_line(label or peer, unread, mentions)
        prefix = f"{number}." if number is not None and number <= 9 else "  "
        parts: list[str | tuple[str, str]] = [(f"{prefix} ", "dim"),
                                              conversation_line(label or peer, unread)]
        if mentions:
            parts += [" ", (f"@{mentions}", "bold reverse $warning")]
        classes = ("-unread" if unread else "") + (" -mentioned" if mentions else "")
        super().__init__(Static(Content.assemble(*parts)), classes=classes.strip())


class ConversationList(ListView):
    """Conversations, newest first; selecting one opens it."""

    @dataclass
    class Opened(Message):
        """The person chose a conversation."""

        peer: str

    async def show(self, conversations: list[Conversation], extra: list[str] = (),  # type: ignore[assignment]
             current: str | None = None, label: Callable[[str], str] | None = None) -> None:
        """Replace the list; ``extra`` peers (opened, or groups without messages yet) go
        first; ``label`` names a peer (a display name, or a group's name)."""
        known = {c.peer for c in conversations}
        extra = list(dict.fromkeys(p for p in extra if p not in known))
        rows = [(p, 0, 0) for p in extra] + [(c.peer, c.unread, c.mentions)
                                              for c in conversations]
        name = label or (lambda p: p)
        wanted = [(peer, conversation_line(name(peer), unread, mentions))
                  for peer, unread, mentions in rows]
        now = [(item.peer, item.plain) for item in self.query(ConversationItem)]
        if now == wanted:
            return
        await self.clear()
        await self.extend(ConversationItem(peer, unread, name(peer), n, mentions)
                          for n, (peer, unread, mentions) in enumerate(rows, 1))
        for i, (peer, _, _) in enumerate(rows):
            if peer == current:
                self.index = i

    def peers(self) -> list[str]:
        """The conversations listed, top to bottom."""
        return [item.peer for item in self.query(ConversationItem)]

    def lines(self) -> list[str]:
        """What the list shows, top to bottom."""
        return [item.plain for item in self.query(ConversationItem)]

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ConversationItem):
            self.post_message(self.Opened(event.item.peer))
