"""The in-memory store against the shared store contract (messages, people, groups, files)."""
from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from dim.store.memory import MemoryStore, base36
from tests.store_contract import StoreContractMixin
from tests.store_contract_conversations import (ChangeStoreContractMixin,
                                                SearchStoreContractMixin,
                                                ConversationStoreContractMixin)
from tests.store_contract_people import PeopleStoreContractMixin


class MemoryStoreContractTests(StoreContractMixin, PeopleStoreContractMixin,
                               ConversationStoreContractMixin, ChangeStoreContractMixin,
                               SearchStoreContractMixin, unittest.TestCase):
    """MemoryStore honours every rule of the store contract, messages and people alike."""

    def makeStore(self) -> MemoryStore:
        """A new, empty in-memory store."""
        return MemoryStore()


class MemoryStoreTests(unittest.TestCase):
    """What is particular to the in-memory store."""

    def test_results_already_fired(self):
        """Every call returns a Deferred that has already fired."""
        store = MemoryStore()
        results = []
        store.create_user("alice", "h", 0).addCallback(results.append)
        store.store_message("alice", "c1", ["alice"], None, "x", "text", None, 0
                            ).addCallback(results.append)
        self.assertEqual(2, len(results))

    def test_expired_revocations_purged(self):
        """With a clock, revocations past their expiry are dropped at the next revoke."""
        clock = Clock()
        clock.advance(1000)
        store = MemoryStore(clock)
        store.revoke_token("old", 1500)
        store.revoke_token("new", 3000)
        clock.advance(1000)
        store.revoke_token("other", 3000)
        self.assertFalse(self.successResultOf(store.is_revoked("old")))
        self.assertTrue(self.successResultOf(store.is_revoked("new")))

    def test_base36(self):
        """base36 writes numbers in digits and lower-case letters."""
        self.assertEqual(["0", "z", "10", "2n9c"],
                         [base36(n) for n in (0, 35, 36, 123456)])
