"""The gateway's calls about people: search, profiles and contacts.

Each function is one route of :class:`dim.gateway.app.Gateway` (which lists them all); it takes
the gateway and the request, and raises :class:`dim.errors.DimError` for every failure.

``notify`` frames go out through the gateway's pusher: ``contact_request`` (``from``) to the
user asked; ``contact_added`` (``user``: the other one) to both when a request becomes mutual;
``contact_removed`` (``user``: the remover) to the other side of a removed contact or request.
"""
from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from dim import files
from dim.errors import BadRequest, NotFound
from dim.gateway.context import RouteContext
from dim.gateway.fields import USER_NAME, has_control, query_int, query_text, text_field
from dim.protocol import frames as F
from dim.store.interface import Contact, Profile


DEFAULT_SEARCH_LIMIT = 20
MAX_SEARCH_LIMIT = 50
MAX_QUERY = 64
MAX_DISPLAY_NAME = 64
MAX_STATUS = 140


def profile_dict(profile: Profile) -> dict[str, Any]:
    """A profile as the gateway shows it: ``{user, name, status, avatar}``."""
    return {"user": profile.user, "name": profile.name, "status": profile.status,
            "avatar": profile.avatar}


def notify_frame(event: str, **fields: Any) -> F.Notify:
    """A ``notify`` frame of one event (``from_`` for the contract's ``from``)."""
    return F.Notify(event=event, **fields)


async def known_profile(gw: RouteContext, name: str) -> Profile:
    """The profile of an existing user; NotFound otherwise."""
    profile = await gw.store.get_profile(name) if USER_NAME.fullmatch(name) else None
    if profile is None:
        raise NotFound(f"no such user: {name}")
    return profile


async def contact_dict(gw: RouteContext, contact: Contact) -> dict[str, Any]:
    """A contact list entry: ``{user, name, status, avatar, online, pending}``."""
    profile = await gw.store.get_profile(contact.user)
    if profile is None:
        profile = Profile(user=contact.user, name=contact.user)
    online = await gw.sessions.online(contact.user)
    return {**profile_dict(profile), "online": bool(online), "pending": contact.pending}


async def search(gw: RouteContext, request: IRequest) -> bytes:
    """Users whose user or display name contains ``q`` (spaces around it ignored): 200
    ``{users: [{user, name, avatar}]}``; 400 without ``q`` (or one over 64 characters);
    ``limit`` 20 by default, at most 50."""
    await gw.authenticated_user(request)
    text = (query_text(request, "q") or "").strip()
    if not text:
        raise BadRequest("q (the text to look for) is required")
    if len(text) > MAX_QUERY:
        raise BadRequest(f"q must be at most {MAX_QUERY} characters")
    if has_control(text):
        raise BadRequest("q must not hold control characters")
    limit = query_int(request, "limit", DEFAULT_SEARCH_LIMIT)
    if limit < 1:
        raise BadRequest("limit must be 1 or more")
    found = await gw.store.search_users(text, min(limit, MAX_SEARCH_LIMIT))
    return gw.respond(request, {"users": [
        {"user": p.user, "name": p.name, "avatar": p.avatar} for p in found]})


async def user(gw: RouteContext, request: IRequest, name: str) -> bytes:
    """One user: 200 ``{user, online, name, status, avatar}``; 404."""
    await gw.authenticated_user(request)
    profile = await known_profile(gw, name)
    online = await gw.sessions.online(name)
    return gw.respond(request, {**profile_dict(profile), "online": bool(online)})


async def get_profile(gw: RouteContext, request: IRequest) -> bytes:
    """The caller's profile: 200 ``{user, name, status, avatar}``."""
    me = await gw.authenticated_user(request)
    return gw.respond(request, profile_dict(await known_profile(gw, me)))


async def put_profile(gw: RouteContext, request: IRequest) -> bytes:
    """Change any of ``name`` (1-64 characters), ``status`` (0-140) and ``avatar`` (the id of
    an image the caller uploaded, recognised as one by its content, or null): 200 the new
    profile; 400 when none of them is given or one is invalid.  Other fields are ignored."""
    me = await gw.authenticated_user(request)
    body = gw.json_body(request)
    changes: dict[str, Any] = {}
    if "name" in body:
        changes["name"] = text_field(body["name"], "name", 1, MAX_DISPLAY_NAME)
    if "status" in body:
        changes["status"] = text_field(body["status"], "status", 0, MAX_STATUS)
    if "avatar" in body:
        changes["avatar"] = await avatar_field(gw, me, body["avatar"])
    if not changes:
        raise BadRequest("give at least one of name, status and avatar")
    await known_profile(gw, me)
    profile = await gw.store.update_profile(me, changes)
    return gw.respond(request, profile_dict(profile))


async def avatar_field(gw: RouteContext, me: str, value: Any) -> str | None:
    """An avatar: None, or the id of an image file ``me`` uploaded; BadRequest otherwise."""
    if value is None:
        return None
    if not isinstance(value, str) or not files.FILE_ID.fullmatch(value):
        raise BadRequest("avatar must be the id of an image you uploaded, or null")
    record = await gw.store.get_file(value)
    if record is None or record.owner != me:
        raise BadRequest("avatar must be the id of an image you uploaded")
    head = gw.files.head(value) if gw.files is not None else None
    if head is None or not files.is_image(head):
        raise BadRequest("avatar must be an image")
    return value


async def list_contacts(gw: RouteContext, request: IRequest) -> bytes:
    """The caller's contacts and pending requests: 200 ``{contacts: [{user, name, status,
    avatar, online, pending}]}``."""
    me = await gw.authenticated_user(request)
    entries = await gw.store.contacts(me)
    return gw.respond(request, {"contacts": [await contact_dict(gw, c) for c in entries]})


async def add_contact(gw: RouteContext, request: IRequest) -> bytes:
    """Ask for ``user`` or accept its request: 200 ``{contact}``; 404 unknown; 400 yourself.

    A new request notifies ``contact_request`` to the user asked; a request becoming mutual
    notifies ``contact_added`` to both.  Asking again changes and notifies nothing.
    """
    me = await gw.authenticated_user(request)
    other = gw.json_body(request).get("user")
    if not isinstance(other, str):
        raise BadRequest("user must be a user name")
    if other == me:
        raise BadRequest("you cannot be your own contact")
    await known_profile(gw, other)
    before = {c.user: c.pending for c in await gw.store.contacts(me)}
    contact = await gw.store.request_contact(me, other)
    if contact.pending is None and before.get(other, "none") is not None:
        gw.notify({me: [notify_frame("contact_added", user=other)],
                   other: [notify_frame("contact_added", user=me)]})
    elif contact.pending == "out" and other not in before:
        gw.notify({other: [notify_frame("contact_request", from_=me)]})
    return gw.respond(request, {"contact": await contact_dict(gw, contact)})


async def remove_contact(gw: RouteContext, request: IRequest, name: str) -> bytes:
    """Remove a contact or a pending request, either way: 200 ``{}``; 404 if there is none.
    The other side is notified ``contact_removed``."""
    me = await gw.authenticated_user(request)
    if not USER_NAME.fullmatch(name) or not await gw.store.remove_contact(me, name):
        raise NotFound(f"{name} is not a contact of yours, nor a request")
    gw.notify({name: [notify_frame("contact_removed", user=me)]})
    return gw.respond(request, {})
