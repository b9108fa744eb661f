"""The benchmark scenarios, each a function of a :class:`Context` returning its result dict.

Every scenario drives real server processes (``twistd -n dim``, the echo server) with the
load generator workers of :mod:`dim.bench.loadgen`, each worker on its own 127.0.0.x source
address.  Throughputs are reported with their ratio to the echo baseline measured in the
same run, because on a shared machine ratios hold where absolute numbers drift.
"""
from __future__ import annotations

import importlib.util
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import psutil

from dim.bench import cluster as C
from dim.bench import processes as P
from dim.bench import profile as profiling
from dim.bench import report, stats

PASSWORD = "bench-password-123"


@dataclass
class Params:
    """The sizes of one run (quick or full)."""

    flood_seconds: float
    flood_conns_per_worker: int
    flood_window: int
    connections: int
    conn_workers: int
    conn_steps: int
    heartbeat: float
    idle_seconds: float
    chat_pairs: int
    chat_workers: int
    step_seconds: float
    rate_start: float
    rate_factor: float
    max_steps: int
    drain_seconds: float
    login_users: int
    login_conns: int
    login_seconds: float
    route_conns: int
    route_seconds: float
    storm_clients: int
    inbox_entries: int
    inbox_seconds: float


QUICK = Params(flood_seconds=3, flood_conns_per_worker=4, flood_window=128, connections=2000,
               conn_workers=4, conn_steps=4, heartbeat=2, idle_seconds=6, chat_pairs=8,
               chat_workers=2, step_seconds=2, rate_start=500, rate_factor=2.0, max_steps=7,
               drain_seconds=4, login_users=4, login_conns=4, login_seconds=4, route_conns=16,
               route_seconds=3, storm_clients=500, inbox_entries=10_000, inbox_seconds=1.0)
FULL = Params(flood_seconds=10, flood_conns_per_worker=4, flood_window=128, connections=19000,
              conn_workers=4, conn_steps=5, heartbeat=10, idle_seconds=30, chat_pairs=32,
              chat_workers=2, step_seconds=6, rate_start=250, rate_factor=1.5, max_steps=14,
              drain_seconds=8, login_users=8, login_conns=8, login_seconds=15, route_conns=32,
              route_seconds=10, storm_clients=5000, inbox_entries=100_000, inbox_seconds=5.0)


@dataclass
class Context:
    """What scenarios share in one run: sizes, directories, and results of earlier ones."""

    quick: bool
    out: Path
    profile: bool = False
    log: Callable[[str], None] = print
    results: dict[str, Any] = field(default_factory=dict)
    echo_holds: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def params(self) -> Params:
        """The sizes for this mode."""
        return QUICK if self.quick else FULL

    def workdir(self, name: str) -> Path:
        """A fresh scratch directory for a scenario's processes."""
        d = self.out / "work" / name
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def echo_frames_per_s(self) -> float | None:
        """The echo baseline's throughput, measuring it first if no scenario has."""
        echo = self.results.get("echo")
        if echo is None:
            echo = self.results["echo"] = run_echo(self)
        return echo.get("frames_per_s")


# ------------------------------------------------------------------------------ helpers


def _summed(counts: Any) -> dict[str, int]:
    """Several {key: count} maps added up."""
    out: dict[str, int] = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def _split(n: int, parts: int) -> list[int]:
    """``n`` split into ``parts`` near-equal shares."""
    base, extra = divmod(n, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _hold_ramp(workers: list[P.WorkerProcess], server: P.ServerProcess, port: int, total: int,
               steps: int, tokens_for: Callable[[int, int], list[str]] | None,
               heartbeat: float | None, log: Callable[[str], None]) -> dict[str, Any]:
    """Open ``total`` idle connections in ``steps`` rounds, reading the server's RSS after
    each; returns the (connections, RSS) points, failures and the final count held."""
    warm = max(50, total // 50)
    per_step = [warm] + _split(total - warm, steps)
    held = 0
    failures: dict[str, int] = {}
    points: list[list[int]] = []
    offset = 0
    for k, n in enumerate(per_step):
        shares = _split(n, len(workers))
        cmds = []
        for w, share in zip(workers, shares):
            cmd: dict[str, Any] = {"cmd": "hold", "host": "127.0.0.1", "port": port, "n": share,
                                   "source": w.source, "concurrency": 200}
            if tokens_for is not None:
                cmd["tokens"] = tokens_for(offset, share)
                cmd["device"] = f"d{k}"
                offset += share
            if heartbeat:
                cmd["heartbeat"] = heartbeat
            cmds.append(cmd)
        answers = P.call_all(workers, cmds)
        held = sum(a["held"] for a in answers)
        for a in answers:
            for key, v in a["failures"].items():
                failures[key] = failures.get(key, 0) + v
        time.sleep(1.0)
        points.append([held, server.rss()])
        log(f"  {held} connections held, server RSS {points[-1][1] / 1e6:.1f} MB")
    return {"points": points, "held": held, "failures": failures}


def echo_hold(ctx: Context, n: int) -> dict[str, Any]:
    """The echo server's RSS per idle connection over ``n`` connections (cached per n)."""
    if n in ctx.echo_holds:
        return ctx.echo_holds[n]
    p = ctx.params
    wd = ctx.workdir(f"echo-hold-{n}")
    server, port = P.start_echo(wd)
    workers = P.start_workers(p.conn_workers, wd)
    try:
        ctx.log(f"echo: holding {n} idle connections")
        ramp = _hold_ramp(workers, server, port, n, p.conn_steps, None, None, ctx.log)
        P.call_all(workers, [{"cmd": "close"}] * len(workers))
    finally:
        P.stop_workers(workers)
        server.stop()
    counts = [pt[0] for pt in ramp["points"]]
    rss = [pt[1] for pt in ramp["points"]]
    result = {"held": ramp["held"], "rss_points": ramp["points"],
              "rss_per_conn_kb": stats.per_connection_kb(counts, rss),
              "failures": ramp["failures"]}
    ctx.echo_holds[n] = result
    return result


# ------------------------------------------------------------------------------ echo


def run_echo(ctx: Context) -> dict[str, Any]:
    """The baseline: pipelined frames/s and RSS per idle connection of a bare echo server."""
    p = ctx.params
    wd = ctx.workdir("echo")
    server, port = P.start_echo(wd)
    workers = P.start_workers(2, wd)
    try:
        ctx.log(f"echo: flood {p.flood_seconds}s, {2 * p.flood_conns_per_worker} connections, "
                f"window {p.flood_window}")
        c0, t0 = server.cpu_seconds(), time.monotonic()
        psutil.cpu_percent()
        answers = P.call_all(workers, [
            {"cmd": "flood", "host": "127.0.0.1", "port": port, "source": w.source,
             "conns": p.flood_conns_per_worker, "seconds": p.flood_seconds,
             "window": p.flood_window} for w in workers])
        cpu = server.cpu_seconds() - c0
        cpu_pct = 100.0 * cpu / (time.monotonic() - t0)
        busy = psutil.cpu_percent()
    finally:
        P.stop_workers(workers)
        server.stop()
    frames = sum(a["frames"] for a in answers)
    seconds = max(a["seconds"] for a in answers)
    fps = round(frames / seconds, 1)
    ctx.log(f"echo: {fps:,.0f} frames/s")
    hold = echo_hold(ctx, p.connections)
    return {"status": report.OK, "frames_per_s": fps, "frame_bytes": answers[0]["frame_bytes"],
            "frames_per_cpu_s": round(fps / (cpu_pct / 100.0), 1) if cpu_pct > 0 else None,
            "connections_flooded": 2 * p.flood_conns_per_worker, "window": p.flood_window,
            "seconds": seconds, "server_cpu_percent": round(cpu_pct, 1),
            "machine_busy_percent": busy,
            "rss_per_conn_kb": hold["rss_per_conn_kb"], "rss_connections": hold["held"],
            "rss_points": hold["rss_points"], "ratio_to_echo": 1.0}


# ------------------------------------------------------------------------------ connections


def run_connections(ctx: Context) -> dict[str, Any]:
    """One DIM node holding as many idle authenticated connections as it may, heartbeats on."""
    p = ctx.params
    n = p.connections
    wd = ctx.workdir("connections")
    dim = P.EmbeddedDim(wd, heartbeat=p.heartbeat).start()
    workers = P.start_workers(p.conn_workers, wd)
    try:
        ctx.log(f"connections: {n} idle clients on one node (tokens minted with the bench "
                f"secret, one user per connection), heartbeat {p.heartbeat:g}s")

        def tokens_for(offset: int, count: int) -> list[str]:
            return [P.mint_token(f"idle{offset + i}") for i in range(count)]

        ramp = _hold_ramp(workers, dim.process, dim.node_port, n, p.conn_steps, tokens_for,
                          p.heartbeat, ctx.log)
        P.call_all(workers, [{"cmd": "stats", "reset": True}] * len(workers))
        ctx.log(f"connections: idle for {p.idle_seconds:g}s")
        idle_cpu = P.cpu_percent_over(dim.process, p.idle_seconds)
        answers = P.call_all(workers, [{"cmd": "stats", "reset": True}] * len(workers))
        fds = dim.process.num_fds()
        P.call_all(workers, [{"cmd": "close"}] * len(workers))
    finally:
        P.stop_workers(workers)
        dim.stop()
    counts = [pt[0] for pt in ramp["points"]]
    rss = [pt[1] for pt in ramp["points"]]
    rtt = [x for a in answers for x in a["rtt_ms"]]
    late = [x for a in answers for x in a["ping_lateness_ms"]]
    held = sum(a["held"] for a in answers)
    lost = sum(a["lost"] for a in answers)
    per_conn = stats.per_connection_kb(counts, rss)
    echo = echo_hold(ctx, n)
    return {"status": report.OK, "target": n, "held": held, "lost_while_idle": lost,
            "lost_reasons": _summed(a["lost_reasons"] for a in answers),
            "error_frames": _summed(a["errors"] for a in answers),
            "connect_failures": ramp["failures"], "node_fds": fds,
            "rss_per_conn_kb": per_conn, "rss_points": ramp["points"],
            "echo_rss_per_conn_kb": echo["rss_per_conn_kb"],
            "echo_rss_points": echo["rss_points"],
            "rss_ratio_to_echo": stats.ratio(per_conn, echo["rss_per_conn_kb"]),
            "idle_cpu_percent": idle_cpu, "idle_seconds": p.idle_seconds,
            "heartbeat": {"interval_s": p.heartbeat,
                          "pings": sum(a["pings"] for a in answers),
                          "pongs": sum(a["pongs"] for a in answers),
                          "pong_rtt": stats.latency_summary(rtt),
                          "ping_schedule_lateness": stats.latency_summary(late)}}


# ------------------------------------------------------------------------------ chat


def _chat_sweep(ctx: Context, workers: list[P.WorkerProcess], servers: list[P.ServerProcess],
                tag: str, rate_start: float | None = None,
                others: Sequence[Any] = ()) -> dict[str, Any]:
    """The open-loop rate sweep up to saturation, then one step at half of it.

    ``servers`` are the nodes (their CPU is the node CPU); ``others`` every other process
    the chat costs (the gateway, Redis, ZooKeeper, Kafka), counted in the machine's CPU per
    message."""
    p = ctx.params
    # Warm-up: caches, SQLite pages, the allocator; not recorded.
    P.call_all(workers, [{"cmd": "chat_step", "rate": 100 / len(workers), "seconds": 1,
                          "drain": 3}] * len(workers))
    sweep: list[dict[str, Any]] = []
    first = rate_start or p.rate_start
    for rate in stats.next_rates(first, p.rate_factor,
                                 first * p.rate_factor ** (p.max_steps - 1)):
        step = _chat_step(ctx, workers, servers, rate, others)
        sweep.append(step)
        ctx.log(f"{tag}: offered {rate}/s achieved {step['achieved_per_s']:.0f}/s "
                f"p99 send->msg {step['send_to_msg']['p99_ms']} ms, "
                f"incomplete {step['incomplete']}")
        if stats.is_saturated(step):
            break
    top = stats.saturation(sweep)
    half = None
    if top is not None and top["achieved_per_s"]:
        time.sleep(2.0)  # let the node drain whatever the overload left behind
        half_rate = max(1, round(top["achieved_per_s"] / 2))
        half = _chat_step(ctx, workers, servers, half_rate, others)
        half["half_saturation"] = True
        ctx.log(f"{tag}: half saturation {half_rate}/s p99 send->msg "
                f"{half['send_to_msg']['p99_ms']} ms")
    return {"sweep": sweep, "top": top, "half": half}


def _chat_step(ctx: Context, workers: list[P.WorkerProcess], servers: list[P.ServerProcess],
               rate: float, others: Sequence[Any] = ()) -> dict[str, Any]:
    p = ctx.params
    c0, t0 = sum(sv.cpu_seconds() for sv in servers), time.monotonic()
    o0 = [o.cpu_seconds() for o in others]
    w0 = [w.cpu_seconds() for w in workers]
    psutil.cpu_percent()
    answers = P.call_all(workers, [
        {"cmd": "chat_step", "rate": rate / len(workers), "seconds": p.step_seconds,
         "drain": p.drain_seconds} for _ in workers])
    elapsed = time.monotonic() - t0
    node_cpu_s = sum(sv.cpu_seconds() for sv in servers) - c0
    cpu = 100.0 * node_cpu_s / elapsed
    other_cpu_s = [o.cpu_seconds() - c for o, c in zip(others, o0)]
    worker_cpu_s = [w.cpu_seconds() - c for w, c in zip(workers, w0)]
    wcpu = [round(100.0 * c / elapsed, 1) for c in worker_cpu_s]
    busy = psutil.cpu_percent()
    to_msg = [x for a in answers for x in a["send_to_msg_ms"]]
    to_sent = [x for a in answers for x in a["send_to_sent_ms"]]
    to_del = [x for a in answers for x in a["send_to_delivered_ms"]]
    errors: dict[str, int] = {}
    for a in answers:
        for k, v in a["errors"].items():
            errors[k] = errors.get(k, 0) + v
    sent = sum(a["sent"] for a in answers)
    span = max(a["last_delivered"] for a in answers) - min(a["start"] for a in answers)
    achieved = len(to_del) / max(span, p.step_seconds)
    return {"offered_per_s": rate, "seconds": p.step_seconds, "sent": sent,
            "msgs": len(to_msg), "delivered": len(to_del),
            "incomplete": sum(a["incomplete"] for a in answers),
            "achieved_per_s": round(achieved, 1),
            "msgs_per_node_cpu_s": round(achieved / (cpu / 100.0), 1) if cpu > 0 else None,
            "delivered_in_window_per_s": round(sum(a["delivered_in_window"] for a in answers)
                                               / p.step_seconds, 1),
            "msgs_per_s_in_window": round(sum(a["msgs_in_window"] for a in answers)
                                          / p.step_seconds, 1),
            "drain_s": max(a["drain_s"] for a in answers),
            "node_cpu_percent": round(cpu, 1), "worker_cpu_percent": wcpu,
            "machine_busy_percent": busy, "errors": errors,
            "other_cpu_percent": {o.name: round(100.0 * c / elapsed, 1)
                                  for o, c in zip(others, other_cpu_s)},
            "machine_cpu_us_per_msg": _per_msg_us(node_cpu_s + sum(other_cpu_s), len(to_del)),
            "node_cpu_us_per_msg": _per_msg_us(node_cpu_s, len(to_del)),
            "loadgen_cpu_us_per_msg": _per_msg_us(sum(worker_cpu_s), len(to_del)),
            "send_to_msg": stats.latency_summary(to_msg),
            "send_to_sent": stats.latency_summary(to_sent),
            "send_to_delivered": stats.latency_summary(to_del)}


def _per_msg_us(cpu_s: float, msgs: int) -> float | None:
    """CPU microseconds per message (None without messages)."""
    return round(1e6 * cpu_s / msgs, 1) if msgs else None


def _cheapest_step(sweep: list[dict[str, Any]]) -> dict[str, Any]:
    """The step with the least machine CPU per message (its cost where it is lowest)."""
    costed = [s for s in sweep if s.get("machine_cpu_us_per_msg")]
    return min(costed, key=lambda s: s["machine_cpu_us_per_msg"]) if costed else {}


def _chat_result(ctx: Context, swept: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    top = swept["top"] or {}
    best = _cheapest_step(swept["sweep"])
    mps = top.get("achieved_per_s")
    echo_fps = ctx.echo_frames_per_s()
    echo_cpu = (ctx.results.get("echo") or {}).get("frames_per_cpu_s")
    per_cpu = max((s.get("msgs_per_node_cpu_s") or 0 for s in swept["sweep"]), default=None)
    lat = top.get("send_to_msg") or {}
    return {"status": report.OK, "msgs_per_s": mps,
            "msgs_per_node_cpu_s": per_cpu,
            "machine_cpu_us_per_msg": best.get("machine_cpu_us_per_msg"),
            "loadgen_cpu_us_per_msg": best.get("loadgen_cpu_us_per_msg"),
            "cost_step_offered_per_s": best.get("offered_per_s"),
            "cpu_ratio_to_echo": stats.ratio(per_cpu, echo_cpu),
            "saturation_offered_per_s": top.get("offered_per_s"),
            "p50_ms": lat.get("p50_ms"), "p99_ms": lat.get("p99_ms"),
            "p999_ms": lat.get("p999_ms"),
            "delivered_p99_ms": (top.get("send_to_delivered") or {}).get("p99_ms"),
            "ratio_to_echo": stats.ratio(mps, echo_fps), "echo_frames_per_s": echo_fps,
            "latency_recording": "raw samples, numpy.percentile (linear), measured from each "
                                 "send's intended time in the open-loop schedule",
            "sweep": swept["sweep"], "half_saturation": swept["half"], **extra}


def chat_pairs(prefix: str, n: int) -> list[tuple[str, str]]:
    """``n`` (sender, recipient) user name pairs."""
    return [(f"{prefix}a{i}", f"{prefix}b{i}") for i in range(n)]


def run_chat_same_node(ctx: Context) -> dict[str, Any]:
    """Pairs of clients on one embedded node: send -> sent -> msg -> ack -> delivered."""
    p = ctx.params
    wd = ctx.workdir("chat_same_node")
    use_pyspy = ctx.profile and profiling.pyspy() is not None
    profile = (ctx.out / "node-profile.cprof") if ctx.profile and not use_pyspy else None
    sampler: profiling.Sampler | None = None
    summary: dict[str, Any] | None = None
    dim = P.EmbeddedDim(wd, profile=profile).start()
    workers = P.start_workers(p.chat_workers, wd)
    try:
        pairs = chat_pairs("c", p.chat_pairs)
        ctx.log(f"chat_same_node: registering {2 * len(pairs)} users")
        P.register_users(dim.base, [u for pair in pairs for u in pair], PASSWORD)
        shares = _split(len(pairs), len(workers))
        cmds, i = [], 0
        for w, share in zip(workers, shares):
            mine = pairs[i:i + share]
            i += share
            cmds.append({"cmd": "chat_setup", "host": "127.0.0.1", "port": dim.node_port,
                         "source": w.source,
                         "pairs": [[a, P.mint_token(a), b, P.mint_token(b)] for a, b in mine]})
        P.call_all(workers, cmds)
        if use_pyspy:
            sampler = profiling.Sampler(dim.process.pid, ctx.out / "node-profile.pyspy.txt")
        swept = _chat_sweep(ctx, workers, [dim.process], "chat_same_node")
        if sampler is not None:
            summary = sampler.stop()
            sampler = None
        P.call_all(workers, [{"cmd": "close"}] * len(workers))
    finally:
        if sampler is not None:
            sampler.stop()
        P.stop_workers(workers)
        dim.stop()
    extra = {"pairs": p.chat_pairs, "workers": p.chat_workers, "store": "SQLite (embedded dim)",
             "client": "lean frame client on dim.protocol.codec; one cumulative ack per read"}
    if summary is not None:
        extra["profile"] = summary
    elif profile is not None and profile.exists():
        extra["profile"] = {"file": str(profile), "tool": "cProfile through twistd --profiler "
                            "(reactor thread only)", **cprofile_summary(profile)}
    return _chat_result(ctx, swept, extra)


def cprofile_summary(path: Path, top: int = 25) -> dict[str, Any]:
    """The top functions of a cProfile stats file by own time."""
    import pstats
    st: Any = pstats.Stats(str(path))  # total_tt and stats are not in its stubs
    total = st.total_tt or 1.0
    rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return {"total_s": round(total, 3), "self": [
        {"function": f"{fn} ({Path(file).name}:{line})", "seconds": round(tt, 3),
         "percent": round(100.0 * tt / total, 1), "calls": nc}
        for (file, line, fn), (cc, nc, tt, ct, callers) in rows]}


# ------------------------------------------------------------------------------ cluster


def cluster_unavailable() -> str | None:
    """Why cluster mode cannot run here (None when its modules are present)."""
    missing = [m for m in ("dim.node.tap", "dim.gateway.tap", "dim.store.redis",
                           "dim.cluster.forwarder")
               if importlib.util.find_spec(m) is None]
    if missing:
        return ("cluster mode has not landed: missing modules " + ", ".join(missing)
                + " (twistd dim-node / dim-gateway)")
    return None


def _seed_users(worker: P.WorkerProcess, cl: C.Cluster, users: list[str]) -> None:
    """Create the users straight in the cluster's Redis store (one shared Argon2 hash)."""
    from dim.runtime import DEFAULT_SERVICES
    url = __import__("os").environ.get("DIM_REDIS") or DEFAULT_SERVICES["redis"][1]
    for i in range(0, len(users), 2000):
        worker.call({"cmd": "redis_users", "url": url, "prefix": cl.redis_prefix,
                     "users": users[i:i + 2000], "password_hash": C.one_hash(PASSWORD)})


def _cluster_services(ctx: Context, name: str) -> tuple[Any, Any, str | None]:
    """A cluster scenario's work directory and its running Redis, ZooKeeper and Kafka, or
    the reason they cannot be had (the scenario then reports "not available")."""
    reason = cluster_unavailable()
    if reason:
        return None, None, reason
    wd = ctx.workdir(name)
    services = C.Services(wd)
    return wd, services, services.ensure()


def run_chat_cross_node(ctx: Context) -> dict[str, Any]:
    """Pairs split across two cluster nodes: each message crosses Kafka to the other node."""
    wd, services, reason = _cluster_services(ctx, "chat_cross_node")
    if reason:
        return report.unavailable(reason)
    p = ctx.params
    cl = C.Cluster(wd, nodes=2)
    workers: list[P.WorkerProcess] = []
    linger: dict[str, Any] = {}
    try:
        cl.start()
        workers = P.start_workers(p.chat_workers, wd)
        pairs = chat_pairs("x", p.chat_pairs)
        _cross_node_setup(ctx, workers, cl, pairs)
        swept = _chat_sweep(ctx, workers, cl.servers, "chat_cross_node", p.rate_start / 4,
                            [cl.gateway, *C.service_processes()])
        # linger.ms: the same modest rate on this cluster (linger 0, the default) and on one
        # whose producers batch for 5 ms.
        modest = p.rate_start / 2
        linger["0"] = _linger_step(ctx, workers, cl.servers, modest, 0)
        P.call_all(workers, [{"cmd": "close"}] * len(workers))
        cl.stop()
        cl = C.Cluster(wd, nodes=2, node_args=["--linger-ms", "5"])
        cl.start()
        _cross_node_setup(ctx, workers, cl, pairs)
        linger["5"] = _linger_step(ctx, workers, cl.servers, modest, 5)
        P.call_all(workers, [{"cmd": "close"}] * len(workers))
    finally:
        P.stop_workers(workers)
        cl.stop()
        services.release()
    extra = {"pairs": p.chat_pairs, "workers": p.chat_workers, "nodes": 2,
             "store": "Redis (cluster)", "forwarding": "Kafka, one topic per node",
             "note": "node CPU is the sum of both nodes; the machine's CPU per message adds "
                     "the gateway, Redis, ZooKeeper and the Kafka brokers",
             "client": "lean frame client on dim.protocol.codec; one cumulative ack per read",
             "linger_ms": linger}
    return _chat_result(ctx, swept, extra)


def _cross_node_setup(ctx: Context, workers: list[P.WorkerProcess], cl: C.Cluster,
                      pairs: list[tuple[str, str]]) -> None:
    """Seed the pairs' users in the cluster and connect each pair's a to node 1, b to node 2."""
    ctx.log(f"chat_cross_node: cluster {cl.name}, seeding {2 * len(pairs)} users in Redis")
    _seed_users(workers[0], cl, [u for pair in pairs for u in pair])
    cmds, i = [], 0
    for w, share in zip(workers, _split(len(pairs), len(workers))):
        mine = pairs[i:i + share]
        i += share
        cmds.append({"cmd": "chat_setup", "host": "127.0.0.1", "port": cl.node_ports[0],
                     "port_b": cl.node_ports[1], "source": w.source,
                     "pairs": [[a, P.mint_token(a), b, P.mint_token(b)] for a, b in mine]})
    P.call_all(workers, cmds)


def _linger_step(ctx: Context, workers: list[P.WorkerProcess], servers: list[P.ServerProcess],
                 rate: float, linger_ms: int) -> dict[str, Any]:
    """One chat step at ``rate`` on a cluster whose producers use ``linger_ms``."""
    step = _chat_step(ctx, workers, servers, rate)
    ctx.log(f"chat_cross_node: linger.ms {linger_ms} at {rate:g}/s: send->msg p50 "
            f"{step['send_to_msg'].get('p50_ms')} ms, p99 {step['send_to_msg'].get('p99_ms')} ms")
    return {"offered_per_s": rate, "achieved_per_s": step["achieved_per_s"],
            "send_to_msg": step["send_to_msg"], "send_to_delivered": step["send_to_delivered"]}


def run_reconnect_storm(ctx: Context) -> dict[str, Any]:
    """Every client of a node that is killed (SIGKILL) reconnects through the gateway to the
    other node and syncs, while a sender keeps writing to them; counts lost and duplicates."""
    wd, services, reason = _cluster_services(ctx, "reconnect_storm")
    if reason:
        return report.unavailable(reason)
    p = ctx.params
    n = p.storm_clients
    cl = C.Cluster(wd, nodes=2)
    workers: list[P.WorkerProcess] = []
    sender_w: P.WorkerProcess | None = None
    try:
        cl.start()
        workers = P.start_workers(p.conn_workers, wd)
        sender_w = P.WorkerProcess("127.0.0.20", wd)
        users = [f"storm{i}" for i in range(n)]
        ctx.log(f"reconnect_storm: cluster {cl.name}, seeding {n + 1} users in Redis")
        _seed_users(sender_w, cl, users + ["stormsender"])
        ctx.log(f"reconnect_storm: {n} client-core sessions on {cl.node_ids[0]}")
        shares = _split(n, len(workers))
        cmds, i = [], 0
        for w, share in zip(workers, shares):
            mine = users[i:i + share]
            i += share
            cmds.append({"cmd": "storm_setup", "base": cl.base, "node": cl.node_dict(0),
                         "source": w.source, "users": [[u, P.mint_token(u)] for u in mine]})
        setup = P.call_all(workers, cmds)
        connected = sum(a["connected"] for a in setup)
        on_node = sum(a["on_node"] for a in setup)
        if connected < n:
            return report.failed(f"only {connected} of {n} sessions connected before the storm")
        ctx.log(f"reconnect_storm: {connected} connected, {on_node} of them on "
                f"{cl.node_ids[0]}")
        sender_w.call({"cmd": "sender_setup", "host": "127.0.0.1", "port": cl.node_ports[1],
                       "user": "stormsender", "token": P.mint_token("stormsender"),
                       "source": sender_w.source})
        rate = min(1000.0, max(50.0, n / 5))
        send_seconds = 6.0
        sender_w.send({"cmd": "sender_run", "targets": users, "rate": rate,
                       "seconds": send_seconds})
        time.sleep(1.0)
        kill_at = time.time()
        ctx.log(f"reconnect_storm: SIGKILL {cl.node_ids[0]} while sending {rate:g} msgs/s")
        cl.kill_node(0)
        limit = 40.0 if ctx.quick else 90.0
        statuses: list[dict[str, Any]] = []
        while time.time() - kill_at < limit:
            time.sleep(0.5)
            statuses = P.call_all(workers, [{"cmd": "storm_status",
                                             "since": kill_at}] * len(workers))
            affected = sum(s["disconnected_after"] for s in statuses)
            if (sum(s["back"] for s in statuses) >= affected
                    and sum(s["connected"] for s in statuses) >= n):
                break
        back_s = [b for s in statuses for b in s["back_s"]]
        affected = sum(s["disconnected_after"] for s in statuses)
        all_back = (max(back_s) if back_s else 0.0) if len(back_s) >= affected else None
        sent = sender_w.receive()
        time.sleep(3.0)  # let the last syncs and retransmissions land
        final = P.call_all(workers, [{"cmd": "storm_status", "since": kill_at, "detail": True}]
                           * len(workers))
        received: dict[str, list[str]] = {}
        for s in final:
            received.update(s["received"])
        expected = sent["sent"]
        got = {user: set(mids) for user, mids in received.items()}
        back_users = set()
        for st in final:
            back_users.update(st["back_users"])
        # A message can only be counted lost for a recipient whose session came back (the
        # others are "unreached"): the contract keeps it for them until they return.
        lost = sum(1 for to, mid in expected
                   if to in back_users and mid not in got.get(to, ()))
        unreached = sum(1 for to, mid in expected
                        if to not in back_users and mid not in got.get(to, ()))
        counts: dict[tuple[str, str], int] = {}
        for user, mids in received.items():
            for mid in mids:
                counts[(user, mid)] = counts.get((user, mid), 0) + 1
        duplicated = sum(s["duplicates"] for s in final) + sum(v - 1 for v in counts.values()
                                                               if v > 1)
        P.call_all(workers, [{"cmd": "storm_stop"}] * len(workers))
    finally:
        P.stop_workers(workers)
        if sender_w is not None:
            sender_w.stop()
        cl.stop()
        services.release()
    return {"status": report.OK, "clients": affected, "sessions": n,
            "on_killed_node": on_node, "back": len(back_s),
            "all_back_s": round(all_back, 3) if all_back is not None else None,
            "back_latency": stats.latency_summary([b * 1000 for b in back_s]),
            "back_within_target": sum(1 for b in back_s if b <= report.TARGETS["storm_s"]),
            "lost": lost, "unreached": unreached, "duplicated": duplicated,
            "wait_limit_s": limit,
            "messages_confirmed": len(expected), "messages_attempted": sent["attempted"],
            "messages_unconfirmed": sent["unconfirmed"], "send_rate_per_s": rate,
            "reconnect_attempts": sum(s["reconnect_attempts"] for s in final),
            "kill": "SIGKILL of the node holding every client; the gateway routes "
                    "(least_connections, the client excludes the failed node)",
            "client": "dim.client.session.ClientSession (the client core), several per worker"}


# ------------------------------------------------------------------------------ login


def _http_request(method: str, path: str, body: bytes = b"", token: str | None = None) -> str:
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json",
            f"Content-Length: {len(body)}"]
    if token:
        head.append(f"Authorization: Bearer {token}")
    return "\r\n".join(head) + "\r\n\r\n" + body.decode("latin-1")


def run_login(ctx: Context) -> dict[str, Any]:
    """Gateway logins/s (Argon2id with its default parameters) and route calls/s."""
    import json as _json
    p = ctx.params
    wd = ctx.workdir("login")
    dim = P.EmbeddedDim(wd).start()
    workers = P.start_workers(1, wd)
    try:
        users = [f"login{i}" for i in range(p.login_users)]
        ctx.log(f"login: registering {len(users)} users")
        P.register_users(dim.base, users, PASSWORD)
        code, body = P.http_json("POST", f"{dim.base}/v1/login",
                                 {"user": users[0], "password": PASSWORD})
        if code != 200:
            return report.failed(f"login answered HTTP {code}: {body}")
        token = body["token"]
        logins = [_http_request("POST", "/v1/login", _json.dumps(
            {"user": u, "password": PASSWORD}).encode()) for u in users]
        ctx.log(f"login: {p.login_conns} concurrent logins for {p.login_seconds:g}s")
        c0, t0 = dim.process.cpu_seconds(), time.monotonic()
        la = workers[0].call({"cmd": "http", "host": "127.0.0.1", "port": dim.http_port,
                              "requests": logins, "conns": p.login_conns,
                              "seconds": p.login_seconds, "source": workers[0].source})
        login_cpu = 100.0 * (dim.process.cpu_seconds() - c0) / (time.monotonic() - t0)
        route = [_http_request("POST", "/v1/route", b"{}", token)]
        ctx.log(f"login: {p.route_conns} concurrent route calls for {p.route_seconds:g}s")
        c0, t0 = dim.process.cpu_seconds(), time.monotonic()
        ra = workers[0].call({"cmd": "http", "host": "127.0.0.1", "port": dim.http_port,
                              "requests": route, "conns": p.route_conns,
                              "seconds": p.route_seconds, "warmup": 0.5,
                              "source": workers[0].source})
        route_cpu = 100.0 * (dim.process.cpu_seconds() - c0) / (time.monotonic() - t0)
    finally:
        P.stop_workers(workers)
        dim.stop()
    lps = round(la["ok_answers"] / la["seconds"], 2)
    rps = round(ra["ok_answers"] / ra["seconds"], 1)
    echo_fps = ctx.echo_frames_per_s()
    return {"status": report.OK, "logins_per_s": lps, "routes_per_s": rps,
            "ratio_to_echo": stats.ratio(lps, echo_fps),
            "route_ratio_to_echo": stats.ratio(rps, echo_fps),
            "login_failed_answers": la["failed_answers"], "login_statuses": la["statuses"],
            "route_failed_answers": ra["failed_answers"], "route_statuses": ra["statuses"],
            "login_latency": stats.latency_summary(la["latency_ms"]),
            "route_latency": stats.latency_summary(ra["latency_ms"]),
            "login_concurrency": p.login_conns, "route_concurrency": p.route_conns,
            "gateway_cpu_percent_login": round(login_cpu, 1),
            "gateway_cpu_percent_route": round(route_cpu, 1),
            "argon2": "argon2-cffi defaults (time_cost 3, memory_cost 64 MiB, parallelism 4)",
            "client": "keep-alive HTTP/1.1 client, one request in flight per connection"}


# ------------------------------------------------------------------------------ big inbox


#: What a search asks for, as the gateway's default (``GET /v1/messages/search``).
SEARCH_LIMIT = 20


def _timed_gets(base: str, path: str, token: str, seconds: float,
                procs: dict[str, Callable[[], float]], least: int = 3,
                most: int = 500) -> dict[str, Any]:
    """GET ``path`` one request after another on one keep-alive connection for about
    ``seconds`` (at least ``least``, at most ``most`` requests): the latencies, and the CPU
    each of ``procs`` (name -> its CPU seconds so far) spent per request."""
    import http.client
    from urllib.parse import urlparse

    url = urlparse(base)
    conn = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=120)
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    found: int | None = None
    try:
        conn.request("GET", path, headers=headers)  # warm-up, not counted
        conn.getresponse().read()
        cpu0 = {name: f() for name, f in procs.items()}
        t0 = time.monotonic()
        while len(latencies) < most and (len(latencies) < least
                                         or time.monotonic() - t0 < seconds):
            start = time.perf_counter()
            conn.request("GET", path, headers=headers)
            resp = conn.getresponse()
            body = resp.read()
            latencies.append(1000.0 * (time.perf_counter() - start))
            statuses[str(resp.status)] = statuses.get(str(resp.status), 0) + 1
            if found is None and resp.status == 200:
                import json as _json
                answer = _json.loads(body)
                found = len(answer.get("messages", answer.get("conversations", [])))
        cpu = {name: f() - cpu0[name] for name, f in procs.items()}
    finally:
        conn.close()
    n = len(latencies)
    summary = stats.latency_summary(latencies)
    return {"requests": n, "statuses": statuses, "found": found,
            "p50_ms": summary["p50_ms"], "p99_ms": summary["p99_ms"],
            "max_ms": summary["max_ms"],
            "cpu_ms_per_request": {name: round(1000.0 * c / n, 2) for name, c in cpu.items()},
            "all_cpu_ms_per_request": round(1000.0 * sum(cpu.values()) / n, 2)}


def _inbox_calls(ctx: Context, store: str, base: str, seconds: float,
                 procs: dict[str, Callable[[], float]]) -> dict[str, Any]:
    """Time GET /v1/conversations and every search of :data:`dim.bench.inbox.QUERIES`."""
    from urllib.parse import quote

    from dim.bench import inbox
    token = P.mint_token(inbox.OWNER)
    calls: dict[str, Any] = {}
    for label, path in [("conversations", "/v1/conversations"),
                        *[(q, f"/v1/messages/search?q={quote(q)}&limit={SEARCH_LIMIT}")
                          for _, q in inbox.QUERIES]]:
        calls[label] = _timed_gets(base, path, token, seconds, procs)
        ctx.log(f"big_inbox: {store} GET {path}: p50 {calls[label]['p50_ms']} ms, p99 "
                f"{calls[label]['p99_ms']} ms over {calls[label]['requests']}, "
                f"{calls[label]['all_cpu_ms_per_request']} ms CPU each")
    return calls


def _inbox_sqlite(ctx: Context, worker: P.WorkerProcess, entries: int,
                  seconds: float) -> dict[str, Any]:
    """The big inbox on the embedded dim (SQLite): filled, then timed over HTTP."""
    wd = ctx.workdir("big_inbox_sqlite")
    dim = P.EmbeddedDim(wd)
    dim.data.mkdir(mode=0o700, parents=True, exist_ok=True)
    ctx.log(f"big_inbox: filling {entries} entries into SQLite")
    filled = worker.call({"cmd": "fill_inbox", "kind": "sqlite",
                          "target": str((dim.data / "dim.sqlite3").resolve()),
                          "entries": entries, "password_hash": "x"})
    ctx.log(f"big_inbox: SQLite filled in {filled['fill_s']} s")
    dim.start()
    try:
        calls = _inbox_calls(ctx, "SQLite", dim.base, seconds,
                             {"dim": dim.process.cpu_seconds})
    finally:
        dim.stop()
    return {"fill": _fill_summary(filled), "calls": calls,
            "processes": "twistd dim (gateway, node and SQLite in one process)"}


def _inbox_redis(ctx: Context, worker: P.WorkerProcess, entries: int,
                 seconds: float) -> dict[str, Any]:
    """The big inbox on a cluster (Redis): filled, then timed over the cluster gateway."""
    from dim.bench import inbox
    from dim.runtime import DEFAULT_SERVICES
    wd, services, reason = _cluster_services(ctx, "big_inbox_redis")
    if reason:
        raise RuntimeError(f"cluster services: {reason}")
    url = __import__("os").environ.get("DIM_REDIS") or DEFAULT_SERVICES["redis"][1]
    cl = C.Cluster(wd, nodes=1)
    try:
        cl.start()
        ctx.log(f"big_inbox: filling {entries} entries into Redis ({cl.redis_prefix})")
        filled = worker.call({"cmd": "fill_inbox", "kind": "redis", "target": url,
                              "prefix": cl.redis_prefix, "entries": entries,
                              "password_hash": "x"})
        ctx.log(f"big_inbox: Redis filled in {filled['fill_s']} s")
        procs: dict[str, Callable[[], float]] = {"gateway": cl.gateway.cpu_seconds}
        for i, node in enumerate(cl.servers):
            procs[cl.node_ids[i]] = node.cpu_seconds
        for service in C.service_processes():
            procs[service.name] = service.cpu_seconds
        calls = _inbox_calls(ctx, "Redis", cl.base, seconds, procs)
        scanned = worker.call({"cmd": "search_scanned", "url": url, "prefix": cl.redis_prefix,
                               "user": inbox.OWNER, "limit": SEARCH_LIMIT,
                               "queries": [q for _, q in inbox.QUERIES]})["scanned"]
        for q, count in scanned.items():
            call = calls[q]
            call["entries_scanned"] = count
            p50 = call["p50_ms"]
            call["entries_scanned_per_s"] = round(count / (p50 / 1000.0)) if p50 else None
        worker.call({"cmd": "redis_delete", "url": url, "prefix": cl.redis_prefix})
    finally:
        cl.stop()
        services.release()
    return {"fill": _fill_summary(filled), "calls": calls,
            "processes": "the cluster's gateway (which runs the calls), its one node, Redis, "
                         "ZooKeeper and Kafka"}


def _fill_summary(filled: dict[str, Any]) -> dict[str, Any]:
    """What a fill wrote, without the worker's ``ok``."""
    return {k: v for k, v in filled.items() if k != "ok"}


def big_inbox(ctx: Context, entries: int, seconds: float) -> dict[str, Any]:
    """One user's inbox of ``entries`` entries on SQLite and on Redis: GET /v1/conversations
    and searches timed through the gateway, ``seconds`` of requests each."""
    from dim.bench import inbox
    worker = P.WorkerProcess("127.0.0.2", ctx.out / "work")
    try:
        sqlite = _inbox_sqlite(ctx, worker, entries, seconds)
        redis = _inbox_redis(ctx, worker, entries, seconds)
    finally:
        worker.stop()
    return {"status": report.OK, "entries": entries, "owner": inbox.OWNER,
            "queries": {q: label for label, q in inbox.QUERIES},
            "search_limit": SEARCH_LIMIT, "sqlite": sqlite, "redis": redis,
            "note": "filled through the store API in batches of 500, then every call made "
                    "over HTTP to the real gateway, one at a time on one keep-alive "
                    "connection; CPU per request counts every process listed"}


def run_big_inbox(ctx: Context) -> dict[str, Any]:
    """GET /v1/conversations and searches on one inbox of 100,000 entries (10,000 quick)."""
    return big_inbox(ctx, ctx.params.inbox_entries, ctx.params.inbox_seconds)


#: Every scenario, in the order ``all`` runs them.
SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "echo": run_echo,
    "connections": run_connections,
    "chat_same_node": run_chat_same_node,
    "chat_cross_node": run_chat_cross_node,
    "reconnect_storm": run_reconnect_storm,
    "login": run_login,
    "big_inbox": run_big_inbox,
}
