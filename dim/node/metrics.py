"""Prometheus metrics of a DIM node: connections, frames, errors, send latency.

The metric objects live in prometheus_client's default registry, so whatever serves
``/metrics`` for the process exposes them.  Label children are cached here because the
frame counters are bumped for every frame.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("dim_node_connections", "Open client connections on this node")
FRAMES_IN = Counter("dim_node_frames_in", "Frames received from clients", ["type"])
FRAMES_OUT = Counter("dim_node_frames_out", "Frames sent to clients", ["type"])
ERRORS = Counter("dim_node_errors", "error frames sent to clients", ["code"])
RETRANSMITS = Counter("dim_node_retransmits", "msg frames sent a second time for want of an ack")
ENVELOPES_OUT = Counter("dim_node_envelopes_out", "Envelopes forwarded to other nodes")
ENVELOPES_IN = Counter("dim_node_envelopes_in", "Envelopes received from other nodes")
SEND_LATENCY = Histogram(
    "dim_node_send_latency_seconds", "Time from a send frame to its sent frame",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))

_frames_in: dict[str, Counter] = {}
_frames_out: dict[str, Counter] = {}
_errors: dict[str, Counter] = {}


def frame_in(frame_type: str) -> None:
    """Count one frame received."""
    child = _frames_in.get(frame_type)
    if child is None:
        child = _frames_in[frame_type] = FRAMES_IN.labels(frame_type)
    child.inc()


def frame_out(frame_type: str, n: int = 1) -> None:
    """Count ``n`` frames sent."""
    child = _frames_out.get(frame_type)
    if child is None:
        child = _frames_out[frame_type] = FRAMES_OUT.labels(frame_type)
    child.inc(n)


def error(code: str) -> None:
    """Count one error frame sent."""
    child = _errors.get(code)
    if child is None:
        child = _errors[code] = ERRORS.labels(code)
    child.inc()
