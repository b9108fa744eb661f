"""The shared contract of every :class:`dim.cluster.interface.ISessionRegistry`.

A test case mixes :class:`SessionRegistryContractMixin` into a
``twisted.trial.unittest.TestCase`` and provides ``makeRegistry()``: a new, empty registry (or
a Deferred firing with one) that the test case closes or forgets when the test ends.  What
only one registry does (sessions expiring without heartbeats, a cache kept by change events)
is tested beside that registry.
"""
from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface.verify import verifyObject

from dim.cluster.interface import ISessionRegistry, SessionRef


def refs(found: dict[str, list[SessionRef]]) -> dict[str, set[SessionRef]]:
    """A locate answer with each user's sessions as a set (their order is not promised)."""
    return {user: set(sessions) for user, sessions in found.items()}


class SessionRegistryContractMixin:
    """Sessions by user and node: first and last, where they are, a node's dropped."""

    def makeRegistry(self) -> Any:
        """A new, empty registry (or a Deferred firing with one)."""
        raise NotImplementedError

    def registry(self) -> defer.Deferred[Any]:
        """:meth:`makeRegistry`, always as a Deferred."""
        return defer.maybeDeferred(self.makeRegistry)

    @defer.inlineCallbacks
    def test_provides_interface(self):
        """The registry provides ISessionRegistry in full."""
        r = yield self.registry()
        self.assertTrue(verifyObject(ISessionRegistry, r))

    @defer.inlineCallbacks
    def test_add_fires_true_for_the_first_session(self):
        """add fires True for a user's first session only, on whichever node."""
        r = yield self.registry()
        self.assertTrue((yield r.add("alice", "s1", "n1")))
        self.assertFalse((yield r.add("alice", "s2", "n2")))
        self.assertFalse((yield r.add("alice", "s1", "n1")))
        self.assertTrue((yield r.add("bob", "s3", "n1")))

    @defer.inlineCallbacks
    def test_remove_fires_true_for_the_last_session(self):
        """remove fires True only when the user's last session goes; removing it again
        fires False."""
        r = yield self.registry()
        yield r.add("alice", "s1", "n1")
        yield r.add("alice", "s2", "n2")
        self.assertFalse((yield r.remove("alice", "s1")))
        self.assertTrue((yield r.online("alice")))
        self.assertTrue((yield r.remove("alice", "s2")))
        self.assertFalse((yield r.online("alice")))
        self.assertFalse((yield r.remove("alice", "s2")))

    @defer.inlineCallbacks
    def test_remove_unknown_changes_nothing(self):
        """Removing a session that is not there fires False and keeps the others."""
        r = yield self.registry()
        self.assertFalse((yield r.remove("alice", "s1")))
        yield r.add("alice", "s1", "n1")
        self.assertFalse((yield r.remove("alice", "zz")))
        self.assertTrue((yield r.online("alice")))
        self.assertEqual({"alice": [SessionRef(session="s1", node="n1")]},
                         (yield r.locate(["alice"])))

    @defer.inlineCallbacks
    def test_online(self):
        """online says whether a user has a session, whatever its node."""
        r = yield self.registry()
        self.assertFalse((yield r.online("alice")))
        yield r.add("alice", "s1", "n2")
        self.assertTrue((yield r.online("alice")))
        self.assertFalse((yield r.online("bob")))

    @defer.inlineCallbacks
    def test_locate_across_nodes(self):
        """locate lists every session of every asked user with its node; users with none
        are left out; asking for nobody finds nobody."""
        r = yield self.registry()
        yield r.add("alice", "s1", "n1")
        yield r.add("alice", "s2", "n2")
        yield r.add("bob", "s3", "n2")
        yield r.add("dave", "s4", "n1")
        found = yield r.locate(["alice", "bob", "carol"])
        self.assertEqual({"alice": {SessionRef(session="s1", node="n1"),
                                    SessionRef(session="s2", node="n2")},
                          "bob": {SessionRef(session="s3", node="n2")}}, refs(found))
        self.assertEqual({}, (yield r.locate([])))
        self.assertEqual({}, (yield r.locate(["carol"])))

    @defer.inlineCallbacks
    def test_locate_after_remove(self):
        """A removed session is no longer located; the user's others still are."""
        r = yield self.registry()
        yield r.add("alice", "s1", "n1")
        yield r.add("alice", "s2", "n2")
        yield r.remove("alice", "s1")
        self.assertEqual({"alice": [SessionRef(session="s2", node="n2")]},
                         (yield r.locate(["alice"])))
        yield r.remove("alice", "s2")
        self.assertEqual({}, (yield r.locate(["alice"])))

    @defer.inlineCallbacks
    def test_drop_node(self):
        """drop_node forgets the node's sessions, says who is still online elsewhere, and
        leaves the other nodes' sessions; dropping it again finds nobody."""
        r = yield self.registry()
        yield r.add("alice", "s1", "n1")
        yield r.add("alice", "s2", "n2")
        yield r.add("bob", "s3", "n1")
        yield r.add("carol", "s4", "n2")
        self.assertEqual({"alice": True, "bob": False}, (yield r.drop_node("n1")))
        found = yield r.locate(["alice", "bob", "carol"])
        self.assertEqual({"alice": [SessionRef(session="s2", node="n2")],
                          "carol": [SessionRef(session="s4", node="n2")]}, found)
        self.assertFalse((yield r.online("bob")))
        self.assertEqual({}, (yield r.drop_node("n1")))
        self.assertEqual({}, (yield r.drop_node("never-seen")))

    @defer.inlineCallbacks
    def test_add_after_drop_is_first_again(self):
        """A user whose only node was dropped comes back with a first session."""
        r = yield self.registry()
        yield r.add("bob", "s1", "n1")
        yield r.drop_node("n1")
        self.assertTrue((yield r.add("bob", "s2", "n1")))
        self.assertEqual({"bob": [SessionRef(session="s2", node="n1")]},
                         (yield r.locate(["bob"])))

    @defer.inlineCallbacks
    def test_refresh_keeps_sessions(self):
        """refresh of a node keeps every session, its own and the others'."""
        r = yield self.registry()
        yield r.add("alice", "s1", "n1")
        yield r.add("bob", "s2", "n2")
        yield r.refresh("n1")
        yield r.refresh("unknown")
        found = yield r.locate(["alice", "bob"])
        self.assertEqual({"alice": [SessionRef(session="s1", node="n1")],
                          "bob": [SessionRef(session="s2", node="n2")]}, found)
