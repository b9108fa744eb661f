"""Tests of the token buckets that limit the frames each user sends."""
from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from dim.node.throttle import DEFAULT_LIMITS, Limit, Limits, Throttle, UserLimiter, Verdict


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


class RetryAfterTests(SynchronousTestCase):
    """A bucket says how long until the next frame would pass."""

    def test_retry_after_an_empty_bucket(self) -> None:
        """At rate 4 with no token left, the next frame passes in a quarter second."""
        t = Throttle(rate=4.0, burst=2)
        t.check(0.0)
        t.check(0.0)
        self.assertEqual(t.check(0.0), Verdict.DROP)
        self.assertAlmostEqual(t.retry_after(0.0), 0.25)
        self.assertAlmostEqual(t.retry_after(0.1), 0.15)
        self.assertEqual(t.retry_after(0.25), 0.0)
        self.assertEqual(t.check(0.25), Verdict.ADMIT)


class LimitsTests(SynchronousTestCase):
    """Operators set limits as ACTION=RATE:BURST over sane defaults."""

    def test_defaults_let_a_paste_through_but_not_a_flood(self) -> None:
        """The default send limit admits 50 at once and refuses most of 2,000 at once."""
        limiter = UserLimiter()
        admitted = [limiter.check("send", "alice", 0.0) for _ in range(2000)]
        self.assertEqual(admitted[:50], [Verdict.ADMIT] * 50)
        self.assertLess(admitted.count(Verdict.ADMIT), 200)

    def test_parse(self) -> None:
        """Settings replace the default of their action and leave the others."""
        limits = Limits.parse(["send=100000:100000", "typing=2"])
        self.assertEqual(limits["send"], Limit(100000.0, 100000))
        self.assertEqual(limits["typing"], Limit(2.0, 2))
        self.assertEqual(limits["react"], DEFAULT_LIMITS["react"])

    def test_parse_refuses_nonsense(self) -> None:
        """An unknown action, a missing '=', a zero rate or burst are refused."""
        for bad in ("shout=1:1", "send", "send=0:10", "send=5:0", "send=x", "send=nan:1"):
            with self.assertRaises(ValueError, msg=bad):
                Limits.parse([bad])

    def test_per_user(self) -> None:
        """One user's empty bucket leaves another user's full."""
        limiter = UserLimiter(Limits({"send": Limit(1.0, 2)}))
        verdicts = [limiter.check("send", "alice", 0.0) for _ in range(3)]
        self.assertEqual(verdicts, [Verdict.ADMIT, Verdict.ADMIT, Verdict.DROP])
        self.assertEqual(limiter.check("send", "bob", 0.0), Verdict.ADMIT)
        self.assertAlmostEqual(limiter.retry_after("send", "alice", 0.0), 1.0)

    def test_sweep_forgets_full_buckets(self) -> None:
        """Buckets full again are forgotten; one still refilling is kept."""
        limiter = UserLimiter(Limits({"send": Limit(1.0, 2)}))
        limiter.check("send", "alice", 0.0)
        for _ in range(2):
            limiter.check("send", "bob", 9.5)
        limiter.sweep(10.0)
        self.assertEqual(len(limiter), 1)
        self.assertEqual(limiter.retry_after("send", "alice", 10.0), 0.0)


class OptionTests(SynchronousTestCase):
    """``twistd dim --limit`` sets the node's limits and refuses a bad one."""

    def test_limit_option(self) -> None:
        """Repeated --limit options set their actions; the others keep their defaults."""
        from dim.standalone import Options

        options = Options()
        options.parseOptions(["--limit", "send=5:50", "--limit", "typing=2:4"])
        self.assertEqual(options["frame-limits"]["send"], Limit(5.0, 50))
        self.assertEqual(options["frame-limits"]["typing"], Limit(2.0, 4))
        self.assertEqual(options["frame-limits"]["edit"], DEFAULT_LIMITS["edit"])

    def test_bad_limit_option(self) -> None:
        """A --limit that does not parse is a usage error."""
        from twisted.python.usage import UsageError

        from dim.standalone import Options

        with self.assertRaises(UsageError):
            Options().parseOptions(["--limit", "send=fast"])
