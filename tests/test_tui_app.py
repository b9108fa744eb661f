"""The terminal chat driven by Pilot against a fake client core (no network).

:class:`FakeChatCore` implements the same interface as :class:`dim.client.session.ChatClient`
(a test below checks that), stores messages in the real :class:`MessageCache` and emits the
real session events, with helpers to play the node's part (receive, confirm, deliver, fail).
Textual runs on asyncio: under ``trial --reactor=asyncio`` the coroutines run on the reactor's
loop; under another reactor each test runs on a private asyncio loop.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import os
from typing import Any
from collections.abc import Awaitable, Callable

from textual import events
from twisted.internet import defer
from twisted.trial import unittest

from dim import errors
from dim.client import session as S
from dim.client import transfer
from dim.client.cache import ChatMessage, Conversation, MessageCache
from dim.protocol import frames as F
from tui.app import ChatApp
from tui.core import ChatCore
from tui.screens.chat import ChatScreen
from tui.screens.help import HelpScreen
from tui.screens.login import LoginScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.conversation_list import ConversationList
from tui.widgets.message_input import MessageInput
from tui.widgets.message_log import MessageLog

NODE = S.NodeAddress("n1", "127.0.0.1", 9000)


def as_deferred(coro: Awaitable[Any]) -> defer.Deferred[Any]:
    """Run a coroutine as a Deferred: on the asyncio reactor's loop, else on a private loop."""
    from twisted.internet import reactor
    loop = getattr(reactor, "_asyncioEventloop", None)
    if loop is not None:
        return defer.Deferred.fromFuture(asyncio.ensure_future(coro, loop=loop))
    return defer.maybeDeferred(asyncio.run, coro)  # type: ignore[arg-type]


def async_test(fn: Callable[..., Awaitable[Any]]) -> Callable[..., defer.Deferred[Any]]:
    """Make an ``async def`` test method a trial test returning a Deferred."""
    @functools.wraps(fn)
    def wrapper(self: Any) -> defer.Deferred[Any]:
        return as_deferred(fn(self))
    return wrapper


class FakeChatCore(S.EventSource):
    """A client core with no network: the test plays the node through its helpers."""

    def __init__(self, users: dict[str, str] | None = None) -> None:
        super().__init__()
        self.users = dict(users or {"alice": "secret123", "bob": "bobsecret", "carol": "carol123"})
        self.user: str | None = None
        self._state = S.OFFLINE
        self._node: S.NodeAddress | None = None
        self.cache: MessageCache | None = None
        self.outgoing_by_id: dict[str, S.OutgoingMessage] = {}
        self.retried: list[str] = []
        self.logins: list[tuple[str, str]] = []
        self.saved_login: str | None = None
        self.seq = 0
        self._ids = itertools.count(1)
        self.typed: list[str] = []
        self.contact_map: dict[str, dict[str, Any]] = {}
        self.group_map: dict[str, dict[str, Any]] = {}
        self.names: dict[str, str] = {}
        self.profile: dict[str, Any] = {"user": "alice", "name": "alice", "status": "",
                                        "avatar": None}
        self.calls: list[tuple[Any, ...]] = []
        self.saved: list[dict[str, Any]] = []
        self.download_dir = "/tmp/downloads"
        self.upload_gate: defer.Deferred[Any] | None = None
        self.refreshes = 0
        self.file_bytes = b""
        self.reconnects = 0
        self.user_infos: list[str] = []
        self.online_users: set[str] = set()

    # ---------------------------------------------------------------- ChatCore

    @property
    def state(self) -> str:
        """offline, connecting, connected or reconnecting."""
        return self._state

    @property
    def node(self) -> S.NodeAddress | None:
        """The node connected to."""
        return self._node

    def resume(self, user: str | None = None) -> bool:
        """Start from a saved login (set ``saved_login`` to have one)."""
        if self.saved_login is None or (user and user != self.saved_login):
            return False
        self._start(self.saved_login)
        return True

    def login(self, user: str, password: str) -> defer.Deferred[None]:
        """Accept the passwords in ``users``."""
        self.logins.append((user, password))
        if self.users.get(user) != password:
            return defer.fail(errors.Unauthorized("wrong user name or password"))
        self._start(user)
        return defer.succeed(None)

    def register(self, user: str, password: str) -> defer.Deferred[None]:
        """Create a user unless the name is taken."""
        if user in self.users:
            return defer.fail(errors.Conflict("taken"))
        self.users[user] = password
        return self.login(user, password)

    def logout(self) -> None:
        """Go offline and forget the saved login."""
        self.saved_login = None
        self.stop()

    def stop(self) -> None:
        """Go offline."""
        self._state = S.OFFLINE

    def send(self, to: str, body: str) -> S.OutgoingMessage:
        """Queue a message in state sending (``to`` may be ``#`` + a group id)."""
        if self.user is None:
            raise errors.Unauthorized("not logged in")
        if len(body.encode("utf-8")) > F.MAX_BODY_BYTES:
            raise errors.TooLarge(f"the message is over {F.MAX_BODY_BYTES} bytes")
        group = to[1:] if to.startswith("#") else None
        out = S.OutgoingMessage(id=f"o{next(self._ids)}", body=body,
                                to=None if group else to, group=group,
                                created=1_700_000_000_000)
        self.outgoing_by_id[out.id] = out
        self.emit(S.MessageStatus(out.id, S.SENDING, out))
        return out

    def retry(self, id: str) -> S.OutgoingMessage:
        """Put a failed message back to sending."""
        out = self.outgoing_by_id[id]
        self.retried.append(id)
        if out.state == S.FAILED:
            out.state, out.error = S.SENDING, None
            self.emit(S.MessageStatus(id, S.SENDING, out))
        return out

    def reconnect(self) -> bool:
        """Counted; connects again at once."""
        self.reconnects += 1
        if self.user is None:
            return False
        self._start(self.user)
        return True

    def receipts(self, mids: list[str]) -> dict[str, tuple[set[str], set[str]]]:
        """From the cache, as the real core keeps them."""
        return self.cache.receipts(mids) if self.cache else {}

    def conversations(self) -> list[Conversation]:
        """From the cache, newest first."""
        return self.cache.conversations() if self.cache else []

    def history(self, peer: str, before_seq: int | None = None,
                limit: int = 50) -> defer.Deferred[list[ChatMessage]]:
        """From the cache."""
        return defer.succeed(self.cache.history(peer, before_seq, limit) if self.cache else [])

    def pending(self, peer: str) -> list[S.OutgoingMessage]:
        """Own messages without a seq."""
        return [m for m in self.outgoing_by_id.values() if m.peer() == peer and m.seq is None]

    def mark_seen(self, peer: str) -> None:
        """Clear the unread count."""
        if self.cache:
            self.cache.mark_seen(peer)

    def user_info(self, name: str) -> defer.Deferred[dict[str, Any]]:
        """Known users are online (unless ``online_users`` is set); others are not found."""
        self.user_infos.append(name)
        if name not in self.users:
            return defer.fail(errors.NotFound("no such user"))
        online = name in self.online_users if self.online_users else True
        return defer.succeed({"user": name, "online": online})

    # ---------------------------------------------------------------- part 2

    def typing(self, peer: str) -> None:
        """Record the typing call (the real core throttles it)."""
        self.typed.append(peer)

    def contacts(self) -> list[dict[str, Any]]:
        """Contacts as the test set them, requests first, then online."""
        def rank(c: dict[str, Any]) -> tuple[int, str]:
            pending = c.get("pending")
            n = 0 if pending == "in" else 3 if pending == "out" else 1 if c.get("online") else 2
            return n, str(c.get("name") or c["user"])
        return sorted(self.contact_map.values(), key=rank)

    def groups(self) -> list[dict[str, Any]]:
        """Groups as the test set them."""
        return sorted(self.group_map.values(), key=lambda g: g["name"])

    def group(self, group_id: str) -> dict[str, Any] | None:
        """One group."""
        return self.group_map.get(group_id.lstrip("#"))

    def display_name(self, user: str) -> str:
        """Display names from ``names``; groups as "# name"."""
        if user.startswith("#"):
            group = self.group(user)
            return "# " + group["name"] if group else user
        return self.names.get(user, user)

    def is_online(self, user: str) -> bool | None:
        """Contacts' online flags."""
        contact = self.contact_map.get(user)
        return bool(contact.get("online")) if contact and contact.get("pending") is None else None

    def own_profile(self) -> dict[str, Any]:
        """The profile as last saved."""
        return dict(self.profile)

    def refresh_people(self) -> defer.Deferred[None]:
        """Counted; the answer stays in flight, as a real fetch does for a while."""
        self.refreshes += 1
        return defer.Deferred()

    def search_users(self, text: str) -> defer.Deferred[list[dict[str, Any]]]:
        """Known users whose name contains ``text``."""
        return defer.succeed([{"user": u, "name": self.names.get(u, u), "avatar": None}
                              for u in sorted(self.users) if text.lower() in u.lower()])

    def add_contact(self, user: str) -> defer.Deferred[dict[str, Any]]:
        """An incoming request becomes a contact; otherwise a request goes out."""
        self.calls.append(("add_contact", user))
        if user not in self.users:
            return defer.fail(errors.NotFound(f"no such user: {user}"))
        contact = self.contact_map.get(user)
        pending = None if contact and contact.get("pending") == "in" else "out"
        contact = {"user": user, "name": self.names.get(user, user), "status": "",
                   "avatar": None, "online": pending is None, "pending": pending}
        self.contact_map[user] = contact
        self.emit(S.RosterChanged("contacts"))
        return defer.succeed(contact)

    def remove_contact(self, user: str) -> defer.Deferred[None]:
        """Drop a contact or request."""
        self.calls.append(("remove_contact", user))
        if self.contact_map.pop(user, None) is None:
            return defer.fail(errors.NotFound("no such contact"))
        self.emit(S.RosterChanged("contacts"))
        return defer.succeed(None)

    def update_profile(self, name: str | None = None,
                       status: str | None = None) -> defer.Deferred[dict[str, Any]]:
        """Keep the new fields."""
        self.calls.append(("update_profile", name, status))
        if name is not None:
            self.profile["name"] = name
        if status is not None:
            self.profile["status"] = status
        return defer.succeed(dict(self.profile))

    def set_avatar(self, path: str, progress: Any = None) -> defer.Deferred[dict[str, Any]]:
        """Images become the avatar; anything else is refused."""
        self.calls.append(("set_avatar", os.path.basename(path)))
        if transfer.kind_for(transfer.mime_of(path)) != "image":
            return defer.fail(errors.BadRequest("not an image"))
        self.profile["avatar"] = "f-avatar"
        return defer.succeed(dict(self.profile))

    def create_group(self, name: str, members: list[str]) -> defer.Deferred[dict[str, Any]]:
        """A group owned by the user."""
        self.calls.append(("create_group", name, list(members)))
        gid = f"g{len(self.group_map) + 1}"
        group = {"id": gid, "name": name, "owner": self.user, "members": [self.user, *members]}
        self.group_map[gid] = group
        self.emit(S.RosterChanged("groups"))
        return defer.succeed(group)

    def rename_group(self, group_id: str, name: str) -> defer.Deferred[dict[str, Any]]:
        """Rename."""
        group = self.group_map[group_id.lstrip("#")]
        group["name"] = name
        self.emit(S.RosterChanged("groups"))
        return defer.succeed(group)

    def add_member(self, group_id: str, user: str) -> defer.Deferred[dict[str, Any]]:
        """Add a member."""
        group = self.group_map[group_id.lstrip("#")]
        group["members"].append(user)
        self.emit(S.RosterChanged("groups"))
        return defer.succeed(group)

    def remove_member(self, group_id: str, user: str) -> defer.Deferred[None]:
        """Remove a member (the user itself: leave)."""
        gid = group_id.lstrip("#")
        if user == self.user:
            self.group_map.pop(gid)
        else:
            self.group_map[gid]["members"].remove(user)
        self.emit(S.RosterChanged("groups"))
        return defer.succeed(None)

    def leave_group(self, group_id: str) -> defer.Deferred[None]:
        """Leave."""
        return self.remove_member(group_id, self.user or "")

    def send_file(self, peer: str, path: str,
                  progress: Any = None) -> defer.Deferred[S.OutgoingMessage]:
        """Report progress in two steps, then send a file message; ``upload_gate`` holds it."""
        size = os.path.getsize(path)
        mime = transfer.mime_of(path)
        if progress is not None:
            progress(size // 2, size)
        def finish(_: Any = None) -> S.OutgoingMessage:
            if progress is not None:
                progress(size, size)
            out = S.OutgoingMessage(id=f"o{next(self._ids)}", body="", created=1_700_000_000_000,
                                    kind=transfer.kind_for(mime),
                                    file={"id": "f1", "name": os.path.basename(path), "size": size,
                                          "mime": mime})
            if peer.startswith("#"):
                out.group = peer[1:]
            else:
                out.to = peer
            self.outgoing_by_id[out.id] = out
            self.emit(S.MessageStatus(out.id, S.SENDING, out))
            return out
        if self.upload_gate is not None:
            self.upload_gate.addCallback(finish)
            return self.upload_gate
        return defer.succeed(finish())

    def save_file(self, file: dict[str, Any], progress: Any = None,
                  directory: str | None = None) -> defer.Deferred[str]:
        """Pretend to save into ``download_dir``; into ``directory`` write ``file_bytes``."""
        self.saved.append(file)
        if progress is not None:
            progress(int(file.get("size") or 0), int(file.get("size") or 0))
        if directory is not None:
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, file["name"])
            with open(path, "wb") as f:
                f.write(self.file_bytes)
            return defer.succeed(path)
        return defer.succeed(os.path.join(self.download_dir, file["name"]))

    # ---------------------------------------------------------------- playing the node

    def _start(self, user: str) -> None:
        self.user = user
        if self.cache is None:
            self.cache = MessageCache(":memory:", user)
        self._node, self._state = NODE, S.CONNECTING
        self.emit(S.Connecting(NODE))
        self._state = S.CONNECTED
        self.emit(S.Connected(NODE, user, self.seq))

    def receive(self, sender: str, body: str, ts: int = 1_700_000_000_000,
                group: str | None = None, kind: str = "text",
                file: dict[str, Any] | None = None) -> ChatMessage:
        """A message from ``sender`` arrives (in ``group``, if given)."""
        self.seq += 1
        entry = ChatMessage(seq=self.seq, mid=f"m{self.seq}", id=f"c{self.seq}", sender=sender,
                            to=None if group else self.user, group=group, ts=ts, body=body,
                            kind=kind, file=file)
        assert self.cache is not None
        self.cache.put(entry)
        self.emit(S.MessageReceived(entry))
        return entry

    def confirm(self, id: str) -> None:
        """The node answers ``sent``."""
        out = self.outgoing_by_id[id]
        self.seq += 1
        out.state, out.seq, out.mid, out.ts = S.SENT, self.seq, f"m{self.seq}", out.created
        assert self.cache is not None and self.user is not None
        self.cache.put(ChatMessage(seq=out.seq, mid=out.mid, id=out.id, sender=self.user,
                                   to=out.to, group=out.group, ts=out.ts, body=out.body,
                                   kind=out.kind, file=out.file))
        self.emit(S.MessageStatus(id, S.SENT, out))

    def deliver(self, id: str, by: str = "bob") -> None:
        """The recipient acknowledged."""
        out = self.outgoing_by_id[id]
        out.state = S.DELIVERED
        out.delivered_by.add(by)
        if self.cache is not None and out.mid:
            self.cache.add_receipt(out.mid, by, False)
        self.emit(S.MessageStatus(id, S.DELIVERED, out))
        self.emit(S.Delivered(id, out.mid or "", by))

    def fail(self, id: str) -> None:
        """No sent came in time."""
        out = self.outgoing_by_id[id]
        out.state, out.error = S.FAILED, "no answer from the node"
        self.emit(S.MessageStatus(id, S.FAILED, out))

    def set_state(self, state: str, event: S.SessionEvent) -> None:
        """Change the connection state and report it."""
        self._state = state
        self.emit(event)


def shown(app: ChatApp) -> list[str]:
    """The lines of the open conversation."""
    return app.screen.query_one(MessageLog).lines()


def bar(app: ChatApp) -> str:
    """The connection bar's text."""
    return app.screen.query_one(ConnectionBar).plain


async def submit(pilot: Any, text: str) -> None:
    """Type ``text`` into the message input and press Enter."""
    box = pilot.app.screen.query_one(MessageInput)
    box.focus()
    box.text = text
    await pilot.press("enter")
    await pilot.pause()


async def logged_in(pilot: Any) -> None:
    """Wait until the chat screen shows."""
    for _ in range(50):
        if isinstance(pilot.app.screen, ChatScreen):
            await pilot.pause()
            return
        await pilot.pause(0.01)
    raise AssertionError(f"still on {pilot.app.screen!r}")


class InterfaceTests(unittest.TestCase):
    """The fake stays faithful to the real client core."""

    def test_fake_matches_chat_client(self) -> None:
        """Every ChatCore member exists on ChatClient and the fake, with the same parameters."""
        members = [n for n in vars(ChatCore) if not n.startswith("_")]
        self.assertIn("send", members)
        for name in members:
            real = getattr(S.ChatClient, name, None)
            fake = getattr(FakeChatCore, name, None)
            if name == "user":
                continue  # an instance attribute on both
            self.assertIsNotNone(real, name)
            self.assertIsNotNone(fake, name)
            if callable(real) and not isinstance(real, property):
                self.assertEqual(list(inspect.signature(real).parameters),
                                 list(inspect.signature(fake).parameters), name)
                self.assertEqual(list(inspect.signature(getattr(ChatCore, name)).parameters),
                                 list(inspect.signature(real).parameters), name)


class LoginTests(unittest.TestCase):
    """The login screen."""

    @async_test
    async def test_login_opens_chat(self) -> None:
        """Typing a user and password and pressing Enter logs in and shows the chat."""
        core = FakeChatCore()
        app = ChatApp(core)
        async with app.run_test() as pilot:
            self.assertIsInstance(app.screen, LoginScreen)
            await pilot.click("#user")
            await pilot.press(*"alice")
            await pilot.press("enter")
            await pilot.press(*"secret123")
            await pilot.press("enter")
            await logged_in(pilot)
            self.assertEqual(core.logins, [("alice", "secret123")])
            self.assertIn("connected to node n1 as alice", bar(app))

    @async_test
    async def test_wrong_password_stays(self) -> None:
        """A refused login shows an error and stays on the login screen."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice")
        async with app.run_test() as pilot:
            await pilot.press(*"wrongpass")
            await pilot.press("enter")
            await pilot.pause()
            self.assertIsInstance(app.screen, LoginScreen)
            self.assertIn("Wrong user name or password",
                          str(app.screen.query_one("#login-error").render()))

    @async_test
    async def test_password_from_environment_logs_in(self) -> None:
        """Given a user and a password (DIM_PASSWORD), the app logs in without typing."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            self.assertEqual(core.logins, [("alice", "secret123")])

    @async_test
    async def test_register(self) -> None:
        """The Register button creates the account and logs in."""
        core = FakeChatCore()
        app = ChatApp(core)
        async with app.run_test() as pilot:
            await pilot.click("#user")
            await pilot.press(*"dave")
            await pilot.click("#password")
            await pilot.press(*"password9")
            await pilot.click("#confirm")
            await pilot.press(*"password9")
            await pilot.click("#register")
            await logged_in(pilot)
            self.assertEqual(core.users["dave"], "password9")

    @async_test
    async def test_saved_login_skips_the_form(self) -> None:
        """With a saved login the chat opens at once."""
        core = FakeChatCore()
        core.saved_login = "alice"
        app = ChatApp(core)
        async with app.run_test() as pilot:
            await logged_in(pilot)
            self.assertEqual(core.logins, [])

    @async_test
    async def test_expired_session_returns_to_login(self) -> None:
        """SessionExpired brings back the login screen with a reason."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            core.set_state(S.OFFLINE, S.SessionExpired("token expired"))
            await pilot.pause()
            await pilot.pause()
            self.assertIsInstance(app.screen, LoginScreen)


class ChatTests(unittest.TestCase):
    """Sending, receiving, unread counts, marks, retry and the connection bar."""

    @async_test
    async def test_send_shows_status_marks(self) -> None:
        """An own message shows sending, then sent, then delivered."""
        core = FakeChatCore({"alice": "secret123", "bob": "x" * 8})
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            await submit(pilot, "/open bob")
            await submit(pilot, "hello bob")
            (out,) = core.outgoing_by_id.values()
            self.assertEqual((out.to, out.body), ("bob", "hello bob"))
            self.assertRegex(shown(app)[-1],
                             r"^(\d{4}-\d\d-\d\d )?\d\d:\d\d alice: hello bob  … sending$")
            core.confirm(out.id)
            await pilot.pause()
            self.assertTrue(shown(app)[-1].endswith("✓ sent"), shown(app))
            core.deliver(out.id)
            await pilot.pause()
            self.assertTrue(shown(app)[-1].endswith("✓✓ delivered"), shown(app))
            self.assertEqual(len(shown(app)), 1)

    @async_test
    async def test_newline_key_makes_multiline_message(self) -> None:
        """ctrl+j inserts a newline; Enter sends both lines as one message."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            await submit(pilot, "/open bob")
            await pilot.press("a", "ctrl+j", "b", "enter")
            await pilot.pause()
            (out,) = core.outgoing_by_id.values()
            self.assertEqual(out.body, "a\nb")
            self.assertEqual(app.screen.query_one(MessageInput).text, "")

    @async_test
    async def test_receive_in_open_conversation(self) -> None:
        """A message in the open conversation appears once, with time and sender, no bell."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            await submit(pilot, "/open bob")
            entry = core.receive("bob", "hi alice")
            core.emit(S.MessageReceived(entry))  # a duplicate report of the same seq
            await pilot.pause()
            self.assertEqual(len(shown(app)), 1)
            self.assertRegex(shown(app)[0], r"^(\d{4}-\d\d-\d\d )?\d\d:\d\d bob: hi alice$")
            self.assertEqual(app.bells, 0)

    @async_test
    async def test_logout_command_returns_to_the_login(self) -> None:
        """/logout forgets the saved login, goes offline and shows the login screen."""
        core = FakeChatCore()
        core.saved_login = "alice"
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            await submit(pilot, "/logout")
            await pilot.pause()
            self.assertIsInstance(app.screen, LoginScreen)
            self.assertIsNone(core.saved_login)
            self.assertEqual(core.state, S.OFFLINE)

    @async_test
    async def test_unread_count_and_bell(self) -> None:
        """A message elsewhere rings the bell and counts unread until opened; newest first."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            await submit(pilot, "/open bob")
            core.receive("bob", "one")
            core.receive("carol", "two")
            core.receive("carol", "three")
            await pilot.pause(0.1)
            conversations = app.screen.query_one(ConversationList)
            self.assertEqual(conversations.lines(), ["carol (2)", "bob"])
            self.assertEqual(app.bells, 1)
            await submit(pilot, "/open carol")
            await pilot.pause(0.1)
            self.assertEqual(conversations.lines(), ["carol", "bob"])
            self.assertEqual([line.split(": ", 1)[1] for line in shown(app)], ["two", "three"])

    @async_test
    async def test_failed_then_retry(self) -> None:
        """A failed message says so; ctrl+r retries it and it shows sending again."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            await submit(pilot, "/open bob")
            await submit(pilot, "lost")
            (out,) = core.outgoing_by_id.values()
            core.fail(out.id)
            await pilot.pause()
            self.assertIn("✗ failed", shown(app)[-1])
            await pilot.press("ctrl+r")
            await pilot.pause()
            self.assertEqual(core.retried, [out.id])
            self.assertTrue(shown(app)[-1].endswith("… sending"), shown(app))

    @async_test
    async def test_connection_bar_follows_state(self) -> None:
        """The bar shows connected, reconnecting in N s (attempt k), and offline."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            self.assertIn("connected to node n1", bar(app))
            core.set_state(S.RECONNECTING, S.Disconnected(NODE, "gone"))
            core.emit(S.Reconnecting(3.0, 2))
            await pilot.pause()
            self.assertIn("reconnecting in 3 s (attempt 2)", bar(app))
            core.set_state(S.OFFLINE, S.Offline("stopped"))
            await pilot.pause()
            self.assertIn("offline", bar(app))

    @async_test
    async def test_commands(self) -> None:
        """/help lists the commands; /msg sends without opening; unknown commands are named."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            await submit(pilot, "/help")
            self.assertIsInstance(app.screen, HelpScreen)
            self.assertIn("/open USER", str(app.screen.query_one("#help-text").render()))
            await pilot.press("escape")
            await pilot.pause()
            await submit(pilot, "/msg carol hi there")
            (out,) = core.outgoing_by_id.values()
            self.assertEqual((out.to, out.body), ("carol", "hi there"))
            self.assertIsNone(app.screen.peer)
            await submit(pilot, "/frobnicate")
            self.assertIn("Unknown command", str(app.screen.query_one("#notice").render()))

    @async_test
    async def test_history_and_older(self) -> None:
        """Opening shows the newest cached page; ctrl+o loads older messages above it."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            for i in range(1, 61):
                core.receive("bob", f"n{i}")
            await submit(pilot, "/open bob")
            self.assertEqual(len(shown(app)), 50)
            self.assertTrue(shown(app)[0].endswith("n11"))
            await pilot.press("ctrl+o")
            await pilot.pause()
            self.assertEqual(len(shown(app)), 60)
            self.assertTrue(shown(app)[0].endswith("n1"))
            self.assertTrue(shown(app)[-1].endswith("n60"))

    @async_test
    async def test_scrolling_up_at_the_top_loads_older(self) -> None:
        """Scrolling the mouse wheel up at the top of the log loads the older page."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            for i in range(1, 61):
                core.receive("bob", f"n{i}")
            await submit(pilot, "/open bob")
            log = app.screen.query_one(MessageLog)
            log.scroll_home(animate=False)
            await pilot.pause()
            log.post_message(events.MouseScrollUp(log, 1, 1, 0, -1, 0, False, False, False))
            await pilot.pause(0.1)
            self.assertEqual(len(shown(app)), 60)
            self.assertTrue(shown(app)[0].endswith("n1"))

    @async_test
    async def test_quit_command(self) -> None:
        """/quit leaves the app and stops the client core."""
        core = FakeChatCore()
        app = ChatApp(core, user="alice", password="secret123")
        async with app.run_test() as pilot:
            await logged_in(pilot)
            await submit(pilot, "/quit")
        self.assertEqual(core.state, S.OFFLINE)
