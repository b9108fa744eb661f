"""What DIM keeps durably: users, revoked tokens, messages and every user's inbox.

Each method returns a Deferred.  Implementations: :mod:`dim.store.sqlite` (the embedded
``dim``), :mod:`dim.store.redis` (cluster mode) and :mod:`dim.store.memory` (unit tests).  One
shared test suite (``tests/store_contract.py``) runs against all of them.

The inbox model of the contract: every user has one inbox holding every message the user
sent or received, one entry each, numbered ``seq`` 1, 2, 3, ... with no gaps.  A message to
oneself has one entry.  A group message has one entry in every member's inbox.
"""
from __future__ import annotations

from typing import Any

import msgspec
from msgspec import Struct
from zope.interface import Interface

from dim.protocol import frames as F


class StoredMessage(Struct, kw_only=True):
    """One message as stored, shared by every inbox that holds it."""

    mid: str
    id: str
    sender: str
    ts: int
    to: str | None = None
    group: str | None = None
    body: str = ""
    kind: str = "text"
    file: dict[str, Any] | None = None
    reply_to: str | None = None
    mentions: list[str] | None = None
    #: Of an edit, recall or reaction entry: the changed message's mid and (reaction) on.
    ref: str | None = None
    on: bool | None = None
    #: The current state of a changed message: last edit's ts, recalled, reactions.
    edited: int | None = None
    recalled: bool = False
    reactions: dict[str, list[str]] | None = None


class InboxEntry(Struct, kw_only=True):
    """A message at one position of one user's inbox, with its delivered and read marks.

    ``delivered`` is true once every recipient (every member but the sender, for a group)
    acknowledged it; ``read`` once every recipient read it.
    """

    seq: int
    message: StoredMessage
    delivered: bool = False
    read: bool = False


def message_frame(message: StoredMessage, seq: int, delivered: bool = False,
                  read: bool = False) -> F.Msg:
    """The ``msg`` frame of a stored message at ``seq`` of some inbox: the one shape in which
    the node pushes and syncs messages and the gateway lists them."""
    to = message.to
    if to is None and message.group is None:
        to = message.sender  # a message to oneself is stored with no other recipient
    file = None
    if message.file is not None and not message.recalled:
        file = msgspec.convert(message.file, F.FileRef)
    return F.Msg(mid=message.mid, id=message.id, from_=message.sender, ts=message.ts, seq=seq,
                 to=to, group=message.group, body="" if message.recalled else message.body,
                 kind=message.kind, file=file, delivered=delivered, read=read,
                 reply_to=message.reply_to, mentions=message.mentions, ref=message.ref,
                 on=message.on, edited=message.edited, recalled=message.recalled,
                 reactions=message.reactions or None)


def entry_frame(entry: InboxEntry) -> F.Msg:
    """The ``msg`` frame of an inbox entry, with its delivered and read marks."""
    return message_frame(entry.message, entry.seq, entry.delivered, entry.read)


class SendResult(Struct, kw_only=True):
    """The outcome of storing one message.

    ``seqs`` maps every user whose inbox holds the message (sender included) to its seq
    there.  ``duplicate`` is true when (sender, id) was stored before and nothing new was
    written: the original message and seqs are returned.
    """

    message: StoredMessage
    seqs: dict[str, int]
    duplicate: bool = False


class Receipt(Struct, kw_only=True):
    """A recipient newly acknowledged (or read) a message another user sent."""

    mid: str
    id: str
    sender: str
    seq: int
    """The seq of the message in the acknowledging user's inbox."""


class SendOp(Struct, kw_only=True):
    """One :meth:`IStore.store_message` call, as a batch operation of :meth:`IStore.apply`."""

    sender: str
    client_id: str
    recipients: list[str]
    group: str | None = None
    body: str = ""
    kind: str = "text"
    file: dict[str, Any] | None = None
    ts: int = 0
    reply_to: str | None = None
    mentions: list[str] | None = None


class AckOp(Struct, kw_only=True):
    """The user received (with ``read``: also read) its inbox up to ``seq``, as a batch
    operation of :meth:`IStore.apply`.

    With ``conv`` (and ``read``), only that conversation is read up to ``seq``: see
    :meth:`IStore.read_conversation`; the outcome is then ``(delivered, read, moved)``.
    """

    user: str
    seq: int
    read: bool = False
    conv: str | None = None


class ChangeOp(Struct, kw_only=True):
    """An edit, recall or reaction of ``sender`` to the message ``ref``, as a batch
    operation of :meth:`IStore.apply` (see :meth:`IStore.change_message`)."""

    sender: str
    client_id: str
    kind: str
    ref: str
    body: str = ""
    on: bool = True
    ts: int = 0


#: An operation of :meth:`IStore.apply`.
StoreOp = SendOp | AckOp | ChangeOp


#: The kinds of entry that count as unread: messages, not edits, recalls or reactions.
UNREAD_KINDS = frozenset(("text", "image", "file"))


def conversation_of(message: StoredMessage, user: str) -> str:
    """The key of the conversation of ``user`` that ``message`` belongs to: ``#`` and the
    group id for a group message, else the other person's name (``user`` itself for a
    message to oneself).  User names cannot start with ``#``, so keys never collide."""
    if message.group is not None:
        return "#" + message.group
    if message.sender != user:
        return message.sender
    return message.to or user


def sender_conversation(sender: str, recipients: list[str], group: str | None) -> str:
    """The key of the sender's conversation that a message being stored belongs to."""
    if group is not None:
        return "#" + group
    return recipients[0] if recipients else sender


def counts_unread(message: StoredMessage, user: str) -> bool:
    """Whether ``message`` in ``user``'s inbox counts as unread while above its
    conversation's read pointer: a message (not an edit, recall or reaction) from someone
    else."""
    return message.sender != user and message.kind in UNREAD_KINDS


def check_change(original: StoredMessage, op: ChangeOp) -> None:
    """Raise Forbidden if ``op`` may not change ``original`` (see
    :meth:`IStore.change_message`); the message is known to be in the sender's inbox."""
    from dim.errors import Forbidden
    if original.recalled:
        raise Forbidden("the message was recalled", ref=op.client_id)
    if original.kind in F.CHANGE_KINDS:
        raise Forbidden("an edit, recall or reaction cannot be changed", ref=op.client_id)
    if op.kind != "reaction" and original.sender != op.sender:
        raise Forbidden(f"only its sender may {op.kind} a message", ref=op.client_id)
    if op.kind == "edit" and original.kind != "text":
        raise Forbidden("only a text message can be edited", ref=op.client_id)


def react(reactions: dict[str, list[str]] | None, emoji: str, user: str,
          on: bool) -> dict[str, list[str]] | None:
    """``reactions`` with ``user``'s ``emoji`` added (``on``) or removed; None when empty."""
    out = {key: list(users) for key, users in (reactions or {}).items()}
    users = out.setdefault(emoji, [])
    if on and user not in users:
        users.append(user)
    elif not on and user in users:
        users.remove(user)
    if not users:
        del out[emoji]
    return out or None


def found_by(message: StoredMessage, needle: str) -> bool:
    """Whether a search for ``needle`` (already case-folded) finds ``message``: a message
    (not an edit, recall or reaction entry), not recalled, whose current body contains it,
    case-insensitive."""
    return (not message.recalled and message.kind in UNREAD_KINDS
            and needle in message.body.casefold())


class Conversation(Struct, kw_only=True):
    """One conversation of a user's inbox: its key (see :func:`conversation_of`), newest
    entry, read pointer and the counts of unread entries and of unread ones mentioning the
    user."""

    conv: str
    last: InboxEntry
    read_seq: int = 0
    unread: int = 0
    mentions: int = 0


def apply_each(store: Any, ops: list[StoreOp]) -> Any:
    """:meth:`IStore.apply` through the store's own ``store_message``, ``ack`` and ``read``,
    every call made at once in batch order (for stores that order or batch single calls
    themselves): a Deferred of each operation's outcome, a Failure in place of any that
    failed."""
    from twisted.internet import defer

    calls: list[Any] = []
    for op in ops:
        if isinstance(op, SendOp):
            calls.append(store.store_message(op.sender, op.client_id, op.recipients, op.group,
                                             op.body, op.kind, op.file, op.ts, op.reply_to,
                                             op.mentions))
        elif isinstance(op, ChangeOp):
            calls.append(store.change_message(op))
        elif op.conv is not None:
            calls.append(store.read_conversation(op.user, op.conv, op.seq))
        elif op.read:
            both = defer.gatherResults([store.ack(op.user, op.seq),
                                        store.read(op.user, op.seq)], consumeErrors=True)
            calls.append(both.addCallbacks(tuple, _first_failure))
        else:
            calls.append(store.ack(op.user, op.seq).addCallback(lambda r: (r, [])))
    return defer.DeferredList(calls, consumeErrors=True).addCallback(
        lambda results: [value for _, value in results])


def _first_failure(failure: Any) -> Any:
    """The failure inside a FirstError (the one that made a gather fail)."""
    from twisted.internet.defer import FirstError

    return failure.value.subFailure if failure.check(FirstError) else failure


class Profile(Struct, kw_only=True):
    """What other people see of a user: display name, status text and avatar file id."""

    user: str
    name: str
    status: str = ""
    avatar: str | None = None


class Contact(Struct, kw_only=True):
    """One entry of a user's contact list.

    ``pending`` is None for mutual contacts, "out" for a request this user made and "in" for
    a request made to this user.
    """

    user: str
    pending: str | None = None


class Group(Struct, kw_only=True):
    """A group: its server id, name, owner and members in the order they joined.

    The owner is a member.  ``members[0]`` is not necessarily the owner after a handover.
    """

    id: str
    name: str
    owner: str
    members: list[str]


class FileRecord(Struct, kw_only=True):
    """An uploaded file's metadata.  The bytes live in the file storage under ``id``."""

    id: str
    owner: str
    name: str
    size: int
    mime: str
    sha256: str
    ts: int




class IStore(Interface):
    """Durable state of DIM.  Every method returns a Deferred."""

    def create_user(user: str, password_hash: str, ts: int) -> Any:
        """Add a user; fails with :class:`dim.errors.Conflict` if the name is taken."""

    def get_password_hash(user: str) -> Any:
        """The user's password hash, or None if there is no such user."""

    def set_password_hash(user: str, password_hash: str) -> Any:
        """Replace the user's password hash (after a rehash with new parameters)."""

    def user_exists(user: str) -> Any:
        """Whether the user exists."""

    def list_users(prefix: str, limit: int) -> Any:
        """User names in name order starting with ``prefix`` (may be ""), at most ``limit``."""

    def revoke_token(jti: str, expires: int) -> Any:
        """Mark a token id revoked until ``expires`` (seconds since the epoch)."""

    def is_revoked(jti: str) -> Any:
        """Whether a token id was revoked."""

    def token_epoch(user: str) -> Any:
        """``(epoch, kept)``: the user's token epoch (0 until the first
        :meth:`bump_token_epoch`) and the token id kept valid by the last bump (or None)."""

    def bump_token_epoch(user: str, keep: str) -> Any:
        """Start a new token epoch for ``user`` (a password change: every token of an older
        epoch is invalid) keeping the token id ``keep`` valid; fires with the new epoch."""

    def store_message(sender: str, client_id: str, recipients: list[str], group: str | None,
                      body: str, kind: str, file: dict[str, Any] | None, ts: int,
                      reply_to: str | None = None, mentions: list[str] | None = None) -> Any:
        """Store one message in the sender's inbox and each recipient's, durably.

        ``reply_to`` must be the mid of an entry of the sender's inbox in the same
        conversation as this message (else :class:`dim.errors.BadRequest`, nothing
        stored).  ``mentions`` (already checked to be members) are kept with the message;
        the conversation of each mentioned recipient counts it in its ``mentions`` while
        unread.

        ``recipients`` are the other users whose inbox gets it (for a group: every member but
        the sender).  The Deferred fires with a :class:`SendResult` only once the write is
        durable.  If ``(sender, client_id)`` was already stored, nothing is written and the
        original is returned with ``duplicate=True``.  Fails with
        :class:`dim.errors.NotFound` if a recipient does not exist.  Messages are stored in
        the order this method was called, for the same sender.
        """

    def change_message(op: ChangeOp) -> Any:
        """Store an edit, recall or reaction as a new entry at the next seq of the sender's
        inbox and of every inbox holding the message ``op.ref``, and change that message's
        current state (an edit: ``body`` and ``edited``; a recall: ``recalled``, and its
        file no longer readable by anyone but its uploader; a reaction: ``reactions``).

        Fires with a :class:`SendResult` of the new entry.  A repeated ``(sender,
        client_id)`` changes nothing and returns the first result (``duplicate``).  Fails,
        changing nothing, with NotFound when ``ref`` is not in the sender's inbox, and
        Forbidden for an edit or recall of someone else's message, an edit of a message
        that is not text, or any change of a recalled message.
        """

    def search_messages(user: str, text: str, conv: str | None, limit: int) -> Any:
        """The user's inbox entries (of conversation ``conv`` only, when given) that
        :func:`found_by` finds for ``text``, newest first, at most ``limit``."""

    def apply(ops: list[StoreOp]) -> Any:
        """Run a batch of operations, in order, as :meth:`store_message`, :meth:`ack` and
        :meth:`read` would, with one Deferred for the whole batch.

        Fires with one outcome per operation, in order: a :class:`SendResult` for a
        :class:`SendOp`; for an :class:`AckOp`, ``(delivered, read)``, the :class:`Receipt`
        lists it newly made (``read`` is empty unless the op reads); or a
        :class:`~twisted.python.failure.Failure` for an operation that failed alone (an
        unknown recipient, say), which stored nothing.  Operations take effect in batch
        order.  Fails as a whole (nothing of the batch stored) only when the store itself
        failed.
        """

    def fetch(user: str, after: int, limit: int) -> Any:
        """``(entries, last_seq)``: up to ``limit`` :class:`InboxEntry` with seq > after."""

    def last_seq(user: str) -> Any:
        """The highest seq in the user's inbox (0 when empty)."""

    def ack(user: str, seq: int) -> Any:
        """Record that the user received its inbox up to ``seq`` (cumulative; lower or equal
        acks change nothing).  Fires with the :class:`Receipt` list of messages from other
        users that this ack newly acknowledged, in seq order."""

    def read(user: str, seq: int) -> Any:
        """Like :meth:`ack`, for having read the inbox up to ``seq``.  Reading implies
        receiving: it acknowledges up to ``seq`` too (without returning those receipts)."""

    def acked_seq(user: str) -> Any:
        """The highest seq the user acknowledged (0 when none)."""

    def read_conversation(user: str, conv: str, seq: int) -> Any:
        """Mark every entry of one conversation of ``user`` (``conv`` as
        :func:`conversation_of` names it) up to ``seq`` read, and so acknowledged.

        The conversation's read pointer only moves forward (clamped to its newest entry).
        Fires with ``(delivered, read, moved)``: the :class:`Receipt` lists of entries from
        other users this newly acknowledged and newly read, and the new read pointer (0 when
        it did not move).  A read of the whole inbox (:meth:`read`) moves the read pointer
        of every conversation with entries up to its ``seq``.  Costs in proportion to the
        entries newly read, never to the inbox size.
        """

    def fetch_conversation(user: str, conv: str, after: int, before: int | None,
                           limit: int) -> Any:
        """``(entries, more)``: entries of one conversation of ``user``, in seq order.

        Without ``before``, up to ``limit`` entries with seq > ``after`` (oldest first);
        with ``before``, the newest ``limit`` entries with ``after`` < seq < ``before``.
        ``more`` says whether more entries remain in that direction.  Costs in proportion
        to ``limit``, not to the inbox."""

    def conversations(user: str, limit: int) -> Any:
        """The user's :class:`Conversation` list, most recent activity (highest newest seq)
        first, at most ``limit``."""

    # ------------------------------------------------------------------ people

    def get_profile(user: str) -> Any:
        """The user's :class:`Profile` (``name`` defaults to the user name), or None."""

    def update_profile(user: str, changes: dict[str, Any]) -> Any:
        """Apply ``changes`` (any of ``name``, ``status``, ``avatar``; already validated; an
        ``avatar`` of None clears it) and fire with the new :class:`Profile`."""

    def search_users(text: str, limit: int) -> Any:
        """Profiles whose user name or display name contains ``text``, case-insensitive,
        in user-name order, at most ``limit``."""

    def request_contact(user: str, other: str) -> Any:
        """``user`` asks for ``other``: a pending request, or (if ``other`` had asked, or they
        are contacts already) mutual contacts.  Fires with ``user``'s :class:`Contact` entry
        for ``other``.  Fails with NotFound for an unknown ``other``."""

    def contacts(user: str) -> Any:
        """Every :class:`Contact` entry of ``user``: mutual ones and pending requests."""

    def remove_contact(user: str, other: str) -> Any:
        """Remove a contact or a pending request, whichever way; fires True if there was one."""

    # ------------------------------------------------------------------ groups

    def create_group(owner: str, name: str, members: list[str], ts: int) -> Any:
        """Make a group (the owner is added as the first member, duplicates dropped) and fire
        with it; fails with NotFound naming the first unknown member."""

    def get_group(group_id: str) -> Any:
        """The :class:`Group`, or None."""

    def groups_of(user: str) -> Any:
        """The groups ``user`` is a member of."""

    def rename_group(group_id: str, name: str) -> Any:
        """Rename; fires with the group (NotFound if there is none)."""

    def add_group_members(group_id: str, users: list[str], limit: int) -> Any:
        """Add members (those already in are ignored) and fire with the group.  Fails with
        NotFound for an unknown user or group, TooLarge if the group would pass ``limit``."""

    def remove_group_member(group_id: str, user: str) -> Any:
        """Remove a member.  If it was the owner, the longest-standing remaining member becomes
        owner.  Fires with the group, or None if no member remains and it was deleted.  Fails
        with NotFound if the group does not exist or ``user`` is not a member."""

    # ------------------------------------------------------------------ files

    def add_file(record: FileRecord) -> Any:
        """Keep the metadata of an uploaded file."""

    def get_file(file_id: str) -> Any:
        """The :class:`FileRecord`, or None."""

    def may_read_file(user: str, file_id: str) -> Any:
        """Whether ``user`` may download the file: its uploader, anyone whose inbox holds a
        message pointing at it (:meth:`store_message` with ``file`` records that), or anyone
        at all if it is some user's avatar."""

    def close() -> Any:
        """Flush and release everything."""
