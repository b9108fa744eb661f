"""The contacts pane: display names, status, a presence dot and initials; requests to answer."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.binding import Binding
from textual.containers import Horizontal
from textual.content import Content
from textual.message import Message
from textual.widgets import ListItem, ListView, Static

from dim.client.roster import initials
from tui.images import image_class, too_large

ONLINE_DOT = "●"
OFFLINE_DOT = "○"


def contact_line(contact: dict[str, Any]) -> str:
    """How one contact (or request) is listed."""
    user = str(contact["user"])
    name = str(contact.get("name") or user)
    who = name if name == user else f"{name} ({user})"
    pending = contact.get("pending")
    if pending == "in":
        return f"? [{initials(name)}] {who} asks: a accept, d decline"
    if pending == "out":
        return f"… [{initials(name)}] {who} (asked)"
    dot = ONLINE_DOT if contact.get("online") else OFFLINE_DOT
    status = str(contact.get("status") or "")
    return f"{dot} [{initials(name)}] {who}" + (f" - {status}" if status else "")


class ContactItem(ListItem):
    """One contact in the pane, with its avatar picture when one was fetched."""

    def __init__(self, contact: dict[str, Any], avatar: str | None = None) -> None:
        self.user = str(contact["user"])
        self.pending = contact.get("pending")
        self.plain = contact_line(contact)
        self.avatar = avatar
        classes = ("-online" if contact.get("online") else "-offline") if self.pending is None \
            else f"-pending-{self.pending}"
        text = Static(Content(self.plain), classes="contact-text")
        image = image_class() if avatar is not None and too_large(avatar) is None else None
        if image is None:
            super().__init__(text, classes=classes)
        else:
            super().__init__(Horizontal(image(avatar, classes="avatar"), text,
                                        classes="contact-row"), classes=classes)


class ContactList(ListView):
    """Contacts and requests; Enter opens a conversation, a accepts, d declines or removes."""

    BINDINGS = [
        Binding("a", "accept", "Accept"),
        Binding("d", "decline", "Decline"),
    ]

    @dataclass
    class Opened(Message):
        """The person chose a contact to talk to."""

        user: str

    @dataclass
    class Answered(Message):
        """The person accepted (True) or declined (False) a request, or withdrew their own."""

        user: str
        accept: bool

    async def show(self, contacts: list[dict[str, Any]],
                   avatars: dict[str, str] | None = None) -> None:
        """Replace the pane's contents (kept as is if nothing changed); ``avatars`` maps
        users to image files to show beside them."""
        avatars = avatars or {}
        wanted = [(contact_line(c), avatars.get(c["user"])) for c in contacts]
        if wanted == [(item.plain, item.avatar) for item in self.query(ContactItem)]:
            return
        index = self.index
        await self.clear()
        await self.extend(ContactItem(c, avatars.get(c["user"])) for c in contacts)
        if contacts:
            self.index = min(index, len(contacts) - 1) if index is not None else 0

    def lines(self) -> list[str]:
        """What the pane shows, top to bottom."""
        return [item.plain for item in self.query(ContactItem)]

    def _current(self) -> ContactItem | None:
        item = self.highlighted_child
        return item if isinstance(item, ContactItem) else None

    def action_accept(self) -> None:
        """Accept the highlighted request."""
        item = self._current()
        if item is not None and item.pending == "in":
            self.post_message(self.Answered(item.user, True))

    def action_decline(self) -> None:
        """Decline the highlighted request (or withdraw one's own)."""
        item = self._current()
        if item is not None and item.pending is not None:
            self.post_message(self.Answered(item.user, False))

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ContactItem):
            self.post_message(self.Opened(event.item.user))
