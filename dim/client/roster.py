"""What the client knows of people and groups: contacts, pending requests, groups, names.

:class:`Roster` holds the gateway's answers (``GET /v1/contacts``, ``GET /v1/groups``,
``GET /v1/users/NAME``) and applies the node's live hints to them (``presence`` changes the
online flag at once; ``notify`` makes the client fetch again).  It answers from memory, so a
user interface can draw from it at any time.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Callable, Iterable

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.logger import Logger

log = Logger()

#: How many unknown group members' display names one refresh looks up at most.
NAME_LOOKUPS = 50


def initials(name: str) -> str:
    """Up to two capital letters for an avatar: "Alice Smith" -> "AS", "bob" -> "B"."""
    words = [w for w in name.replace("_", " ").replace(".", " ").replace("-", " ").split() if w]
    if not words:
        return "?"
    if len(words) == 1:
        return words[0][0].upper()
    return (words[0][0] + words[-1][0]).upper()


class Roster:
    """Contacts, groups and display names of one user, from the gateway and live hints.

    ``gateway`` is a :class:`~dim.client.gateway.GatewayClient`; ``changed(what)`` is called
    with "contacts" or "groups" after either changed.
    """

    def __init__(self, gateway: Any, me: str, changed: Callable[[str], None]) -> None:
        self.gateway = gateway
        self.me = me
        self.changed = changed
        self.contacts: dict[str, dict[str, Any]] = {}
        self.groups: dict[str, dict[str, Any]] = {}
        #: Display names (and statuses) of users seen in contacts, groups and searches.
        self.profiles: dict[str, dict[str, Any]] = {}
        self.own: dict[str, Any] = {"user": me, "name": me, "status": "", "avatar": None}
        self._looking_up: set[str] = set()
        self._in_flight: set[Deferred[Any]] = set()

    # ------------------------------------------------------------ answers from memory

    def name(self, user: str) -> str:
        """The display name of ``user`` (the user name until one is known)."""
        if user == self.me:
            return str(self.own.get("name") or user)
        profile = self.contacts.get(user) or self.profiles.get(user)
        return str(profile.get("name") or user) if profile else user

    def online(self, user: str) -> bool | None:
        """Whether a contact is online (None for someone not a contact)."""
        contact = self.contacts.get(user)
        return bool(contact.get("online")) if contact and contact.get("pending") is None else None

    def contact_list(self) -> list[dict[str, Any]]:
        """Contacts for a list: requests to answer first, then online, offline, asked; by name."""
        def order(c: dict[str, Any]) -> tuple[int, str]:
            rank = {"in": 0, None: 1 if c.get("online") else 2, "out": 3}.get(c.get("pending"), 4)
            return rank, str(c.get("name") or c["user"]).lower()
        return sorted(self.contacts.values(), key=order)

    def group_list(self) -> list[dict[str, Any]]:
        """The user's groups, by name."""
        return sorted(self.groups.values(), key=lambda g: (str(g.get("name", "")).lower(), g["id"]))

    # ------------------------------------------------------------ changes

    def set_online(self, user: str, online: bool) -> bool:
        """A presence frame: True if it changed what the roster shows."""
        contact = self.contacts.get(user)
        if contact is None or bool(contact.get("online")) == online:
            return False
        contact["online"] = online
        self.changed("contacts")
        return True

    def put_contact(self, contact: dict[str, Any]) -> None:
        """One contact as the gateway answered it (after adding one)."""
        self.contacts[contact["user"]] = dict(contact)
        self.changed("contacts")

    def drop_contact(self, user: str) -> None:
        """A contact or request is gone."""
        if self.contacts.pop(user, None) is not None:
            self.changed("contacts")

    def put_group(self, group: dict[str, Any]) -> None:
        """One group as the gateway answered it; dropped if the user is no longer in it."""
        if self.me in group.get("members", []):
            self.groups[group["id"]] = dict(group)
        else:
            self.groups.pop(group["id"], None)
        self.changed("groups")
        self._look_up_names(group.get("members", []))

    def drop_group(self, group_id: str) -> None:
        """The user left (or was removed from) a group."""
        if self.groups.pop(group_id, None) is not None:
            self.changed("groups")

    # ------------------------------------------------------------ fetching

    def refresh(self) -> Deferred[Any]:
        """Fetch contacts, groups and the own profile again."""
        return DeferredList([self.refresh_contacts(), self.refresh_groups(), self.refresh_own()],
                            consumeErrors=True)

    def refresh_contacts(self) -> Deferred[None]:
        """Fetch the contact list again."""
        def got(answer: dict[str, Any]) -> None:
            self.contacts = {c["user"]: c for c in answer.get("contacts", []) if "user" in c}
            self.changed("contacts")
        return self._fetch(self.gateway.contacts(), got, "contacts")

    def refresh_groups(self) -> Deferred[None]:
        """Fetch the group list again."""
        def got(answer: dict[str, Any]) -> None:
            self.groups = {g["id"]: g for g in answer.get("groups", []) if "id" in g}
            self.changed("groups")
            self._look_up_names(u for g in self.groups.values() for u in g.get("members", []))
        return self._fetch(self.gateway.groups(), got, "groups")

    def refresh_own(self) -> Deferred[None]:
        """Fetch the own profile again."""
        def got(answer: dict[str, Any]) -> None:
            self.own = dict(answer)
            self.changed("profile")
        return self._fetch(self.gateway.profile(), got, "profile")

    def _fetch(self, d: Deferred[Any], got: Callable[[Any], None], what: str) -> Deferred[None]:
        def failed(f: Any) -> None:
            if not f.check(CancelledError):
                log.info("could not fetch {what}: {f}", what=what, f=f.getErrorMessage())
        return self._track(d).addCallbacks(got, failed)

    def _track(self, d: Deferred[Any]) -> Deferred[Any]:
        self._in_flight.add(d)

        def done(result: Any) -> Any:
            self._in_flight.discard(d)
            return result
        return d.addBoth(done)

    def stop(self) -> None:
        """Abandon every fetch in flight (the client is stopping)."""
        for d in list(self._in_flight):
            d.cancel()

    def _look_up_names(self, users: Iterable[str]) -> None:
        unknown = [u for u in dict.fromkeys(users) if u != self.me and u not in self.contacts
                   and u not in self.profiles and u not in self._looking_up][:NAME_LOOKUPS]
        for user in unknown:
            self._looking_up.add(user)

            def got(answer: dict[str, Any], user: str = user) -> None:
                self.profiles[user] = answer
                self.changed("names")

            def done(_: Any, user: str = user) -> None:
                self._looking_up.discard(user)
            d = self._track(self.gateway.user(user))
            d.addCallbacks(got, lambda f: None)
            d.addBoth(done)

    def learn(self, info: dict[str, Any]) -> None:
        """A user's public record (``GET /v1/users/NAME``): newer name, status, avatar."""
        user = info.get("user")
        if not isinstance(user, str):
            return
        def shown() -> tuple[Any, ...]:
            contact = self.contacts.get(user) or {}
            return self.name(user), contact.get("status"), contact.get("avatar")
        before = shown()
        self.profiles[user] = dict(info)
        contact = self.contacts.get(user)
        if contact is not None:
            for key in ("name", "status", "avatar"):
                if key in info:
                    contact[key] = info[key]
        if shown() != before:
            self.changed("names")

    def remember(self, users: Iterable[dict[str, Any]]) -> None:
        """Keep display names seen elsewhere (say, in search results)."""
        for u in users:
            if "user" in u and u["user"] not in self.profiles:
                self.profiles[u["user"]] = dict(u)
