"""The reaction prompt: pick one of a few emoji by number, or type any."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from dim.protocol.frames import MAX_EMOJI

#: The emoji offered by number; each is two cells wide in every terminal (no variation
#: selector), so a reaction line never draws wider than it is measured.
QUICK = ("👍", "😂", "🎉", "😮", "😢", "👀")


def choice(text: str) -> str | None:
    """The emoji a typed answer means: a number picks from :data:`QUICK`, anything else is
    taken as it is; None for nothing or too long."""
    text = text.strip()
    if text.isdigit() and 1 <= int(text) <= len(QUICK):
        return QUICK[int(text) - 1]
    if not text or len(text) > MAX_EMOJI:
        return None
    return text


class ReactionScreen(ModalScreen[str | None]):
    """Asks for a reaction: a number from the list or any emoji, Enter; Escape cancels.

    Dismissed with the emoji, or None.
    """

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, mine: list[str] | None = None) -> None:
        super().__init__()
        #: The emoji the person already reacted with (choosing one again takes it back).
        self.mine = mine or []

    def compose(self) -> ComposeResult:
        offered = "  ".join(f"{n} {e}" for n, e in enumerate(QUICK, 1))
        with Vertical(classes="dialog"):
            yield Label("React with (Enter; Escape cancels; yours again takes it back):",
                        classes="dialog-title")
            yield Label(offered, id="reaction-quick")
            if self.mine:
                yield Label("Yours: " + " ".join(self.mine), id="reaction-mine")
            yield Input(placeholder="1-6, or an emoji", id="reaction-input",
                        max_length=MAX_EMOJI)
            yield Label("", id="reaction-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        emoji = choice(event.value)
        if emoji is None:
            self.query_one("#reaction-error", Label).update(
                f"Type 1-{len(QUICK)} or an emoji (at most {MAX_EMOJI} characters).")
            return
        self.dismiss(emoji)

    def action_close(self) -> None:
        """Close without reacting."""
        self.dismiss(None)
