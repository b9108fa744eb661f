"""The whole help in a scrollable dialog, so no line of it is ever cut off."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from tui.commands import help_text


class HelpScreen(ModalScreen[None]):
    """Every command and key; arrows, PgUp/PgDn, Home/End scroll, Escape or q closes."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [
        Binding("escape,q,f1", "close", "Close"),
        Binding("home", "top", show=False),
        Binding("end", "bottom", show=False),
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog help-dialog"):
            yield Label("Help  (Escape closes; arrows and PgUp/PgDn scroll)",
                        classes="dialog-title")
            with VerticalScroll(id="help-scroll"):
                yield Static(Content(help_text()), id="help-text")

    def on_mount(self) -> None:
        self.query_one("#help-scroll", VerticalScroll).focus()

    def action_top(self) -> None:
        """The start of the help."""
        self.query_one("#help-scroll", VerticalScroll).scroll_home(animate=False)

    def action_bottom(self) -> None:
        """The end of the help."""
        self.query_one("#help-scroll", VerticalScroll).scroll_end(animate=False)

    def action_close(self) -> None:
        """Back to the chat."""
        self.dismiss(None)
