"""Unit tests of the benchmark's logic: statistics, schedule, report schema, lean clients."""
from __future__ import annotations

import json

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from dim.bench import loadgen, report, stats
from dim.bench import profile as profiling
from dim.bench.schedule import OpenLoopSchedule
from dim.bench.scenarios import _split, chat_pairs
from dim.protocol import codec
from dim.protocol import frames as F


class LatencySummaryTests(unittest.TestCase):
    """Percentiles over raw samples."""

    def test_percentiles_of_known_samples(self) -> None:
        """p50/p99/p99.9 of 1..1000 ms follow numpy's linear interpolation."""
        s = stats.latency_summary([float(i) for i in range(1, 1001)])
        self.assertEqual(s["count"], 1000)
        self.assertEqual(s["p50_ms"], 500.5)
        self.assertAlmostEqual(s["p99_ms"], 990.01, places=2)
        self.assertAlmostEqual(s["p999_ms"], 999.001, places=3)
        self.assertEqual(s["max_ms"], 1000.0)
        self.assertEqual(s["mean_ms"], 500.5)

    def test_empty_samples(self) -> None:
        """No samples gives a count of 0 and no made-up percentiles."""
        s = stats.latency_summary([])
        self.assertEqual(s["count"], 0)
        self.assertIsNone(s["p99_ms"])
        self.assertIsNone(s["max_ms"])

    def test_single_sample(self) -> None:
        """One sample is every percentile."""
        s = stats.latency_summary([3.5])
        self.assertEqual((s["p50_ms"], s["p99_ms"], s["p999_ms"]), (3.5, 3.5, 3.5))

    def test_one_percentile_as_the_summary_has_it(self) -> None:
        """percentile() interpolates as the summary does, in any unit, and is NaN for none."""
        samples = [0.004, 0.001, 0.003, 0.002]
        self.assertAlmostEqual(stats.percentile(samples, 50), 0.0025)
        ms = stats.latency_summary([x * 1000 for x in samples])
        self.assertAlmostEqual(stats.percentile(samples, 99) * 1000, ms["p99_ms"], places=3)
        self.assertNotEqual(stats.percentile([], 50), stats.percentile([], 50))


class SlopeTests(unittest.TestCase):
    """RSS per connection as a least-squares slope."""

    def test_exact_line(self) -> None:
        """Points on a line give its slope."""
        self.assertAlmostEqual(stats.slope([0, 1, 2, 3], [5, 7, 9, 11]), 2.0)

    def test_per_connection_kb(self) -> None:
        """2200 bytes per connection over a 40 MB base is 2.2 KB."""
        counts = [0, 1000, 2000, 3000]
        rss = [40_000_000 + 2200 * n for n in counts]
        self.assertAlmostEqual(stats.per_connection_kb(counts, rss), 2.2)

    def test_noise_is_averaged(self) -> None:
        """The slope is fitted over all points, not the last two."""
        self.assertAlmostEqual(stats.slope([0, 1, 2], [0, 2, 2]), 1.0)

    def test_degenerate(self) -> None:
        """A single x value has no slope; unequal lengths are an error."""
        self.assertIsNone(stats.slope([1, 1], [2, 3]))
        self.assertRaises(ValueError, stats.slope, [1, 2], [1])


class RatioAndSaturationTests(unittest.TestCase):
    """Ratios to echo and the end of a rate sweep."""

    def test_ratio(self) -> None:
        """A ratio divides; a missing value or a zero baseline gives None."""
        self.assertEqual(stats.ratio(50.0, 200.0), 0.25)
        self.assertEqual(stats.ratio(5.0, 334546.0), 1.495e-05)
        self.assertIsNone(stats.ratio(None, 200.0))
        self.assertIsNone(stats.ratio(5.0, 0))

    def test_saturation_picks_highest_achieved(self) -> None:
        """The saturation point is the step with the highest achieved rate."""
        sweep = [{"offered_per_s": 100, "achieved_per_s": 100},
                 {"offered_per_s": 200, "achieved_per_s": 190},
                 {"offered_per_s": 400, "achieved_per_s": 150}]
        self.assertEqual(stats.saturation(sweep)["offered_per_s"], 200)
        self.assertIsNone(stats.saturation([]))

    def test_is_saturated(self) -> None:
        """Falling behind the offered rate, losing messages or a huge p99 means saturated."""
        ok = {"offered_per_s": 100, "achieved_per_s": 99, "sent": 200, "incomplete": 0,
              "send_to_msg": {"p99_ms": 5.0}}
        self.assertFalse(stats.is_saturated(ok))
        self.assertTrue(stats.is_saturated({**ok, "achieved_per_s": 80}))
        self.assertTrue(stats.is_saturated({**ok, "incomplete": 10}))
        self.assertTrue(stats.is_saturated({**ok, "send_to_msg": {"p99_ms": 5000.0}}))
        self.assertEqual(stats.highest_unsaturated([ok, {**ok, "offered_per_s": 200,
                                                         "achieved_per_s": 100}]), ok)

    def test_rate_ladder(self) -> None:
        """Rates grow geometrically up to the limit."""
        self.assertEqual(stats.next_rates(500, 2, 4000), [500, 1000, 2000, 4000])
        self.assertRaises(ValueError, stats.next_rates, 0, 2, 10)

    def test_split(self) -> None:
        """Shares differ by at most one and add up."""
        self.assertEqual(_split(10, 4), [3, 3, 2, 2])
        self.assertEqual(sum(_split(19000, 4)), 19000)

    def test_chat_pairs(self) -> None:
        """Pairs have distinct, valid user names."""
        pairs = chat_pairs("c", 3)
        names = [u for p in pairs for u in p]
        self.assertEqual(len(set(names)), 6)


class ScheduleTests(unittest.TestCase):
    """The open-loop schedule hands out sends by intended time, whatever the caller does."""

    def test_due_by_time(self) -> None:
        """At rate 10/s, sends fall due every 100 ms from the start."""
        s = OpenLoopSchedule(10, start=100.0, duration=1.0)
        self.assertEqual(s.total, 10)
        self.assertEqual(s.due(99.0), [])
        self.assertEqual(s.due(100.0), [100.0])
        self.assertEqual(s.due(100.25), [100.1, 100.2])
        self.assertEqual(s.due(100.25), [])

    def test_late_caller_gets_backlog_with_original_times(self) -> None:
        """A tick that comes late gets every missed send, stamped with its intended time."""
        s = OpenLoopSchedule(4, start=0.0, duration=2.0)
        self.assertEqual(s.due(1.1), [0.0, 0.25, 0.5, 0.75, 1.0])

    def test_finishes_at_total(self) -> None:
        """No more than rate x duration sends are handed out."""
        s = OpenLoopSchedule(3, start=0.0, duration=2.0)
        self.assertEqual(len(s.due(1000.0)), 6)
        self.assertTrue(s.finished)
        self.assertEqual(s.end, 2.0)

    def test_invalid(self) -> None:
        """A rate or duration of zero is refused."""
        self.assertRaises(ValueError, OpenLoopSchedule, 0, 0.0, 1.0)
        self.assertRaises(ValueError, OpenLoopSchedule, 1, 0.0, 0)


def _good_results() -> dict:
    return {"machine": {k: "x" for k in report.MACHINE_KEYS},
            "scenarios": {
                "echo": {"status": "ok", "frames_per_s": 1000.0, "rss_per_conn_kb": 1.0},
                "chat_same_node": {"status": "ok", "msgs_per_s": 25000.0, "p50_ms": 1.0,
                                   "p99_ms": 2.0, "p999_ms": 3.0, "ratio_to_echo": 25.0,
                                   "sweep": [{"offered_per_s": 100, "achieved_per_s": 100.0,
                                              "send_to_msg": {"p50_ms": 1.0, "p99_ms": 2.0,
                                                              "p999_ms": 3.0}}]},
                "reconnect_storm": report.unavailable("cluster mode has not landed")}}


class ReportTests(unittest.TestCase):
    """The shape of results.json and the Markdown table."""

    def test_good_results_pass(self) -> None:
        """A complete document has no schema problems."""
        self.assertEqual(report.check_schema(_good_results()), [])

    def test_missing_key_reported(self) -> None:
        """A scenario that ran but lacks a required figure is named."""
        r = _good_results()
        del r["scenarios"]["chat_same_node"]["p99_ms"]
        self.assertEqual(report.check_schema(r), ["chat_same_node.p99_ms is missing"])

    def test_unavailable_needs_reason(self) -> None:
        """A scenario that did not run must say why, and carries no figures."""
        r = _good_results()
        r["scenarios"]["reconnect_storm"] = {"status": report.NOT_AVAILABLE}
        self.assertEqual(report.check_schema(r), ["reconnect_storm has status 'not available' "
                                                  "but no reason"])

    def test_machine_required(self) -> None:
        """The machine block and its keys are required."""
        r = _good_results()
        del r["machine"]["kernel"]
        self.assertEqual(report.check_schema(r), ["machine.kernel is missing"])
        self.assertIn("machine is missing", report.check_schema({"scenarios": {}}))

    def test_machine_block_is_complete(self) -> None:
        """report.machine() fills every machine key."""
        m = report.machine()
        self.assertEqual([k for k in report.MACHINE_KEYS if k not in m], [])

    def test_markdown_table(self) -> None:
        """The table shows figures, ratios, verdicts and unavailable scenarios with reasons."""
        md = report.markdown(_good_results())
        self.assertIn("| echo | frames/s (pipelined) | 1,000 | 1 |", md)
        self.assertIn("| chat_same_node | msgs/s at saturation", md)
        self.assertIn("| met |", md)
        self.assertIn("not available | cluster mode has not landed", md)
        self.assertIn("## chat_same_node: open-loop rate sweep", md)

    def test_storm_verdict_names_a_smaller_run(self) -> None:
        """A storm with fewer clients than the target is not called met outright."""
        r = _good_results()
        r["scenarios"]["reconnect_storm"] = {"status": "ok", "clients": 500, "back": 500,
                                             "all_back_s": 3.0, "lost": 0, "duplicated": 0}
        self.assertIn("| met at 500 clients, not 5k |", report.markdown(r))
        r["scenarios"]["reconnect_storm"].update(clients=5000, back=5000, lost=1)
        self.assertIn("| missed |", report.markdown(r))

    def test_cost_ratio_across_nodes(self) -> None:
        """The cross-node machine cost is compared with the same-node one, against 3x."""
        r = _good_results()
        r["scenarios"]["chat_same_node"]["machine_cpu_us_per_msg"] = 50.0
        r["scenarios"]["chat_cross_node"] = dict(r["scenarios"]["chat_same_node"],
                                                 machine_cpu_us_per_msg=400.0)
        self.assertEqual(report.cost_ratio(r), 8.0)
        self.assertIn("| chat_cross_node | machine CPU per msg / chat_same_node's | 8.000 |  "
                      "| <= 3 | missed |", report.markdown(r))
        r["scenarios"]["chat_cross_node"]["machine_cpu_us_per_msg"] = 120.0
        self.assertIn("| 2.400 |  | <= 3 | met |", report.markdown(r))
        del r["scenarios"]["chat_same_node"]["machine_cpu_us_per_msg"]
        self.assertIsNone(report.cost_ratio(r))

    def test_json_round_trip(self) -> None:
        """results.json is written as JSON that reads back the same."""
        out = self.mktemp()
        from pathlib import Path
        path = report.write_json(_good_results(), Path(out))
        self.assertEqual(json.loads(path.read_text()), _good_results())


class LeanClientTests(unittest.TestCase):
    """The load generator's clients record what they measure, on a fake clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.worker = loadgen.Worker(self.clock)

    def client(self) -> loadgen.FrameClient:
        c = loadgen.FrameClient(self.worker)
        c.makeConnection(StringTransport())
        return c

    def test_chat_chain_latencies(self) -> None:
        """msg and delivered latencies are measured from the send's intended time."""
        a, b = self.client(), self.client()
        self.worker.pending["m1"] = [10.0, 0.0]
        self.clock.advance(10.004)
        a.dataReceived(codec.encode(F.Sent(id="m1", mid="x", seq=1, ts=0)))
        b.dataReceived(codec.encode(F.Msg(mid="x", id="m1", from_="a", to="b", ts=0, seq=7,
                                          body="x", kind="text")))
        self.clock.advance(0.002)
        a.dataReceived(codec.encode(F.Delivered(id="m1", mid="x", by="b")))
        self.assertEqual([round(x, 6) for x in self.worker.to_sent], [0.004])
        self.assertEqual([round(x, 6) for x in self.worker.to_msg], [0.004])
        self.assertEqual([round(x, 6) for x in self.worker.to_delivered], [0.006])
        self.assertEqual(self.worker.pending, {})

    def test_one_cumulative_ack_per_read(self) -> None:
        """Several msgs in one read are acknowledged once, with the highest seq."""
        b = self.client()
        data = b"".join(codec.encode(F.Msg(mid=f"x{i}", id=f"m{i}", from_="a", to="b", ts=0,
                                           seq=i, body="x", kind="text")) for i in (1, 2, 3))
        b.dataReceived(data)
        written = b.transport.value()
        self.assertEqual(written, codec.encode(F.Ack(seq=3)))

    def test_welcome_fires_and_errors_before_welcome_fail(self) -> None:
        """welcome fires the hello Deferred; an error before it fails the Deferred."""
        c = self.client()
        got = []
        c.hello("t", None, 0.0).addCallback(got.append)
        c.dataReceived(codec.encode(F.Welcome(user="u", node="n", heartbeat=30,
                                              max_frame=65536, last_seq=4)))
        self.assertEqual(got[0].last_seq, 4)
        d = self.client()
        failures = []
        d.hello("t", None, 0.0).addErrback(failures.append)
        d.dataReceived(codec.encode(F.Error(code="unauthorized", message="no")))
        self.assertEqual(len(failures), 1)

    def test_heartbeat_pings_after_idle_and_times_pongs(self) -> None:
        """A connection idle for H seconds pings; the pong's round trip is recorded."""
        c = self.client()
        c.welcome = F.Welcome(user="u", node="n", heartbeat=5, max_frame=1, last_seq=0)
        c.last_write = 0.0
        self.worker.heartbeat = 5.0
        self.worker.schedule_ping(c)
        self.clock.advance(4.9)
        self.worker._ping_due()
        self.assertEqual(c.transport.value(), b"")
        self.clock.advance(0.2)
        self.worker._ping_due()
        self.assertEqual(c.transport.value(), codec.encode(F.Ping()))
        self.assertEqual(self.worker.pings, 1)
        self.clock.advance(0.003)
        c.dataReceived(codec.encode(F.Pong()))
        self.assertEqual([round(x, 6) for x in self.worker.rtt], [0.003])
        self.assertEqual([round(x, 6) for x in self.worker.lateness], [0.1])

    def test_pings_follow_due_time_not_arrival(self) -> None:
        """A connection queued after a later-due one still pings on time."""
        self.worker.heartbeat = 10.0
        late, early = self.client(), self.client()
        late.last_write, early.last_write = 8.0, 1.0
        self.worker.schedule_ping(late)
        self.worker.schedule_ping(early)
        self.clock.advance(11.0)
        self.worker._ping_due()
        self.assertEqual(early.transport.value(), codec.encode(F.Ping()))
        self.assertEqual(late.transport.value(), b"")
        self.assertEqual(self.worker.lateness, [0.0])

    def test_flood_counts_frames_by_bytes(self) -> None:
        """The echo flood counts whole frames however the bytes are split, and refills."""
        frame = b"\x00\x00\x00\x02hi"
        self.worker.flooding = True
        f = loadgen._FloodClient(self.worker, frame, window=2)
        t = StringTransport()
        f.makeConnection(t)
        self.assertEqual(t.value(), frame * 2)
        t.clear()
        f.dataReceived(frame[:4])
        self.assertEqual(self.worker.flood_frames, 0)
        f.dataReceived(frame[4:] + frame)
        self.assertEqual(self.worker.flood_frames, 2)
        self.assertEqual(t.value(), frame * 2)

    def test_http_client_parses_keep_alive_answers(self) -> None:
        """Answers split across reads are counted by status, and the request repeats."""
        self.worker.http_running = True
        h = loadgen._HttpClient(self.worker, b"GET / HTTP/1.1\r\n\r\n")
        t = StringTransport()
        h.makeConnection(t)
        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
        h.dataReceived(answer[:10])
        h.dataReceived(answer[10:] + b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\n\r\n")
        h.dataReceived(b"abc")
        self.assertEqual((self.worker.http_ok, self.worker.http_fail), (1, 1))
        self.assertEqual(self.worker.http_statuses, {"200": 1, "401": 1})
        self.assertEqual(t.value(), b"GET / HTTP/1.1\r\n\r\n" * 3)

    def test_http_client_parses_chunked_answers(self) -> None:
        """Chunked answers (what Klein sends) are read whole, even byte by byte."""
        self.worker.http_running = True
        h = loadgen._HttpClient(self.worker, b"R")
        t = StringTransport()
        h.makeConnection(t)
        answer = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  b"f\r\n{\"status\":\"ok\"}\r\n3\r\nabc\r\n0\r\n\r\n")
        for i in range(len(answer)):
            h.dataReceived(answer[i:i + 1])
        h.dataReceived(answer + answer)
        self.assertEqual(self.worker.http_ok, 3)
        self.assertEqual(t.value(), b"R" * 4)
        self.assertEqual(h.buf, b"")

    def test_unknown_command(self) -> None:
        """An unknown command is answered, not raised."""
        got = []
        self.worker.handle({"cmd": "nope"}).addCallback(got.append)
        self.assertFalse(got[0]["ok"])


class ProfileSummaryTests(unittest.TestCase):
    """Collapsed py-spy stacks become top functions by self and inclusive samples."""

    def test_self_and_inclusive(self) -> None:
        """The leaf gets self samples; every frame on a stack gets inclusive ones, once."""
        text = ("thread (1): MainThread;run (/v/lib/python3.11/site-packages/twisted/a.py:1);"
                "feed (/w/main/dim/protocol/codec.py:96) 30\n"
                "thread (1): MainThread;run (/v/lib/python3.11/site-packages/twisted/a.py:2);"
                "encode (/w/main/dim/protocol/codec.py:25) 10\n"
                "thread (2): Thread-1;run (/v/lib/python3.11/site-packages/twisted/a.py:1);"
                "run (/v/lib/python3.11/site-packages/twisted/a.py:9) 60\n"
                "garbage line\n")
        s = profiling.summarize(text)
        self.assertEqual(s["samples"], 100)
        self.assertEqual(s["threads"], {"Thread-1": 60, "MainThread": 40})
        self.assertEqual(s["self"][0], {"function": "run (twisted/a.py)", "samples": 60,
                                        "percent": 60.0})
        self.assertEqual(s["self"][1]["function"], "feed (dim/protocol/codec.py)")
        incl = {r["function"]: r["samples"] for r in s["inclusive"]}
        self.assertEqual(incl["run (twisted/a.py)"], 100)
        self.assertEqual(incl["encode (dim/protocol/codec.py)"], 10)

    def test_empty(self) -> None:
        """No samples gives empty tables."""
        self.assertEqual(profiling.summarize("")["self"], [])


class _FakeCpu:
    """A process whose CPU seconds advance by a fixed amount at each reading."""

    def __init__(self, name: str, per_reading: float) -> None:
        self.name, self.per_reading, self.seconds = name, per_reading, 0.0

    def cpu_seconds(self) -> float:
        self.seconds += self.per_reading
        return self.seconds


class MachineCostTests(unittest.TestCase):
    """Every process the chat costs is counted in the machine's CPU per message."""

    def test_step_counts_nodes_services_and_load_generator(self) -> None:
        """A step reports node, machine (nodes + others) and load-generator CPU per msg."""
        from types import SimpleNamespace
        from unittest import mock

        from dim.bench import scenarios

        answer = {"send_to_msg_ms": [1.0] * 1000, "send_to_sent_ms": [1.0] * 1000,
                  "send_to_delivered_ms": [2.0] * 1000, "errors": {}, "sent": 1000,
                  "last_delivered": 2.0, "start": 0.0, "incomplete": 0,
                  "delivered_in_window": 1000, "msgs_in_window": 1000, "drain_s": 0.1}
        ctx = SimpleNamespace(params=SimpleNamespace(step_seconds=2, drain_seconds=1))
        node, redis, worker = _FakeCpu("n1", 0.1), _FakeCpu("Redis", 0.05), _FakeCpu("w", 0.2)
        with mock.patch.object(scenarios.P, "call_all", return_value=[answer]):
            step = scenarios._chat_step(ctx, [worker], [node], 500, [redis])
        # One reading before and one after: each process used its per_reading once.
        self.assertEqual(step["node_cpu_us_per_msg"], 100.0)
        self.assertEqual(step["machine_cpu_us_per_msg"], 150.0)
        self.assertEqual(step["loadgen_cpu_us_per_msg"], 200.0)
        self.assertIn("Redis", step["other_cpu_percent"])

    def test_cheapest_step_is_reported(self) -> None:
        """The result quotes the step with the least machine CPU per message."""
        from dim.bench import scenarios

        sweep = [{"offered_per_s": 100, "machine_cpu_us_per_msg": 300.0},
                 {"offered_per_s": 200, "machine_cpu_us_per_msg": 120.0},
                 {"offered_per_s": 400, "machine_cpu_us_per_msg": None}]
        self.assertEqual(scenarios._cheapest_step(sweep)["offered_per_s"], 200)
        self.assertEqual(scenarios._cheapest_step([]), {})

    def test_service_ports_from_environment(self) -> None:
        """The services' ports come from DIM_REDIS, DIM_ZOOKEEPER and DIM_KAFKA."""
        from unittest import mock

        from dim.bench import cluster
        env = {"DIM_REDIS": "redis://127.0.0.1:7379", "DIM_ZOOKEEPER": "127.0.0.1:3181",
               "DIM_KAFKA": "127.0.0.1:10092,127.0.0.1:10094"}
        with mock.patch.dict("os.environ", env):
            self.assertEqual(cluster.service_ports(), {"Redis": [7379], "ZooKeeper": [3181],
                                                       "Kafka": [10092, 10094]})


class BigInboxPlanTests(unittest.TestCase):
    """What the big inbox holds: one owner entry per send, a mix of conversations."""

    def test_plan_is_seeded_and_counts_hits(self) -> None:
        """The same plan every time, one owner entry per send, the rare word RARE_COUNT
        times, the 2-letter query nowhere, and hits as a scan of the bodies counts them."""
        from dim.bench import inbox
        groups = [f"g{i}" for i in range(inbox.GROUPS)]
        a, b = inbox.plan(3000, groups), inbox.plan(3000, groups)
        self.assertEqual([op.body for op in a.ops], [op.body for op in b.ops])
        self.assertEqual(3000, len(a.ops))
        self.assertTrue(all(op.sender == inbox.OWNER or inbox.OWNER in op.recipients
                            for op in a.ops))
        self.assertEqual((2100, 900), (a.direct, a.group))
        self.assertEqual(inbox.RARE_COUNT, a.hits["zephyr"])
        self.assertEqual(0, a.hits["qx"])
        for _, q in inbox.QUERIES:
            self.assertEqual(sum(q.casefold() in op.body.casefold() for op in a.ops),
                             a.hits[q])
        self.assertGreater(a.hits["图书馆"], 0)
        self.assertGreater(a.hits["hello"], a.hits["图书馆"])
        self.assertTrue(all(op.group in groups for op in a.ops if op.group))
        self.assertEqual([op.ts for op in a.ops], sorted(op.ts for op in a.ops))

    def test_fill_through_memory_store(self) -> None:
        """fill() stores the plan through apply: the owner's inbox holds every entry, in
        one conversation per peer and group."""
        from twisted.internet import defer

        from dim.bench import inbox
        from dim.store.memory import MemoryStore
        store = MemoryStore()
        done = self.successResultOf(defer.Deferred.fromCoroutine(
            inbox.fill(store, 2000, "h", batch=100)))
        self.assertEqual((2000, 0), (done["entries"], done["failed"]))
        self.assertEqual(inbox.PEERS + inbox.GROUPS, done["conversations"])
        found = self.successResultOf(store.search_messages(inbox.OWNER, "zephyr", None, 20))
        self.assertEqual(inbox.RARE_COUNT, len(found))

    def test_big_inbox_table(self) -> None:
        """The Markdown has one row per store and call, with scanned entries for Redis."""
        call = {"found": 0, "requests": 4, "p50_ms": 10.0, "p99_ms": 12.0,
                "all_cpu_ms_per_request": 9.5}
        result = {"status": report.OK, "entries": 100000, "queries": {"qx": "no match"},
                  "sqlite": {"calls": {"conversations": dict(call, found=50), "qx": call}},
                  "redis": {"calls": {"qx": dict(call, entries_scanned=20000,
                                                 entries_scanned_per_s=2000000)}}}
        md = report.markdown({"machine": report.machine(), "scenarios": {"big_inbox": result}})
        self.assertIn("## big_inbox: one inbox of 100,000 entries", md)
        self.assertIn("| SQLite | GET /v1/conversations | 50 | 4 | 10.0 | 12.0 | 9.5 | - | - |",
                      md)
        self.assertIn("| Redis | search `qx` (no match) | 0 | 4 | 10.0 | 12.0 | 9.5 | 20,000 | "
                      "2,000,000 |", md)
        self.assertIn("| big_inbox | GET /v1/conversations p50/p99 (ms), 100,000 entries, "
                      "sqlite | 10.0 / 12.0 |", md)
