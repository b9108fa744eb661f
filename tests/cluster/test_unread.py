"""Unread and mention counts across nodes: bob's two devices, on two nodes of a cluster on
Redis, ZooKeeper and Kafka, show the server's counts after any sequence of messages and of
reads on either (the read echo reaches the other device through the other node)."""
from __future__ import annotations

from twisted.internet import defer

from tests.cluster.kit import ClusterTestCase
from tests.fakes.client import LiveChat, live_client
from tests.fakes.unread import UnreadAgreement


class ClusterUnreadTests(UnreadAgreement, ClusterTestCase):
    """The agreement run of tests/test_client_live_unread.py, on a gateway and three nodes."""

    timeout = 240

    @property
    def base(self) -> str:
        """The cluster's gateway."""
        return self.cluster.base

    @defer.inlineCallbacks
    def chat(self, user: str, register: bool = True, device: str = "test"):  # type: ignore[no-untyped-def]
        """A connected LiveChat, stopped at the end of the test."""
        c = yield live_client(self.cluster.base, user, register=register, device=device)
        self.addCleanup(c.stop)
        return c

    def devices_ready(self, laptop: LiveChat, phone: LiveChat) -> None:
        """bob's devices are on two nodes, so every read echo crosses between nodes."""
        assert laptop.client.node is not None and phone.client.node is not None
        self.assertNotEqual(laptop.client.node.id, phone.client.node.id)


