"""Prometheus metrics of the gateway: requests and their latency by route and status."""
from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Histogram, generate_latest

REQUESTS = Counter(
    "dim_gateway_requests", "HTTP requests answered by the gateway", ["route", "status"])
LATENCY = Histogram(
    "dim_gateway_request_seconds", "Time from receiving a request to finishing its answer",
    ["route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
LOGINS = Counter("dim_gateway_logins", "Login attempts by outcome", ["outcome"])

#: The content type of :func:`exposition`.
CONTENT_TYPE: str = CONTENT_TYPE_LATEST


def observe(route: str, status: int, seconds: float) -> None:
    """Count one answered request and its latency."""
    REQUESTS.labels(route=route, status=str(status)).inc()
    LATENCY.labels(route=route, status=str(status)).observe(max(seconds, 0.0))


def exposition() -> bytes:
    """Every metric of the default registry in the Prometheus text format."""
    return generate_latest(REGISTRY)
