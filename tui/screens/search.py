"""Search results in a dialog: open a conversation with someone found, or ask to add them."""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, ListItem, ListView, Static

from dim.client.roster import initials


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
