"""The profile dialog: the person's display name and status."""
from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label


class ProfileScreen(ModalScreen[dict[str, str] | None]):
    """Edit display name and status; dismissed with the changed fields, or None."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape", "close", "Cancel")]

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__()
        self.profile = profile

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(f"Profile of {self.profile.get('user', '')}", classes="dialog-title")
            yield Label("Display name (1-64 characters)")
            yield Input(value=str(self.profile.get("name") or ""), max_length=64, id="name")
            yield Label("Status (up to 140 characters)")
            yield Input(value=str(self.profile.get("status") or ""), max_length=140, id="status")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#name", Input).focus()

    def save(self) -> None:
        """Hand back what changed."""
        changed: dict[str, str] = {}
        for field in ("name", "status"):
            value = self.query_one(f"#{field}", Input).value.strip()
            if value != (self.profile.get(field) or ""):
                changed[field] = value
        self.dismiss(changed)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "name":
            self.query_one("#status", Input).focus()
        else:
            self.save()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "save":
            self.save()
        else:
            self.dismiss(None)

    def action_close(self) -> None:
        """Close without saving."""
        self.dismiss(None)
