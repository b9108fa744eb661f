"""The terminal chat application: one App, given its client core."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol
from collections.abc import Callable

from textual.app import App
from textual.binding import Binding
from textual.message import Message

from dim import errors
from dim.client import session as S
from dim.client.cache import Conversation
from tui import wait_for
from tui.palette import DimCommands
from tui.screens.chat import ChatScreen
from tui.screens.login import LoginScreen
from tui.widgets.connection_bar import ConnectionBar

#: At most one bell per this many seconds, so a burst of messages rings once.
BELL_INTERVAL = 1.0


class ChatCore(Protocol):
    """What the chat needs of its client core (:class:`dim.client.session.ChatClient`)."""

    user: str | None

    @property
    def state(self) -> str:
        """offline, connecting, connected or reconnecting."""

    @property
    def node(self) -> S.NodeAddress | None:
        """The node connected to, if any."""

    def subscribe(self, listener: Callable[[Any], None]) -> Callable[[], None]:
        """Hear every session event."""

    def resume(self, user: str | None = None) -> bool:
        """Start from a saved login."""

    def login(self, user: str, password: str) -> Any:
        """Log in and connect (a Deferred)."""

    def register(self, user: str, password: str) -> Any:
        """Register, log in and connect (a Deferred)."""

    def logout(self) -> None:
        """Disconnect and forget the saved login."""

    def stop(self) -> None:
        """Disconnect."""

    def send(self, to: str, body: str) -> S.OutgoingMessage:
        """Send a message."""

    def retry(self, id: str) -> S.OutgoingMessage:
        """Send a failed message again."""

    def reconnect(self) -> bool:
        """Connect again now, without waiting out the backoff."""

    def receipts(self, mids: list[str]) -> dict[str, tuple[set[str], set[str]]]:
        """Who acknowledged and who read one's own messages: (delivered to, read by)."""

    def conversations(self) -> list[Conversation]:
        """Conversations with unread counts, newest first."""

    def history(self, peer: str, before_seq: int | None = None, limit: int = 50) -> Any:
        """A Deferred of older messages of one conversation."""

    def pending(self, peer: str) -> list[S.OutgoingMessage]:
        """One's own messages to ``peer`` that have no seq yet."""

    def mark_seen(self, peer: str) -> None:
        """The person has seen the conversation."""

    def user_info(self, name: str) -> Any:
        """A Deferred of ``{user, online}``."""

    def typing(self, peer: str) -> None:
        """The person is typing in ``peer``'s conversation (the core throttles)."""

    def contacts(self) -> list[dict[str, Any]]:
        """Contacts and requests: ``{user, name, status, avatar, online, pending}``."""

    def groups(self) -> list[dict[str, Any]]:
        """The user's groups: ``{id, name, owner, members}``."""

    def group(self, group_id: str) -> dict[str, Any] | None:
        """One group (``group_id`` with or without the leading ``#``)."""

    def display_name(self, user: str) -> str:
        """How to name a user, or ``#`` + a group id."""

    def is_online(self, user: str) -> bool | None:
        """Whether a contact is online; None for someone not a contact."""

    def own_profile(self) -> dict[str, Any]:
        """The person's own profile."""

    def refresh_people(self) -> Any:
        """A Deferred: contacts, groups and profile fetched again."""

    def search_users(self, text: str) -> Any:
        """A Deferred of the users found: ``[{user, name, avatar}]``."""

    def add_contact(self, user: str) -> Any:
        """A Deferred of the contact entry (a request, or an acceptance)."""

    def remove_contact(self, user: str) -> Any:
        """A Deferred: a contact or request removed."""

    def update_profile(self, name: str | None = None, status: str | None = None) -> Any:
        """A Deferred of the new profile."""

    def set_avatar(self, path: str, progress: Any = None) -> Any:
        """A Deferred of the profile with the image at ``path`` as its avatar."""

    def create_group(self, name: str, members: list[str]) -> Any:
        """A Deferred of the new group."""

    def rename_group(self, group_id: str, name: str) -> Any:
        """A Deferred of the renamed group."""

    def add_member(self, group_id: str, user: str) -> Any:
        """A Deferred of the group with ``user`` added."""

    def remove_member(self, group_id: str, user: str) -> Any:
        """A Deferred: ``user`` removed from the group."""

    def leave_group(self, group_id: str) -> Any:
        """A Deferred: the person left the group."""

    def send_file(self, peer: str, path: str, progress: Any = None) -> Any:
        """A Deferred of the OutgoingMessage sent after uploading ``path``."""

    def save_file(self, file: dict[str, Any], progress: Any = None,
                  directory: str | None = None) -> Any:
        """A Deferred of the path a received file was saved at (in ``directory``, or the
        download directory)."""


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
        if isinstance(event, (S.Connecting, S.Connected)):
            self.connection_node = event.node.id
            self.reconnect_at = None
            if isinstance(event, S.Connected):
                self.connection_user = event.user
        elif isinstance(event, S.Reconnecting):
            self.reconnect_at = time.monotonic() + event.in_seconds
            self.reconnect_attempt = event.attempt
        self.connection_state = self.client.state
        if not self.screen_stack:  # the app is closing: there is nothing left to update
            return
        for bar in self.screen.query(ConnectionBar):
            bar.refresh_state()
        if isinstance(event, S.SessionExpired):
            await self.switch_screen(self.login_screen(
                self.client.user, None, f"Please log in again ({event.message})."))
            return
        if isinstance(self.screen, ChatScreen):
            await self.screen.handle_event(event)

    def ring(self) -> None:
        """Ring the bell for a message in a conversation that is not open (at most once a
        second)."""
        now = time.monotonic()
        if now - self._last_bell >= BELL_INTERVAL:
            self._last_bell = now
            self.bells += 1
            self.bell()

