"""What the terminal chat is given: :class:`ChatClient`.

:class:`ChatClient` puts a :class:`dim.client.session.ClientSession` together with login
(:class:`dim.client.gateway.GatewayClient`), the local cache and saved settings.  Its listeners
hear every session event (:mod:`dim.client.events`) across logins.
"""
from __future__ import annotations

import functools
import os
import random
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from dim import errors
from dim.client.cache import ChatMessage, Conversation, MessageCache
from dim.client.config import ClientConfig
from dim.client.conversations import ConversationReadUpTo
from dim.client.events import (Connected, EventSource, MessageChanged, MessageReceived,
    MessageStatus, NodeAddress, Notified, OFFLINE, OutgoingMessage, PresenceChanged, ReadUpTo,
    RosterChanged, SENT, Sent, SessionEvent, SessionExpired, SyncFinished)
from dim.client.session import ORDINARY_FAILURES, ClientSession, default_endpoint
from dim.client import transfer
from dim.client.gateway import GatewayClient, Progress
from dim.client.roster import Roster
from dim.client.unread import ConversationBook, UnreadChanged

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot

log = Logger()

# ---------------------------------------------------------------- what the chat is given


def _as_deferred(method: Callable[..., Any]) -> Callable[..., Any]:
    """A method whose failures, even those raised at once (no session, a file that cannot be
    opened), come back as a failed Deferred, as its callers expect."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Deferred[Any]:
        return maybeDeferred(method, *args, **kwargs)
    return wrapper


def _told_by_events(f: Failure) -> None:
    """A send's ordinary failure: the chat learns of it from the events, not the Deferred."""
    f.trap(*ORDINARY_FAILURES)


class ChatClient(EventSource):
    """Login, the live session, the local cache and saved settings: what the chat talks to.

    Listeners subscribed here hear every session event, across logins.  All methods that
    talk to the network return Deferreds; everything else answers at once from memory and
    the cache.
    """

    def __init__(self, gateway: GatewayClient, reactor: Any, *,
                 config: ClientConfig | None = None,
                 cache_factory: Callable[[str, str], MessageCache] | None = MessageCache.open_for,
                 device: str = "dim-chat", rng: Callable[[], float] = random.random,
                 endpoint_factory: Callable[[Any, str, int],
                                            IStreamClientEndpoint] = default_endpoint,
                 trust_root: IOpenSSLTrustRoot | None = None,
                 ) -> None:
        super().__init__()
        self.gateway = gateway
        self.reactor = reactor
        self.config = config
        self.cache_factory = cache_factory
        self.device = device
        self.rng = rng
        self.endpoint_factory = endpoint_factory
        #: What TLS nodes' certificates are verified against (None: the system's roots).
        self.trust_root = trust_root
        self.user: str | None = None
        self.session: ClientSession | None = None
        self.cache: MessageCache | None = None
        self.roster: Roster | None = None
        #: Unread and mention counts per conversation, from the server.
        self.book: ConversationBook | None = None
        #: Where saved files go (the XDG download directory unless set).
        self.download_dir: str | None = None

    # ------------------------------------------------------------ state

    @property
    def state(self) -> str:
        """offline, connecting, connected or reconnecting."""
        return self.session.state if self.session else OFFLINE

    @property
    def node(self) -> NodeAddress | None:
        """The node the session is (or was last) connected to."""
        return self.session.node if self.session else None

    # ------------------------------------------------------------ logging in

    def resume(self, user: str | None = None) -> bool:
        """Start with a saved token of ``user`` (default: the last user); False if none."""
        if self.config is None:
            return False
        user = user or self.config.user
        token = self.config.token(self.gateway.base_url, user) if user else None
        if not user or not token:
            return False
        self.gateway.token = token
        self._start(user, token, None)
        return True

    def login(self, user: str, password: str) -> Deferred[None]:
        """Log in and connect; fails with a DimError (Unauthorized for a wrong password)."""
        d = self.gateway.login(user, password)

        def logged_in(answer: dict[str, Any]) -> None:
            name = answer.get("user") or user
            if self.config is not None:
                self.config.remember(self.gateway.base_url, name)
                self.config.save_token(self.gateway.base_url, name, answer["token"],
                                       answer.get("expires"))
            self._start(name, answer["token"], answer.get("node"))
        return d.addCallback(logged_in)

    def register(self, user: str, password: str) -> Deferred[None]:
        """Create the account, then log in with it."""
        d = self.gateway.register(user, password)
        return d.addCallback(lambda _: self.login(user, password))

    def logout(self) -> None:
        """Disconnect and forget the saved token."""
        self._disconnect()
        if self.config is not None and self.user:
            self.config.forget_token(self.gateway.base_url, self.user)

    def stop(self) -> None:
        """Disconnect (keeping the saved token) and close the cache."""
        self._disconnect()
        if self.session is not None:
            self.session.cache = None
        if self.cache is not None:
            self.cache.close()
            self.cache = None

    def _start(self, user: str, token: str, node: dict[str, Any] | None) -> None:
        if self.session is not None:
            self.session.stop()
        if self.cache is not None and self.user != user:
            self.cache.close()
            self.cache = None
        self.user = user
        if self.roster is None or self.roster.me != user:
            self.roster = Roster(self.gateway, user, lambda what: self.emit(RosterChanged(what)))
        if self.cache is None and self.cache_factory is not None:
            self.cache = self.cache_factory(self.gateway.base_url, user)
        if self.book is not None:
            self.book.stop()
        self.book = ConversationBook(self.gateway, user, self.reactor, cache=self.cache,
                                     on_change=lambda: self.emit(UnreadChanged()))  # type: ignore[arg-type]
        self.session = ClientSession(self.gateway, self.reactor, user, token, device=self.device,
                                     cache=self.cache, rng=self.rng,
                                     endpoint_factory=self.endpoint_factory,
                                     trust_root=self.trust_root)
        self.session.subscribe(self._relay)
        self.session.start(node)

    def _relay(self, event: SessionEvent) -> None:
        if isinstance(event, SessionExpired) and self.config is not None and self.user:
            self.config.forget_token(self.gateway.base_url, self.user)
        # The roster and counts first, so that listeners hearing the event see its effect.
        self._update_roster(event)
        self._update_book(event)
        self.emit(event)
        if isinstance(event, MessageReceived) and event.entry.is_change \
                and event.entry.ref is not None and self.cache is not None:
            # The session cached it, which changed the message: tell what it looks like now.
            changed = self.cache.message(event.entry.ref)
            if changed is not None:
                self.emit(MessageChanged(changed, event.entry))

    def _update_roster(self, event: SessionEvent) -> None:
        roster = self.roster
        if roster is None:
            return
        if isinstance(event, Connected):
            roster.refresh()  # what changed while this client was away
        elif isinstance(event, PresenceChanged):
            roster.set_online(event.user, event.online)
        elif isinstance(event, Notified):
            if event.event.startswith("contact_"):
                roster.refresh_contacts()
            elif event.event == "group_changed":
                roster.refresh_groups()

    def _update_book(self, event: Any) -> None:
        book = self.book
        if book is None:
            return
        if isinstance(event, MessageReceived):
            book.message(event.entry)
        elif isinstance(event, MessageStatus):
            out = event.message
            if event.state == SENT and out.seq is not None and out.mid is not None:
                book.message(ChatMessage(seq=out.seq, mid=out.mid, id=out.id,
                                         sender=self.user or "", ts=out.ts or out.created,
                                         to=out.to, group=out.group, body=out.body,
                                         kind=out.kind))
        elif isinstance(event, ConversationReadUpTo):
            if self.cache is not None:
                self.cache.mark_seen(event.peer, event.seq)
            book.read(event.peer, event.seq)
        elif isinstance(event, Connected):
            book.refresh()  # what changed while this client was away
        elif isinstance(event, (SyncFinished, ReadUpTo)):
            book.refresh_soon()

    # ------------------------------------------------------------ messages

    def send(self, to: str, body: str, *, reply_to: str | None = None,
             mentions: list[str] | None = None) -> OutgoingMessage:
        """Send ``body`` to ``to`` (a user, or ``#`` + a group id); the returned message
        changes state as events report.  ``reply_to`` is the mid of the message it answers,
        ``mentions`` the members of the group it calls."""
        return self._send(to, body, reply_to=reply_to, mentions=mentions)

    def _send(self, peer: str, body: str, **fields: Any) -> OutgoingMessage:
        """Send to ``peer`` (a user, or ``#`` + a group id); the message, whose failure the
        events report (so the Deferred's is not needed)."""
        session = self._session()
        id = session.new_id()
        if peer.startswith("#"):
            d = session.send(None, body, group=peer[1:], id=id, **fields)
        else:
            d = session.send(peer, body, id=id, **fields)
        d.addErrback(_told_by_events)
        return session.outgoing[id]

    def message(self, mid: str) -> ChatMessage | None:
        """The message ``mid`` as cached, in its current state (edited, recalled, its
        reactions); None if it is not in the cache."""
        return self.cache.message(mid) if self.cache is not None else None

    def edit(self, mid: str, body: str) -> Deferred[Sent]:
        """Replace the text of one's own message ``mid``: a Deferred of the node's
        :class:`Sent` once it stored the edit (the cache has it and listeners heard
        :class:`MessageChanged`), or failing with its refusal (``SendRefused``, also of the
        error's own class), ``SendTimedOut`` or ``WriteExpired``.  Offline it waits for the
        connection."""
        return self._change("edit", mid, body, True)

    def recall(self, mid: str) -> Deferred[Sent]:
        """Take back one's own message ``mid`` (its file too): a Deferred, as for edit."""
        return self._change("recall", mid, "", True)

    def react(self, mid: str, emoji: str, on: bool = True) -> Deferred[Sent]:
        """Add (``on``) or remove a reaction to message ``mid``: a Deferred, as for edit."""
        return self._change("reaction", mid, emoji, on)

    @_as_deferred
    def _change(self, kind: str, mid: str, body: str, on: bool) -> Deferred[Sent]:
        session = self._session()
        if kind == "edit":
            d = session.edit(mid, body)
        elif kind == "recall":
            d = session.recall(mid)
        else:
            d = session.react(mid, body, on)

        def stored(sent: Sent) -> Sent:
            original = self.message(mid)
            me = self.user or ""
            to = None
            if original is not None and original.group is None:
                to = original.to if original.sender == me else original.sender
            change = ChatMessage(seq=sent.seq, mid=sent.mid, id=sent.id, sender=me, ts=sent.ts,
                                 to=to, group=original.group if original else None, body=body,
                                 kind=kind, ref=mid, on=on if kind == "reaction" else None)
            self._changed(change)
            return sent
        return d.addCallback(stored)

    def _changed(self, change: ChatMessage) -> None:
        """Keep an edit, recall or reaction in the cache and tell listeners of the message
        it changed, in its new state."""
        if self.cache is None:
            return
        self.cache.put(change)
        if change.ref is not None:
            changed = self.cache.message(change.ref)
            if changed is not None:
                self.emit(MessageChanged(changed, change))

    def _disconnect(self) -> None:
        """Stop the roster, the counts and the session (each stays as it is, offline)."""
        if self.roster is not None:
            self.roster.stop()
        if self.book is not None:
            self.book.stop()
        if self.session is not None:
            self.session.stop()

    def _session(self) -> ClientSession:
        if self.session is None:
            raise errors.Unauthorized("not logged in")
        return self.session

    def typing(self, peer: str) -> None:
        """The person is typing in ``peer``'s conversation (throttled to one frame per 3 s)."""
        if self.session is None:
            return
        if peer.startswith("#"):
            self.session.typing(group=peer[1:])
        else:
            self.session.typing(to=peer)

    def reconnect(self) -> bool:
        """Connect again now, without waiting out the backoff; False if not logged in."""
        return self.session.reconnect_now() if self.session is not None else False

    def receipts(self, mids: list[str]) -> dict[str, tuple[set[str], set[str]]]:
        """Who acknowledged and who read each of one's own messages ``mids`` (kept in the
        cache), as (delivered to, read by)."""
        return self.cache.receipts(mids) if self.cache is not None else {}

    def retry(self, id: str) -> OutgoingMessage:
        """Send a failed message again."""
        session = self._session()
        session.retry(id).addErrback(_told_by_events)
        return session.outgoing[id]

    def conversations(self) -> list[Conversation]:
        """Every conversation with its unread and mention counts, newest first.

        The counts are the server's (:class:`ConversationBook`); until it has answered once
        (offline), those this device's cache kept."""
        cached = self.cache.conversations() if self.cache is not None else []
        book = self.book
        if book is None or not book.loaded:
            return cached
        rows = {c.peer: Conversation(peer=c.peer, last_seq=c.last_seq, last_ts=c.last_ts,
                                     last_body=c.last_body, unread=c.unread,
                                     mentions=c.mentions, read_seq=c.read_seq)
                for c in book.conversations()}
        for c in cached:
            known = rows.get(c.peer)
            if known is None:
                rows[c.peer] = Conversation(peer=c.peer, last_seq=c.last_seq, last_ts=c.last_ts,
                                            last_body=c.last_body, unread=0)
            elif c.last_seq > known.last_seq:
                rows[c.peer] = Conversation(peer=c.peer, last_seq=c.last_seq, last_ts=c.last_ts,
                                            last_body=c.last_body, unread=known.unread,
                                            mentions=known.mentions, read_seq=known.read_seq)
        return sorted(rows.values(), key=lambda c: (-c.last_seq, c.peer))

    def cached(self, peer: str, limit: int = 50) -> list[ChatMessage]:
        """The newest ``limit`` messages of one conversation this device's cache holds,
        oldest first, at once (what to draw while the server's page is on its way)."""
        return self.cache.history(peer, None, limit) if self.cache is not None else []

    def newest(self, peer: str, limit: int = 50) -> Deferred[list[ChatMessage]]:
        """The server's newest page of one conversation (``GET /v1/messages``), kept in the
        cache: a Deferred of that page as the cache has it, oldest first.  Unlike
        :meth:`history` it fails when the server cannot be asked (offline), so that a
        caller can tell the server's page from the cache's."""
        if self.cache is None or self.gateway.token is None:
            return fail(errors.Unavailable("not connected"))
        return self._page(peer, None, limit)

    def _page(self, peer: str, before_seq: int | None,
              limit: int) -> Deferred[list[ChatMessage]]:
        """A page of the conversation from the gateway, merged into the cache; fails as the
        request does."""
        d = self.gateway.conversation_messages(*_with_group(peer), before=before_seq,
                                               limit=limit)

        def fetched(answer: dict[str, Any]) -> list[ChatMessage]:
            if self.cache is None:
                return []
            self.cache.put_many(ChatMessage.from_json(m) for m in answer.get("messages", []))
            return self.cache.history(peer, before_seq, limit)
        return d.addCallback(fetched)

    def history(self, peer: str, before_seq: int | None = None,
                limit: int = 50) -> Deferred[list[ChatMessage]]:
        """Up to ``limit`` messages of one conversation below ``before_seq`` (default: its
        newest), oldest first.

        Asks the gateway for that page of the conversation (``GET /v1/messages`` with
        ``with`` or ``group`` and ``before``), keeps it in the cache (each seq once), and
        answers from the cache; offline, from the cache alone.
        """
        cache = self.cache
        if cache is None:
            return succeed([])
        if self.gateway.token is None:
            return succeed(cache.history(peer, before_seq, limit))

        def offline(f: Failure) -> list[ChatMessage]:
            log.info("could not fetch messages of {peer}: {f}", peer=peer,
                     f=f.getErrorMessage())
            return cache.history(peer, before_seq, limit) if self.cache is not None else []
        return self._page(peer, before_seq, limit).addErrback(offline)

    def search(self, text: str, peer: str | None = None,
               limit: int = 20) -> Deferred[list[ChatMessage]]:
        """This user's messages whose text contains ``text`` (any case, any script), newest
        first, of every conversation or only ``peer``'s.  Those found are cached."""
        with_, group = _with_group(peer) if peer is not None else (None, None)
        d = self.gateway.search_messages(text, with_, group, limit=limit)

        def found(answer: dict[str, Any]) -> list[ChatMessage]:
            messages = [ChatMessage.from_json(m) for m in answer.get("messages", [])]
            if self.cache is not None:
                self.cache.put_many(messages)
            return messages
        return d.addCallback(found)

    def pending(self, peer: str) -> list[OutgoingMessage]:
        """Messages to ``peer`` this session sent that have no seq yet (sending or failed)."""
        if self.session is None:
            return []
        return [m for m in self.session.outgoing.values() if m.peer() == peer and m.seq is None]

    def outgoing(self, id: str) -> OutgoingMessage | None:
        """A message this session sent, by id."""
        return self.session.outgoing.get(id) if self.session else None

    def read_seq(self, peer: str) -> int:
        """How far ``peer``'s conversation is read, on any device (0 if not known)."""
        return self.book.read_seq(peer) if self.book is not None else 0

    def mark_read(self, peer: str, seq: int) -> bool:
        """The person has seen ``peer``'s conversation up to ``seq`` (the newest message on
        screen).  Moves that conversation's read pointer forward (never back): the counts
        clear here at once, and the node is told with a ``read`` naming the conversation,
        so the person's other devices clear the same messages.  True if it moved."""
        if self.book is None or not self.book.mark_read(peer, seq):
            return False
        if self.cache is not None:
            self.cache.mark_seen(peer, seq)
        if self.session is not None:
            with_, group = _with_group(peer)
            self.session.read_conversation(seq, with_=with_, group=group)
        return True

    def user_info(self, name: str) -> Deferred[dict[str, Any]]:
        """``{user, online, name, status, avatar}``; NotFound if no such user.  A display
        name or status that changed since the roster was fetched is taken over."""
        def got(answer: dict[str, Any]) -> dict[str, Any]:
            if self.roster is not None and isinstance(answer, dict):
                self.roster.learn(answer)
            return answer
        return self.gateway.user(name).addCallback(got)

    # ------------------------------------------------------------ people

    def contacts(self) -> list[dict[str, Any]]:
        """Contacts and pending requests: requests to answer first, then online, offline."""
        return self.roster.contact_list() if self.roster else []

    def groups(self) -> list[dict[str, Any]]:
        """This user's groups, by name."""
        return self.roster.group_list() if self.roster else []

    def group(self, group_id: str) -> dict[str, Any] | None:
        """One of this user's groups (``{id, name, owner, members}``), if known."""
        return self.roster.groups.get(group_id.lstrip("#")) if self.roster else None

    def display_name(self, user: str) -> str:
        """How to name ``user`` (or ``#`` + a group id) to the person."""
        if user.startswith("#"):
            group = self.group(user)
            return "# " + str(group.get("name")) if group else user
        return self.roster.name(user) if self.roster else user

    def is_online(self, user: str) -> bool | None:
        """Whether a contact is online; None for someone not a contact."""
        return self.roster.online(user) if self.roster else None

    def own_profile(self) -> dict[str, Any]:
        """The person's own profile as last fetched: ``{user, name, status, avatar}``."""
        return dict(self.roster.own) if self.roster else {}

    def refresh_people(self) -> Deferred[Any]:
        """Fetch contacts, groups and the own profile again."""
        return self.roster.refresh() if self.roster else succeed(None)

    def search_users(self, text: str) -> Deferred[list[dict[str, Any]]]:
        """Users whose user or display name contains ``text``."""
        def got(answer: dict[str, Any]) -> list[dict[str, Any]]:
            users = list(answer.get("users", []))
            if self.roster is not None:
                self.roster.remember(users)
            return users
        return self.gateway.search_users(text).addCallback(got)

    def add_contact(self, user: str) -> Deferred[dict[str, Any]]:
        """Ask ``user`` to be a contact, or accept their request: the contact entry."""
        def got(answer: dict[str, Any]) -> dict[str, Any]:
            contact = answer.get("contact") or {}
            if self.roster is not None and "user" in contact:
                self.roster.put_contact(contact)
            return contact
        return self.gateway.add_contact(user).addCallback(got)

    def remove_contact(self, user: str) -> Deferred[None]:
        """Remove a contact, decline a request, or withdraw one's own."""
        def done(_: Any) -> None:
            if self.roster is not None:
                self.roster.drop_contact(user)
        return self.gateway.remove_contact(user).addCallback(done)

    def update_profile(self, name: str | None = None,
                       status: str | None = None) -> Deferred[dict[str, Any]]:
        """Change the display name and/or status: the new profile."""
        fields = {k: v for k, v in (("name", name), ("status", status)) if v is not None}

        def got(answer: dict[str, Any]) -> dict[str, Any]:
            if self.roster is not None:
                self.roster.own = dict(answer)
                self.emit(RosterChanged("profile"))
            return answer
        return self.gateway.update_profile(**fields).addCallback(got)

    @_as_deferred
    def set_avatar(self, path: str, progress: Progress | None = None) -> Deferred[dict[str, Any]]:
        """Upload the image at ``path`` and make it the avatar: the new profile.
        BadRequest if the gateway does not take it for an image."""
        source = transfer.ClosableReader(open(path, "rb"))
        d = self.gateway.upload(source, os.path.basename(path), transfer.mime_of(path), progress)

        def closed(result: Any) -> Any:
            source.close()
            return result

        def uploaded(file: dict[str, Any]) -> Deferred[dict[str, Any]]:
            if not str(file.get("mime", "")).startswith("image/"):
                raise errors.BadRequest(f"{os.path.basename(path)} is not an image")
            return self.gateway.update_profile(avatar=file["id"])

        def got(answer: dict[str, Any]) -> dict[str, Any]:
            if self.roster is not None:
                self.roster.own = dict(answer)
                self.emit(RosterChanged("profile"))
            return answer
        return d.addBoth(closed).addCallback(uploaded).addCallback(got)

    # ------------------------------------------------------------ groups

    def _group_answer(self, answer: dict[str, Any]) -> dict[str, Any]:
        group = answer.get("group") or {}
        if self.roster is not None and "id" in group:
            self.roster.put_group(group)
        return group

    def create_group(self, name: str, members: list[str]) -> Deferred[dict[str, Any]]:
        """Make a group with ``members`` (this user is added and owns it)."""
        return self.gateway.create_group(name, members).addCallback(self._group_answer)

    def rename_group(self, group_id: str, name: str) -> Deferred[dict[str, Any]]:
        """Rename a group (owner only)."""
        return self.gateway.rename_group(group_id.lstrip("#"), name).addCallback(self._group_answer)

    def add_member(self, group_id: str, user: str) -> Deferred[dict[str, Any]]:
        """Add ``user`` to a group (owner only)."""
        return self.gateway.add_members(group_id.lstrip("#"),
                                        [user]).addCallback(self._group_answer)

    def remove_member(self, group_id: str, user: str) -> Deferred[None]:
        """Remove ``user`` from a group (owner only, or oneself)."""
        gid = group_id.lstrip("#")

        def done(_: Any) -> Any:
            if self.roster is None:
                return None
            if user == self.user:
                self.roster.drop_group(gid)
                return None
            return self.roster.refresh_groups()
        return self.gateway.remove_member(gid, user).addCallback(done)

    def leave_group(self, group_id: str) -> Deferred[None]:
        """Leave a group."""
        return self.remove_member(group_id, self.user or "")

    # ------------------------------------------------------------ files

    @_as_deferred
    def send_file(self, peer: str, path: str,
                  progress: Progress | None = None) -> Deferred[OutgoingMessage]:
        """Upload the file at ``path`` (progress as bytes go), then send it to ``peer``:
        kind "image" for images, else "file"."""
        self._session()
        mime = transfer.mime_of(path)
        source = transfer.ClosableReader(open(path, "rb"))
        d = self.gateway.upload(source, os.path.basename(path), mime, progress)

        def uploaded(file: dict[str, Any]) -> OutgoingMessage:
            ref = {"id": file["id"], "name": file.get("name") or os.path.basename(path),
                   "size": int(file.get("size", 0)), "mime": file.get("mime") or mime}
            return self._send(peer, "", kind=transfer.kind_for(ref["mime"]), file=ref)

        def closed(result: Any) -> Any:
            source.close()
            return result
        return d.addBoth(closed).addCallback(uploaded)

    @_as_deferred
    def save_file(self, file: dict[str, Any], progress: Progress | None = None,
                  directory: str | None = None) -> Deferred[str]:
        """Download a received file into ``directory`` (default: the download directory),
        resuming a partial one: the path it was saved at."""
        directory = directory or self.download_dir or transfer.download_dir()
        os.makedirs(directory, exist_ok=True)
        part = transfer.partial_path(directory, str(file["id"]))
        d = self.gateway.download(str(file["id"]), part, progress)

        def whole(size: int) -> str:
            final = transfer.free_path(directory, str(file.get("name") or file["id"]))
            os.replace(part, final)
            return final
        return d.addCallback(whole)


def _with_group(peer: str) -> tuple[str | None, str | None]:
    """``(with_, group)`` naming the conversation ``peer`` (a user, or ``#`` + a group id)."""
    return (None, peer[1:]) if peer.startswith("#") else (peer, None)
