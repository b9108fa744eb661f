"""DIM's commands and conversations in Textual's command palette (ctrl+k)."""
from __future__ import annotations

from functools import partial
from typing import Any
from collections.abc import Callable

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui.commands import COMMANDS, Command


class DimCommands(Provider):
    """Every slash command, and "Open NAME" for every conversation listed."""

    def _chat(self) -> Any:
        from tui.screens.chat import ChatScreen
        screen = self.screen
        return screen if isinstance(screen, ChatScreen) else None

    def _entries(self) -> list[tuple[str, Callable[[], Any], str]]:
        chat = self._chat()
        if chat is None:
            return []
        entries: list[tuple[str, Callable[[], Any], str]] = [
            (c.usage, partial(self._run, chat, c), c.does) for c in COMMANDS]
        for peer in chat.order:
            entries.append((f"Open {chat.label(peer)}", partial(self._open, chat, peer),
                            f"switch to {peer}"))
        return entries

    @staticmethod
    def _run(chat: Any, command: Command) -> None:
        """Run a command that takes nothing, else put it into the input to be completed."""
        if not command.args or command.args.startswith("["):
            chat.run_worker(chat.command(command.name), exclusive=False)
            return
        from tui.widgets.message_input import MessageInput
        box = chat.query_one(MessageInput)
        box.text = command.name + " "
        box.move_cursor(box.document.end)
        box.focus()

    @staticmethod
    def _open(chat: Any, peer: str) -> None:
        chat.run_worker(chat.open(peer), exclusive=False)

    async def discover(self) -> Hits:
        """Every command and conversation, before anything is typed."""
        for text, callback, help in self._entries():
            yield DiscoveryHit(text, callback, text=text, help=help)

    async def search(self, query: str) -> Hits:
        """Commands and conversations matching what was typed."""
        matcher = self.matcher(query)
        for text, callback, help in self._entries():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, matcher.highlight(text), callback, text=text, help=help)
