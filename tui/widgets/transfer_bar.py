"""A line with a progress bar for the upload or download under way."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, ProgressBar


class TransferBar(Horizontal):
    """What is being uploaded or downloaded and how far it got; hidden when idle."""

    def compose(self) -> ComposeResult:
        yield Label("", id="transfer-label")
        yield ProgressBar(total=100, show_eta=False, id="transfer-progress")

    def on_mount(self) -> None:
        self.display = False

    def start(self, text: str, total: int) -> None:
        """Show a new transfer of ``total`` bytes."""
        self.display = True
        self.query_one(Label).update(text)
        self.query_one(ProgressBar).update(total=max(total, 1), progress=0)

    def advance_to(self, done: int, total: int) -> None:
        """``done`` of ``total`` bytes have gone."""
        bar = self.query_one(ProgressBar)
        bar.update(total=max(total, 1) if total else bar.total, progress=done)

    def finish(self) -> None:
        """Hide the bar."""
        self.display = False

    @property
    def percent(self) -> float:
        """How far the current transfer got, 0 to 100."""
        bar = self.query_one(ProgressBar)
        return 100.0 * (bar.progress / bar.total) if bar.total else 0.0
