"""A per-session limit on frames that cost the sender nothing and its peers something.

``typing`` is never stored and fans out to every session of a person or of a whole group, so
one client sending it in a loop could flood its peers.  :class:`Throttle` is a token bucket
(``rate`` frames a second sustained, ``burst`` at once) that also counts what it drops: the
frames over the limit are dropped silently, and a flood that persists (more than
``flood_drops`` dropped within ``flood_window`` seconds) is reported once, so the client gets
one ``rate_limited`` error and not one per frame.  A new report is due only after a whole
window passes without a drop.
"""
from __future__ import annotations

import enum
from collections import deque


class Verdict(enum.Enum):
    """What to do with one frame."""

    ADMIT = "admit"  # pass it on
    DROP = "drop"    # drop it silently
    FLOOD = "flood"  # drop it and tell the client, once per flood


class Throttle:
    """A token bucket with a flood report, driven by the caller's clock readings."""

    __slots__ = ("rate", "burst", "flood_drops", "flood_window", "_tokens", "_at", "_drops",
                 "_reported")

    def __init__(self, rate: float = 1.0, burst: int = 3, flood_drops: int = 20,
                 flood_window: float = 10.0) -> None:
        self.rate = rate
        self.burst = burst
        self.flood_drops = flood_drops
        self.flood_window = flood_window
        self._tokens = float(burst)
        self._at: float | None = None
        # The times of the last flood_drops + 1 drops: enough to tell a flood.
        self._drops: deque[float] = deque(maxlen=flood_drops + 1)
        self._reported = False

    def check(self, now: float) -> Verdict:
        """Count one frame arriving at ``now`` and say what to do with it."""
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return Verdict.ADMIT
        drops = self._drops
        if drops and now - drops[-1] >= self.flood_window:
            drops.clear()
            self._reported = False  # a whole window without a drop: the last flood is over
        drops.append(now)
        if (not self._reported and len(drops) > self.flood_drops
                and now - drops[0] < self.flood_window):
            self._reported = True
            return Verdict.FLOOD
        return Verdict.DROP
