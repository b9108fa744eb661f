"""What dim-chat needs of its client core, as one Protocol the app and its screens type against.

:class:`dim.client.chat.ChatClient` is the real core; the tests drive the app with a fake.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from dim.client import events as E
from dim.client.cache import ChatMessage, Conversation


class ChatCore(Protocol):
    """What the chat needs of its client core (:class:`dim.client.chat.ChatClient`)."""

    user: str | None

    @property
    def state(self) -> str:
        """offline, connecting, connected or reconnecting."""

    @property
    def node(self) -> E.NodeAddress | None:
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

    def send(self, to: str, body: str, *, reply_to: str | None = None,
             mentions: list[str] | None = None) -> E.OutgoingMessage:
        """Send a message (answering ``reply_to``, mentioning group members)."""

    def message(self, mid: str) -> ChatMessage | None:
        """A cached message in its current state, by mid."""

    def edit(self, mid: str, body: str) -> Any:
        """A Deferred: one's own message edited (a MessageChanged event tells)."""

    def recall(self, mid: str) -> Any:
        """A Deferred: one's own message recalled (a MessageChanged event tells)."""

    def react(self, mid: str, emoji: str, on: bool = True) -> Any:
        """A Deferred: a reaction added or removed (a MessageChanged event tells)."""

    def retry(self, id: str) -> E.OutgoingMessage:
        """Send a failed message again."""

    def reconnect(self) -> bool:
        """Connect again now, without waiting out the backoff."""

    def receipts(self, mids: list[str]) -> dict[str, tuple[set[str], set[str]]]:
        """Who acknowledged and who read one's own messages: (delivered to, read by)."""

    def conversations(self) -> list[Conversation]:
        """Conversations with unread and mention counts, newest first."""

    def history(self, peer: str, before_seq: int | None = None, limit: int = 50) -> Any:
        """A Deferred of older messages of one conversation."""

    def cached(self, peer: str, limit: int = 50) -> list[ChatMessage]:
        """The newest messages of one conversation this device keeps, at once."""

    def newest(self, peer: str, limit: int = 50) -> Any:
        """A Deferred of the server's newest page of one conversation; fails offline."""

    def pending(self, peer: str) -> list[E.OutgoingMessage]:
        """One's own messages to ``peer`` that have no seq yet."""

    def mark_read(self, peer: str, seq: int) -> bool:
        """The person has seen ``peer``'s conversation up to ``seq`` (on screen); True if
        its read pointer moved."""

    def read_seq(self, peer: str) -> int:
        """How far ``peer``'s conversation is read, on any device."""

    def search(self, text: str, peer: str | None = None, limit: int = 20) -> Any:
        """A Deferred of the messages whose text contains ``text``, newest first."""

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
