"""The arithmetic of the benchmarks: latency percentiles, slopes, ratios and saturation.

Latencies are recorded as raw samples (milliseconds) and summarised with
:func:`numpy.percentile` (linear interpolation) over all of them, so no precision is lost to
histogram buckets; the load generators send their raw samples to the orchestrator.
"""
from __future__ import annotations

from typing import Any
from collections.abc import Iterable, Sequence

import numpy as np

#: The latency percentiles every summary reports, with their key suffixes.
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 50.0), ("p99", 99.0), ("p999", 99.9))


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``samples``, interpolated as every summary here is
    (NaN for no samples)."""
    if len(samples) == 0:
        return float("nan")
    return float(np.percentile(np.asarray(samples, dtype=float), q))


def latency_summary(samples_ms: Sequence[float]) -> dict[str, Any]:
    """Count, mean, p50/p99/p99.9 and max of latency samples in ms (None when empty)."""
    if len(samples_ms) == 0:
        out: dict[str, Any] = {"count": 0, "mean_ms": None, "max_ms": None}
        out.update({f"{name}_ms": None for name, _ in PERCENTILES})
        return out
    arr = np.asarray(samples_ms, dtype=float)
    values = np.percentile(arr, [q for _, q in PERCENTILES])
    out = {"count": int(arr.size), "mean_ms": round(float(arr.mean()), 3),
           "max_ms": round(float(arr.max()), 3)}
    for (name, _), v in zip(PERCENTILES, values):
        out[f"{name}_ms"] = round(float(v), 3)
    return out


def slope(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """The least-squares slope of ys over xs (None with fewer than two distinct xs)."""
    if len(xs) != len(ys):
        raise ValueError("xs and ys differ in length")
    if len(set(xs)) < 2:
        return None
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    xm, ym = x.mean(), y.mean()
    return float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())


def per_connection_kb(counts: Sequence[int], rss_bytes: Sequence[float]) -> float | None:
    """RSS per connection in KB (1000 bytes): the slope of RSS over connection count."""
    s = slope(counts, rss_bytes)
    return None if s is None else round(s / 1000.0, 3)


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline to 4 significant digits; None if either is missing or the baseline
    is 0."""
    if value is None or baseline is None or baseline == 0:
        return None
    return float(f"{value / baseline:.4g}")


def is_saturated(step: dict[str, Any], keep_up: float = 0.9, p99_limit_ms: float = 1000.0) -> bool:
    """Whether a sweep step failed to keep up: achieved < keep_up x offered, messages left
    incomplete, or p99 send->msg above ``p99_limit_ms``."""
    offered = step.get("offered_per_s") or 0
    achieved = step.get("achieved_per_s") or 0
    if offered and achieved < keep_up * offered:
        return True
    if step.get("incomplete", 0) > 0.01 * max(step.get("sent", 0), 1):
        return True
    p99 = (step.get("send_to_msg") or {}).get("p99_ms")
    return p99 is not None and p99 > p99_limit_ms


def saturation(sweep: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The step with the highest achieved rate: the throughput at saturation."""
    best = None
    for step in sweep:
        if best is None or (step.get("achieved_per_s") or 0) > (best.get("achieved_per_s") or 0):
            best = step
    return best


def highest_unsaturated(sweep: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The highest offered rate the system kept up with (None if it never did)."""
    ok = [s for s in sweep if not is_saturated(s)]
    return max(ok, key=lambda s: s["offered_per_s"]) if ok else None


def next_rates(start: float, factor: float, limit: float) -> list[float]:
    """A geometric rate ladder from ``start`` up to ``limit`` (inclusive)."""
    if start <= 0 or factor <= 1:
        raise ValueError("start must be > 0 and factor > 1")
    rates: list[float] = []
    r = float(start)
    while r <= limit * 1.000001:
        rates.append(round(r))
        r *= factor
    return rates
