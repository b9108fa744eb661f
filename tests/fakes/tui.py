"""The terminal chat's test fixtures: a fake client core (no network) and Pilot helpers.

:class:`FakeChatCore` implements the same interface as :class:`dim.client.chat.ChatClient`
(tests/test_tui_app.py checks that), stores messages in the real :class:`MessageCache` and
emits the real session events, with helpers to play the node's part (receive, confirm,
deliver, fail).  Textual runs on asyncio: under ``trial --reactor=asyncio`` the coroutines run
on the reactor's loop; under another reactor each test runs on a private asyncio loop.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from textual.pilot import Pilot
from twisted.internet import defer
from twisted.python.failure import Failure

from dim import errors
from dim.client import events as E
from dim.client import transfer
from dim.client.cache import ChatMessage, Conversation, MessageCache
from dim.client.conversations import ConversationReadUpTo
from dim.client.unread import UnreadChanged
from dim.protocol import frames as F
from tui.app import ChatApp
from tui.core import ChatCore
from tui.screens.chat import ChatScreen
from tui.widgets.connection_bar import ConnectionBar
from tui.widgets.message_input import MessageInput
from tui.widgets.message_log import MessageLog, MessageRow

NODE = E.NodeAddress("n1", "127.0.0.1", 9000)


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


class FakeChatCore(E.EventSource):
    """A client core with no network: the test plays the node through its helpers."""

    def __init__(self, users: dict[str, str] | None = None) -> None:
        super().__init__()
        self.users = dict(users or {"alice": "secret123", "bob": "bobsecret", "carol": "carol123"})
        self.user: str | None = None
        self._state = E.OFFLINE
        self._node: E.NodeAddress | None = None
        self.cache: MessageCache | None = None
        self.outgoing_by_id: dict[str, E.OutgoingMessage] = {}
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
        #: Edits, recalls and reactions asked for, as (kind, mid, body, on); while
        #: ``change_gate`` is set they wait for it; ``refuse_changes`` refuses them.
        self.changes: list[tuple[str, str, str, bool]] = []
        self.change_gate: defer.Deferred[Any] | None = None
        self.refuse_changes: errors.DimError | None = None
        #: Read pointers per conversation, and each move this device made.
        self.read_pointers: dict[str, int] = {}
        self.marks: list[tuple[str, int]] = []
        #: Messages the server holds that the cache may not (older history).
        self.on_server: list[ChatMessage] = []
        self.pages_asked: list[tuple[str, int | None, int]] = []
        self.searches: list[str] = []
        #: The newest page waits for this while set; ``offline``: the server cannot be asked.
        self.page_gate: defer.Deferred[Any] | None = None
        self.offline = False

    # ---------------------------------------------------------------- ChatCore

    @property
    def state(self) -> str:
        """offline, connecting, connected or reconnecting."""
        return self._state

    @property
    def node(self) -> E.NodeAddress | None:
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
        self._state = E.OFFLINE

    def send(self, to: str, body: str, *, reply_to: str | None = None,
             mentions: list[str] | None = None) -> E.OutgoingMessage:
        """Queue a message in state sending (``to`` may be ``#`` + a group id)."""
        if self.user is None:
            raise errors.Unauthorized("not logged in")
        if len(body.encode("utf-8")) > F.MAX_BODY_BYTES:
            raise errors.TooLarge(f"the message is over {F.MAX_BODY_BYTES} bytes")
        group = to[1:] if to.startswith("#") else None
        if mentions and group is None:
            raise errors.BadRequest("only a group message mentions people")
        out = E.OutgoingMessage(id=f"o{next(self._ids)}", body=body,
                                to=None if group else to, group=group,
                                created=1_700_000_000_000, reply_to=reply_to,
                                mentions=mentions)
        self.outgoing_by_id[out.id] = out
        self.emit(E.MessageStatus(out.id, E.SENDING, out))
        return out

    def retry(self, id: str) -> E.OutgoingMessage:
        """Put a failed message back to sending."""
        out = self.outgoing_by_id[id]
        self.retried.append(id)
        if out.state == E.FAILED:
            out.state, out.error = E.SENDING, None
            self.emit(E.MessageStatus(id, E.SENDING, out))
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
        """From the cache, newest first, counted above each conversation's read pointer
        (as the server counts them), with those that mention this user."""
        if self.cache is None:
            return []
        rows = []
        for c in self.cache.conversations():
            read = max(self.read_seq(c.peer), self.cache.read_upto)
            mine_unread = [m for m in self.cache.history(c.peer, None, 10_000)
                           if m.seq > read and m.sender != self.user]
            unread = [m.seq for m in mine_unread]
            rows.append(Conversation(peer=c.peer, last_seq=c.last_seq, last_ts=c.last_ts,
                                     last_body=c.last_body, unread=len(unread),
                                     mentions=len([m for m in mine_unread
                                                   if self.user in (m.mentions or ())]),
                                     read_seq=self.read_seq(c.peer)))
        return rows

    def history(self, peer: str, before_seq: int | None = None,
                limit: int = 50) -> defer.Deferred[list[ChatMessage]]:
        """A page of the conversation as the server has it (``on_server``), merged into the
        cache; asked pages are recorded.  With ``offline`` set the cache's alone (as the
        real core answers); while ``page_gate`` is set the newest page waits for it (a slow
        link; its failure is a link that broke)."""
        self.pages_asked.append((peer, before_seq, limit))
        if self.cache is None:
            return defer.succeed([])
        if self.offline:
            return defer.succeed(self.cache.history(peer, before_seq, limit))
        if self.page_gate is not None and before_seq is None:
            gate, d = self.page_gate, defer.Deferred[list[ChatMessage]]()

            def settle(result: Any) -> None:
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(self._page(peer, before_seq, limit))
            gate.addBoth(settle)
            return d
        return defer.succeed(self._page(peer, before_seq, limit))

    def _page(self, peer: str, before_seq: int | None, limit: int) -> list[ChatMessage]:
        assert self.cache is not None
        bound = before_seq if before_seq is not None else 2**62
        page = sorted((m for m in self.on_server if m.peer(self.user or "") == peer
                       and m.seq < bound), key=lambda m: m.seq)[-limit:]
        self.cache.put_many(page)
        return self.cache.history(peer, before_seq, limit)

    def cached(self, peer: str, limit: int = 50) -> list[ChatMessage]:
        """From the cache alone."""
        return self.cache.history(peer, None, limit) if self.cache is not None else []

    def newest(self, peer: str, limit: int = 50) -> defer.Deferred[list[ChatMessage]]:
        """The newest page as :meth:`history` gives it, but failing offline as the real
        core does."""
        if self.offline:
            self.pages_asked.append((peer, None, limit))
            return defer.fail(errors.Unavailable("not connected"))
        return self.history(peer, None, limit)

    def mark_read(self, peer: str, seq: int) -> bool:
        """Move the conversation's read pointer forward, recording each move."""
        if seq <= self.read_seq(peer):
            return False
        self.read_pointers[peer] = seq
        self.marks.append((peer, seq))
        self.emit(UnreadChanged())  # type: ignore[arg-type]
        return True

    def read_seq(self, peer: str) -> int:
        """The conversation's read pointer."""
        return self.read_pointers.get(peer, 0)

    def search(self, text: str, peer: str | None = None,
               limit: int = 20) -> defer.Deferred[list[ChatMessage]]:
        """Messages in the cache or on the server containing ``text``, newest first."""
        self.searches.append(text)
        known = {m.seq: m for m in self.on_server}
        if self.cache is not None:
            for c in self.cache.conversations():
                known.update((m.seq, m) for m in self.cache.history(c.peer, None, 10_000))
        found = [m for m in known.values() if text.lower() in m.body.lower()
                 and (peer is None or m.peer(self.user or "") == peer)]
        return defer.succeed(sorted(found, key=lambda m: -m.seq)[:limit])

    def pending(self, peer: str) -> list[E.OutgoingMessage]:
        """Own messages without a seq."""
        return [m for m in self.outgoing_by_id.values() if m.peer() == peer and m.seq is None]

    def message(self, mid: str) -> ChatMessage | None:
        """From the cache, in its current state."""
        return self.cache.message(mid) if self.cache else None

    def edit(self, mid: str, body: str) -> defer.Deferred[Any]:
        """Edit one's own text message, as the node would."""
        return self._change("edit", mid, body, True)

    def recall(self, mid: str) -> defer.Deferred[Any]:
        """Recall one's own message, as the node would."""
        return self._change("recall", mid, "", True)

    def react(self, mid: str, emoji: str, on: bool = True) -> defer.Deferred[Any]:
        """Add or remove a reaction, as the node would."""
        return self._change("reaction", mid, emoji, on)

    def _change(self, kind: str, mid: str, body: str, on: bool) -> defer.Deferred[Any]:
        self.changes.append((kind, mid, body, on))
        original = self.message(mid)
        if self.refuse_changes is not None:
            return defer.fail(self.refuse_changes)
        if original is None:
            return defer.fail(errors.NotFound(f"no message {mid} in your inbox"))
        if kind != "reaction" and original.sender != self.user:
            return defer.fail(errors.Forbidden("only its sender changes a message"))

        def stored(_: Any = None) -> ChatMessage:
            assert self.user is not None
            return self.change_from(self.user, kind, mid, body, on)
        if self.change_gate is not None:
            return self.change_gate.addCallback(stored)
        return defer.succeed(stored())

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
        self.emit(E.RosterChanged("contacts"))
        return defer.succeed(contact)

    def remove_contact(self, user: str) -> defer.Deferred[None]:
        """Drop a contact or request."""
        self.calls.append(("remove_contact", user))
        if self.contact_map.pop(user, None) is None:
            return defer.fail(errors.NotFound("no such contact"))
        self.emit(E.RosterChanged("contacts"))
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
        self.emit(E.RosterChanged("groups"))
        return defer.succeed(group)

    def rename_group(self, group_id: str, name: str) -> defer.Deferred[dict[str, Any]]:
        """Rename."""
        group = self.group_map[group_id.lstrip("#")]
        group["name"] = name
        self.emit(E.RosterChanged("groups"))
        return defer.succeed(group)

    def add_member(self, group_id: str, user: str) -> defer.Deferred[dict[str, Any]]:
        """Add a member."""
        group = self.group_map[group_id.lstrip("#")]
        group["members"].append(user)
        self.emit(E.RosterChanged("groups"))
        return defer.succeed(group)

    def remove_member(self, group_id: str, user: str) -> defer.Deferred[None]:
        """Remove a member (the user itself: leave)."""
        gid = group_id.lstrip("#")
        if user == self.user:
            self.group_map.pop(gid)
        else:
            self.group_map[gid]["members"].remove(user)
        self.emit(E.RosterChanged("groups"))
        return defer.succeed(None)

    def leave_group(self, group_id: str) -> defer.Deferred[None]:
        """Leave."""
        return self.remove_member(group_id, self.user or "")

    def send_file(self, peer: str, path: str,
                  progress: Any = None) -> defer.Deferred[E.OutgoingMessage]:
        """Report progress in two steps, then send a file message; ``upload_gate`` holds it."""
        size = os.path.getsize(path)
        mime = transfer.mime_of(path)
        if progress is not None:
            progress(size // 2, size)
        def finish(_: Any = None) -> E.OutgoingMessage:
            if progress is not None:
                progress(size, size)
            out = E.OutgoingMessage(id=f"o{next(self._ids)}", body="", created=1_700_000_000_000,
                                    kind=transfer.kind_for(mime),
                                    file={"id": "f1", "name": os.path.basename(path), "size": size,
                                          "mime": mime})
            if peer.startswith("#"):
                out.group = peer[1:]
            else:
                out.to = peer
            self.outgoing_by_id[out.id] = out
            self.emit(E.MessageStatus(out.id, E.SENDING, out))
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
        self._node, self._state = NODE, E.CONNECTING
        self.emit(E.Connecting(NODE))
        self._state = E.CONNECTED
        self.emit(E.Connected(NODE, user, self.seq))

    def receive(self, sender: str, body: str, ts: int = 1_700_000_000_000,
                group: str | None = None, kind: str = "text",
                file: dict[str, Any] | None = None, reply_to: str | None = None,
                mentions: list[str] | None = None) -> ChatMessage:
        """A message from ``sender`` arrives (in ``group``, if given)."""
        self.seq += 1
        entry = ChatMessage(seq=self.seq, mid=f"m{self.seq}", id=f"c{self.seq}", sender=sender,
                            to=None if group else self.user, group=group, ts=ts, body=body,
                            kind=kind, file=file, reply_to=reply_to, mentions=mentions)
        assert self.cache is not None
        self.cache.put(entry)
        self.emit(E.MessageReceived(entry))
        return entry

    def change_from(self, sender: str, kind: str, mid: str, body: str = "",
                    on: bool = True) -> ChatMessage:
        """An edit, recall or reaction of ``sender`` to ``mid`` is stored: cached, then told
        as the real core tells it (MessageReceived, then MessageChanged)."""
        assert self.cache is not None and self.user is not None
        original = self.cache.message(mid)
        self.seq += 1
        to = None
        if original is not None and original.group is None:
            to = original.sender if sender == self.user and original.sender != self.user \
                else original.to if sender == self.user else self.user
        entry = ChatMessage(seq=self.seq, mid=f"m{self.seq}", id=f"c{self.seq}", sender=sender,
                            to=to, group=original.group if original else None,
                            ts=1_700_000_000_000 + self.seq, body=body, kind=kind, ref=mid,
                            on=on if kind == "reaction" else None)
        self.cache.put(entry)
        if sender != self.user:
            self.emit(E.MessageReceived(entry))
        changed = self.cache.message(mid)
        if changed is not None:
            self.emit(E.MessageChanged(changed, entry))
        return entry

    def stored_earlier(self, sender: str, body: str, to: str | None = None,
                       group: str | None = None) -> ChatMessage:
        """A message the server holds but this device never received (older history)."""
        self.seq += 1
        entry = ChatMessage(seq=self.seq, mid=f"m{self.seq}", id=f"c{self.seq}", sender=sender,
                            to=None if group else (to or self.user), group=group,
                            ts=1_700_000_000_000, body=body)
        self.on_server.append(entry)
        return entry

    def read_elsewhere(self, peer: str, seq: int) -> None:
        """Another device of this user read ``peer``'s conversation up to ``seq``."""
        self.read_pointers[peer] = max(seq, self.read_seq(peer))
        with_, group = (None, peer[1:]) if peer.startswith("#") else (peer, None)
        self.emit(ConversationReadUpTo(seq, with_, group))  # type: ignore[arg-type]
        self.emit(UnreadChanged())  # type: ignore[arg-type]

    def confirm(self, id: str) -> None:
        """The node answers ``sent``."""
        out = self.outgoing_by_id[id]
        self.seq += 1
        out.state, out.seq, out.mid, out.ts = E.SENT, self.seq, f"m{self.seq}", out.created
        assert self.cache is not None and self.user is not None
        self.cache.put(ChatMessage(seq=out.seq, mid=out.mid, id=out.id, sender=self.user,
                                   to=out.to, group=out.group, ts=out.ts, body=out.body,
                                   kind=out.kind, file=out.file, reply_to=out.reply_to,
                                   mentions=out.mentions))
        self.emit(E.MessageStatus(id, E.SENT, out))

    def deliver(self, id: str, by: str = "bob") -> None:
        """The recipient acknowledged."""
        out = self.outgoing_by_id[id]
        out.state = E.DELIVERED
        out.delivered_by.add(by)
        if self.cache is not None and out.mid:
            self.cache.add_receipt(out.mid, by, False)
        self.emit(E.MessageStatus(id, E.DELIVERED, out))
        self.emit(E.Delivered(id, out.mid or "", by))

    def fail(self, id: str) -> None:
        """No sent came in time."""
        out = self.outgoing_by_id[id]
        out.state, out.error = E.FAILED, "no answer from the node"
        self.emit(E.MessageStatus(id, E.FAILED, out))

    def set_state(self, state: str, event: E.SessionEvent) -> None:
        """Change the connection state and report it."""
        self._state = state
        self.emit(event)


def shown(app: ChatApp) -> list[str]:
    """The lines of the open conversation."""
    return app.screen.query_one(MessageLog).lines()


def row_of(app: ChatApp, text: str) -> MessageRow:
    """The one row whose line contains ``text``."""
    (row,) = [r for r in log_of(app).rows() if text in r.plain]
    return row


def styles_of(row: MessageRow) -> dict[str, list[str]]:
    """The styled pieces of the row's text, by their style."""
    content = row.render()
    plain = str(content)
    found: dict[str, list[str]] = {}
    for span in content.spans:  # type: ignore[attr-defined]
        found.setdefault(str(span.style), []).append(plain[span.start:span.end])
    return found


async def sent(pilot: Any, core: FakeChatCore, text: str) -> str:
    """Send ``text`` from the input and have the node store it: its mid."""
    await submit(pilot, text)
    out = list(core.outgoing_by_id.values())[-1]
    core.confirm(out.id)
    await pilot.pause()
    assert out.mid is not None
    return out.mid


def bar(app: ChatApp) -> str:
    """The connection bar's text."""
    return app.screen.query_one(ConnectionBar).plain


def log_of(app: ChatApp) -> MessageLog:
    """The open conversation's log."""
    return app.screen.query_one(MessageLog)


def input_of(app: ChatApp) -> MessageInput:
    """The message input."""
    return app.screen.query_one(MessageInput)


async def type_text(pilot: Any, text: str) -> None:
    """Put ``text`` into the input, the cursor at its end."""
    box = input_of(pilot.app)
    box.focus()
    box.text = text
    box.move_cursor(box.document.end)
    await pilot.pause()


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


@contextlib.asynccontextmanager
async def chatting(core: ChatCore, peer: str | None = None,
                   size: tuple[int, int] = (80, 24), user: str = "alice",
                   password: str = "secret123",
                   **options: Any) -> AsyncIterator[tuple[ChatApp, Pilot[Any]]]:
    """dim-chat on ``core`` (``options`` for ChatApp), logged in (as alice unless told) and,
    given a ``peer``, with that conversation open (``/open PEER``): the app and its Pilot."""
    app = ChatApp(core, user=user, password=password, **options)
    async with app.run_test(size=size) as pilot:
        await logged_in(pilot)
        if peer is not None:
            await submit(pilot, f"/open {peer}")
        yield app, pilot


USERS = {"alice": "secret123", "bob": "x" * 8, "carol": "y" * 8, "dave": "z" * 8}


def core_with_people() -> FakeChatCore:
    """alice with bob (online, a status), carol (offline) and dave's pending request."""
    core = FakeChatCore(dict(USERS))
    core.names = {"bob": "Bob Builder", "carol": "Carol", "dave": "Dave D"}
    core.contact_map = {
        "bob": {"user": "bob", "name": "Bob Builder", "status": "at work", "avatar": None,
                "online": True, "pending": None},
        "carol": {"user": "carol", "name": "Carol", "status": "", "avatar": None,
                  "online": False, "pending": None},
        "dave": {"user": "dave", "name": "Dave D", "status": "", "avatar": None,
                 "online": False, "pending": "in"}}
    return core


def notice(app: ChatApp) -> str:
    """The notice line."""
    return str(app.screen.query_one("#notice").render())


def text_of(app: ChatApp, selector: str) -> str:
    """What a Static shows."""
    return str(app.screen.query_one(selector).render())


def group_core(members: list[str] | None = None) -> FakeChatCore:
    """alice's fake core with contacts and a group "team" (g1) she owns."""
    core = core_with_people()
    core.group_map = {"g1": {"id": "g1", "name": "team", "owner": "alice",
                             "members": members or ["alice", "bob", "carol"]}}
    return core


async def eventually(pilot: Any, check: Callable[[], bool], what: str,
                     timeout: float = 3.0) -> None:
    """Let the app run until ``check()`` holds (a busy machine draws late); fail naming
    ``what`` after ``timeout`` seconds."""
    for _ in range(int(timeout / 0.05)):
        if check():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")
