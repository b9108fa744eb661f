"""A received image, shown in the terminal through textual-image (Kitty graphics or Sixel where
the terminal has them, coloured half cells elsewhere)."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label

from tui.images import image_class, too_large


class ImageScreen(ModalScreen[None]):
    """One image with its name; Escape closes."""

    CSS_PATH = "dialogs.tcss"
    BINDINGS = [Binding("escape", "close", "Close")]

    def __init__(self, path: str, title: str) -> None:
        super().__init__()
        self.path = path
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog image-dialog"):
            yield Label(f"{self.title_text}  (Escape closes)", classes="dialog-title")
            image = image_class()
            refused = too_large(self.path) if image is not None else None
            if image is None:
                yield Label(f"This terminal cannot show pictures; the file is {self.path}")
            elif refused is not None:
                yield Label(f"Not shown: {refused}; the file is {self.path}")
            else:
                yield image(self.path, id="image")

    def action_close(self) -> None:
        """Close the image."""
        self.dismiss(None)
