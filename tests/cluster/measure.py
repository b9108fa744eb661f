"""Figures of cluster mode, measured on real processes (the numbers in docs/cluster.md).

    .venv/bin/python -m tests.cluster.measure [--rate 200] [--seconds 10] [--pairs 20]
                                              [--kills 3] [--out figures.json]

1. Cross-node latency: ``pairs`` senders on node 1 write to partners on nodes 2 and 3 at
   ``rate`` messages per second in total for ``seconds``; for each message, send -> ``sent``
   at the sender and send -> ``msg`` shown at the recipient (the client core's
   MessageReceived), on one clock since all clients live in this process.
2. Failover, ``kills`` times on a fresh cluster: 20 people chat at 60 msg/s, the busiest node
   gets kill -9; time until ``/v1/nodes`` stops listing it, until every one of its people is
   welcomed by another node, and until each has synced up to the welcome's ``last_seq``;
   with the checker's counts.

Runs on the services of ``DIM_REDIS``/``DIM_ZOOKEEPER``/``DIM_KAFKA`` (``scripts/stack up``)
with a gateway and three nodes as twistd processes on free ports, H = 2 s and a ZooKeeper
session timeout of 4 s.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from dim.bench.stats import percentile
from tests.cluster.kit import (Conversation, LocalCluster, Person, Services, log_in_all,
                               people_on, wait_until)
from tests.harness import sleep


def _ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 1)


@defer.inlineCallbacks
def latency(workdir: Path, rate: float, seconds: float, pairs: int):
    """Cross-node send -> sent and send -> msg latencies at a steady rate."""
    cluster = LocalCluster(workdir / "latency", Services.shared(), heartbeat=2, zk_timeout=4)
    try:
        yield cluster.start()
        n1, n2, n3 = cluster.ids
        senders = yield log_in_all(cluster.base, [f"ls{i}" for i in range(pairs)])
        receivers = yield log_in_all(cluster.base, [f"lr{i}" for i in range(pairs)])
        for i, (s, r) in enumerate(zip(senders, receivers)):
            s.start(cluster.address(n1))
            r.start(cluster.address(n2 if i % 2 else n3))
        everyone = senders + receivers
        yield wait_until(lambda: all(p.node for p in everyone), 30, "everyone connected")
        sent: list[tuple[Person, Any, Person]] = []
        budget = [0.0]
        tick = 0.01
        turn = [0]

        def some() -> None:
            budget[0] += rate * tick
            while budget[0] >= 1:
                budget[0] -= 1
                i = turn[0] % pairs
                turn[0] += 1
                m = senders[i].send(receivers[i].user, f"ls{i}#{turn[0]}")
                sent.append((senders[i], m, receivers[i]))

        loop = task.LoopingCall(some)
        began = time.monotonic()
        loop.start(tick)
        yield sleep(seconds)
        loop.stop()
        elapsed = time.monotonic() - began
        yield wait_until(lambda: all((s.user, m.id) in r.shown_at for s, m, r in sent), 30,
                         "every message shown")
        to_msg = [r.shown_at[(s.user, m.id)] - s.sent_at[m.id] for s, m, r in sent]
        return {"rate_asked": rate, "rate_sent": round(len(sent) / elapsed, 1),
                "messages": len(sent), "pairs": pairs,
                "send_to_msg_p50_ms": _ms(to_msg, 50), "send_to_msg_p90_ms": _ms(to_msg, 90),
                "send_to_msg_p99_ms": _ms(to_msg, 99),
                "send_to_msg_max_ms": round(max(to_msg) * 1000, 1)}
    finally:
        for p in locals().get("everyone", []):
            p.stop()
        cluster.cleanup()


@defer.inlineCallbacks
def failover(workdir: Path, run: int):
    """One kill -9 of the busiest node under 20 people chatting at 60 msg/s."""
    cluster = LocalCluster(workdir / f"kill{run}", Services.shared(), heartbeat=2, zk_timeout=4)
    people: list[Person] = []
    try:
        yield cluster.start()
        people = yield people_on(cluster, 20, f"f{run}x")
        chat = Conversation(people, rate=60, seed=run)
        chat.start()
        yield sleep(4)
        counts = {n: sum(1 for p in people if p.node == n) for n in cluster.ids}
        victim = max(counts, key=counts.get)
        moved = [p for p in people if p.node == victim]
        killed = time.monotonic()
        cluster.nodes[victim].kill(signal.SIGKILL)
        yield cluster.wait_listed(set(cluster.ids) - {victim}, timeout=30)
        vanished = time.monotonic() - killed
        yield wait_until(lambda: all(any(t > killed for t in p.synced_at) for p in moved), 60,
                         "reconnected and synced")
        welcomed = [min(t for t, _, _ in p.connects if t > killed) - killed for p in moved]
        synced = [min(t for t in p.synced_at if t > killed) - killed for p in moved]
        yield sleep(max(0.0, killed + 10 - time.monotonic()))
        chat.stop()
        tally = yield chat.settle(60)
        return {"people_on_dead_node": len(moved), "sent": tally.sent,
                "lost": len(tally.lost), "twice": len(tally.twice),
                "out_of_order": len(tally.out_of_order), "unconfirmed": tally.unconfirmed,
                "vanished_from_nodes_s": round(vanished, 2),
                "all_welcomed_s": round(max(welcomed), 2),
                "all_synced_s": round(max(synced), 2),
                "median_synced_s": round(sorted(synced)[len(synced) // 2], 2)}
    finally:
        for p in people:
            p.stop()
        cluster.cleanup()


def main() -> None:
    """Measure and print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--kills", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    @defer.inlineCallbacks
    def run(reactor: Any):
        workdir = Path(tempfile.mkdtemp(prefix="dim-measure-"))
        figures: dict[str, Any] = {"machine": {"cpus": os.cpu_count(),
                                               "load_before": os.getloadavg()}}
        figures["latency"] = yield latency(workdir, args.rate, args.seconds, args.pairs)
        print(json.dumps(figures["latency"]), flush=True)
        figures["failover"] = []
        for i in range(args.kills):
            f = yield failover(workdir, i)
            print(json.dumps(f), flush=True)
            figures["failover"].append(f)
        figures["machine"]["load_after"] = os.getloadavg()
        text = json.dumps(figures, indent=1)
        print(text)
        if args.out:
            args.out.write_text(text + "\n")

    task.react(run)


if __name__ == "__main__":
    main()
