"""The multi-line message input: Enter sends, ctrl+j (or shift+enter) starts a new line,
Tab completes, ctrl+up/ctrl+down recall what was sent, Up on an empty input edits one's last
message, alt+up/alt+down select a message, and the scrolling keys move the log."""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

from textual import events
from textual.message import Message
from textual.widgets import TextArea

NEWLINE_KEYS = ("ctrl+j", "shift+enter")
#: Keys that scroll the conversation whatever the input holds, and where to.
SCROLL_KEYS = {"pageup": "page_up", "pagedown": "page_down", "shift+up": "line_up",
               "shift+down": "line_down", "ctrl+home": "top", "ctrl+end": "bottom"}
#: Keys that scroll the conversation when the input is empty (else they move the cursor).
EMPTY_SCROLL_KEYS = {"home": "top", "end": "bottom"}
#: How many sent inputs ctrl+up can recall.
HISTORY_SIZE = 100

#: Given the text before the cursor, what could complete its last word: (where the word
#: starts, the candidates).
Completer = Callable[[str], "tuple[int, list[str]]"]


class MessageInput(TextArea):
    """A TextArea whose Enter submits the text instead of breaking the line."""

    @dataclass
    class Submitted(Message):
        """The person pressed Enter with this text."""

        text: str

    @dataclass
    class Scroll(Message):
        """The person asked to scroll the conversation: ``where`` is page_up, page_down,
        line_up, line_down, top or bottom."""

        where: str

    @dataclass
    class EditLast(Message):
        """Up on an empty input: the person wants to edit their last message."""

    @dataclass
    class Select(Message):
        """alt+up or alt+down: select an older (-1) or newer (+1) message to act on."""

        step: int

    def __init__(self, **kwargs: object) -> None:
        super().__init__(soft_wrap=True, show_line_numbers=False, tab_behavior="focus",
                         **kwargs)  # type: ignore[arg-type]
        # A steady cursor: a blinking one redraws twice a second, which is most of what an
        # idle chat would cost.
        self.cursor_blink = False
        self.sent: list[str] = []
        self._recall: int | None = None
        self._draft = ""
        self.completer: Completer | None = None
        #: The Tab cycle under way: (text before the word, candidates, index, text shown).
        self._cycle: tuple[str, list[str], int, str] | None = None

    async def _on_key(self, event: events.Key) -> None:
        key = event.key
        if key != "tab":
            self._cycle = None
        if key == "enter":
            self._stop(event)
            text = self.text
            if text.strip():
                self.clear()
                self.remember(text)
                self.post_message(self.Submitted(text))
            return
        if key in NEWLINE_KEYS:
            self._stop(event)
            self.insert("\n")
            return
        if key in SCROLL_KEYS or (key in EMPTY_SCROLL_KEYS and not self.text):
            self._stop(event)
            self.post_message(self.Scroll(SCROLL_KEYS.get(key) or EMPTY_SCROLL_KEYS[key]))
            return
        if key in ("ctrl+up", "ctrl+down"):
            self._stop(event)
            self.recall(-1 if key == "ctrl+up" else 1)
            return
        if key == "up" and not self.text:
            self._stop(event)
            self.post_message(self.EditLast())
            return
        if key in ("alt+up", "alt+down"):
            self._stop(event)
            self.post_message(self.Select(-1 if key == "alt+up" else 1))
            return
        if key == "tab" and self.text.strip():
            # With text in the input Tab only completes (else it would move away from it).
            self._stop(event)
            if not self.complete():
                self.app.bell()
            return
        await super()._on_key(event)

    @staticmethod
    def _stop(event: events.Key) -> None:
        event.stop()
        event.prevent_default()

    # ------------------------------------------------------------ history

    def remember(self, text: str) -> None:
        """Keep a sent text for ctrl+up (once, newest last)."""
        if not self.sent or self.sent[-1] != text:
            self.sent.append(text)
            del self.sent[:-HISTORY_SIZE]
        self._recall = None

    def recall(self, step: int) -> None:
        """Show an older (-1) or newer (+1) sent text; past the newest, what was being typed."""
        if not self.sent:
            return
        if self._recall is None:
            if step > 0:
                return
            self._draft = self.text
            index = len(self.sent) - 1
        else:
            index = self._recall + step
        if index < 0:
            index = 0
        if index >= len(self.sent):
            self._recall = None
            self._set(self._draft)
            return
        self._recall = index
        self._set(self.sent[index])

    def _set(self, text: str) -> None:
        self.text = text
        self.move_cursor(self.document.end)

    # ------------------------------------------------------------ completion

    def complete(self) -> bool:
        """Complete the word before the cursor (cursor at the end); again: the next
        candidate.  False if there is nothing to complete."""
        text = self.text
        if self._cycle is not None and self._cycle[3] == text:
            head, candidates, index, _ = self._cycle
            index = (index + 1) % len(candidates)
        else:
            if self.completer is None or self.cursor_location != self.document.end:
                return False
            start, candidates = self.completer(text)
            if not candidates:
                return False
            head, index = text[:start], 0
        shown = head + candidates[index]
        self._cycle = (head, candidates, index, shown)
        self._set(shown)
        return True
