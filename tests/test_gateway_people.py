"""Tests of the gateway's people calls: search, profiles, contacts and their notifications."""
from __future__ import annotations

from tests.fakes.files import PDF, PNG
from tests.fakes.gateway import GatewayTestCase


class PeopleTestCase(GatewayTestCase):
    """Helpers for uploading and for contacts."""

    def upload(self, token: str, data: bytes, name: str = "f.bin",
               mime: str = "application/octet-stream") -> str:
        """Upload a file; its id."""
        answer = self.call("POST", f"/v1/files?name={name}", raw=data, token=token,
                           headers={"Content-Type": mime})
        self.assertEqual(answer.status, 201, answer.raw)
        return answer.json["file"]["id"]


class SearchTests(PeopleTestCase):
    """GET /v1/users?q=TEXT&limit=."""

    def setUp(self) -> None:
        super().setUp()
        self.token = self.login("alice")
        for name in ("bob", "bobby", "carol", "Robert"):
            self.register(name)

    def search(self, query: str) -> dict:
        """GET /v1/users with this query string; the 200 answer's JSON."""
        answer = self.call("GET", "/v1/users?" + query, token=self.token)
        self.assertEqual(answer.status, 200, answer.raw)
        return answer.json

    def test_user_names(self) -> None:
        """q matches user names case-insensitively, each as {user, name, avatar}."""
        found = self.search("q=OB")
        self.assertEqual([u["user"] for u in found["users"]], ["Robert", "bob", "bobby"])
        self.assertEqual(found["users"][1], {"user": "bob", "name": "bob", "avatar": None})

    def test_display_names(self) -> None:
        """q matches display names too."""
        carol = self.login("carol")
        self.call("PUT", "/v1/profile", {"name": "Queen of Hearts"}, token=carol)
        found = self.search("q=hearts")
        self.assertEqual(found["users"], [{"user": "carol", "name": "Queen of Hearts",
                                           "avatar": None}])

    def test_spaces_ignored(self) -> None:
        """Spaces around q are ignored."""
        self.assertEqual([u["user"] for u in self.search("q=%20carol%20")["users"]], ["carol"])

    def test_no_match(self) -> None:
        """No match is an empty list."""
        self.assertEqual(self.search("q=zzz"), {"users": []})

    def test_limit(self) -> None:
        """limit defaults to 20 and is clamped to 50."""
        for i in range(60):
            self.register(f"many{i:02d}")
        self.assertEqual(len(self.search("q=many")["users"]), 20)
        self.assertEqual(len(self.search("q=many&limit=5")["users"]), 5)
        self.assertEqual(len(self.search("q=many&limit=1000")["users"]), 50)

    def test_bad(self) -> None:
        """A missing, empty or over-long q, or a bad limit, is 400."""
        for query in ("", "q=", "q=%20%20", "limit=5", "q=" + "x" * 65, "q=bob&limit=0",
                      "q=bob&limit=x", "q=%ff"):
            self.assertError(self.call("GET", "/v1/users?" + query, token=self.token),
                             400, "bad_request")

    def test_unauthenticated(self) -> None:
        """Search needs a token."""
        self.assertError(self.call("GET", "/v1/users?q=bob"), 401, "unauthorized")


class ProfileTests(PeopleTestCase):
    """GET and PUT /v1/profile, and the profile in GET /v1/users/NAME."""

    def test_default(self) -> None:
        """A new user's profile has its user name as name, no status, no avatar."""
        token = self.login("alice")
        answer = self.call("GET", "/v1/profile", token=token)
        self.assertEqual(answer.status, 200)
        self.assertEqual(answer.json, {"user": "alice", "name": "alice", "status": "",
                                       "avatar": None})

    def test_update(self) -> None:
        """PUT changes the given fields only and answers the new profile; others see it."""
        token = self.login("alice")
        answer = self.call("PUT", "/v1/profile", {"name": "Alice L.", "status": "away"},
                           token=token)
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(answer.json, {"user": "alice", "name": "Alice L.", "status": "away",
                                       "avatar": None})
        answer = self.call("PUT", "/v1/profile", {"status": "", "other": 1}, token=token)
        self.assertEqual(answer.json["name"], "Alice L.")
        self.assertEqual(answer.json["status"], "")
        bob = self.login("bob")
        seen = self.call("GET", "/v1/users/alice", token=bob).json
        self.assertEqual(seen, {"user": "alice", "name": "Alice L.", "status": "",
                                "avatar": None, "online": False})

    def test_lengths(self) -> None:
        """name may be 1-64 characters, status 0-140; beyond is 400."""
        token = self.login("alice")
        for ok in ({"name": "x"}, {"name": "é" * 64}, {"status": ""}, {"status": "s" * 140}):
            self.assertEqual(self.call("PUT", "/v1/profile", ok, token=token).status, 200)
        for bad in ({"name": ""}, {"name": "x" * 65}, {"name": "   "}, {"status": "s" * 141},
                    {"name": None}, {"name": 5}, {"status": None}, {"name": "a\nb"},
                    {"status": "nul\x00"}, {}, {"unknown": "x"}):
            self.assertError(self.call("PUT", "/v1/profile", bad, token=token),
                             400, "bad_request")
        self.assertError(self.call("PUT", "/v1/profile", raw=b"[]", token=token),
                         400, "bad_request")

    def test_avatar(self) -> None:
        """An uploaded image can be the avatar, then cleared with null."""
        token = self.login("alice")
        image = self.upload(token, PNG, "me.png", "image/png")
        answer = self.call("PUT", "/v1/profile", {"avatar": image}, token=token)
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(answer.json["avatar"], image)
        bob = self.login("bob")
        self.assertEqual(self.call("GET", "/v1/users/alice", token=bob).json["avatar"], image)
        self.assertEqual(self.call("GET", "/v1/users?q=ali", token=bob).json["users"][0]
                         ["avatar"], image)
        answer = self.call("PUT", "/v1/profile", {"avatar": None}, token=token)
        self.assertIsNone(answer.json["avatar"])

    def test_avatar_must_be_image(self) -> None:
        """A non-image is refused as avatar even when uploaded as image/png."""
        token = self.login("alice")
        for data in (PDF, b"<svg onload=alert(1)>"):
            fake = self.upload(token, data, "x.png", "image/png")
            self.assertError(self.call("PUT", "/v1/profile", {"avatar": fake}, token=token),
                             400, "bad_request")
        self.assertIsNone(self.call("GET", "/v1/profile", token=token).json["avatar"])

    def test_avatar_must_be_own(self) -> None:
        """Someone else's image, an unknown id or a non-string is 400."""
        alice = self.login("alice")
        bob = self.login("bob")
        image = self.upload(bob, PNG, "bob.png", "image/png")
        for avatar in (image, "A" * 32, "nope", 5, ["x"]):
            self.assertError(self.call("PUT", "/v1/profile", {"avatar": avatar}, token=alice),
                             400, "bad_request")

    def test_unauthenticated(self) -> None:
        """Profile calls need a token."""
        self.assertError(self.call("GET", "/v1/profile"), 401, "unauthorized")
        self.assertError(self.call("PUT", "/v1/profile", {"name": "x"}), 401, "unauthorized")


class ContactTests(PeopleTestCase):
    """GET, POST and DELETE /v1/contacts, with their notify frames."""

    def setUp(self) -> None:
        super().setUp()
        self.alice = self.login("alice")
        self.bob = self.login("bob")
        self.carol = self.login("carol")

    def contacts(self, token: str) -> list[dict]:
        """The 200 answer of GET /v1/contacts for this token."""
        answer = self.call("GET", "/v1/contacts", token=token)
        self.assertEqual(answer.status, 200, answer.raw)
        return answer.json["contacts"]

    def test_empty(self) -> None:
        """A new user has no contacts."""
        self.assertEqual(self.contacts(self.alice), [])

    def test_request_then_accept(self) -> None:
        """A asks B (out/in, B told contact_request); B accepts (mutual, both told)."""
        answer = self.call("POST", "/v1/contacts", {"user": "bob"}, token=self.alice)
        self.assertEqual(answer.status, 200, answer.raw)
        self.assertEqual(answer.json, {"contact": {"user": "bob", "name": "bob", "status": "",
                                                   "avatar": None, "online": False,
                                                   "pending": "out"}})
        self.assertEqual(self.pusher.pushes, [
            {"bob": [{"type": "notify", "event": "contact_request", "from": "alice"}]}])
        self.assertEqual(self.contacts(self.bob), [
            {"user": "alice", "name": "alice", "status": "", "avatar": None, "online": False,
             "pending": "in"}])
        self.pusher.clear()
        answer = self.call("POST", "/v1/contacts", {"user": "alice"}, token=self.bob)
        self.assertEqual(answer.json["contact"]["pending"], None)
        self.assertEqual(self.pusher.pushes, [{
            "bob": [{"type": "notify", "event": "contact_added", "user": "alice"}],
            "alice": [{"type": "notify", "event": "contact_added", "user": "bob"}]}])
        self.assertEqual([(c["user"], c["pending"]) for c in self.contacts(self.alice)],
                         [("bob", None)])
        self.assertEqual([(c["user"], c["pending"]) for c in self.contacts(self.bob)],
                         [("alice", None)])

    def test_repeat_notifies_nothing(self) -> None:
        """Asking again, or re-adding a contact, changes and notifies nothing."""
        self.call("POST", "/v1/contacts", {"user": "bob"}, token=self.alice)
        self.pusher.clear()
        answer = self.call("POST", "/v1/contacts", {"user": "bob"}, token=self.alice)
        self.assertEqual(answer.json["contact"]["pending"], "out")
        self.assertEqual(self.pusher.pushes, [])
        self.call("POST", "/v1/contacts", {"user": "alice"}, token=self.bob)
        self.pusher.clear()
        answer = self.call("POST", "/v1/contacts", {"user": "bob"}, token=self.alice)
        self.assertEqual(answer.json["contact"]["pending"], None)
        self.assertEqual(self.pusher.pushes, [])

    def test_online_and_profile(self) -> None:
        """A contact shows its profile and whether it is online."""
        self.call("PUT", "/v1/profile", {"name": "Bobby", "status": "hi"}, token=self.bob)
        self.call("POST", "/v1/contacts", {"user": "bob"}, token=self.alice)
        self.successResultOf(self.sessions.add("bob", "s1", "node-a"))
        self.assertEqual(self.contacts(self.alice), [
            {"user": "bob", "name": "Bobby", "status": "hi", "avatar": None, "online": True,
             "pending": "out"}])

    def test_errors(self) -> None:
        """Unknown user 404; yourself 400; a missing or non-string user 400."""
        self.assertError(self.call("POST", "/v1/contacts", {"user": "nobody"},
                                   token=self.alice), 404, "not_found")
        self.assertError(self.call("POST", "/v1/contacts", {"user": "bad name!"},
                                   token=self.alice), 404, "not_found")
        self.assertError(self.call("POST", "/v1/contacts", {"user": "alice"},
                                   token=self.alice), 400, "bad_request")
        for body in ({}, {"user": 3}, {"user": None}):
            self.assertError(self.call("POST", "/v1/contacts", body, token=self.alice),
                             400, "bad_request")
        self.assertEqual(self.pusher.pushes, [])

    def test_remove_contact(self) -> None:
        """Either side removes a contact: 200 {}, the other told contact_removed."""
        self.call("POST", "/v1/contacts", {"user": "bob"}, token=self.alice)
        self.call("POST", "/v1/contacts", {"user": "alice"}, token=self.bob)
        self.pusher.clear()
        answer = self.call("DELETE", "/v1/contacts/alice", token=self.bob)
        self.assertEqual((answer.status, answer.json), (200, {}))
        self.assertEqual(self.pusher.pushes, [
            {"alice": [{"type": "notify", "event": "contact_removed", "user": "bob"}]}])
        self.assertEqual(self.contacts(self.alice), [])
        self.assertEqual(self.contacts(self.bob), [])

    def test_remove_request(self) -> None:
        """A pending request can be withdrawn by the asker or refused by the asked."""
        self.call("POST", "/v1/contacts", {"user": "bob"}, token=self.alice)
        self.assertEqual(self.call("DELETE", "/v1/contacts/alice", token=self.bob).status, 200)
        self.assertEqual(self.contacts(self.alice), [])
        self.call("POST", "/v1/contacts", {"user": "carol"}, token=self.alice)
        self.assertEqual(self.call("DELETE", "/v1/contacts/carol", token=self.alice).status,
                         200)
        self.assertEqual(self.contacts(self.carol), [])

    def test_remove_none(self) -> None:
        """Removing someone who is no contact nor request is 404."""
        for name in ("bob", "nobody", "x" * 40):
            self.assertError(self.call("DELETE", f"/v1/contacts/{name}", token=self.alice),
                             404, "not_found")
        self.assertEqual(self.pusher.pushes, [])

    def test_unauthenticated(self) -> None:
        """Contact calls need a token."""
        self.assertError(self.call("GET", "/v1/contacts"), 401, "unauthorized")
        self.assertError(self.call("POST", "/v1/contacts", {"user": "bob"}), 401,
                         "unauthorized")
        self.assertError(self.call("DELETE", "/v1/contacts/bob"), 401, "unauthorized")


class NoPusherTests(PeopleTestCase):
    """Without a pusher, changes still work and nothing is pushed."""

    def test_no_pusher(self) -> None:
        """A gateway made with pusher=None answers contact calls normally."""
        self.gateway.pusher = None
        alice = self.login("alice")
        self.login("bob")
        answer = self.call("POST", "/v1/contacts", {"user": "bob"}, token=alice)
        self.assertEqual(answer.status, 200)
        self.assertEqual(self.pusher.pushes, [])


class FailingPusherTests(PeopleTestCase):
    """A push that fails is logged; the call still succeeds."""

    def test_failing_pusher(self) -> None:
        """A pusher error does not fail the HTTP call."""
        def broken(targets: dict) -> None:
            raise RuntimeError("no route to node")

        self.patch(self.pusher, "push", broken)
        alice = self.login("alice")
        self.login("bob")
        self.assertEqual(self.call("POST", "/v1/contacts", {"user": "bob"}, token=alice).status,
                         200)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
