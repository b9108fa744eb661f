"""Per-user limits on the frames a client sends: token buckets, one per user and action.

A :class:`Throttle` is a token bucket (``rate`` frames a second sustained, ``burst`` at once)
that also counts what it turns away: a flood that persists (more than ``flood_drops`` frames
turned away within ``flood_window`` seconds) is reported once.  A new report is due only after
a whole window passes without a drop.

:class:`Limits` holds the operator's setting for each action (``send``, ``typing``, and the
frames of contract part 3 as they come: ``edit``, ``recall``, ``react``), parsed from
``ACTION=RATE:BURST`` options, and :class:`UserLimiter` keeps one :class:`Throttle` per user
and action on a node, across all of that user's sessions there.  How an action answers a frame
over its limit is the caller's: a ``send`` gets ``rate_limited`` with ``retry_after`` each
time; ``typing`` costs the sender nothing and its peers something, so it is dropped silently
and only a persisting flood gets one ``rate_limited``.
"""
from __future__ import annotations

import enum
import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

#: A thousandth of a frame: clock readings far from zero lose precision, and a client that
#: waited exactly ``retry_after`` must not be refused for a rounding error.
_EPSILON = 1e-3


class Verdict(enum.Enum):
    """What to do with one frame."""

    ADMIT = "admit"  # pass it on
    DROP = "drop"    # turn it away
    FLOOD = "flood"  # turn it away; the flood persists and is reported this once


class Throttle:
    """A token bucket with a flood report, driven by the caller's clock readings."""

    __slots__ = (
        "_at",
        "_drops",
        "_reported",
        "_tokens",
        "burst",
        "flood_drops",
        "flood_window",
        "rate",
    )

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

    def _refill(self, now: float) -> None:
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now

    def check(self, now: float) -> Verdict:
        """Count one frame arriving at ``now`` and say what to do with it."""
        self._refill(now)
        if self._tokens >= 1.0 - _EPSILON:
            self._tokens = max(0.0, self._tokens - 1.0)
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

    def retry_after(self, now: float) -> float:
        """Seconds from ``now`` until one frame would pass again (0 if one would now)."""
        self._refill(now)
        missing = 1.0 - self._tokens
        if missing <= 0:
            return 0.0
        return missing / self.rate if self.rate > 0 else math.inf

    def idle(self, now: float) -> bool:
        """Whether the bucket is full again and no flood is being tracked: forgetting it
        changes nothing."""
        if self._at is None:
            return True
        full = self._tokens + (now - self._at) * self.rate >= self.burst
        return full and (not self._drops or now - self._drops[-1] >= self.flood_window)


@dataclass(frozen=True)
class Limit:
    """One action's limit: ``rate`` frames a second sustained, ``burst`` at once."""

    rate: float
    burst: int

    @classmethod
    def parse(cls, text: str) -> Limit:
        """``RATE:BURST`` (e.g. ``10:100``), or ``RATE`` alone with a burst of max(1, RATE).

        Raises ValueError for anything else, or for a rate or burst that is not positive.
        """
        rate_text, _, burst_text = text.strip().partition(":")
        rate = float(rate_text)
        burst = int(burst_text) if burst_text else max(1, math.ceil(rate))
        if not rate > 0 or not math.isfinite(rate) or burst < 1:
            raise ValueError(f"a limit needs a positive rate and burst, not {text!r}")
        return cls(rate, burst)

    def __str__(self) -> str:
        return f"{self.rate:g}:{self.burst}"


#: The limits a node applies unless its operator says otherwise.  A person pasting 50 lines
#: (50 sends at once) stays within ``send``'s burst; a script sending 2,000 does not.
DEFAULT_LIMITS: Mapping[str, Limit] = {
    "send": Limit(rate=10.0, burst=100),
    "edit": Limit(rate=5.0, burst=30),
    "recall": Limit(rate=5.0, burst=30),
    "react": Limit(rate=10.0, burst=60),
    "typing": Limit(rate=1.0, burst=3),
}


class Limits:
    """The limit of each action: the defaults with the operator's settings over them."""

    def __init__(self, settings: Mapping[str, Limit] | None = None) -> None:
        self.by_action: dict[str, Limit] = dict(DEFAULT_LIMITS)
        if settings:
            self.by_action.update(settings)

    @classmethod
    def parse(cls, options: Iterable[str]) -> Limits:
        """Limits from ``ACTION=RATE:BURST`` strings (e.g. ``send=10:100``).

        Raises ValueError naming the bad one; an unknown action is an error too.
        """
        settings: dict[str, Limit] = {}
        for option in options:
            action, sep, value = option.partition("=")
            action = action.strip()
            if not sep or action not in DEFAULT_LIMITS:
                raise ValueError(f"{option!r}: expected ACTION=RATE:BURST with ACTION one of "
                                 f"{', '.join(DEFAULT_LIMITS)}")
            settings[action] = Limit.parse(value)
        return cls(settings)

    def __getitem__(self, action: str) -> Limit:
        return self.by_action[action]

    def describe(self) -> str:
        """The limits as one line for the log."""
        return ", ".join(f"{a} {limit}" for a, limit in self.by_action.items())


class UserLimiter:
    """One :class:`Throttle` per user and action; buckets full again are forgotten now and
    then, so memory follows the users who sent something lately."""

    #: How many checks pass between two sweeps for idle buckets.
    SWEEP_EVERY = 4096

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits if limits is not None else Limits()
        self._buckets: dict[str, dict[str, Throttle]] = {}
        self._checks = 0

    def check(self, action: str, user: str, now: float) -> Verdict:
        """Count one ``action`` frame of ``user`` at ``now`` and say what to do with it."""
        self._checks += 1
        if self._checks >= self.SWEEP_EVERY:
            self._checks = 0
            self.sweep(now)
        buckets = self._buckets.get(action)
        if buckets is None:
            buckets = self._buckets[action] = {}
        bucket = buckets.get(user)
        if bucket is None:
            limit = self.limits[action]
            bucket = buckets[user] = Throttle(limit.rate, limit.burst)
        return bucket.check(now)

    def retry_after(self, action: str, user: str, now: float) -> float:
        """Seconds until ``user`` may send one more ``action`` frame."""
        bucket = self._buckets.get(action, {}).get(user)
        return 0.0 if bucket is None else bucket.retry_after(now)

    def sweep(self, now: float) -> None:
        """Forget every bucket that is full again."""
        for action, buckets in list(self._buckets.items()):
            for user in [u for u, b in buckets.items() if b.idle(now)]:
                del buckets[user]
            if not buckets:
                del self._buckets[action]

    def __len__(self) -> int:
        """How many buckets are held."""
        return sum(len(b) for b in self._buckets.values())
