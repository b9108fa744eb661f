"""``python -m dim.bench.redis_store``: CPU per message of the Redis store and session path.

Stores N messages from S senders through the real :class:`dim.store.redis.RedisStore`, acks
each recipient's inbox, and locates the recipients through
:class:`dim.cluster.sessions.RedisSessionRegistry`, the way a node does for every message.
Each sender keeps ``--window`` messages in flight (a client waiting for ``sent``).  Prints
the calling process's CPU seconds per message and, with ``--redis-pid``, Redis's own (from
/proc), plus messages per second.  Uses its own key prefix and deletes it at the end.

Then a reconnect storm: ``--hellos`` clients say ``hello`` at once (a session added, then the
inbox's last_seq read for ``welcome``), with the CPU per hello.

Not a timed test: a benchmark to compare versions of the store on one machine.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from typing import Any

from twisted.internet import defer, task


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid``, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _run(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    from dim.cluster.sessions import RedisSessionRegistry
    from dim.store.redis import RedisStore

    prefix = f"dimbench:{uuid.uuid4().hex[:8]}:"
    store = await RedisStore.connect(args.redis, prefix=prefix, clock=reactor)
    sessions = await RedisSessionRegistry.connect(args.redis, prefix=prefix, clock=reactor)
    senders = [f"s{i}" for i in range(args.senders)]
    recipients = [f"r{i}" for i in range(args.senders)]
    for user in senders + recipients:
        await store.create_user(user, "x", 0)
    for i, user in enumerate(recipients):
        if i % 2 == 0:  # half the recipients online
            await sessions.add(user, f"sess-{user}", "bench-node")
    per_sender = args.messages // args.senders

    async def one_sender(index: int) -> None:
        sender, to = senders[index], recipients[index]
        window: list[defer.Deferred[Any]] = []
        for n in range(per_sender):
            d: Any = store.store_message(sender, f"c{n}", [to], None, "hello", "text", None,
                                         0)
            d.addCallback(lambda result, to=to: sessions.locate([to]).addCallback(
                lambda _: store.ack(to, result.seqs[to])))
            window.append(d)
            if len(window) >= args.window:
                await window.pop(0)
        for d in window:
            await d

    def hello(user: str) -> defer.Deferred[Any]:
        """What a node does for ``hello``: add the session, then read last_seq."""
        return sessions.add(user, f"storm-{user}", "bench-node").addCallback(
            lambda _: store.last_seq(user))

    result: dict[str, Any] = {}
    for name, count, run in [
            ("msg", per_sender * args.senders,
             lambda: [defer.Deferred.fromCoroutine(one_sender(i))
                      for i in range(args.senders)]),
            ("hello", args.hellos,
             lambda: [hello(f"h{i}") for i in range(args.hellos)])]:
        redis_before = _proc_cpu(args.redis_pid) if args.redis_pid else 0.0
        cpu_before, wall_before = time.process_time(), time.monotonic()
        await defer.gatherResults(run(), consumeErrors=True)
        cpu = time.process_time() - cpu_before
        wall = time.monotonic() - wall_before
        result[f"{name}s"] = count
        result[f"{name}s_per_s"] = round(count / wall)
        result[f"process_cpu_us_per_{name}"] = round(cpu / count * 1e6, 1)
        if args.redis_pid:
            redis_cpu = _proc_cpu(args.redis_pid) - redis_before
            result[f"redis_cpu_us_per_{name}"] = round(redis_cpu / count * 1e6, 1)
    await delete_prefix(store.redis, prefix)
    await sessions.close()
    await store.close()
    return {"senders": args.senders, "window": args.window, **result}


async def delete_prefix(redis: Any, prefix: str) -> int:
    """Delete every key under ``prefix``; how many there were."""
    cursor: Any = "0"
    deleted = 0
    while True:
        cursor, keys = await redis.scan(cursor, pattern=prefix + "*", count=1000)
        if keys:
            await redis.delete(*keys)
            deleted += len(keys)
        if str(cursor) == "0":
            return deleted


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, run once, print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m dim.bench.redis_store",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--redis", default=os.environ.get("DIM_REDIS",
                                                          "redis://127.0.0.1:6379"))
    parser.add_argument("--redis-pid", type=int, default=0,
                        help="pid of the Redis server, to count its CPU")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--senders", type=int, default=32,
                        help="senders (and so the clients of the hello storm)")
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--hellos", type=int, default=2000,
                        help="clients of the hello storm")
    args = parser.parse_args(argv)

    def run(reactor: Any) -> Any:
        d = defer.Deferred.fromCoroutine(_run(reactor, args))
        d.addCallback(lambda result: print(json.dumps(result)))
        return d
    task.react(run)


if __name__ == "__main__":
    main()
