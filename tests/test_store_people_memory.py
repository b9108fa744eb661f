"""The in-memory store against the shared contract of profiles, contacts, groups and files."""
from __future__ import annotations

from twisted.trial import unittest

from dim.store.memory import MemoryStore
from tests.store_contract_people import PeopleStoreContractMixin


class MemoryStorePeopleContractTests(PeopleStoreContractMixin, unittest.TestCase):
    """MemoryStore honours every rule of the people, groups and files contract."""

    def makeStore(self) -> MemoryStore:
        """A new, empty in-memory store."""
        return MemoryStore()
