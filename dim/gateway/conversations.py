"""The gateway's calls about conversations: the conversation list with its read state.

Each function is one route of :class:`dim.gateway.app.Gateway` (which lists them all); it takes
the gateway and the request, and raises :class:`dim.errors.DimError` for every failure.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.web.iweb import IRequest

from dim.errors import BadRequest
from dim.gateway.fields import USER_NAME, has_control, query_int, query_text
from dim.store.interface import Conversation, InboxEntry, entry_frame

if TYPE_CHECKING:
    from dim.gateway.context import RouteContext

DEFAULT_CONVERSATIONS_LIMIT = 50
MAX_CONVERSATIONS_LIMIT = 200


def message_dict(entry: InboxEntry) -> dict[str, Any]:
    """An inbox entry as the ``msg`` frame the node would send for it (the same converter),
    with its delivered and read marks always present."""
    out: dict[str, Any] = entry_frame(entry).to_dict()
    out["delivered"] = entry.delivered
    out["read"] = entry.read
    return out


def conversation_key(key: str) -> dict[str, str]:
    """``{"group": ID}`` for a group conversation's key, else ``{"with": USER}``."""
    return {"group": key[1:]} if key.startswith("#") else {"with": key}


def conversation_dict(conv: Conversation) -> dict[str, Any]:
    """One conversation as ``GET /v1/conversations`` lists it."""
    return {**conversation_key(conv.conv), "last": message_dict(conv.last),
            "read_seq": conv.read_seq,
            "unread": conv.unread, "mentions": conv.mentions}


def query_conversation(request: IRequest) -> str | None:
    """The conversation a call names with ``with`` (a user name) or ``group`` (an id), as
    the store keys it, or None when it names none; BadRequest for both or a bad value."""
    peer = query_text(request, "with")
    group = query_text(request, "group")
    if peer is not None and group is not None:
        raise BadRequest("name a conversation by with or group, not both")
    if peer is not None:
        if not USER_NAME.fullmatch(peer):
            raise BadRequest("with must be a user name")
        return peer
    if group is not None:
        if not 1 <= len(group) <= 64 or has_control(group):
            raise BadRequest("group must be a group id")
        return "#" + group
    return None


DEFAULT_SEARCH_LIMIT = 20
MAX_SEARCH_LIMIT = 100
MAX_SEARCH_TEXT = 200


async def search(gw: RouteContext, request: IRequest) -> bytes:
    """The caller's own entries whose current body contains ``q`` (1-200 characters),
    case-insensitive, newest first, never recalled ones: 200 ``{messages}``; optional
    ``with`` or ``group``; ``limit`` 20 by default, at most 100; 400 otherwise."""
    user = await gw.authenticated_user(request)
    text = query_text(request, "q") or ""
    if not 1 <= len(text) <= MAX_SEARCH_TEXT or has_control(text):
        raise BadRequest(f"q must be 1-{MAX_SEARCH_TEXT} characters without control "
                         "characters")
    conv = query_conversation(request)
    limit = query_int(request, "limit", DEFAULT_SEARCH_LIMIT)
    if limit < 1:
        raise BadRequest("limit must be 1 or more")
    found = await gw.store.search_messages(user, text, conv, min(limit, MAX_SEARCH_LIMIT))
    return gw.respond(request, {"messages": [message_dict(e) for e in found]})


async def conversations(gw: RouteContext, request: IRequest) -> bytes:
    """The caller's conversations, most recent activity first: 200 ``{conversations:
    [{with | group, last, read_seq, unread, mentions}]}``; ``limit`` 50 by default, at
    most 200; 400 for a bad limit."""
    user = await gw.authenticated_user(request)
    limit = query_int(request, "limit", DEFAULT_CONVERSATIONS_LIMIT)
    if limit < 1:
        raise BadRequest("limit must be 1 or more")
    found = await gw.store.conversations(user, min(limit, MAX_CONVERSATIONS_LIMIT))
    return gw.respond(request, {"conversations": [conversation_dict(c) for c in found]})
