"""Child processes of a benchmark: the servers under test and the load generator workers.

Everything here is synchronous: the orchestrator blocks on pipes and sleeps, and the
children (twistd, the echo server, the workers) run their own reactors.  The servers start
and stop through :mod:`dim.launch`, as the tests' and ``scripts/cluster``'s do.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import psutil

from dim import launch
from dim.launch import DimProcess, free_port

REPO = Path(__file__).resolve().parent.parent.parent
#: The secret the bench gives the DIM processes, so it can mint tokens for idle clients.
BENCH_SECRET = "dim-bench-secret-not-for-production"
#: Per-user rate limits for the nodes the bench starts: its load generators send thousands
#: of messages a second from few users, far above what the defaults let one person send.
BENCH_LIMITS = ["--limit", "send=1000000:1000000", "--limit", "typing=1000000:1000000"]
#: The gateway limits the bench's own load needs: every user is registered from 127.0.0.1,
#: and its logins come in parallel from there.
BENCH_GATEWAY_LIMITS = ["--registrations-burst", "1000000", "--login-share", "256",
                        "--max-connections-per-address", "0"]
#: The listen backlog of the servers the bench starts: its clients connect in bursts.
BACKLOG = 4096


class ServerProcess(DimProcess):
    """A server under test running as a child process (:class:`dim.launch.DimProcess`), with
    RSS, CPU and file descriptor readings."""

    ps: psutil.Process | None = None

    def start(self) -> ServerProcess:
        """Start the process and follow its readings."""
        super().start()
        assert self.proc is not None
        self.ps = psutil.Process(self.proc.pid)
        return self

    @property
    def pid(self) -> int:
        """The process id (once started)."""
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        """Resident set size in bytes, now."""
        assert self.ps is not None
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far (threads included)."""
        assert self.ps is not None
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def num_fds(self) -> int:
        """Open file descriptors, now."""
        assert self.ps is not None
        return int(self.ps.num_fds())


def cpu_percent_over(proc: ServerProcess, seconds: float) -> float:
    """The process's CPU use over the next ``seconds``, in % of one core."""
    c0, t0 = proc.cpu_seconds(), time.monotonic()
    time.sleep(seconds)
    c1, t1 = proc.cpu_seconds(), time.monotonic()
    return round(100.0 * (c1 - c0) / (t1 - t0), 2)


def start_echo(workdir: Path) -> tuple[ServerProcess, int]:
    """Start the baseline echo server; returns it and its port."""
    port = free_port()
    proc = ServerProcess("echo", [sys.executable, "-m", "dim.bench.echo", "--port", str(port)],
                         output=workdir / "echo.log", ports=(port,)).launch()
    return proc, port


class EmbeddedDim(launch.EmbeddedDim):
    """``twistd -n dim`` (gateway + node + SQLite in one process) on free ports, with the
    bench's secret and limits and a deep listen backlog; ``profile`` runs it under cProfile."""

    process_class = ServerProcess
    process: ServerProcess

    def __init__(self, workdir: Path, heartbeat: float | None = None,
                 profile: Path | None = None, extra: Sequence[str] = ()) -> None:
        super().__init__(workdir, heartbeat=heartbeat,
                         extra=[*BENCH_GATEWAY_LIMITS, *BENCH_LIMITS, *extra],
                         env={"DIM_SECRET": BENCH_SECRET}, backlog=BACKLOG, profile=profile,
                         output=workdir / "dim.out")

    def start(self, timeout: float = 60.0) -> EmbeddedDim:
        """Start and wait until the gateway and the node accept connections."""
        super().start(timeout)
        return self


def mint_token(user: str) -> str:
    """A bearer token for ``user`` signed with the bench's secret (skips the Argon2 login)."""
    from dim.tokens import TokenAuthority, WallClock
    token, _ = TokenAuthority(BENCH_SECRET.encode(), store=None,  # type: ignore[arg-type]
                              clock=WallClock()).issue(user)
    return token


def http_json(method: str, url: str, body: Any = None, token: str | None = None,
              timeout: float = 120.0) -> tuple[int, Any]:
    """One blocking JSON HTTP call: (status, decoded body)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode("utf-8", "replace")


def register_users(base: str, users: Sequence[str], password: str,
                   parallel: int = 4) -> None:
    """Register every user (201 or 409 is fine) through the gateway."""
    def one(user: str) -> None:
        code, body = http_json("POST", f"{base}/v1/register", {"user": user, "password": password})
        if code not in (201, 409):
            raise RuntimeError(f"register {user}: HTTP {code} {body}")
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(one, users))


class WorkerProcess:
    """A load generator worker (``python -m dim.bench.loadgen``) and its command pipe."""

    def __init__(self, source: str, workdir: Path) -> None:
        self.source = source
        workdir.mkdir(parents=True, exist_ok=True)
        self.errlog = open(workdir / f"worker-{source}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "dim.bench.loadgen"], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.errlog)
        self.ps = psutil.Process(self.proc.pid)

    def send(self, cmd: dict[str, Any]) -> None:
        """Write one command."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        self.proc.stdin.flush()

    def receive(self) -> dict[str, Any]:
        """Read one answer (raises if the worker failed or died)."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.source} exited with {self.proc.poll()}")
        answer = json.loads(line)
        if not answer.get("ok"):
            raise RuntimeError(f"worker {self.source}: {answer.get('error')}")
        return answer

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the worker used so far."""
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Send a command and wait for its answer."""
        self.send(cmd)
        return self.receive()

    def stop(self) -> None:
        """Ask the worker to quit; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired, ValueError):
                self.proc.kill()
                self.proc.wait()
        self.errlog.close()


def call_all(workers: Sequence[WorkerProcess], cmds: Sequence[dict[str, Any]]) -> list[dict[str,
                                                                                            Any]]:
    """Send each worker its command at once, then collect every answer."""
    for w, c in zip(workers, cmds):
        w.send(c)
    return [w.receive() for w in workers]


def start_workers(n: int, workdir: Path, first: int = 2) -> list[WorkerProcess]:
    """``n`` workers with source addresses 127.0.0.<first>, 127.0.0.<first+1>, ..."""
    return [WorkerProcess(f"127.0.0.{first + i}", workdir) for i in range(n)]


def stop_workers(workers: Sequence[WorkerProcess]) -> None:
    """Stop every worker."""
    for w in workers:
        w.stop()
