"""The open-loop send schedule: sends fall due at fixed times whatever the server does.

A closed-loop generator waits for answers before sending more, so a slow server slows the
load and hides its own latency ("coordinated omission").  :class:`OpenLoopSchedule` fixes the
intended time of every send in advance (send k at ``start + k / rate``); the generator sends
whatever is due on each tick, and latency is measured from the intended time, so time spent
queued behind a late sender counts.
"""
from __future__ import annotations


class OpenLoopSchedule:
    """Sends at a fixed ``rate`` per second for ``duration`` seconds from ``start``."""

    def __init__(self, rate: float, start: float, duration: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if duration <= 0:
            raise ValueError("duration must be positive")
        self.rate = float(rate)
        self.start = float(start)
        self.duration = float(duration)
        #: How many sends the whole schedule holds.
        self.total = round(self.rate * self.duration)
        #: How many sends were handed out so far.
        self.issued = 0

    def intended(self, k: int) -> float:
        """The intended time of send ``k`` (0-based)."""
        return self.start + k / self.rate

    def due(self, now: float) -> list[float]:
        """The intended times of the sends due by ``now`` and not handed out yet."""
        if now < self.start:
            return []
        upto = min(self.total, int((now - self.start) * self.rate) + 1)
        times = [self.intended(k) for k in range(self.issued, upto)]
        self.issued = max(self.issued, upto)
        return times

    @property
    def finished(self) -> bool:
        """Whether every send of the schedule was handed out."""
        return self.issued >= self.total

    @property
    def end(self) -> float:
        """When the schedule's last send falls due."""
        return self.start + self.duration
