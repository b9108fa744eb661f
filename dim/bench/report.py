"""What a benchmark run leaves behind: results.json, results.md and PNG plots.

:func:`check_schema` says what is missing from a results document, so the tests and the
orchestrator agree on its shape.  A scenario that could not run carries ``status`` "not
available" (or "failed") and a ``reason``, never made-up figures.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

OK = "ok"
NOT_AVAILABLE = "not available"
FAILED = "failed"

#: Keys each scenario must report when it ran.
REQUIRED: dict[str, tuple[str, ...]] = {
    "echo": ("frames_per_s", "rss_per_conn_kb"),
    "connections": ("held", "rss_per_conn_kb", "echo_rss_per_conn_kb", "rss_ratio_to_echo",
                    "idle_cpu_percent", "heartbeat"),
    "chat_same_node": ("msgs_per_s", "p50_ms", "p99_ms", "p999_ms", "ratio_to_echo", "sweep"),
    "chat_cross_node": ("msgs_per_s", "p50_ms", "p99_ms", "p999_ms", "ratio_to_echo", "sweep"),
    "reconnect_storm": ("clients", "all_back_s", "lost", "duplicated"),
    "login": ("logins_per_s", "routes_per_s", "ratio_to_echo", "route_ratio_to_echo"),
    "big_inbox": ("entries", "sqlite", "redis"),
}
MACHINE_KEYS = ("cpu", "cores", "python", "twisted", "kernel", "date")

#: The issue's targets, as (scenario, description).
TARGETS = {
    "chat_ratio": 0.1,            # chat msgs/s as a share of echo frames/s (for reference)
    "chat_same_msgs": 20000.0,    # chat_same_node msgs/s at saturation
    "chat_cross_msgs": 5000.0,    # chat_cross_node msgs/s at saturation
    "chat_per_cpu": 25000.0,      # chat_same_node msgs per node CPU-second
    "cross_cost_ratio": 3.0,      # machine CPU per msg across nodes / on one node
    "p99_half_ms": 20.0,          # p99 send->msg at half the saturation rate
    "connections": 19000,         # idle connections held
    "rss_ratio": 2.5,             # RSS/conn at most 2.5x echo's
    "storm_s": 10.0,              # reconnect_storm: all back within 10 s
}


def machine() -> dict[str, Any]:
    """The machine the run is on: cpu model, cores, python, twisted, kernel, date (UTC)."""
    import twisted
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "twisted": twisted.__version__, "kernel": platform.release(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "load_avg_1m_at_start": round(os.getloadavg()[0], 2)}


def unavailable(reason: str) -> dict[str, Any]:
    """The result of a scenario that cannot run here, and why."""
    return {"status": NOT_AVAILABLE, "reason": reason}


def failed(reason: str) -> dict[str, Any]:
    """The result of a scenario that started but broke, and how."""
    return {"status": FAILED, "reason": reason}


def check_schema(results: dict[str, Any]) -> list[str]:
    """Everything missing or malformed in a results document (empty when it is well formed)."""
    problems: list[str] = []
    mach = results.get("machine")
    if not isinstance(mach, dict):
        problems.append("machine is missing")
    else:
        problems += [f"machine.{k} is missing" for k in MACHINE_KEYS if k not in mach]
    scenarios = results.get("scenarios")
    if not isinstance(scenarios, dict):
        return problems + ["scenarios is missing"]
    for name, result in scenarios.items():
        if not isinstance(result, dict):
            problems.append(f"{name} is not an object")
            continue
        status = result.get("status", OK)
        if status != OK:
            if status not in (NOT_AVAILABLE, FAILED):
                problems.append(f"{name}.status {status!r} is unknown")
            if not result.get("reason"):
                problems.append(f"{name} has status {status!r} but no reason")
            continue
        for key in REQUIRED.get(name, ()):
            if key not in result:
                problems.append(f"{name}.{key} is missing")
    return problems


def write_json(results: dict[str, Any], out: Path) -> Path:
    """Write results.json into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    return path


def _fmt(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}" if abs(v) >= 1 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "missed")


def headline_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """(scenario, figure, value, ratio to echo, target, verdict) rows of the summary table."""
    sc = results.get("scenarios", {})
    rows: list[tuple[str, str, str, str, str, str]] = []
    for name, result in sc.items():
        if result.get("status", OK) != OK:
            rows.append((name, result.get("status", ""), result.get("reason", ""), "", "", ""))
            continue
        if name == "echo":
            rows.append((name, "frames/s (pipelined)", _fmt(result.get("frames_per_s")), "1",
                         "", ""))
            rows.append((name, "frames per server CPU-second", _fmt(result.get("frames_per_cpu_s")),
                         "1", "", ""))
            rows.append((name, "RSS per idle connection (KB)",
                         _fmt(result.get("rss_per_conn_kb"), 2), "1", "", ""))
        elif name == "connections":
            held = result.get("held")
            rows.append((name, "idle authenticated connections held", _fmt(held), "",
                         f">= {TARGETS['connections']:,}",
                         _verdict(None if held is None else held >= TARGETS["connections"])))
            r = result.get("rss_ratio_to_echo")
            rows.append((name, "RSS per connection (KB)", _fmt(result.get("rss_per_conn_kb"), 2),
                         _fmt(r, 2), f"<= {TARGETS['rss_ratio']}x echo",
                         _verdict(None if r is None else r <= TARGETS["rss_ratio"])))
            rows.append((name, "echo RSS per connection, same N (KB)",
                         _fmt(result.get("echo_rss_per_conn_kb"), 2), "1", "", ""))
            rows.append((name, "idle CPU of the node (% of one core)",
                         _fmt(result.get("idle_cpu_percent")), "", "", ""))
            hb = result.get("heartbeat") or {}
            rtt = hb.get("pong_rtt") or {}
            rows.append((name, f"pong round trip p50/p99/max (ms), H={hb.get('interval_s')} s",
                         f"{_fmt(rtt.get('p50_ms'))} / {_fmt(rtt.get('p99_ms'))} / "
                         f"{_fmt(rtt.get('max_ms'))}", "", "", ""))
            rows.append((name, "connections lost while idle", _fmt(result.get("lost_while_idle")),
                         "", "0", _verdict(None if result.get("lost_while_idle") is None
                                           else result.get("lost_while_idle") == 0)))
        elif name in ("chat_same_node", "chat_cross_node"):
            r = result.get("ratio_to_echo")
            mps = result.get("msgs_per_s")
            goal = TARGETS["chat_same_msgs" if name == "chat_same_node" else "chat_cross_msgs"]
            rows.append((name, "msgs/s at saturation (send->delivered chain)", _fmt(mps),
                         _fmt(r, 3), f">= {goal:,.0f}",
                         _verdict(None if mps is None else mps >= goal)))
            per_cpu = result.get("msgs_per_node_cpu_s")
            same = name == "chat_same_node"
            rows.append((name, "msgs per node CPU-second (best step)", _fmt(per_cpu),
                         _fmt(result.get("cpu_ratio_to_echo"), 3),
                         f">= {TARGETS['chat_per_cpu']:,.0f}" if same else "",
                         _verdict(None if per_cpu is None
                                  else per_cpu >= TARGETS["chat_per_cpu"]) if same else ""))
            rows.append((name, "machine CPU us per msg (all DIM processes and services, "
                               "cheapest step)",
                         _fmt(result.get("machine_cpu_us_per_msg")), "", "", ""))
            rows.append((name, "load generator CPU us per msg (same step)",
                         _fmt(result.get("loadgen_cpu_us_per_msg")), "", "", ""))
            if name == "chat_cross_node":
                ratio = cost_ratio(results)
                rows.append((name, "machine CPU per msg / chat_same_node's", _fmt(ratio, 3),
                             "", f"<= {TARGETS['cross_cost_ratio']:g}",
                             _verdict(None if ratio is None
                                      else ratio <= TARGETS["cross_cost_ratio"])))
            rows.append((name, "send->msg p50/p99/p99.9 at saturation (ms)",
                         f"{_fmt(result.get('p50_ms'))} / {_fmt(result.get('p99_ms'))} / "
                         f"{_fmt(result.get('p999_ms'))}", "", "", ""))
            half = result.get("half_saturation") or {}
            hp99 = (half.get("send_to_msg") or {}).get("p99_ms")
            rows.append((name, f"send->msg p99 at half saturation "
                               f"({_fmt(half.get('offered_per_s'))}/s) (ms)",
                         _fmt(hp99), "", f"<= {TARGETS['p99_half_ms']:g} ms",
                         _verdict(None if hp99 is None else hp99 <= TARGETS["p99_half_ms"])))
            for linger, step in sorted((result.get("linger_ms") or {}).items()):
                lat = step.get("send_to_msg") or {}
                rows.append((name, f"send->msg p50/p99 (ms) at {_fmt(step.get('offered_per_s'))}/s "
                                   f"with linger.ms {linger}",
                             f"{_fmt(lat.get('p50_ms'))} / {_fmt(lat.get('p99_ms'))}", "", "", ""))
        elif name == "reconnect_storm":
            back = result.get("all_back_s")
            ok = (back is not None and back <= TARGETS["storm_s"] and result.get("lost") == 0
                  and result.get("duplicated") == 0)
            rows.append((name, "clients cut off / back / all back in s / lost / duplicated",
                         f"{_fmt(result.get('clients'))} / {_fmt(result.get('back'))} / "
                         f"{_fmt(back)} / {_fmt(result.get('lost'))} / "
                         f"{_fmt(result.get('duplicated'))}", "",
                         f"5k in {TARGETS['storm_s']:g} s, 0 lost, 0 dup",
                         _verdict(ok) if not ok or (result.get("clients") or 0) >= 5000
                         else f"met at {_fmt(result.get('clients'))} clients, not 5k"))
            if result.get("back_within_target") is not None:
                rows.append((name, f"clients back within {TARGETS['storm_s']:g} s / messages "
                                   "unreached at the end",
                             f"{_fmt(result.get('back_within_target'))} / "
                             f"{_fmt(result.get('unreached'))}", "", "", ""))
        elif name == "login":
            rows.append((name, "logins/s (Argon2id defaults)", _fmt(result.get("logins_per_s")),
                         _fmt(result.get("ratio_to_echo")), "", ""))
            rows.append((name, "route calls/s", _fmt(result.get("routes_per_s")),
                         _fmt(result.get("route_ratio_to_echo"), 4), "", ""))
        elif name == "big_inbox":
            for store in ("sqlite", "redis"):
                calls = (result.get(store) or {}).get("calls") or {}
                conv = calls.get("conversations") or {}
                rows.append((name, f"GET /v1/conversations p50/p99 (ms), "
                                   f"{_fmt(result.get('entries'))} entries, {store}",
                             f"{_fmt(conv.get('p50_ms'))} / {_fmt(conv.get('p99_ms'))}",
                             "", "", ""))
    return rows


def big_inbox_rows(result: dict[str, Any]) -> list[tuple[str, ...]]:
    """(store, call, found, requests, p50 ms, p99 ms, CPU ms per request of every process,
    entries scanned, entries scanned per second) rows of the big inbox's table."""
    rows: list[tuple[str, ...]] = []
    queries = result.get("queries") or {}
    for store, title in (("sqlite", "SQLite"), ("redis", "Redis")):
        for call, c in ((result.get(store) or {}).get("calls") or {}).items():
            what = ("GET /v1/conversations" if call == "conversations"
                    else f"search `{call}` ({queries.get(call, '')})")
            rows.append((title, what, _fmt(c.get("found")), _fmt(c.get("requests")),
                         _fmt(c.get("p50_ms")), _fmt(c.get("p99_ms")),
                         _fmt(c.get("all_cpu_ms_per_request")),
                         _fmt(c.get("entries_scanned")), _fmt(c.get("entries_scanned_per_s"))))
    return rows


def cost_ratio(results: dict[str, Any]) -> float | None:
    """Machine CPU per message across nodes over the same on one node (None unless both
    chat scenarios ran)."""
    scenarios = results.get("scenarios", {})
    cross = (scenarios.get("chat_cross_node") or {}).get("machine_cpu_us_per_msg")
    same = (scenarios.get("chat_same_node") or {}).get("machine_cpu_us_per_msg")
    return cross / same if cross and same else None


def markdown(results: dict[str, Any]) -> str:
    """results.md: the machine, the headline table and the chat rate sweeps."""
    m = results.get("machine", {})
    lines = [f"# DIM benchmark results ({results.get('mode', '?')} mode)", "",
             f"Machine: {m.get('cpu')}, {m.get('cores')} cores, Python {m.get('python')}, "
             f"Twisted {m.get('twisted')}, kernel {m.get('kernel')}, {m.get('date')}.", ""]
    if results.get("command"):
        lines += [f"Command: `{results['command']}`", ""]
    if m.get("load_avg_1m_at_start") is not None:
        lines += [f"Load average when the run started: {m['load_avg_1m_at_start']} "
                  f"(on {m.get('cores')} cores).", ""]
    lines += ["| scenario | figure | value | ratio to echo | target | verdict |",
              "|---|---|---|---|---|---|"]
    for row in headline_rows(results):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    for name in ("chat_same_node", "chat_cross_node"):
        result = results.get("scenarios", {}).get(name) or {}
        sweep = result.get("sweep") or []
        if not sweep:
            continue
        lines += ["", f"## {name}: open-loop rate sweep", "",
                  "| offered/s | achieved/s | sent | incomplete | send->msg p50 / p99 / p99.9 ms "
                  "| send->delivered p50 / p99 / p99.9 ms | node CPU % | msgs per node CPU-s "
                  "| machine CPU us/msg | load generator CPU us/msg | machine busy % |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for s in sweep + ([result["half_saturation"]] if result.get("half_saturation") else []):
            a, b = s.get("send_to_msg") or {}, s.get("send_to_delivered") or {}
            lines.append(
                f"| {_fmt(s.get('offered_per_s'))} | {_fmt(s.get('achieved_per_s'))} | "
                f"{_fmt(s.get('sent'))} | {_fmt(s.get('incomplete'))} | "
                f"{_fmt(a.get('p50_ms'))} / {_fmt(a.get('p99_ms'))} / {_fmt(a.get('p999_ms'))} | "
                f"{_fmt(b.get('p50_ms'))} / {_fmt(b.get('p99_ms'))} / {_fmt(b.get('p999_ms'))} | "
                f"{_fmt(s.get('node_cpu_percent'))} | {_fmt(s.get('msgs_per_node_cpu_s'))} | "
                f"{_fmt(s.get('machine_cpu_us_per_msg'))} | "
                f"{_fmt(s.get('loadgen_cpu_us_per_msg'))} | "
                f"{_fmt(s.get('machine_busy_percent'))} |")
    inbox = results.get("scenarios", {}).get("big_inbox") or {}
    if inbox.get("status", OK) == OK and inbox.get("sqlite"):
        lines += ["", f"## big_inbox: one inbox of {_fmt(inbox.get('entries'))} entries", "",
                  "| store | call | found | requests | p50 ms | p99 ms | CPU ms per request "
                  "(every process) | entries scanned | entries scanned/s |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for cells in big_inbox_rows(inbox):
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(results: dict[str, Any], out: Path) -> Path:
    """Write results.md into ``out``."""
    path = out / "results.md"
    path.write_text(markdown(results))
    return path


def plot(results: dict[str, Any], out: Path) -> list[Path]:
    """PNG plots: latency against offered rate, and RSS against connections."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[Path] = []
    sc = results.get("scenarios", {})
    chats = [(n, sc[n]) for n in ("chat_same_node", "chat_cross_node")
             if n in sc and sc[n].get("status", OK) == OK and sc[n].get("sweep")]
    if chats:
        fig, ax = plt.subplots(figsize=(8, 5))
        for name, result in chats:
            sweep = sorted(result["sweep"], key=lambda s: s["offered_per_s"])
            rates = [s["offered_per_s"] for s in sweep]
            for key, style in (("send_to_msg", "-"), ("send_to_delivered", "--")):
                for pct, marker in (("p50_ms", "o"), ("p99_ms", "s"), ("p999_ms", "^")):
                    ys = [(s.get(key) or {}).get(pct) for s in sweep]
                    pts = [(r, y) for r, y in zip(rates, ys) if y is not None]
                    if pts:
                        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker=marker,
                                label=f"{name} {key.replace('_', ' ')} {pct[:-3]}")
        ax.set_xlabel("offered rate (msgs/s)")
        ax.set_ylabel("latency (ms)")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
        ax.set_title("Latency against offered rate (open loop)")
        path = out / "latency_vs_rate.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    series = []
    conn = sc.get("connections", {})
    if conn.get("status", OK) == OK and conn.get("rss_points"):
        series.append(("DIM node (embedded dim)", conn["rss_points"]))
        if conn.get("echo_rss_points"):
            series.append(("echo server", conn["echo_rss_points"]))
    elif sc.get("echo", {}).get("rss_points"):
        series.append(("echo server", sc["echo"]["rss_points"]))
    if series:
        fig, ax = plt.subplots(figsize=(8, 5))
        for label, points in series:
            ax.plot([p[0] for p in points], [p[1] / 1e6 for p in points], marker="o", label=label)
        ax.set_xlabel("open connections")
        ax.set_ylabel("server RSS (MB)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.set_title("Server RSS against idle connections")
        path = out / "rss_vs_connections.png"
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written
