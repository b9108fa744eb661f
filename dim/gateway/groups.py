"""The gateway's calls about groups: create, list, show, rename, add and remove members.

Each function is one route of :class:`dim.gateway.app.Gateway`.  Every change notifies
``group_changed`` (``group``: the id) to everyone affected: the members before and after,
removed ones included.

A group holds at most the gateway's ``max_group_members`` (500 by default), its owner
included; creating or growing a group past that is **413** ``too_large`` (a size limit, like
an upload's, not a malformed request).
"""
from __future__ import annotations

from typing import Any

from twisted.web.iweb import IRequest

from dim.errors import BadRequest, Forbidden, NotFound, TooLarge
from dim.gateway.context import RouteContext
from dim.gateway.fields import text_field, user_list
from dim.gateway.people import notify_frame
from dim.store.interface import Group


MAX_GROUP_NAME = 64
#: The longest group id the gateway looks up.
MAX_GROUP_ID = 64


def group_dict(group: Group) -> dict[str, Any]:
    """A group as the gateway shows it: ``{id, name, owner, members}``."""
    return {"id": group.id, "name": group.name, "owner": group.owner,
            "members": list(group.members)}


def notify_changed(gw: RouteContext, group_id: str, *member_lists: list[str]) -> None:
    """Notify ``group_changed`` to every user of the given member lists, once each."""
    users = dict.fromkeys(u for members in member_lists for u in members)
    gw.notify({u: [notify_frame("group_changed", group=group_id)] for u in users})


async def member_group(gw: RouteContext, group_id: str, me: str) -> Group:
    """The group, when ``me`` is a member: NotFound if there is none, Forbidden otherwise."""
    group = await gw.store.get_group(group_id) if len(group_id) <= MAX_GROUP_ID else None
    if group is None:
        raise NotFound(f"no such group: {group_id}")
    if me not in group.members:
        raise Forbidden("you are not a member of this group")
    return group


async def create(gw: RouteContext, request: IRequest) -> bytes:
    """Make a group owned by the caller: 201 ``{group}``; 400 invalid; 404 unknown member;
    413 over the member limit."""
    me = await gw.authenticated_user(request)
    body = gw.json_body(request)
    name = text_field(body.get("name"), "name", 1, MAX_GROUP_NAME)
    members = user_list(body.get("members", []), "members")
    if len(dict.fromkeys([me, *members])) > gw.max_group_members:
        raise TooLarge(f"a group has at most {gw.max_group_members} members")
    group = await gw.store.create_group(me, name, members, gw.now_ms())
    notify_changed(gw, group.id, group.members)
    return gw.respond(request, {"group": group_dict(group)}, 201)


async def list_groups(gw: RouteContext, request: IRequest) -> bytes:
    """The caller's groups: 200 ``{groups: [{id, name, owner, members}]}``."""
    me = await gw.authenticated_user(request)
    return gw.respond(request, {"groups": [group_dict(g) for g in await gw.store.groups_of(me)]})


async def show(gw: RouteContext, request: IRequest, group_id: str) -> bytes:
    """One group: 200 ``{group}``; 403 not a member; 404."""
    me = await gw.authenticated_user(request)
    return gw.respond(request, {"group": group_dict(await member_group(gw, group_id, me))})


async def rename(gw: RouteContext, request: IRequest, group_id: str) -> bytes:
    """Rename a group: 200 ``{group}``; 403 unless the owner; 404; 400 invalid name."""
    me = await gw.authenticated_user(request)
    group = await member_group(gw, group_id, me)
    if group.owner != me:
        raise Forbidden("only the owner may rename the group")
    name = text_field(gw.json_body(request).get("name"), "name", 1, MAX_GROUP_NAME)
    group = await gw.store.rename_group(group_id, name)
    notify_changed(gw, group.id, group.members)
    return gw.respond(request, {"group": group_dict(group)})


async def add_members(gw: RouteContext, request: IRequest, group_id: str) -> bytes:
    """Add ``users`` (a non-empty list): 200 ``{group}``; 403 unless the owner; 404 unknown
    group or user; 413 over the member limit."""
    me = await gw.authenticated_user(request)
    group = await member_group(gw, group_id, me)
    if group.owner != me:
        raise Forbidden("only the owner may add members")
    users = user_list(gw.json_body(request).get("users"), "users")
    if not users:
        raise BadRequest("users must name at least one user")
    before = list(group.members)
    group = await gw.store.add_group_members(group_id, users, gw.max_group_members)
    notify_changed(gw, group.id, before, group.members)
    return gw.respond(request, {"group": group_dict(group)})


async def remove_member(gw: RouteContext, request: IRequest, group_id: str, name: str) -> bytes:
    """Remove a member: the owner removes anyone, a member removes itself: 200 ``{group}``
    (null when the group was deleted because nobody remained); 403 otherwise; 404 unknown
    group or not a member.  An owner leaving hands the group to the longest-standing member.
    """
    me = await gw.authenticated_user(request)
    group = await member_group(gw, group_id, me)
    if me != name and group.owner != me:
        raise Forbidden("only the owner may remove other members")
    if name not in group.members:
        raise NotFound(f"{name} is not a member of this group")
    before = list(group.members)
    after = await gw.store.remove_group_member(group_id, name)
    notify_changed(gw, group_id, before)
    return gw.respond(request, {"group": group_dict(after) if after is not None else None})
