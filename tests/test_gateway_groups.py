"""Tests of the gateway's group calls: ownership, membership, limits and notify frames."""
from __future__ import annotations

from typing import Any

from tests.fakes.gateway import GatewayTestCase


def changed(group_id: str) -> list[dict[str, Any]]:
    """The frames of one group_changed notification."""
    return [{"type": "notify", "event": "group_changed", "group": group_id}]


class GroupTestCase(GatewayTestCase):
    """Four users: alice, bob, carol and dave, logged in."""

    def setUp(self) -> None:
        super().setUp()
        self.t = {name: self.login(name) for name in ("alice", "bob", "carol", "dave")}

    def create(self, owner: str = "alice", name: str = "friends",
               members: list[str] | None = None) -> dict[str, Any]:
        """Make a group; its dict."""
        answer = self.call("POST", "/v1/groups",
                           {"name": name, "members": members if members is not None
                            else ["bob", "carol"]}, token=self.t[owner])
        self.assertEqual(answer.status, 201, answer.raw)
        self.pusher.clear()
        return answer.json["group"]

    def notified(self) -> set[str]:
        """The users told group_changed since the last clear (checking the frames)."""
        users = set()
        for targets in self.pusher.pushes:
            for user, frames in targets.items():
                self.assertEqual(len(frames), 1)
                self.assertEqual(frames[0]["event"], "group_changed")
                users.add(user)
        return users


class CreateTests(GroupTestCase):
    """POST /v1/groups."""

    def test_created(self) -> None:
        """201 {group: {id, name, owner, members}}, the caller first; members told."""
        answer = self.call("POST", "/v1/groups", {"name": "friends", "members": ["bob",
                                                                                 "carol"]},
                           token=self.t["alice"])
        self.assertEqual(answer.status, 201, answer.raw)
        group = answer.json["group"]
        self.assertEqual(set(group), {"id", "name", "owner", "members"})
        self.assertIsInstance(group["id"], str)
        self.assertEqual((group["name"], group["owner"], group["members"]),
                         ("friends", "alice", ["alice", "bob", "carol"]))
        self.assertEqual(self.pusher.pushes, [{u: changed(group["id"])
                                               for u in ("alice", "bob", "carol")}])

    def test_members_optional_and_deduplicated(self) -> None:
        """No members makes a group of one; duplicates and the caller are dropped."""
        self.assertEqual(self.create(members=[])["members"], ["alice"])
        answer = self.call("POST", "/v1/groups", {"name": "solo"}, token=self.t["alice"])
        self.assertEqual(answer.json["group"]["members"], ["alice"])
        self.assertEqual(self.create(members=["bob", "alice", "bob"])["members"],
                         ["alice", "bob"])

    def test_unknown_member(self) -> None:
        """An unknown member is 404 and makes no group."""
        self.assertError(self.call("POST", "/v1/groups", {"name": "g", "members": ["bob",
                                                                                  "nobody"]},
                                   token=self.t["alice"]), 404, "not_found")
        self.assertEqual(self.call("GET", "/v1/groups", token=self.t["bob"]).json,
                         {"groups": []})
        self.assertEqual(self.pusher.pushes, [])

    def test_bad(self) -> None:
        """A bad name or members list is 400."""
        for body in ({"members": []}, {"name": "", "members": []},
                     {"name": "x" * 65, "members": []}, {"name": 5, "members": []},
                     {"name": "g", "members": "bob"}, {"name": "g", "members": [1]},
                     {"name": "g", "members": None}, {"name": "a\tb"}):
            self.assertError(self.call("POST", "/v1/groups", body, token=self.t["alice"]),
                             400, "bad_request")
        answer = self.call("POST", "/v1/groups", {"name": "n" * 64}, token=self.t["alice"])
        self.assertEqual(answer.status, 201)

    def test_unauthenticated(self) -> None:
        """Every group call needs a token."""
        for method, path in (("POST", "/v1/groups"), ("GET", "/v1/groups"),
                             ("GET", "/v1/groups/1"), ("PUT", "/v1/groups/1"),
                             ("POST", "/v1/groups/1/members"),
                             ("DELETE", "/v1/groups/1/members/bob")):
            self.assertError(self.call(method, path, {"name": "x"}), 401, "unauthorized")


class LimitTests(GroupTestCase):
    """The member limit (max_group_members=3 here): 413 too_large beyond it."""

    max_group_members = 3

    def test_create_over_limit(self) -> None:
        """Creating with more members than the limit (owner included) is 413."""
        self.assertEqual(self.create(members=["bob", "carol"])["members"],
                         ["alice", "bob", "carol"])
        self.assertError(self.call("POST", "/v1/groups",
                                   {"name": "g", "members": ["bob", "carol", "dave"]},
                                   token=self.t["alice"]), 413, "too_large")

    def test_add_over_limit(self) -> None:
        """Adding past the limit is 413 and adds no one."""
        group = self.create(members=["bob"])
        self.assertError(self.call("POST", f"/v1/groups/{group['id']}/members",
                                   {"users": ["carol", "dave"]}, token=self.t["alice"]),
                         413, "too_large")
        self.assertEqual(self.call("GET", f"/v1/groups/{group['id']}",
                                   token=self.t["alice"]).json["group"]["members"],
                         ["alice", "bob"])
        answer = self.call("POST", f"/v1/groups/{group['id']}/members", {"users": ["carol"]},
                           token=self.t["alice"])
        self.assertEqual(answer.status, 200)


class ReadTests(GroupTestCase):
    """GET /v1/groups and GET /v1/groups/ID."""

    def test_list(self) -> None:
        """Each user lists exactly the groups it is a member of."""
        one = self.create(name="one", members=["bob"])
        two = self.create(owner="bob", name="two", members=["carol"])
        ids = {u: [g["id"] for g in self.call("GET", "/v1/groups", token=self.t[u]).json
                   ["groups"]] for u in self.t}
        self.assertEqual(ids, {"alice": [one["id"]], "bob": [one["id"], two["id"]],
                               "carol": [two["id"]], "dave": []})

    def test_show(self) -> None:
        """A member sees the group; a non-member gets 403; an unknown id 404."""
        group = self.create()
        answer = self.call("GET", f"/v1/groups/{group['id']}", token=self.t["bob"])
        self.assertEqual((answer.status, answer.json), (200, {"group": group}))
        self.assertError(self.call("GET", f"/v1/groups/{group['id']}", token=self.t["dave"]),
                         403, "forbidden")
        for bad in ("nope", "x" * 100):
            self.assertError(self.call("GET", f"/v1/groups/{bad}", token=self.t["bob"]),
                             404, "not_found")


class RenameTests(GroupTestCase):
    """PUT /v1/groups/ID."""

    def test_owner_renames(self) -> None:
        """The owner renames: 200 {group}; every member told."""
        group = self.create()
        answer = self.call("PUT", f"/v1/groups/{group['id']}", {"name": "family"},
                           token=self.t["alice"])
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(answer.json["group"], {**group, "name": "family"})
        self.assertEqual(self.notified(), {"alice", "bob", "carol"})

    def test_others_forbidden(self) -> None:
        """A member that is not the owner, or a non-member, gets 403; unknown 404."""
        group = self.create()
        for user in ("bob", "dave"):
            self.assertError(self.call("PUT", f"/v1/groups/{group['id']}", {"name": "x"},
                                       token=self.t[user]), 403, "forbidden")
        self.assertError(self.call("PUT", "/v1/groups/nope", {"name": "x"},
                                   token=self.t["alice"]), 404, "not_found")
        self.assertEqual(self.pusher.pushes, [])

    def test_bad_name(self) -> None:
        """An invalid name is 400."""
        group = self.create()
        for body in ({}, {"name": ""}, {"name": "x" * 65}, {"name": None}):
            self.assertError(self.call("PUT", f"/v1/groups/{group['id']}", body,
                                       token=self.t["alice"]), 400, "bad_request")


class AddMembersTests(GroupTestCase):
    """POST /v1/groups/ID/members."""

    def test_owner_adds(self) -> None:
        """The owner adds users: 200 {group}; old and new members told."""
        group = self.create(members=["bob"])
        answer = self.call("POST", f"/v1/groups/{group['id']}/members",
                           {"users": ["carol", "bob"]}, token=self.t["alice"])
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(answer.json["group"]["members"], ["alice", "bob", "carol"])
        self.assertEqual(self.notified(), {"alice", "bob", "carol"})
        listed = self.call("GET", "/v1/groups", token=self.t["carol"]).json["groups"]
        self.assertEqual([g["id"] for g in listed], [group["id"]])

    def test_others_forbidden(self) -> None:
        """A member that is not the owner, or a non-member, may not add: 403."""
        group = self.create()
        for user in ("bob", "dave"):
            self.assertError(self.call("POST", f"/v1/groups/{group['id']}/members",
                                       {"users": ["dave"]}, token=self.t[user]),
                             403, "forbidden")

    def test_unknown(self) -> None:
        """An unknown user or group is 404; nothing is added."""
        group = self.create()
        self.assertError(self.call("POST", f"/v1/groups/{group['id']}/members",
                                   {"users": ["dave", "nobody"]}, token=self.t["alice"]),
                         404, "not_found")
        self.assertNotIn("dave", self.call("GET", f"/v1/groups/{group['id']}",
                                           token=self.t["alice"]).json["group"]["members"])
        self.assertError(self.call("POST", "/v1/groups/nope/members", {"users": ["dave"]},
                                   token=self.t["alice"]), 404, "not_found")

    def test_bad(self) -> None:
        """users must be a non-empty list of names: 400."""
        group = self.create()
        for body in ({}, {"users": []}, {"users": "dave"}, {"users": [None]}):
            self.assertError(self.call("POST", f"/v1/groups/{group['id']}/members", body,
                                       token=self.t["alice"]), 400, "bad_request")


class RemoveMemberTests(GroupTestCase):
    """DELETE /v1/groups/ID/members/NAME."""

    def test_owner_removes(self) -> None:
        """The owner removes a member: 200 {group}; the removed one is told too and loses
        access to the group."""
        group = self.create()
        answer = self.call("DELETE", f"/v1/groups/{group['id']}/members/bob",
                           token=self.t["alice"])
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(answer.json["group"]["members"], ["alice", "carol"])
        self.assertEqual(self.notified(), {"alice", "bob", "carol"})
        self.assertError(self.call("GET", f"/v1/groups/{group['id']}", token=self.t["bob"]),
                         403, "forbidden")
        self.assertEqual(self.call("GET", "/v1/groups", token=self.t["bob"]).json,
                         {"groups": []})

    def test_member_leaves(self) -> None:
        """A member removes itself: 200."""
        group = self.create()
        answer = self.call("DELETE", f"/v1/groups/{group['id']}/members/carol",
                           token=self.t["carol"])
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(answer.json["group"]["members"], ["alice", "bob"])

    def test_member_may_not_remove_others(self) -> None:
        """A member removing another member, or a non-member removing anyone, gets 403."""
        group = self.create()
        self.assertError(self.call("DELETE", f"/v1/groups/{group['id']}/members/carol",
                                   token=self.t["bob"]), 403, "forbidden")
        self.assertError(self.call("DELETE", f"/v1/groups/{group['id']}/members/bob",
                                   token=self.t["dave"]), 403, "forbidden")
        self.assertEqual(self.pusher.pushes, [])

    def test_not_a_member(self) -> None:
        """Removing a non-member or from an unknown group is 404."""
        group = self.create()
        self.assertError(self.call("DELETE", f"/v1/groups/{group['id']}/members/dave",
                                   token=self.t["alice"]), 404, "not_found")
        self.assertError(self.call("DELETE", "/v1/groups/nope/members/bob",
                                   token=self.t["alice"]), 404, "not_found")

    def test_owner_leaves_hands_over(self) -> None:
        """The owner leaving hands the group to the longest-standing member."""
        group = self.create(members=["carol", "bob"])
        answer = self.call("DELETE", f"/v1/groups/{group['id']}/members/alice",
                           token=self.t["alice"])
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(answer.json["group"]["owner"], "carol")
        self.assertEqual(answer.json["group"]["members"], ["carol", "bob"])
        self.assertEqual(self.notified(), {"alice", "bob", "carol"})
        answer = self.call("PUT", f"/v1/groups/{group['id']}", {"name": "new"},
                           token=self.t["carol"])
        self.assertEqual(answer.status, 200)

    def test_last_leaves_deletes(self) -> None:
        """The last member leaving deletes the group: 200 {group: null}, then 404."""
        group = self.create(members=[])
        answer = self.call("DELETE", f"/v1/groups/{group['id']}/members/alice",
                           token=self.t["alice"])
        self.assertEqual((answer.status, answer.json), (200, {"group": None}))
        self.assertEqual(self.notified(), {"alice"})
        self.assertError(self.call("GET", f"/v1/groups/{group['id']}", token=self.t["alice"]),
                         404, "not_found")
