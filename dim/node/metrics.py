"""Prometheus metrics of a DIM node: connections, frames, errors, send latency.

The per-frame counters are bumped several times for every message, so they are plain dict
increments here, turned into Prometheus counters only when scraped (a collector registered
in prometheus_client's default registry); a locked ``Counter.inc`` per frame cost about as
much as encoding the frame.  Whatever serves ``/metrics`` for the process exposes them.
"""
from __future__ import annotations

from collections import Counter as _Tally
from collections.abc import Iterator

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

#: Frames received, by type.
frames_in: _Tally[str] = _Tally()
#: Frames sent, by type.
frames_out: _Tally[str] = _Tally()
#: error frames sent, by code.
errors_sent: _Tally[str] = _Tally()
#: Plain event counts: connections opened and closed, retransmits, envelopes.
events: _Tally[str] = _Tally()

SEND_LATENCY = Histogram(
    "dim_node_send_latency_seconds", "Time from a send frame to its sent frame",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))


def frame_in(frame_type: str) -> None:
    """Count one frame received."""
    frames_in[frame_type] += 1


def frame_out(frame_type: str, n: int = 1) -> None:
    """Count ``n`` frames sent."""
    frames_out[frame_type] += n


def error(code: str) -> None:
    """Count one error frame sent."""
    errors_sent[code] += 1


def count(event: str, n: int = 1) -> None:
    """Count an event: ``connections_opened``, ``connections_closed``, ``retransmits``,
    ``envelopes_out``, ``envelopes_in``, ``typing_dropped``, ``session_lookups``,
    ``pushes_held_back``, ``slow_consumers``."""
    events[event] += n


def open_connections() -> int:
    """Client connections open in this process now."""
    return events["connections_opened"] - events["connections_closed"]


class NodeCollector:
    """Reports the node's tallies to Prometheus at scrape time."""

    def collect(self) -> Iterator[Metric]:
        """The node's metrics, now."""
        gauge = GaugeMetricFamily("dim_node_connections", "Open client connections")
        gauge.add_metric([], open_connections())
        yield gauge
        for name, doc, label, tally in (
                ("dim_node_frames_in", "Frames received from clients", "type", frames_in),
                ("dim_node_frames_out", "Frames sent to clients", "type", frames_out),
                ("dim_node_errors", "error frames sent to clients", "code", errors_sent)):
            family = CounterMetricFamily(name, doc, labels=[label])
            for key, value in sorted(tally.items()):
                family.add_metric([key], value)
            yield family
        for event, doc in (("retransmits", "msg frames sent again for want of an ack"),
                           ("envelopes_out", "Envelopes forwarded to other nodes"),
                           ("envelopes_in", "Envelopes received from other nodes"),
                           ("typing_dropped", "typing frames dropped over their sender's limit"),
                           ("session_lookups",
                            "Session registry look-ups made to forward frames"),
                           ("pushes_held_back",
                            "Live frames not written to a client that does not keep up"),
                           ("slow_consumers",
                            "Connections closed with slow_consumer")):
            yield CounterMetricFamily(f"dim_node_{event}", doc, value=events[event])


REGISTRY.register(NodeCollector())
