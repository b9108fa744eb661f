"""The in-memory twin of DIM's store, for unit tests: the same semantics, nothing durable."""
from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from typing import Any

import msgspec
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from dim.errors import BadRequest, Conflict, Forbidden, NotFound, TooLarge
from dim.store.interface import (ChangeOp, Contact, Conversation, FileRecord, Group,
                                 InboxEntry, IStore, Profile, Receipt, SendResult,
                                 StoredMessage, StoreOp, apply_each, check_change,
                                 conversation_of, counts_unread, found_by, react,
                                 sender_conversation)


def base36(number: int) -> str:
    """``number`` (>= 0) written in base 36, lower case: the short form of a message id."""
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


@dataclass
class _Record:
    """One stored message with the seq it has in every inbox and who its recipients are."""

    message: StoredMessage
    seqs: dict[str, int]
    recipients: frozenset[str]


@dataclass
class _Conv:
    """One conversation of an inbox: its entries' seqs, read pointer and unread count."""

    seqs: list[int] = field(default_factory=list)
    read: int = 0
    unread: int = 0
    #: The seqs of the entries that mention the inbox's user.
    mentioned: list[int] = field(default_factory=list)


@dataclass
class _Inbox:
    """One user's inbox: its messages in seq order and how far they were acked and read."""

    password_hash: str
    created: int
    mids: list[str] = field(default_factory=list)
    acked: int = 0
    read: int = 0
    convs: dict[str, _Conv] = field(default_factory=dict)
    #: The conversation key of every entry, in seq order (parallel to ``mids``).
    entry_convs: list[str] = field(default_factory=list)


@implementer(IStore)
class MemoryStore:
    """An :class:`IStore` held in dictionaries; every method returns an already-fired Deferred.

    ``clock`` (optional) lets :meth:`revoke_token` purge revocations whose expiry has passed.
    """

    def __init__(self, clock: IReactorTime | None = None) -> None:
        self._clock = clock
        self._users: dict[str, _Inbox] = {}
        self._names: list[str] = []
        self._revoked: dict[str, int] = {}
        self._token_epochs: dict[str, tuple[int, str | None]] = {}
        self._messages: dict[str, _Record] = {}
        self._by_client_id: dict[tuple[str, str], str] = {}
        self._next_mid = 1
        self._closed = False
        self._profiles: dict[str, Profile] = {}
        self._contacts: dict[str, dict[str, str | None]] = {}
        self._groups: dict[str, Group] = {}
        self._group_ids = itertools.count(1)
        self._groups_by_user: dict[str, dict[str, None]] = {}
        self._files: dict[str, FileRecord] = {}
        #: file id -> user -> how many of the user's messages, not recalled, point at it.
        self._file_grants: dict[str, dict[str, int]] = {}

    # -- users -----------------------------------------------------------------------------

    def create_user(self, user: str, password_hash: str, ts: int) -> defer.Deferred[None]:
        """Add a user; fails with Conflict if the name is taken."""
        if user in self._users:
            return defer.fail(Conflict(f"user {user!r} exists"))
        self._users[user] = _Inbox(password_hash, ts)
        self._profiles[user] = Profile(user=user, name=user)
        bisect.insort(self._names, user)
        return defer.succeed(None)

    def get_password_hash(self, user: str) -> defer.Deferred[str | None]:
        """The user's password hash, or None for an unknown user."""
        inbox = self._users.get(user)
        return defer.succeed(inbox.password_hash if inbox else None)

    def set_password_hash(self, user: str, password_hash: str) -> defer.Deferred[None]:
        """Replace the user's password hash; NotFound for an unknown user."""
        inbox = self._users.get(user)
        if inbox is None:
            return defer.fail(NotFound(f"no such user: {user}"))
        inbox.password_hash = password_hash
        return defer.succeed(None)

    def user_exists(self, user: str) -> defer.Deferred[bool]:
        """Whether the user exists."""
        return defer.succeed(user in self._users)

    def list_users(self, prefix: str, limit: int) -> defer.Deferred[list[str]]:
        """User names starting with ``prefix``, in name order, at most ``limit``."""
        found: list[str] = []
        start = bisect.bisect_left(self._names, prefix)
        for name in self._names[start:]:
            if len(found) >= limit or not name.startswith(prefix):
                break
            found.append(name)
        return defer.succeed(found)

    # -- tokens ----------------------------------------------------------------------------

    def revoke_token(self, jti: str, expires: int) -> defer.Deferred[None]:
        """Mark a token id revoked until ``expires`` (seconds since the epoch)."""
        if self._clock is not None:
            now = self._clock.seconds()
            for old in [j for j, until in self._revoked.items() if until < now]:
                del self._revoked[old]
        self._revoked[jti] = max(expires, self._revoked.get(jti, expires))
        return defer.succeed(None)

    def is_revoked(self, jti: str) -> defer.Deferred[bool]:
        """Whether a token id was revoked (and not purged since its expiry)."""
        return defer.succeed(jti in self._revoked)

    def token_epoch(self, user: str) -> defer.Deferred[tuple[int, str | None]]:
        """The user's token epoch and the token id its last bump kept."""
        return defer.succeed(self._token_epochs.get(user, (0, None)))

    def bump_token_epoch(self, user: str, keep: str) -> defer.Deferred[int]:
        """A new token epoch for ``user``, keeping the token id ``keep``."""
        epoch = self._token_epochs.get(user, (0, None))[0] + 1
        self._token_epochs[user] = (epoch, keep)
        return defer.succeed(epoch)

    # -- messages --------------------------------------------------------------------------

    def store_message(self, sender: str, client_id: str, recipients: list[str],
                      group: str | None, body: str, kind: str, file: dict[str, Any] | None,
                      ts: int, reply_to: str | None = None,
                      mentions: list[str] | None = None) -> defer.Deferred[SendResult]:
        """Store one message in the sender's inbox and every recipient's."""
        known = self._by_client_id.get((sender, client_id))
        if known is not None:
            record = self._messages[known]
            return defer.succeed(
                SendResult(message=record.message, seqs=dict(record.seqs), duplicate=True))
        for name in [sender, *recipients]:
            if name not in self._users:
                return defer.fail(NotFound(f"no such user: {name}", ref=client_id))
        if reply_to is not None:
            original = self._messages.get(reply_to)
            if (original is None or sender not in original.seqs
                    or conversation_of(original.message, sender)
                    != sender_conversation(sender, recipients, group)):
                return defer.fail(BadRequest(
                    "reply_to must be a message of this conversation", ref=client_id))
        mid = base36(self._next_mid)
        self._next_mid += 1
        to = recipients[0] if group is None and recipients else None
        message = StoredMessage(mid=mid, id=client_id, sender=sender, ts=ts, to=to,
                                group=group, body=body, kind=kind, file=file,
                                reply_to=reply_to, mentions=mentions)
        seqs: dict[str, int] = {}
        for name in dict.fromkeys([sender, *recipients]):
            inbox = self._users[name]
            inbox.mids.append(mid)
            seqs[name] = len(inbox.mids)
            key = conversation_of(message, name)
            inbox.entry_convs.append(key)
            conv = inbox.convs.setdefault(key, _Conv())
            conv.seqs.append(seqs[name])
            if counts_unread(message, name):
                conv.unread += 1
                if mentions and name in mentions:
                    conv.mentioned.append(seqs[name])
        self._messages[mid] = _Record(message, seqs, frozenset(recipients))
        if isinstance(file, dict) and isinstance(file.get("id"), str):
            grants = self._file_grants.setdefault(file["id"], {})
            for name in seqs:
                grants[name] = grants.get(name, 0) + 1
        self._by_client_id[(sender, client_id)] = mid
        return defer.succeed(SendResult(message=message, seqs=dict(seqs)))

    def apply(self, ops: list[StoreOp]) -> defer.Deferred[list[Any]]:
        """Run a batch of sends and acks in order; one outcome each (see IStore.apply)."""
        return apply_each(self, ops)

    def change_message(self, op: ChangeOp) -> defer.Deferred[SendResult]:
        """Store an edit, recall or reaction and change the original's current state."""
        sender = op.sender
        known = self._by_client_id.get((sender, op.client_id))
        if known is not None:
            return self.store_message(sender, op.client_id, [], None, "", op.kind, None, 0)
        record = self._messages.get(op.ref)
        if record is None or sender not in record.seqs:
            return defer.fail(NotFound(f"no message {op.ref} in your inbox", ref=op.client_id))
        original = record.message
        try:
            check_change(original, op)
        except Forbidden as e:
            return defer.fail(e)
        holders = [name for name in record.seqs if name != sender]
        d = self.store_message(sender, op.client_id, holders, original.group,
                               op.body if op.kind != "recall" else "", op.kind, None, op.ts)
        result = self._messages[self._by_client_id[(sender, op.client_id)]]
        result.message.ref = op.ref
        if op.kind == "reaction":
            result.message.on = op.on
        if op.kind == "edit":
            original.body, original.edited = op.body, op.ts
        elif op.kind == "recall":
            original.recalled = True
            file_id = original.file.get("id") if isinstance(original.file, dict) else None
            if isinstance(file_id, str):
                grants = self._file_grants.get(file_id, {})
                for name in record.seqs:
                    grants[name] -= 1
                    if grants[name] <= 0:
                        del grants[name]
        else:
            original.reactions = react(original.reactions, op.body, sender, op.on)
        return d

    def search_messages(self, user: str, text: str, conv: str | None,
                        limit: int) -> defer.Deferred[list[InboxEntry]]:
        """A scan of the inbox (or of one conversation), newest first."""
        inbox = self._users.get(user)
        if inbox is None:
            return defer.succeed([])
        if conv is not None:
            seqs = inbox.convs[conv].seqs if conv in inbox.convs else []
        else:
            seqs = range(1, len(inbox.mids) + 1)  # type: ignore[assignment]
        needle = text.casefold()
        found: list[InboxEntry] = []
        for at in reversed(seqs):
            if len(found) >= limit:
                break
            record = self._messages[inbox.mids[at - 1]]
            if found_by(record.message, needle):
                found.append(self._entry(record, at))
        return defer.succeed(found)

    def fetch(self, user: str, after: int,
              limit: int) -> defer.Deferred[tuple[list[InboxEntry], int]]:
        """``(entries, last_seq)``: up to ``limit`` entries with seq > ``after``."""
        inbox = self._users.get(user)
        if inbox is None:
            return defer.succeed(([], 0))
        start = max(after, 0)
        entries = []
        for offset, mid in enumerate(inbox.mids[start:start + max(limit, 0)]):
            record = self._messages[mid]
            entries.append(self._entry(record, start + offset + 1))
        return defer.succeed((entries, len(inbox.mids)))

    def _entry(self, record: _Record, seq: int) -> InboxEntry:
        """The inbox entry of ``record`` at ``seq``, with its delivered and read marks."""
        return InboxEntry(seq=seq, message=record.message,
                          delivered=self._all(record, "acked"), read=self._all(record, "read"))

    def last_seq(self, user: str) -> defer.Deferred[int]:
        """The highest seq in the user's inbox (0 when empty or unknown)."""
        inbox = self._users.get(user)
        return defer.succeed(len(inbox.mids) if inbox else 0)

    def ack(self, user: str, seq: int) -> defer.Deferred[list[Receipt]]:
        """Acknowledge the user's inbox up to ``seq``; the receipts this newly makes."""
        return defer.succeed(self._advance(user, seq, "acked"))

    def read(self, user: str, seq: int) -> defer.Deferred[list[Receipt]]:
        """Mark the user's inbox read (and acked) up to ``seq``; the read receipts."""
        self._advance(user, seq, "acked")
        return defer.succeed(self._advance(user, seq, "read"))

    def acked_seq(self, user: str) -> defer.Deferred[int]:
        """The highest seq the user acknowledged (0 when none)."""
        inbox = self._users.get(user)
        return defer.succeed(inbox.acked if inbox else 0)

    def read_conversation(self, user: str, conv: str, seq: int) -> defer.Deferred[
            tuple[list[Receipt], list[Receipt], int]]:
        """Read one conversation up to ``seq``; ``(delivered, read, new pointer or 0)``."""
        inbox = self._users.get(user)
        state = inbox.convs.get(conv) if inbox else None
        if inbox is None or state is None:
            return defer.succeed(([], [], 0))
        new = min(seq, state.seqs[-1])
        if new <= state.read:
            return defer.succeed(([], [], 0))
        delivered: list[Receipt] = []
        read: list[Receipt] = []
        start = bisect.bisect_right(state.seqs, state.read)
        for at in state.seqs[start:bisect.bisect_right(state.seqs, new)]:
            message = self._messages[inbox.mids[at - 1]].message
            if counts_unread(message, user):
                state.unread -= 1
            if message.sender == user:
                continue
            receipt = Receipt(mid=message.mid, id=message.id, sender=message.sender, seq=at)
            if at > inbox.acked:
                delivered.append(receipt)
            read.append(receipt)
        state.read = new
        return defer.succeed((delivered, read, new))

    def fetch_conversation(self, user: str, conv: str, after: int, before: int | None,
                           limit: int) -> defer.Deferred[tuple[list[InboxEntry], bool]]:
        """Entries of one conversation, in seq order, and whether more remain."""
        inbox = self._users.get(user)
        state = inbox.convs.get(conv) if inbox else None
        if inbox is None or state is None or limit <= 0:
            return defer.succeed(([], False))
        low = bisect.bisect_right(state.seqs, after)
        high = (len(state.seqs) if before is None
                else bisect.bisect_left(state.seqs, before))
        if before is None:
            seqs, more = state.seqs[low:min(high, low + limit)], high > low + limit
        else:
            seqs, more = state.seqs[max(low, high - limit):high], high - limit > low
        return defer.succeed(([self._entry(self._messages[inbox.mids[at - 1]], at)
                               for at in seqs], more))

    def conversations(self, user: str, limit: int) -> defer.Deferred[list[Conversation]]:
        """The user's conversations, most recent activity first, at most ``limit``."""
        inbox = self._users.get(user)
        if inbox is None:
            return defer.succeed([])
        newest = sorted(inbox.convs.items(), key=lambda item: -item[1].seqs[-1])
        out = []
        for key, state in newest[:max(limit, 0)]:
            last = state.seqs[-1]
            out.append(Conversation(
                conv=key, last=self._entry(self._messages[inbox.mids[last - 1]], last),
                read_seq=state.read, unread=state.unread,
                mentions=len(state.mentioned) - bisect.bisect_right(state.mentioned,
                                                                    state.read)))
        return defer.succeed(out)

    # -- people ----------------------------------------------------------------------------

    def get_profile(self, user: str) -> defer.Deferred[Profile | None]:
        """The user's profile, or None for an unknown user."""
        profile = self._profiles.get(user)
        return defer.succeed(_copy(profile) if profile else None)

    def update_profile(self, user: str, changes: dict[str, Any]) -> defer.Deferred[Profile]:
        """Apply the given keys of ``changes`` to the profile; NotFound for an unknown user."""
        profile = self._profiles.get(user)
        if profile is None:
            return defer.fail(NotFound(f"no such user: {user}"))
        for key in ("name", "status", "avatar"):
            if key in changes:
                setattr(profile, key, changes[key])
        return defer.succeed(_copy(profile))

    def search_users(self, text: str, limit: int) -> defer.Deferred[list[Profile]]:
        """Profiles whose user or display name contains ``text`` (any case), name order."""
        needle = text.casefold()
        found: list[Profile] = []
        for name in self._names:
            if len(found) >= max(limit, 0):
                break
            profile = self._profiles[name]
            if needle in name.casefold() or needle in profile.name.casefold():
                found.append(_copy(profile))
        return defer.succeed(found)

    def request_contact(self, user: str, other: str) -> defer.Deferred[Contact]:
        """``user`` asks for ``other``: pending, or mutual if ``other`` had asked already."""
        if user == other:
            return defer.fail(BadRequest("a user cannot be its own contact"))
        for name in (user, other):
            if name not in self._users:
                return defer.fail(NotFound(f"no such user: {name}"))
        mine = self._contacts.setdefault(user, {})
        theirs = self._contacts.setdefault(other, {})
        if other not in mine:
            mine[other], theirs[user] = "out", "in"
        elif mine[other] == "in":
            mine[other] = theirs[user] = None
        return defer.succeed(Contact(user=other, pending=mine[other]))

    def contacts(self, user: str) -> defer.Deferred[list[Contact]]:
        """Every contact and pending request of ``user``, in user-name order."""
        mine = self._contacts.get(user, {})
        return defer.succeed([Contact(user=other, pending=mine[other])
                              for other in sorted(mine)])

    def remove_contact(self, user: str, other: str) -> defer.Deferred[bool]:
        """Drop the contact or request between the two, either way; whether there was one."""
        found = self._contacts.get(user, {}).pop(other, False) is not False
        found = (self._contacts.get(other, {}).pop(user, False) is not False) or found
        return defer.succeed(found)

    # -- groups ----------------------------------------------------------------------------

    def create_group(self, owner: str, name: str, members: list[str],
                     ts: int) -> defer.Deferred[Group]:
        """Make a group with the owner first and no duplicates; NotFound for unknown users."""
        everyone = list(dict.fromkeys([owner, *members]))
        for member in everyone:
            if member not in self._users:
                return defer.fail(NotFound(f"no such user: {member}"))
        group = Group(id=base36(next(self._group_ids)), name=name, owner=owner,
                      members=everyone)
        self._groups[group.id] = group
        for member in everyone:
            self._groups_by_user.setdefault(member, {})[group.id] = None
        return defer.succeed(_copy(group))

    def get_group(self, group_id: str) -> defer.Deferred[Group | None]:
        """The group, or None."""
        group = self._groups.get(group_id)
        return defer.succeed(_copy(group) if group else None)

    def groups_of(self, user: str) -> defer.Deferred[list[Group]]:
        """The groups ``user`` is a member of, oldest group first."""
        return defer.succeed([_copy(self._groups[group_id])
                              for group_id in self._groups_by_user.get(user, {})])

    def rename_group(self, group_id: str, name: str) -> defer.Deferred[Group]:
        """Rename the group; NotFound if there is none."""
        group = self._groups.get(group_id)
        if group is None:
            return defer.fail(NotFound(f"no such group: {group_id}"))
        group.name = name
        return defer.succeed(_copy(group))

    def add_group_members(self, group_id: str, users: list[str],
                          limit: int) -> defer.Deferred[Group]:
        """Add the users not yet in; NotFound for unknowns, TooLarge past ``limit``."""
        group = self._groups.get(group_id)
        if group is None:
            return defer.fail(NotFound(f"no such group: {group_id}"))
        for user in users:
            if user not in self._users:
                return defer.fail(NotFound(f"no such user: {user}"))
        new = [user for user in dict.fromkeys(users) if user not in group.members]
        if len(group.members) + len(new) > limit:
            return defer.fail(TooLarge(f"a group has at most {limit} members"))
        group.members.extend(new)
        for user in new:
            self._groups_by_user.setdefault(user, {})[group.id] = None
        return defer.succeed(_copy(group))

    def remove_group_member(self, group_id: str,
                            user: str) -> defer.Deferred[Group | None]:
        """Remove a member, handing ownership on or deleting the group when it empties."""
        group = self._groups.get(group_id)
        if group is None:
            return defer.fail(NotFound(f"no such group: {group_id}"))
        if user not in group.members:
            return defer.fail(NotFound(f"{user} is not a member of {group_id}"))
        group.members.remove(user)
        self._groups_by_user.get(user, {}).pop(group_id, None)
        if not group.members:
            del self._groups[group_id]
            return defer.succeed(None)
        if group.owner == user:
            group.owner = group.members[0]
        return defer.succeed(_copy(group))

    # -- files -----------------------------------------------------------------------------

    def add_file(self, record: FileRecord) -> defer.Deferred[None]:
        """Keep an uploaded file's metadata."""
        self._files[record.id] = _copy(record)
        return defer.succeed(None)

    def get_file(self, file_id: str) -> defer.Deferred[FileRecord | None]:
        """The file's metadata, or None."""
        record = self._files.get(file_id)
        return defer.succeed(_copy(record) if record else None)

    def may_read_file(self, user: str, file_id: str) -> defer.Deferred[bool]:
        """Whether ``user`` uploaded the file, received it in a message, or it is an avatar."""
        record = self._files.get(file_id)
        allowed = ((record is not None and record.owner == user)
                   or user in self._file_grants.get(file_id, {})
                   or any(profile.avatar == file_id for profile in self._profiles.values()))
        return defer.succeed(allowed)

    def close(self) -> defer.Deferred[None]:
        """Nothing to flush; kept for the interface."""
        self._closed = True
        return defer.succeed(None)

    # -- helpers ---------------------------------------------------------------------------

    def _all(self, record: _Record, mark: str) -> bool:
        """Whether every recipient of the record has its ``mark`` (acked/read) past it: its
        conversation's read pointer counts for both."""
        for name in record.recipients:
            inbox, seq = self._users[name], record.seqs[name]
            if mark == "acked" and inbox.acked >= seq:
                continue
            if inbox.convs[inbox.entry_convs[seq - 1]].read < seq:
                return False
        return True

    def _advance(self, user: str, seq: int, mark: str) -> list[Receipt]:
        """Move the user's ``mark`` up to ``seq`` (clamped) and list the newly covered
        messages that other users sent."""
        inbox = self._users.get(user)
        if inbox is None:
            return []
        old = getattr(inbox, mark)
        new = min(seq, len(inbox.mids))
        if new <= old:
            return []
        setattr(inbox, mark, new)
        receipts = []
        for at in range(old + 1, new + 1):
            message = self._messages[inbox.mids[at - 1]].message
            conv = inbox.convs[inbox.entry_convs[at - 1]]
            if conv.read >= at:
                continue  # its conversation was read already: acked and read then
            if mark == "read" and counts_unread(message, user):
                conv.unread -= 1
            if message.sender != user:
                receipts.append(Receipt(mid=message.mid, id=message.id,
                                        sender=message.sender, seq=at))
        if mark == "read":
            for key in set(inbox.entry_convs[old:new]):
                conv = inbox.convs[key]
                conv.read = max(conv.read, new)
        return receipts


def _copy(record: Any) -> Any:
    """A copy of a record struct that the caller may change without changing the store."""
    return msgspec.structs.replace(record, **(
        {"members": list(record.members)} if isinstance(record, Group) else {}))
