"""The terminal chat application: one App, given its client core."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from textual.app import App
from textual.binding import Binding
from textual.message import Message

from dim import errors
from dim.client import events as E
from tui import wait_for
from tui.core import ChatCore
from tui.palette import DimCommands
from tui.screens.chat import ChatScreen
from tui.screens.login import LoginScreen
from tui.widgets.connection_bar import ConnectionBar

#: At most one bell per this many seconds, so a burst of messages rings once.
BELL_INTERVAL = 1.0


@dataclass
class CoreEvent(Message):
    """A client-core event, carried into Textual's message queue."""

    event: Any


class ChatApp(App[None]):
    """dim-chat: log in, then chat; the header always shows the connection state."""

    CSS_PATH = "app.tcss"
    TITLE = "dim-chat"
    BINDINGS = [Binding("ctrl+q", "quit", "Quit", priority=True)]
    #: ctrl+n and ctrl+p switch conversations, as in weechat and irssi: the palette is ctrl+k.
    COMMAND_PALETTE_BINDING = "ctrl+k"
    COMMANDS = App.COMMANDS | {DimCommands}

    def __init__(self, client: ChatCore, *, user: str | None = None,
                 password: str | None = None, gateway_url: str | None = None,
                 state_path: str | None = None) -> None:
        super().__init__()
        self.client = client
        self.initial_user = user
        self.initial_password = password
        #: The gateway logged in at, shown on the login screen and in its errors.
        self.gateway_url = gateway_url
        #: Where the chat remembers the open conversation between runs (None: nowhere).
        self.state_path = state_path
        self.connection_state = client.state
        self.connection_node: str | None = None
        self.connection_user: str | None = None
        self.reconnect_at: float | None = None
        self.reconnect_attempt = 0
        self.bells = 0
        self._last_bell = float("-inf")
        self._unsubscribe: Callable[[], None] | None = None

    def on_mount(self) -> None:
        def forward(event: Any) -> None:
            self.post_message(CoreEvent(event))
        self._unsubscribe = self.client.subscribe(forward)
        if self.client.resume(self.initial_user):
            self.connection_user = self.client.user
            self.push_screen(self.chat_screen())
        else:
            self.push_screen(self.login_screen(self.initial_user, self.initial_password))

    def chat_screen(self) -> ChatScreen:
        """A new chat screen for the logged-in user."""
        return ChatScreen(self.client, self.state_path)

    def login_screen(self, user: str | None, password: str | None,
                     notice: str = "") -> LoginScreen:
        """A new login screen naming the gateway."""
        return LoginScreen(user, password, notice, gateway=self.gateway_url)

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.client.stop()

    # ------------------------------------------------------------ logging in

    async def on_login_screen_submitted(self, message: LoginScreen.Submitted) -> None:
        screen = self.screen
        try:
            if message.register:
                await wait_for(self.client.register(message.user, message.password))
            else:
                await wait_for(self.client.login(message.user, message.password))
        except errors.Unauthorized:
            self._login_error(screen, "Wrong user name or password.")
            return
        except errors.Conflict:
            self._login_error(screen, f"The name {message.user!r} is taken.")
            return
        except errors.DimError as e:
            self._login_error(screen, e.message)
            return
        except Exception as e:  # the gateway cannot be reached
            where = f" at {self.gateway_url}" if self.gateway_url else ""
            self._login_error(screen, f"Cannot reach the gateway{where}: {e} "
                                      "(is DIM running? dim-chat --gateway URL picks another)")
            return
        self.connection_user = self.client.user
        await self.switch_screen(self.chat_screen())

    @staticmethod
    def _login_error(screen: Any, text: str) -> None:
        if isinstance(screen, LoginScreen):
            screen.show_error(text)

    def logout(self) -> None:
        """Log out and go back to the login screen."""
        self.client.logout()
        self.switch_screen(self.login_screen(self.client.user, None, "Logged out."))

    # ------------------------------------------------------------ client-core events

    async def on_core_event(self, message: CoreEvent) -> None:
        event = message.event
        if isinstance(event, (E.Connecting, E.Connected)):
            self.connection_node = event.node.id
            self.reconnect_at = None
            if isinstance(event, E.Connected):
                self.connection_user = event.user
        elif isinstance(event, E.Reconnecting):
            self.reconnect_at = time.monotonic() + event.in_seconds
            self.reconnect_attempt = event.attempt
        self.connection_state = self.client.state
        if not self.screen_stack:  # the app is closing: there is nothing left to update
            return
        for bar in self.screen.query(ConnectionBar):
            bar.refresh_state()
        if isinstance(event, E.SessionExpired):
            await self.switch_screen(self.login_screen(
                self.client.user, None, f"Please log in again ({event.message})."))
            return
        # The chat under a dialog (help, search) hears its events too, so nothing that came
        # meanwhile is missing when the dialog closes.
        chat = next((s for s in reversed(self.screen_stack) if isinstance(s, ChatScreen)), None)
        if chat is not None:
            await chat.handle_event(event)

    def on_chat_screen_logout_requested(self, message: ChatScreen.LogoutRequested) -> None:
        """The chat screen's /logout."""
        self.logout()

    def on_chat_screen_ring(self, message: ChatScreen.Ring) -> None:
        """The chat screen heard a message for a conversation that is not open."""
        self.ring()

    def ring(self) -> None:
        """Ring the bell for a message in a conversation that is not open (at most once a
        second)."""
        now = time.monotonic()
        if now - self._last_bell >= BELL_INTERVAL:
            self._last_bell = now
            self.bells += 1
            self.bell()

