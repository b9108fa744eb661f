"""Search results in dialogs: people found (open a conversation, or ask to add them), and
messages found (jump to one)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, ListItem, ListView, Static

from dim.client.cache import ChatMessage
from dim.client.roster import initials
from tui.widgets.message_log import clock_time


def result_line(user: dict[str, Any]) -> str:
    """How one found user is listed."""
    name = str(user.get("name") or user["user"])
    who = name if name == user["user"] else f"{name} ({user['user']})"
    return f"[{initials(name)}] {who}"


class ResultItem(ListItem):
    """One user found."""

    def __init__(self, user: dict[str, Any]) -> None:
        self.user = str(user["user"])
        self.plain = result_line(user)
        super().__init__(Static(Content(self.plain)))


class SearchScreen(ModalScreen[tuple[str, str] | None]):
    """The users a search found; Enter opens, a adds as a contact, Escape closes.

    Dismissed with ``("open", user)``, ``("add", user)`` or None.
    """

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [
        Binding("escape", "close", "Close"),
        Binding("a", "add", "Add contact"),
    ]

    def __init__(self, text: str, users: list[dict[str, Any]]) -> None:
        super().__init__()
        self.text = text
        self.users = users

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            found = f"{len(self.users)} found" if self.users else "nobody found"
            yield Label(f"Search {self.text!r}: {found}. Enter opens, a adds, Escape closes.",
                        classes="dialog-title")
            yield ListView(*(ResultItem(u) for u in self.users), id="results")

    def on_mount(self) -> None:
        self.query_one("#results", ListView).focus()

    def lines(self) -> list[str]:
        """The results shown, top to bottom."""
        return [item.plain for item in self.query(ResultItem)]

    def _current(self) -> str | None:
        item = self.query_one("#results", ListView).highlighted_child
        return item.user if isinstance(item, ResultItem) else None

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, ResultItem):
            self.dismiss(("open", event.item.user))

    def action_add(self) -> None:
        """Ask the highlighted user to be a contact."""
        user = self._current()
        if user is not None:
            self.dismiss(("add", user))

    def action_close(self) -> None:
        """Close without choosing."""
        self.dismiss(None)


def found_line(message: ChatMessage, conversation: str, sender: str) -> str:
    """How one message found is listed: where, when, who and what."""
    body = " ".join(message.body.split())
    if len(body) > 120:
        body = body[:119] + "…"
    return f"{conversation} · {clock_time(message.ts)} {sender}: {body}"


class FoundItem(ListItem):
    """One message found."""

    def __init__(self, message: ChatMessage, plain: str) -> None:
        self.message = message
        self.plain = plain
        super().__init__(Static(Content(plain)))


class MessageSearchScreen(ModalScreen[ChatMessage | None]):
    """The messages a search found, newest first; Enter jumps to one, Escape closes.

    ``me`` is the person, ``label`` names a conversation and ``name`` a sender.  Dismissed
    with the message chosen, or None.
    """

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, text: str, messages: list[ChatMessage], me: str,
                 label: Callable[[str], str], name: Callable[[str], str]) -> None:
        super().__init__()
        self.me = me
        self.text = text
        self.messages = messages
        self.label = label
        self.sender_name = name

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            found = f"{len(self.messages)} found" if self.messages else "nothing found"
            yield Label(f"Messages with {self.text!r}: {found}. Enter jumps to one, "
                        "Escape closes.", classes="dialog-title")
            yield ListView(*(FoundItem(m, found_line(m, self.label(m.peer(self.me)),
                                                     self.sender_name(m.sender)))
                             for m in self.messages), id="results")

    def on_mount(self) -> None:
        self.query_one("#results", ListView).focus()

    def lines(self) -> list[str]:
        """The results shown, top to bottom."""
        return [item.plain for item in self.query(FoundItem)]

    def on_list_view_selected(self, event: ListView.Selected) -> None:
        event.stop()
        if isinstance(event.item, FoundItem):
            self.dismiss(event.item.message)

    def action_close(self) -> None:
        """Close without choosing."""
        self.dismiss(None)
