"""What is particular to the Redis store's people and groups, on
a real Redis (the contract itself runs in test_redis_store).

Redis comes from ``DIM_REDIS`` (default ``redis://127.0.0.1:6379``); the tests fail when it
does not answer.  Every test uses its own key prefix and deletes its keys afterwards.
"""
from __future__ import annotations


from twisted.internet import defer

from tests.fakes.redis import RedisPrefixTestCase
from tests.store_contract import TS
from tests.store_contract_people import attachment


class RedisStorePeopleTests(RedisPrefixTestCase):
    """What is particular to the Redis store's people and groups: several nodes at once, and
    search over many users."""

    timeout = 60

    @defer.inlineCallbacks
    def test_requests_crossing_make_contacts(self):
        """Two people asking for each other at once through two nodes end up contacts."""
        a = yield self.open()
        b = yield self.open()
        for n in range(20):
            yield a.create_user(f"x{n}", "h", TS)
            yield a.create_user(f"y{n}", "h", TS)
        yield defer.gatherResults(
            [call for n in range(20) for call in (a.request_contact(f"x{n}", f"y{n}"),
                                                  b.request_contact(f"y{n}", f"x{n}"))])
        for n in range(20):
            self.assertEqual([(f"y{n}", None)],
                             [(c.user, c.pending) for c in (yield a.contacts(f"x{n}"))])
            self.assertEqual([(f"x{n}", None)],
                             [(c.user, c.pending) for c in (yield b.contacts(f"y{n}"))])

    @defer.inlineCallbacks
    def test_limit_holds_across_nodes(self):
        """Adds through two nodes at once never take a group past its limit."""
        a = yield self.open()
        b = yield self.open()
        users = [f"u{n:02}" for n in range(40)]
        for user in users:
            yield a.create_user(user, "h", TS)
        group = yield a.create_group("u00", "g", [], TS)
        results = yield defer.DeferredList(
            [(a if n % 2 else b).add_group_members(group.id, [user], 10)
             for n, user in enumerate(users[1:])], consumeErrors=True)
        self.assertEqual(9, sum(1 for ok, _ in results if ok))
        members = (yield b.get_group(group.id)).members
        self.assertEqual(10, len(members))
        self.assertEqual("u00", members[0])

    @defer.inlineCallbacks
    def test_search_across_pages(self):
        """Search reads the names page after page, in name order, and stops at the limit."""
        store = yield self.open()
        store.search_page = 7
        names = [f"p{n:03}" for n in range(120)]
        yield defer.gatherResults([store.create_user(name, "h", TS) for name in names])
        yield store.update_profile("p119", {"name": "Needle"})
        yield store.update_profile("p006", {"name": "Needle too"})
        found = yield store.search_users("p1", 300)
        self.assertEqual(names[100:120], [p.user for p in found])
        found = yield store.search_users("eedl", 5)
        self.assertEqual([("p006", "Needle too"), ("p119", "Needle")],
                         [(p.user, p.name) for p in found])
        self.assertEqual(names[:14], [p.user for p in (yield store.search_users("P", 14))])
        self.assertEqual(names[:15], [p.user for p in (yield store.search_users("", 15))])

    @defer.inlineCallbacks
    def test_numeric_names_and_ids_stay_strings(self):
        """User names and group ids made of digits come back as strings."""
        store = yield self.open()
        for user in ("42", "7"):
            yield store.create_user(user, "h", TS)
        yield store.update_profile("7", {"status": "12", "name": "99"})
        profile = yield store.get_profile("7")
        self.assertEqual(("7", "99", "12"), (profile.user, profile.name, profile.status))
        group = yield store.create_group("42", "1", ["7"], TS)
        again = yield store.get_group(group.id)
        self.assertEqual(("1", "42", ["42", "7"]), (again.name, again.owner, again.members))
        self.assertIsInstance(again.id, str)
        yield store.store_message("42", "c", ["7"], None, "", "file", attachment("5"), TS)
        self.assertTrue((yield store.may_read_file("7", "5")))
