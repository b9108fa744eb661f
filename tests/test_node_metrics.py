"""Tests of the node's Prometheus metrics."""
from __future__ import annotations

from prometheus_client import REGISTRY, generate_latest
from twisted.trial.unittest import SynchronousTestCase

from dim.node import metrics
from dim.protocol import frames as F
from tests.fakes.node import Node


def sample(name: str, **labels: str) -> float:
    """The current value of one sample in the default registry (0 when absent)."""
    value = REGISTRY.get_sample_value(name, labels)
    return value or 0.0


class MetricsTests(SynchronousTestCase):
    """Frames, errors, connections and send latency are counted and exported."""

    def test_counts(self) -> None:
        """A send, an error and a connection move their metrics."""
        before = {
            "send": sample("dim_node_frames_in_total", type="send"),
            "sent": sample("dim_node_frames_out_total", type="sent"),
            "msg": sample("dim_node_frames_out_total", type="msg"),
            "nf": sample("dim_node_errors_total", code="not_found"),
            "lat": sample("dim_node_send_latency_seconds_count"),
            "conn": sample("dim_node_connections"),
        }
        node = Node()
        alice = node.login("alice")
        node.login("bob")
        self.assertEqual(sample("dim_node_connections"), before["conn"] + 2)
        alice.send(F.Send(id="m1", to="bob", body="hi"))
        alice.send(F.Send(id="m2", to="nobody", body="hi"))
        self.assertEqual(sample("dim_node_frames_in_total", type="send"), before["send"] + 2)
        self.assertEqual(sample("dim_node_frames_out_total", type="sent"), before["sent"] + 1)
        self.assertEqual(sample("dim_node_frames_out_total", type="msg"), before["msg"] + 1)
        self.assertEqual(sample("dim_node_errors_total", code="not_found"), before["nf"] + 1)
        self.assertEqual(sample("dim_node_send_latency_seconds_count"), before["lat"] + 1)
        alice.lose()
        self.assertEqual(sample("dim_node_connections"), before["conn"] + 1)

    def test_typing_dropped(self) -> None:
        """typing frames over the session's limit are counted."""
        before = sample("dim_node_typing_dropped_total")
        node = Node()
        alice = node.login("alice")
        node.login("bob")
        for _ in range(5):
            alice.send(F.Typing(to="bob"))
        self.assertEqual(sample("dim_node_typing_dropped_total"), before + 2)

    def test_exposition(self) -> None:
        """The text exposition names every node metric."""
        metrics.count("retransmits", 0)
        text = generate_latest(REGISTRY).decode()
        for name in ("dim_node_connections", "dim_node_frames_in_total",
                     "dim_node_frames_out_total", "dim_node_errors_total",
                     "dim_node_retransmits_total", "dim_node_send_latency_seconds_bucket",
                     "dim_node_typing_dropped_total", "dim_node_session_lookups_total"):
            self.assertIn(name, text)
