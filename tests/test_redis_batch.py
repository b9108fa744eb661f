"""RedisStore's per-turn batching, on a stand-in Redis that records its script calls."""
from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer, task
from twisted.trial.unittest import TestCase

from dim.errors import Internal, NotFound
from dim.store.interface import Receipt
from dim.store.redis import RedisStore
from tests.fakes.redis import RecordingRedis


def stored(mid: str, sender: str, cid: str, seqs: dict[str, int]) -> list[Any]:
    """The store function's answer for a stored message."""
    message = {"mid": mid, "id": cid, "sender": sender, "ts": 1, "to": None, "group": None,
               "body": "b", "kind": "text", "file": None}
    return [0, json.dumps(message), seqs]


def reply(results: list[Any], version: int = 0) -> str:
    """The batch script's answer: the session version, then one result per operation."""
    return json.dumps([version, results])


class BatchTests(TestCase):
    """Every store, ack and read of one reactor turn becomes one script call."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.redis = RecordingRedis()
        self.store = RedisStore(self.redis, prefix="p:", clock=self.clock)

    def send(self, sender: str, cid: str, to: str = "bob") -> defer.Deferred[Any]:
        return self.store.store_message(sender, cid, [to], None, "b", "text", None, 1)

    def test_one_turn_is_one_call_in_call_order(self) -> None:
        """N stores and an ack made in one turn go as ONE script call, in call order."""
        sends = [self.send("alice", f"c{n}") for n in range(50)]
        ack = self.store.ack("bob", 7)
        self.assertEqual([], self.redis.calls)
        self.clock.advance(0)
        self.assertEqual(1, len(self.redis.calls))
        ops = self.redis.ops(0)
        self.assertEqual([f"c{n}" for n in range(50)], [op[2] for op in ops[:50]])
        self.assertEqual(["a", "bob", 7], ops[50])
        self.assertEqual("p:", self.redis.calls[0][1][0])
        answer = [stored(f"m{n}", "alice", f"c{n}", {"alice": n + 1, "bob": n + 1})
                  for n in range(50)] + [[["m0", "c0", "alice", 1]]]
        self.redis.calls[0][2].callback(reply(answer))
        results = [self.successResultOf(d) for d in sends]
        self.assertEqual([f"m{n}" for n in range(50)], [r.message.mid for r in results])
        self.assertEqual([n + 1 for n in range(50)], [r.seqs["bob"] for r in results])
        self.assertEqual([Receipt(mid="m0", id="c0", sender="alice", seq=1)],
                         self.successResultOf(ack))

    def test_unknown_recipient_fails_alone(self) -> None:
        """An op answered 'no such user' fails with NotFound; its neighbours succeed."""
        first, bad, last = self.send("alice", "1"), self.send("alice", "2", "nobody"), \
            self.send("alice", "3")
        self.clock.advance(0)
        self.redis.calls[0][2].callback(reply([
            stored("a", "alice", "1", {"alice": 1, "bob": 1}), [-1, "nobody"],
            stored("b", "alice", "3", {"alice": 2, "bob": 2})]))
        self.assertEqual("a", self.successResultOf(first).message.mid)
        failure = self.failureResultOf(bad, NotFound)
        self.assertEqual("2", failure.value.ref)
        self.assertEqual("b", self.successResultOf(last).message.mid)

    def test_failed_op_inside_script_fails_alone(self) -> None:
        """An op the script reports as raised fails with Internal; the others succeed."""
        good, bad = self.store.ack("bob", 1), self.store.read("carol", 2)
        self.clock.advance(0)
        self.redis.calls[0][2].callback(reply([{}, {"e": "WRONGTYPE"}]))
        self.assertEqual([], self.successResultOf(good))
        self.failureResultOf(bad, Internal)

    def test_failed_batch_fails_each_op(self) -> None:
        """A batch whose call fails fails every one of its ops with Internal (with its ref)."""
        sends = [self.send("alice", f"c{n}") for n in range(3)]
        ack = self.store.ack("bob", 1)
        self.clock.advance(0)
        self.redis.calls[0][2].errback(ConnectionError("Redis went away"))
        refs = [self.failureResultOf(d, Internal).value.ref for d in sends]
        self.assertEqual(["c0", "c1", "c2"], refs)
        self.failureResultOf(ack, Internal)

    def test_wrong_answer_count_fails_each_op(self) -> None:
        """An answer that does not match the batch fails every op rather than misassign."""
        sends = [self.send("alice", f"c{n}") for n in range(2)]
        self.clock.advance(0)
        self.redis.calls[0][2].callback(reply([stored("a", "alice", "c0", {"bob": 1})]))
        for d in sends:
            self.failureResultOf(d, Internal)

    def test_one_batch_in_flight_next_waits(self) -> None:
        """What is sent while a batch is in flight goes, in order, as one next batch."""
        first = self.send("alice", "1")
        self.clock.advance(0)
        later = [self.send("alice", "2")]
        self.clock.advance(0)
        later.append(self.send("alice", "3"))
        self.clock.advance(0)
        self.assertEqual(1, len(self.redis.calls))
        self.redis.calls[0][2].callback(reply([stored("a", "alice", "1", {"bob": 1})]))
        self.successResultOf(first)
        self.assertEqual(1, len(self.redis.calls))
        self.clock.advance(0)
        self.assertEqual(2, len(self.redis.calls))
        self.assertEqual(["2", "3"], [op[2] for op in self.redis.ops(1)])
        self.assertNoResult(later[0])

    def test_big_batches_are_split_in_order(self) -> None:
        """More ops (or bytes) than one call takes go as several calls, in call order."""
        self.store._batcher.max_ops = 3
        self.store._batcher.max_bytes = 10_000
        for n in range(4):
            self.send("alice", f"c{n}")
        big = self.store.store_message("alice", "big", ["bob"], None, "x" * 20_000, "text",
                                       None, 1)
        self.send("alice", "last")
        seen: list[list[str]] = []
        for index in range(3):
            self.clock.advance(0)
            self.assertEqual(index + 1, len(self.redis.calls))
            ops = self.redis.ops(index)
            seen.append([op[2] for op in ops])
            self.redis.calls[index][2].callback(reply(
                [stored(f"m{op[2]}", "alice", op[2], {"bob": 1}) for op in ops]))
        self.assertEqual([["c0", "c1", "c2"], ["c3", "big"], ["last"]], seen)
        self.assertEqual("mbig", self.successResultOf(big).message.mid)

    def test_close_waits_for_the_batch(self) -> None:
        """close() disconnects only after the batch under way is answered."""
        disconnected: list[bool] = []
        self.redis.disconnect = lambda: defer.succeed(disconnected.append(True))  # type: ignore
        d = self.send("alice", "1")
        self.clock.advance(0)
        closed = self.store.close()
        self.assertEqual([], disconnected)
        self.redis.calls[0][2].callback(reply([stored("a", "alice", "1", {"bob": 1})]))
        self.successResultOf(d)
        self.successResultOf(closed)
        self.assertEqual([True], disconnected)
