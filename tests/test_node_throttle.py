"""Tests of the token bucket with a flood report that limits typing frames."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dim.node.throttle import Throttle, Verdict


class ThrottleTests(SynchronousTestCase):
    """A burst passes, the sustained rate passes, the rest is dropped, a flood is told once."""

    def test_burst_then_drop(self) -> None:
        """The first ``burst`` frames pass at once; the next one is dropped."""
        t = Throttle(rate=1.0, burst=3)
        self.assertEqual([t.check(0.0) for _ in range(4)],
                         [Verdict.ADMIT] * 3 + [Verdict.DROP])

    def test_sustained_rate(self) -> None:
        """One frame a second passes forever at rate 1."""
        t = Throttle(rate=1.0, burst=1)
        self.assertEqual({t.check(float(i)) for i in range(100)}, {Verdict.ADMIT})

    def test_refill_is_capped_at_burst(self) -> None:
        """A long pause refills only ``burst`` tokens."""
        t = Throttle(rate=1.0, burst=2)
        t.check(0.0)
        self.assertEqual([t.check(1000.0) for _ in range(3)],
                         [Verdict.ADMIT, Verdict.ADMIT, Verdict.DROP])

    def test_flood_reported_once(self) -> None:
        """More than flood_drops drops within the window give one FLOOD, then DROP only."""
        t = Throttle(rate=1.0, burst=1, flood_drops=20, flood_window=10.0)
        verdicts = [t.check(i * 0.01) for i in range(200)]  # 2 s of 100 frames a second
        self.assertEqual(verdicts[0], Verdict.ADMIT)
        self.assertEqual(verdicts.count(Verdict.FLOOD), 1)
        # The 21st drop is the first one over the threshold.
        drops = [i for i, v in enumerate(verdicts) if v is not Verdict.ADMIT]
        self.assertEqual(verdicts[drops[20]], Verdict.FLOOD)

    def test_slow_drops_are_no_flood(self) -> None:
        """Drops spread wider than the window never make a flood."""
        t = Throttle(rate=0.1, burst=1, flood_drops=20, flood_window=10.0)
        verdicts = []
        for i in range(400):
            verdicts.append(t.check(i * 0.6))  # one frame per 0.6 s; one token per 10 s
        self.assertNotIn(Verdict.FLOOD, verdicts)

    def test_new_flood_after_quiet_window(self) -> None:
        """After a whole window without a drop, a new flood is reported again."""
        t = Throttle(rate=1.0, burst=1, flood_drops=5, flood_window=10.0)
        first = [t.check(i * 0.01) for i in range(50)]
        again = [t.check(100.0 + i * 0.01) for i in range(50)]
        self.assertEqual(first.count(Verdict.FLOOD), 1)
        self.assertEqual(again.count(Verdict.FLOOD), 1)
