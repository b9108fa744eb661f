"""The shared contract of the part-2 methods of every :class:`dim.store.interface.IStore`:
profiles and user search, mutual contacts, groups, and files with their read access.

A test case mixes :class:`PeopleStoreContractMixin` into a ``twisted.trial.unittest.TestCase``
and provides ``makeStore()`` (a store, or a Deferred firing with one, empty and ready).
Durable stores mix in :class:`DurablePeopleStoreContractMixin` instead and also provide
``reopenStore()``: a new store over the same data as the last one made (the mixin closes the
old one first).  These are the same hooks as :mod:`tests.store_contract`'s.
"""
from __future__ import annotations

from typing import Any

from twisted.internet import defer

from dim.errors import BadRequest, NotFound, TooLarge
from dim.store.interface import Contact, FileRecord, Group, Profile
from tests.store_contract import TS, StoreFixtures



def record(file_id: str, owner: str, name: str = "cat.png") -> FileRecord:
    """The metadata of a small uploaded image."""
    return FileRecord(id=file_id, owner=owner, name=name, size=1234, mime="image/png",
                      sha256="ab" * 32, ts=TS)


def attachment(file_id: str) -> dict[str, Any]:
    """The ``file`` field of a message pointing at ``file_id``."""
    return {"id": file_id, "name": "cat.png", "size": 1234, "mime": "image/png"}


class PeopleStoreContractMixin(StoreFixtures):
    """Tests every rule of the people, groups and files part of the IStore contract."""

    # -- helpers ---------------------------------------------------------------------------

    @defer.inlineCallbacks
    def pending(self, store: Any, user: str):
        """``user``'s contact list as ``{other: pending}``."""
        entries = yield store.contacts(user)
        for entry in entries:
            self.assertIsInstance(entry, Contact)
        return {entry.user: entry.pending for entry in entries}

    @defer.inlineCallbacks
    def group_ids(self, store: Any, user: str):
        """The ids of the groups ``user`` is a member of, as a set."""
        groups = yield store.groups_of(user)
        for group in groups:
            self.assertIsInstance(group, Group)
            self.assertIn(user, group.members)
        return {group.id for group in groups}

    # -- profiles --------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_profile_from_creation(self):
        """A new user has a profile: the user name as display name, no status, no avatar."""
        store = yield self.store("alice")
        self.assertEqual(Profile(user="alice", name="alice", status="", avatar=None),
                         (yield store.get_profile("alice")))

    @defer.inlineCallbacks
    def test_profile_of_unknown_user(self):
        """An unknown user has no profile."""
        store = yield self.store("alice")
        self.assertIsNone((yield store.get_profile("nobody")))

    @defer.inlineCallbacks
    def test_update_profile_applies_given_keys_only(self):
        """update_profile changes the keys given, keeps the others, and returns the result."""
        store = yield self.store("alice")
        after_status = yield store.update_profile("alice", {"status": "out for lunch"})
        self.assertEqual(Profile(user="alice", name="alice", status="out for lunch"),
                         after_status)
        after_name = yield store.update_profile("alice", {"name": "Alice A."})
        expected = Profile(user="alice", name="Alice A.", status="out for lunch")
        self.assertEqual(expected, after_name)
        self.assertEqual(expected, (yield store.get_profile("alice")))
        self.assertEqual(expected, (yield store.update_profile("alice", {})))

    @defer.inlineCallbacks
    def test_update_profile_avatar_and_clearing(self):
        """An avatar is set by id, kept when not named, and cleared by None."""
        store = yield self.store("alice")
        yield store.update_profile("alice", {"avatar": "f1", "name": "Al"})
        yield store.update_profile("alice", {"status": "hi"})
        self.assertEqual("f1", (yield store.get_profile("alice")).avatar)
        cleared = yield store.update_profile("alice", {"avatar": None})
        self.assertEqual(Profile(user="alice", name="Al", status="hi", avatar=None), cleared)
        self.assertIsNone((yield store.get_profile("alice")).avatar)

    @defer.inlineCallbacks
    def test_update_profile_of_unknown_user(self):
        """Updating an unknown user's profile fails with NotFound and creates nothing."""
        store = yield self.store("alice")
        yield self.assertFailure(store.update_profile("nobody", {"status": "x"}), NotFound)
        self.assertIsNone((yield store.get_profile("nobody")))

    @defer.inlineCallbacks
    def test_profiles_are_separate(self):
        """Changing one user's profile leaves the others' alone."""
        store = yield self.store("alice", "bob")
        yield store.update_profile("alice", {"name": "Queen", "avatar": "f1"})
        self.assertEqual(Profile(user="bob", name="bob"), (yield store.get_profile("bob")))

    @defer.inlineCallbacks
    def test_search_user_name_or_display_name(self):
        """search_users matches a part of the user name or of the display name."""
        store = yield self.store("alice", "bob", "carol", "dave")
        yield store.update_profile("bob", {"name": "Bob Alison"})
        yield store.update_profile("dave", {"name": "Dave"})
        found = yield store.search_users("ali", 20)
        self.assertEqual(["alice", "bob"], [profile.user for profile in found])
        self.assertEqual(Profile(user="bob", name="Bob Alison"), found[1])
        self.assertEqual(["carol"], [p.user for p in (yield store.search_users("aro", 20))])
        self.assertEqual([], (yield store.search_users("zed", 20)))

    @defer.inlineCallbacks
    def test_search_ignores_case(self):
        """search_users ignores case, in user names and in (any-script) display names."""
        store = yield self.store("Alice", "bob", "emile")
        yield store.update_profile("emile", {"name": "ÉMILE Zoë"})
        self.assertEqual(["Alice"], [p.user for p in (yield store.search_users("aLI", 20))])
        self.assertEqual(["emile"], [p.user for p in (yield store.search_users("émile", 20))])
        self.assertEqual(["emile"], [p.user for p in (yield store.search_users("ZOË", 20))])
        self.assertEqual(["bob"], [p.user for p in (yield store.search_users("BOB", 20))])

    @defer.inlineCallbacks
    def test_search_order_and_limit(self):
        """search_users answers in user-name order, at most ``limit`` profiles."""
        store = yield self.store("mx3", "Amx", "mx1", "zz", "bmx", "mx2")
        found = yield store.search_users("mx", 20)
        self.assertEqual(["Amx", "bmx", "mx1", "mx2", "mx3"], [p.user for p in found])
        found = yield store.search_users("MX", 2)
        self.assertEqual(["Amx", "bmx"], [p.user for p in found])
        self.assertEqual([], (yield store.search_users("mx", 0)))
        found = yield store.search_users("", 4)
        self.assertEqual(["Amx", "bmx", "mx1", "mx2"], [p.user for p in found])

    @defer.inlineCallbacks
    def test_search_takes_text_literally(self):
        """Characters that are wildcards elsewhere (% _ * ?) match only themselves."""
        store = yield self.store("a_b", "axb", "a%b", "a*b", "a?b", "slash")
        yield store.update_profile("slash", {"name": "back\\slash"})
        for text, users in [("_", ["a_b"]), ("%", ["a%b"]), ("*", ["a*b"]), ("?", ["a?b"]),
                            ("a_", ["a_b"]), ("\\", ["slash"]), ("k\\s", ["slash"])]:
            found = yield store.search_users(text, 20)
            self.assertEqual(users, [p.user for p in found], text)

    @defer.inlineCallbacks
    def test_search_follows_renames(self):
        """A display name changed away no longer matches; the new one does."""
        store = yield self.store("alice", "bob")
        yield store.update_profile("bob", {"name": "Robert"})
        self.assertEqual(["bob"], [p.user for p in (yield store.search_users("rob", 20))])
        yield store.update_profile("bob", {"name": "Bobby"})
        self.assertEqual([], (yield store.search_users("rob", 20)))

    # -- contacts --------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_contact_request_is_pending_both_ways(self):
        """A asking for B: A sees B pending "out", B sees A pending "in"."""
        store = yield self.store("alice", "bob", "carol")
        entry = yield store.request_contact("alice", "bob")
        self.assertEqual(Contact(user="bob", pending="out"), entry)
        self.assertEqual({"bob": "out"}, (yield self.pending(store, "alice")))
        self.assertEqual({"alice": "in"}, (yield self.pending(store, "bob")))
        self.assertEqual({}, (yield self.pending(store, "carol")))

    @defer.inlineCallbacks
    def test_contact_accepted_is_mutual(self):
        """B asking for A after A asked for B makes them contacts of each other."""
        store = yield self.store("alice", "bob")
        yield store.request_contact("alice", "bob")
        entry = yield store.request_contact("bob", "alice")
        self.assertEqual(Contact(user="alice", pending=None), entry)
        self.assertEqual({"bob": None}, (yield self.pending(store, "alice")))
        self.assertEqual({"alice": None}, (yield self.pending(store, "bob")))

    @defer.inlineCallbacks
    def test_contact_request_repeated(self):
        """Asking again while pending stays pending; asking a contact keeps them contacts."""
        store = yield self.store("alice", "bob")
        yield store.request_contact("alice", "bob")
        self.assertEqual(Contact(user="bob", pending="out"),
                         (yield store.request_contact("alice", "bob")))
        self.assertEqual({"alice": "in"}, (yield self.pending(store, "bob")))
        yield store.request_contact("bob", "alice")
        for user, other in [("alice", "bob"), ("bob", "alice")]:
            self.assertEqual(Contact(user=other, pending=None),
                             (yield store.request_contact(user, other)))
        self.assertEqual({"bob": None}, (yield self.pending(store, "alice")))
        self.assertEqual({"alice": None}, (yield self.pending(store, "bob")))

    @defer.inlineCallbacks
    def test_contact_request_to_self(self):
        """Asking for oneself fails with BadRequest and records nothing."""
        store = yield self.store("alice")
        yield self.assertFailure(store.request_contact("alice", "alice"), BadRequest)
        self.assertEqual({}, (yield self.pending(store, "alice")))

    @defer.inlineCallbacks
    def test_contact_request_to_unknown(self):
        """Asking for an unknown user fails with NotFound and records nothing."""
        store = yield self.store("alice")
        yield self.assertFailure(store.request_contact("alice", "nobody"), NotFound)
        self.assertEqual({}, (yield self.pending(store, "alice")))

    @defer.inlineCallbacks
    def test_contacts_in_user_name_order(self):
        """A contact list holds mutual and pending entries together, in user-name order."""
        store = yield self.store("mia", "zoe", "bob", "Kim", "ann")
        yield store.request_contact("mia", "zoe")
        yield store.request_contact("bob", "mia")
        yield store.request_contact("mia", "Kim")
        yield store.request_contact("Kim", "mia")
        yield store.request_contact("mia", "ann")
        entries = yield store.contacts("mia")
        self.assertEqual([Contact(user="Kim", pending=None), Contact(user="ann", pending="out"),
                          Contact(user="bob", pending="in"), Contact(user="zoe", pending="out")],
                         entries)

    @defer.inlineCallbacks
    def test_remove_mutual_contact(self):
        """Either side removing a contact removes it for both."""
        store = yield self.store("alice", "bob")
        yield store.request_contact("alice", "bob")
        yield store.request_contact("bob", "alice")
        self.assertTrue((yield store.remove_contact("bob", "alice")))
        self.assertEqual({}, (yield self.pending(store, "alice")))
        self.assertEqual({}, (yield self.pending(store, "bob")))
        self.assertFalse((yield store.remove_contact("alice", "bob")))

    @defer.inlineCallbacks
    def test_remove_pending_request_either_way(self):
        """A pending request is removed by the one who made it or by the one asked."""
        store = yield self.store("alice", "bob", "carol")
        yield store.request_contact("alice", "bob")
        yield store.request_contact("alice", "carol")
        self.assertTrue((yield store.remove_contact("alice", "bob")))
        self.assertTrue((yield store.remove_contact("carol", "alice")))
        for user in ("alice", "bob", "carol"):
            self.assertEqual({}, (yield self.pending(store, user)))

    @defer.inlineCallbacks
    def test_remove_nothing(self):
        """Removing a contact that is not there answers False, even for unknown users."""
        store = yield self.store("alice", "bob", "carol")
        yield store.request_contact("alice", "carol")
        self.assertFalse((yield store.remove_contact("alice", "bob")))
        self.assertFalse((yield store.remove_contact("alice", "nobody")))
        self.assertEqual({"carol": "out"}, (yield self.pending(store, "alice")))

    @defer.inlineCallbacks
    def test_request_after_removal_starts_over(self):
        """After a removal, a new request is pending again, not mutual."""
        store = yield self.store("alice", "bob")
        yield store.request_contact("alice", "bob")
        yield store.request_contact("bob", "alice")
        yield store.remove_contact("alice", "bob")
        self.assertEqual(Contact(user="alice", pending="out"),
                         (yield store.request_contact("bob", "alice")))
        self.assertEqual({"bob": "in"}, (yield self.pending(store, "alice")))

    # -- groups ----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_create_group(self):
        """A new group has an id, the owner as first member, the others once each."""
        store = yield self.store("alice", "bob", "carol")
        group = yield store.create_group("alice", "friends", ["carol", "alice", "bob",
                                                               "carol"], TS)
        self.assertIsInstance(group, Group)
        self.assertIsInstance(group.id, str)
        self.assertTrue(0 < len(group.id) <= 32, group.id)
        self.assertEqual(("friends", "alice", ["alice", "carol", "bob"]),
                         (group.name, group.owner, group.members))
        self.assertEqual(group, (yield store.get_group(group.id)))
        for user in ("alice", "bob", "carol"):
            self.assertEqual({group.id}, (yield self.group_ids(store, user)))

    @defer.inlineCallbacks
    def test_create_group_alone(self):
        """A group may start with its owner only."""
        store = yield self.store("alice")
        group = yield store.create_group("alice", "me", [], TS)
        self.assertEqual(["alice"], group.members)

    @defer.inlineCallbacks
    def test_group_ids_unique(self):
        """Every group gets an id of its own, even with the same name and members."""
        store = yield self.store("alice", "bob")
        ids = set()
        for _ in range(12):
            ids.add((yield store.create_group("alice", "same", ["bob"], TS)).id)
        self.assertEqual(12, len(ids))
        self.assertEqual(ids, (yield self.group_ids(store, "bob")))

    @defer.inlineCallbacks
    def test_create_group_unknown_member(self):
        """An unknown member fails the creation with NotFound, and no group is made."""
        store = yield self.store("alice", "bob")
        failure = yield self.assertFailure(
            store.create_group("alice", "g", ["bob", "nobody", "ghost"], TS), NotFound)
        self.assertIn("nobody", str(failure))
        self.assertEqual(set(), (yield self.group_ids(store, "alice")))
        self.assertEqual(set(), (yield self.group_ids(store, "bob")))

    @defer.inlineCallbacks
    def test_unknown_group(self):
        """An unknown group id gives None, and changing it fails with NotFound."""
        store = yield self.store("alice")
        self.assertIsNone((yield store.get_group("nope")))
        yield self.assertFailure(store.rename_group("nope", "x"), NotFound)
        yield self.assertFailure(store.add_group_members("nope", ["alice"], 500), NotFound)
        yield self.assertFailure(store.remove_group_member("nope", "alice"), NotFound)

    @defer.inlineCallbacks
    def test_groups_of(self):
        """groups_of lists exactly the groups a user is a member of."""
        store = yield self.store("alice", "bob", "carol")
        g1 = yield store.create_group("alice", "one", ["bob"], TS)
        g2 = yield store.create_group("bob", "two", ["carol"], TS)
        g3 = yield store.create_group("carol", "three", [], TS)
        self.assertEqual({g1.id}, (yield self.group_ids(store, "alice")))
        self.assertEqual({g1.id, g2.id}, (yield self.group_ids(store, "bob")))
        self.assertEqual({g2.id, g3.id}, (yield self.group_ids(store, "carol")))
        self.assertEqual(set(), (yield self.group_ids(store, "nobody")))
        groups = {group.id: group for group in (yield store.groups_of("bob"))}
        self.assertEqual(g2, groups[g2.id])

    @defer.inlineCallbacks
    def test_rename_group(self):
        """Renaming changes the name only, for every member's view."""
        store = yield self.store("alice", "bob")
        group = yield store.create_group("alice", "old", ["bob"], TS)
        renamed = yield store.rename_group(group.id, "new")
        self.assertEqual(Group(id=group.id, name="new", owner="alice",
                               members=["alice", "bob"]), renamed)
        self.assertEqual(renamed, (yield store.get_group(group.id)))
        self.assertEqual([renamed], (yield store.groups_of("bob")))

    @defer.inlineCallbacks
    def test_add_members(self):
        """Adding appends the new members in order and ignores those already in."""
        store = yield self.store("alice", "bob", "carol", "dave")
        group = yield store.create_group("alice", "g", ["bob"], TS)
        added = yield store.add_group_members(group.id, ["dave", "bob", "alice", "carol",
                                                         "dave"], 500)
        self.assertEqual(["alice", "bob", "dave", "carol"], added.members)
        self.assertEqual("alice", added.owner)
        self.assertEqual(added, (yield store.get_group(group.id)))
        self.assertEqual({group.id}, (yield self.group_ids(store, "dave")))
        same = yield store.add_group_members(group.id, ["bob"], 4)
        self.assertEqual(added, same)

    @defer.inlineCallbacks
    def test_add_unknown_member(self):
        """Adding an unknown user fails with NotFound and adds no one."""
        store = yield self.store("alice", "bob", "carol")
        group = yield store.create_group("alice", "g", [], TS)
        yield self.assertFailure(
            store.add_group_members(group.id, ["bob", "nobody", "carol"], 500), NotFound)
        self.assertEqual(["alice"], (yield store.get_group(group.id)).members)
        self.assertEqual(set(), (yield self.group_ids(store, "bob")))

    @defer.inlineCallbacks
    def test_add_over_limit(self):
        """Passing ``limit`` members fails with TooLarge and adds no one; reaching it is fine."""
        store = yield self.store("alice", "bob", "carol", "dave")
        group = yield store.create_group("alice", "g", ["bob"], TS)
        yield self.assertFailure(
            store.add_group_members(group.id, ["carol", "dave"], 3), TooLarge)
        self.assertEqual(["alice", "bob"], (yield store.get_group(group.id)).members)
        self.assertEqual(set(), (yield self.group_ids(store, "carol")))
        full = yield store.add_group_members(group.id, ["carol", "bob", "alice"], 3)
        self.assertEqual(["alice", "bob", "carol"], full.members)
        yield self.assertFailure(store.add_group_members(group.id, ["dave"], 3), TooLarge)

    @defer.inlineCallbacks
    def test_remove_member(self):
        """A removed member leaves the group and its groups_of; the rest stay in order."""
        store = yield self.store("alice", "bob", "carol")
        group = yield store.create_group("alice", "g", ["bob", "carol"], TS)
        left = yield store.remove_group_member(group.id, "bob")
        self.assertEqual(Group(id=group.id, name="g", owner="alice",
                               members=["alice", "carol"]), left)
        self.assertEqual(left, (yield store.get_group(group.id)))
        self.assertEqual(set(), (yield self.group_ids(store, "bob")))
        self.assertEqual({group.id}, (yield self.group_ids(store, "carol")))

    @defer.inlineCallbacks
    def test_remove_non_member(self):
        """Removing someone who is not a member fails with NotFound and changes nothing."""
        store = yield self.store("alice", "bob")
        group = yield store.create_group("alice", "g", [], TS)
        yield self.assertFailure(store.remove_group_member(group.id, "bob"), NotFound)
        yield self.assertFailure(store.remove_group_member(group.id, "nobody"), NotFound)
        self.assertEqual(["alice"], (yield store.get_group(group.id)).members)

    @defer.inlineCallbacks
    def test_owner_leaving_hands_over_by_join_order(self):
        """The owner leaving makes the longest-standing member owner (join, not name, order)."""
        store = yield self.store("zed", "yan", "amy", "bob")
        group = yield store.create_group("zed", "g", ["yan"], TS)
        yield store.add_group_members(group.id, ["amy"], 500)
        yield store.add_group_members(group.id, ["bob"], 500)
        after = yield store.remove_group_member(group.id, "zed")
        self.assertEqual(("yan", ["yan", "amy", "bob"]), (after.owner, after.members))
        self.assertEqual(after, (yield store.get_group(group.id)))
        after = yield store.remove_group_member(group.id, "amy")
        self.assertEqual(("yan", ["yan", "bob"]), (after.owner, after.members))
        after = yield store.remove_group_member(group.id, "yan")
        self.assertEqual(("bob", ["bob"]), (after.owner, after.members))

    @defer.inlineCallbacks
    def test_rejoining_member_stands_from_rejoining(self):
        """A member who left and was added again counts as joined at the second time."""
        store = yield self.store("ann", "bob", "cat")
        group = yield store.create_group("ann", "g", ["bob", "cat"], TS)
        yield store.remove_group_member(group.id, "bob")
        again = yield store.add_group_members(group.id, ["bob"], 500)
        self.assertEqual(["ann", "cat", "bob"], again.members)
        after = yield store.remove_group_member(group.id, "ann")
        self.assertEqual("cat", after.owner)

    @defer.inlineCallbacks
    def test_last_member_leaving_deletes(self):
        """The last member leaving deletes the group: None, then no such group."""
        store = yield self.store("alice", "bob")
        group = yield store.create_group("alice", "g", ["bob"], TS)
        yield store.remove_group_member(group.id, "alice")
        self.assertIsNone((yield store.remove_group_member(group.id, "bob")))
        self.assertIsNone((yield store.get_group(group.id)))
        self.assertEqual(set(), (yield self.group_ids(store, "bob")))
        yield self.assertFailure(store.remove_group_member(group.id, "bob"), NotFound)
        yield self.assertFailure(store.add_group_members(group.id, ["alice"], 500), NotFound)
        yield self.assertFailure(store.rename_group(group.id, "x"), NotFound)

    @defer.inlineCallbacks
    def test_returned_group_is_a_copy(self):
        """Changing a group the store returned does not change the stored group."""
        store = yield self.store("alice", "bob")
        group = yield store.create_group("alice", "g", [], TS)
        group.members.append("bob")
        group.name = "changed"
        self.assertEqual(Group(id=group.id, name="g", owner="alice", members=["alice"]),
                         (yield store.get_group(group.id)))

    # -- files -----------------------------------------------------------------------------

    @defer.inlineCallbacks
    def test_file_record(self):
        """A file's metadata is kept as given; an unknown id gives None."""
        store = yield self.store("alice")
        yield store.add_file(record("f1", "alice"))
        self.assertEqual(record("f1", "alice"), (yield store.get_file("f1")))
        self.assertIsNone((yield store.get_file("f2")))

    @defer.inlineCallbacks
    def test_uploader_only_at_first(self):
        """A fresh upload may be read by its uploader and no one else."""
        store = yield self.store("alice", "bob")
        yield store.add_file(record("f1", "alice"))
        self.assertTrue((yield store.may_read_file("alice", "f1")))
        self.assertFalse((yield store.may_read_file("bob", "f1")))
        self.assertFalse((yield store.may_read_file("alice", "unknown")))

    @defer.inlineCallbacks
    def test_recipient_may_read(self):
        """A message pointing at a file lets its recipient read it, and no one else."""
        store = yield self.store("alice", "bob", "carol")
        yield store.add_file(record("f1", "alice"))
        yield store.add_file(record("f2", "alice"))
        yield self.send(store, "alice", "m1", "bob", file=attachment("f1"))
        self.assertTrue((yield store.may_read_file("bob", "f1")))
        self.assertTrue((yield store.may_read_file("alice", "f1")))
        self.assertFalse((yield store.may_read_file("carol", "f1")))
        self.assertFalse((yield store.may_read_file("bob", "f2")))

    @defer.inlineCallbacks
    def test_forwarded_file_readable_by_new_recipient(self):
        """A recipient who sends the file on passes access to its own recipient."""
        store = yield self.store("alice", "bob", "carol")
        yield store.add_file(record("f1", "alice"))
        yield self.send(store, "alice", "m1", "bob", file=attachment("f1"))
        yield self.send(store, "bob", "m2", "carol", file=attachment("f1"))
        self.assertTrue((yield store.may_read_file("carol", "f1")))

    @defer.inlineCallbacks
    def test_message_without_file_grants_nothing(self):
        """Text messages, and a file dict with no id, record no access."""
        store = yield self.store("alice", "bob")
        yield store.add_file(record("f1", "alice"))
        yield self.send(store, "alice", "m1", "bob")
        yield self.send(store, "alice", "m2", "bob", file={"name": "x"})
        self.assertFalse((yield store.may_read_file("bob", "f1")))

    @defer.inlineCallbacks
    def test_group_members_may_read_and_keep_it(self):
        """Group members when it was sent may read a file, even after leaving; later ones not."""
        store = yield self.store("alice", "bob", "carol", "dave")
        yield store.add_file(record("f1", "alice"))
        group = yield store.create_group("alice", "g", ["bob", "carol"], TS)
        yield self.send(store, "alice", "m1", ["bob", "carol"], group=group.id,
                        file=attachment("f1"))
        yield store.remove_group_member(group.id, "bob")
        yield store.add_group_members(group.id, ["dave"], 500)
        for user, allowed in [("alice", True), ("bob", True), ("carol", True),
                              ("dave", False)]:
            self.assertEqual(allowed, (yield store.may_read_file(user, "f1")), user)

    @defer.inlineCallbacks
    def test_duplicate_send_grants_nothing_new(self):
        """A repeated client id stores nothing, so its new recipients gain no access."""
        store = yield self.store("alice", "bob", "carol")
        yield store.add_file(record("f1", "alice"))
        yield self.send(store, "alice", "m1", "bob", file=attachment("f1"))
        again = yield self.send(store, "alice", "m1", "carol", file=attachment("f1"))
        self.assertTrue(again.duplicate)
        self.assertFalse((yield store.may_read_file("carol", "f1")))

    @defer.inlineCallbacks
    def test_avatar_readable_by_everyone(self):
        """A file that is someone's current avatar may be read by anyone, only while it is."""
        store = yield self.store("alice", "bob", "carol")
        yield store.add_file(record("f1", "alice"))
        yield store.add_file(record("f2", "alice"))
        yield store.update_profile("alice", {"avatar": "f1"})
        self.assertTrue((yield store.may_read_file("bob", "f1")))
        self.assertTrue((yield store.may_read_file("carol", "f1")))
        self.assertFalse((yield store.may_read_file("bob", "f2")))
        yield store.update_profile("alice", {"avatar": "f2"})
        self.assertFalse((yield store.may_read_file("bob", "f1")))
        self.assertTrue((yield store.may_read_file("bob", "f2")))
        yield store.update_profile("alice", {"avatar": None})
        self.assertFalse((yield store.may_read_file("bob", "f2")))
        self.assertTrue((yield store.may_read_file("alice", "f2")))

    @defer.inlineCallbacks
    def test_shared_avatar_stays_readable(self):
        """An avatar two users have stays readable until neither has it."""
        store = yield self.store("alice", "bob", "carol")
        yield store.add_file(record("f1", "alice"))
        yield store.update_profile("alice", {"avatar": "f1"})
        yield store.update_profile("bob", {"avatar": "f1"})
        yield store.update_profile("alice", {"avatar": None})
        self.assertTrue((yield store.may_read_file("carol", "f1")))
        yield store.update_profile("bob", {"name": "Bob"})
        self.assertTrue((yield store.may_read_file("carol", "f1")))
        yield store.update_profile("bob", {"avatar": None})
        self.assertFalse((yield store.may_read_file("carol", "f1")))


class DurablePeopleStoreContractMixin(PeopleStoreContractMixin):
    """The people contract plus persistence; subclasses also provide ``reopenStore()``."""

    @defer.inlineCallbacks
    def test_reopen_keeps_people_groups_and_files(self):
        """People, contacts, groups, files and access survive a reopen; new groups get new ids."""
        store = yield self.store("alice", "bob", "carol", "dave")
        yield store.update_profile("alice", {"name": "Alice", "status": "hi", "avatar": "fa"})
        yield store.update_profile("bob", {"name": "Robert"})
        yield store.request_contact("alice", "bob")
        yield store.request_contact("bob", "alice")
        yield store.request_contact("carol", "alice")
        kept = yield store.create_group("alice", "kept", ["carol", "bob"], TS)
        kept = yield store.remove_group_member(kept.id, "alice")
        gone = yield store.create_group("dave", "gone", [], TS)
        yield store.remove_group_member(gone.id, "dave")
        for file_id in ("fa", "fm", "fx"):
            yield store.add_file(record(file_id, "alice"))
        yield self.send(store, "alice", "m1", "dave", file=attachment("fm"))
        store = yield self.reopen(store)
        self.assertEqual(Profile(user="alice", name="Alice", status="hi", avatar="fa"),
                         (yield store.get_profile("alice")))
        self.assertEqual(Profile(user="carol", name="carol"),
                         (yield store.get_profile("carol")))
        self.assertEqual(["bob"], [p.user for p in (yield store.search_users("rob", 20))])
        self.assertEqual({"bob": None, "carol": "in"}, (yield self.pending(store, "alice")))
        self.assertEqual({"alice": "out"}, (yield self.pending(store, "carol")))
        self.assertEqual(Group(id=kept.id, name="kept", owner="carol",
                               members=["carol", "bob"]), (yield store.get_group(kept.id)))
        self.assertEqual({kept.id}, (yield self.group_ids(store, "bob")))
        self.assertEqual(set(), (yield self.group_ids(store, "alice")))
        self.assertIsNone((yield store.get_group(gone.id)))
        new = yield store.create_group("dave", "new", ["bob"], TS)
        self.assertNotIn(new.id, {kept.id, gone.id})
        self.assertEqual({kept.id, new.id}, (yield self.group_ids(store, "bob")))
        self.assertEqual(record("fm", "alice"), (yield store.get_file("fm")))
        for user, file_id, allowed in [("dave", "fm", True), ("bob", "fm", False),
                                       ("carol", "fa", True), ("alice", "fx", True),
                                       ("dave", "fx", False)]:
            self.assertEqual(allowed, (yield store.may_read_file(user, file_id)),
                             (user, file_id))
        again = yield store.add_group_members(kept.id, ["dave"], 3)
        self.assertEqual(["carol", "bob", "dave"], again.members)
