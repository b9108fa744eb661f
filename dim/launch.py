"""Starting DIM's processes, waiting until they listen, and stopping them.

:class:`DimProcess` is one child process: ``twistd -n`` with one of DIM's plugins (the
embedded ``dim``, ``dim-node``, ``dim-gateway``; see :meth:`DimProcess.twistd`) or any other
command, with its log file, the ports it listens on once ready, and optionally a pid file
that lets a later run find and stop it.  :class:`EmbeddedDim` is ``twistd -n dim`` on free
ports; :class:`Cluster` a gateway and nodes (:func:`gateway`, :func:`node`) of one cluster
name; :func:`stop_all` stops several processes at once (SIGTERM, then SIGKILL after a
timeout).

The tests, the bench and ``scripts/cluster`` all start their processes through here.
Everything blocks (sleeps and polls) and uses the standard library only, so a script without
the project's dependencies or a reactor can use it too.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

#: The directory ``python -c`` runs in: the one holding the ``dim`` package.
HOME = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
#: How long a process may take to stop after SIGTERM before it gets SIGKILL (a node drains
#: its clients first).
STOP_TIMEOUT = 30.0
#: How long a process may take to listen on its ports.
START_TIMEOUT = 60.0

P = TypeVar("P", bound="DimProcess")


class LaunchError(RuntimeError):
    """A process exited while starting, or does not listen in time; the message says which
    and ends with the end of its log."""


def free_ports(n: int, host: str = HOST) -> list[int]:
    """``n`` distinct TCP ports on ``host`` that nothing listens on right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    return free_ports(1, host)[0]


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listen(port: int, host: str = HOST, backlog: int | None = None) -> str:
    """The strports description of a TCP port on ``host`` (``tcp:PORT:interface=HOST``)."""
    return f"tcp:{port}:interface={host}" + (f":backlog={backlog}" if backlog else "")


def twistd_argv(plugin: str, args: Sequence[str], log: Path, python: str | None = None,
                profile: Path | None = None) -> list[str]:
    """The command line of ``twistd -n PLUGIN ARGS`` logging to ``log`` without a pid file;
    ``profile`` runs it under cProfile and saves the statistics there on a clean stop."""
    argv = [python or sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
            "-n", "--pidfile=", "--logfile", str(log)]
    if profile is not None:
        argv += ["--profile", str(profile), "--profiler", "cprofile", "--savestats"]
    return [*argv, plugin, *args]


def wait_for_port(port: int, host: str = HOST, timeout: float = START_TIMEOUT,
                  process: DimProcess | None = None) -> None:
    """Block until something accepts connections on host:port; LaunchError if ``process``
    exits first or nothing listens within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if process is not None and not process.alive:
            raise LaunchError(f"{process.name} exited ({process.returncode}) before listening "
                              f"on {host}:{port}:\n{process.log_tail()}")
        if port_open(port, host):
            return
        if time.monotonic() >= deadline:
            tail = f"\n{process.log_tail()}" if process is not None else ""
            raise LaunchError(f"nothing listens on {host}:{port} after {timeout:g} s{tail}")
        time.sleep(0.05)


class DimProcess:
    """One process started from ``argv``: running, listening on ``ports`` once ready, and
    stopped with SIGTERM (SIGKILL if it does not exit in time).

    ``log`` is the process's own log (twistd's ``--logfile``), ``output`` where its stdout and
    stderr go (None: nowhere); :meth:`log_tail` shows both.  ``env`` is added to this
    process's environment.  With ``pidfile``, :meth:`start` records the pid there, and a
    later :class:`DimProcess` of the same ``pidfile`` and ``log`` finds the process again
    (:attr:`pid`, :attr:`alive`, :meth:`stop`) as long as its command line names ``log``.
    With ``detach``, the process gets its own session: it outlives the one that started it
    and does not get its terminal's signals.
    """

    def __init__(self, name: str, argv: Sequence[str], *, log: Path | None = None,
                 output: Path | None = None, env: dict[str, str] | None = None,
                 ports: Iterable[int] = (), host: str = HOST, pidfile: Path | None = None,
                 detach: bool = False, cwd: Path = HOME) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.output = output
        self.env = {**os.environ, **(env or {})}
        self.ports = list(ports)
        self.host = host
        self.pidfile = pidfile
        self.detach = detach
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def twistd(cls: type[P], plugin: str, args: Sequence[str], log: Path, *,
               name: str | None = None, python: str | None = None,
               profile: Path | None = None, **options: Any) -> P:
        """``twistd -n PLUGIN ARGS`` logging to ``log`` (``options`` as for the class)."""
        return cls(name or plugin, twistd_argv(plugin, args, log, python, profile), log=log,
                   **options)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid}>"

    # ------------------------------------------------------------------ running

    def start(self: P) -> P:
        """Start the process (a new one, even if one was started before)."""
        for path in (self.log, self.output, self.pidfile):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.output, "ab") if self.output is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT,
                                         start_new_session=self.detach)
        finally:
            if not isinstance(out, int):
                out.close()
        if self.pidfile is not None:
            self.pidfile.write_text(f"{self.proc.pid}\n")
        return self

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Block until the process listens on every one of its ports (LaunchError if it exits
        first or does not within ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        for port in self.ports:
            wait_for_port(port, self.host, max(0.0, deadline - time.monotonic()), self)

    def launch(self: P, timeout: float = START_TIMEOUT) -> P:
        """:meth:`start`, then :meth:`wait_ready`."""
        self.start()
        self.wait_ready(timeout)
        return self

    def recorded_pid(self) -> int | None:
        """The pid in the pid file, if that process runs and its command line names this
        process's log (so a pid reused by another program is not taken for ours)."""
        if self.pidfile is None:
            return None
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return None
        return pid if self.log is None or str(self.log).encode() in cmdline else None

    @property
    def pid(self) -> int | None:
        """The process id: of the process this object started, else the recorded one."""
        if self.proc is not None:
            return self.proc.pid
        return self.recorded_pid()

    @property
    def alive(self) -> bool:
        """Whether the process runs."""
        if self.proc is not None:
            return self.proc.poll() is None
        return self.recorded_pid() is not None

    @property
    def returncode(self) -> int | None:
        """The exit status once a process this object started has exited (``-N``: killed by
        signal N), else None."""
        return self.proc.poll() if self.proc is not None else None

    # ------------------------------------------------------------------ stopping

    def send(self, sig: int) -> None:
        """Send a signal if the process runs (SIGSTOP and SIGCONT too)."""
        if not self.alive:
            return
        if self.proc is not None:
            self.proc.send_signal(sig)
            return
        pid = self.recorded_pid()
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout: float, pid: int | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the process to exit; whether it has.  ``pid``:
        the recorded pid as it was before the process was signalled (an exiting process no
        longer shows the command line that identifies it)."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=max(0.0, timeout))
            except subprocess.TimeoutExpired:
                return False
            return True
        if pid is None:
            pid = self.recorded_pid()
        deadline = time.monotonic() + timeout
        while pid is not None and running(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _exited(self) -> None:
        """Forget the pid file of a process that is gone."""
        if self.pidfile is not None and not self.alive:
            self.pidfile.unlink(missing_ok=True)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = STOP_TIMEOUT) -> int | None:
        """Send ``sig`` (SIGKILL by default), wait for the process to exit, SIGKILL it if it
        has not within ``timeout`` seconds; the exit status."""
        if self.alive:
            pid = self.pid
            self.send(sig)
            if not self.wait(timeout, pid):
                if pid is not None and self.proc is None and running(pid):
                    os.kill(pid, signal.SIGKILL)
                else:
                    self.send(signal.SIGKILL)
                self.wait(STOP_TIMEOUT, pid)
        self._exited()
        return self.returncode

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop cleanly: SIGTERM, then SIGKILL after ``timeout`` seconds; the exit status."""
        return self.kill(signal.SIGTERM, timeout)

    # ------------------------------------------------------------------ logs

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the process's output, then of its log."""
        out = []
        for path in (self.output, self.log):
            if path is None:
                continue
            try:
                out += path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                pass
        return "\n".join(out) or "(no log)"


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and has not finished exiting.  Its command line is
    empty from early in its exit, so a process that no longer looks like ours by its command
    line may still be running; only its state (zombie or dead) says it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X", "")


def stop_all(processes: Iterable[DimProcess], timeout: float = STOP_TIMEOUT,
             say: Callable[[DimProcess, str], None] | None = None) -> None:
    """Stop several processes at once: SIGTERM to each that runs, in the order given, then
    SIGKILL to those still running ``timeout`` seconds later.  ``say(process, what)`` hears
    of each signal sent ("SIGTERM", "SIGKILL")."""
    running = [p for p in processes if p.alive]
    for p in running:
        if say is not None:
            say(p, "SIGTERM")
        p.send(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for p in running:
        if not p.wait(deadline - time.monotonic()):
            if say is not None:
                say(p, "SIGKILL")
            p.send(signal.SIGKILL)
            p.wait(STOP_TIMEOUT)
        p._exited()


# ---------------------------------------------------------------------- DIM's processes


class EmbeddedDim:
    """``twistd -n dim`` (gateway, node and SQLite in one process) on two free ports of
    127.0.0.1, its data and log (``NAME.log``) in ``workdir``.

    ``heartbeat`` is the node's H in seconds; ``extra`` more ``dim`` options; ``backlog`` the
    listen backlog of both ports; ``profile`` a cProfile statistics file; ``python`` the
    interpreter (this one by default); ``env``, ``output`` as for :class:`DimProcess`
    (``process_class``).
    """

    process_class: type[DimProcess] = DimProcess

    def __init__(self, workdir: Path, *, heartbeat: float | None = None,
                 extra: Sequence[str] = (), env: dict[str, str] | None = None,
                 backlog: int | None = None, profile: Path | None = None,
                 output: Path | None = None, python: str | None = None,
                 name: str = "dim") -> None:
        self.workdir = workdir
        self.http_port, self.node_port = free_ports(2)
        self.data = workdir / "data"
        args = ["--gateway", listen(self.http_port, backlog=backlog),
                "--node", listen(self.node_port, backlog=backlog), "--data", str(self.data)]
        if heartbeat is not None:
            args += ["--heartbeat", f"{heartbeat:g}"]
        self.process = self.process_class.twistd(
            "dim", [*args, *extra], workdir / f"{name}.log", name=name, env=env,
            ports=(self.http_port, self.node_port), profile=profile, output=output,
            python=python)
        self.base = f"http://{HOST}:{self.http_port}"

    def start(self, timeout: float = START_TIMEOUT) -> EmbeddedDim:
        """Start and wait until both the gateway and the node accept connections."""
        self.process.launch(timeout)
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """Stop cleanly (SIGTERM; SIGKILL after ``timeout`` seconds); the exit status."""
        return self.process.stop(timeout)


def gateway(port: int, args: Sequence[str], log: Path, *, name: str = "gateway",
            backlog: int | None = None, process_class: type[P] = DimProcess,  # type: ignore[assignment]
            **options: Any) -> P:
    """``twistd -n dim-gateway`` listening on 127.0.0.1:``port`` (``args``: its other
    options; ``options`` as for :class:`DimProcess`)."""
    return process_class.twistd("dim-gateway", ["--listen", listen(port, backlog=backlog),
                                                *args], log, name=name, ports=(port,),
                                **options)


def node(node_id: str, port: int, args: Sequence[str], log: Path, *,
         backlog: int | None = None, process_class: type[P] = DimProcess,  # type: ignore[assignment]
         **options: Any) -> P:
    """``twistd -n dim-node --id NODE_ID`` listening on 127.0.0.1:``port``, named after its
    id (``args``: its other options; ``options`` as for :class:`DimProcess`)."""
    return process_class.twistd("dim-node", ["--id", node_id,
                                             "--listen", listen(port, backlog=backlog), *args],
                                log, name=node_id, ports=(port,), **options)


def listed_nodes(base: str, timeout: float = 2.0) -> list[dict[str, Any]]:
    """The nodes a gateway's ``GET /v1/nodes`` lists (empty when it does not answer)."""
    try:
        with urllib.request.urlopen(f"{base}/v1/nodes", timeout=timeout) as r:
            return list(json.loads(r.read())["nodes"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def wait_listed(base: str, ids: Iterable[str], timeout: float = START_TIMEOUT,
                processes: Iterable[DimProcess] = ()) -> None:
    """Block until the gateway at ``base`` lists every node of ``ids`` (LaunchError naming
    what it lists, with the end of each process's log, after ``timeout`` seconds)."""
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    while True:
        listed = {n.get("id") for n in listed_nodes(base)}
        if wanted <= listed:
            return
        if time.monotonic() >= deadline:
            tails = "".join(f"\n--- {p.name}\n{p.log_tail(20)}" for p in processes)
            raise LaunchError(f"the gateway lists {sorted(map(str, listed))}, not "
                              f"{sorted(wanted)}, after {timeout:g} s{tails}")
        time.sleep(0.1)


class Cluster:
    """A gateway and nodes of one cluster name (``--cluster NAME``) as ``twistd -n``
    processes on 127.0.0.1, each logging to ``logs/ID.log`` (the gateway's id: ``gateway``).

    ``gateway_port`` and ``node_ports`` (one per id of ``ids``) default to free ports;
    ``gateway_args`` and ``node_args`` are the processes' other options; ``env``,
    ``backlog`` apply to all; ``options(id)`` gives each process more :class:`DimProcess`
    options (an output file, a pid file, ...).  :attr:`nodes` and :attr:`ports` are by
    node id.
    """

    process_class: type[DimProcess] = DimProcess

    def __init__(self, logs: Path, name: str, ids: Sequence[str], *,
                 gateway_port: int | None = None, node_ports: Sequence[int] | None = None,
                 gateway_args: Sequence[str] = (), node_args: Sequence[str] = (),
                 env: dict[str, str] | None = None, backlog: int | None = None,
                 options: Callable[[str], dict[str, Any]] | None = None) -> None:
        self.name = name
        self.ids = list(ids)
        wanted = (gateway_port is None) + (len(self.ids) if node_ports is None else 0)
        free = iter(free_ports(wanted))
        self.http_port = gateway_port if gateway_port is not None else next(free)
        ports = list(node_ports) if node_ports is not None else [next(free) for _ in self.ids]
        if len(ports) != len(self.ids):
            raise ValueError(f"{len(self.ids)} node ids but {len(ports)} node ports")
        self.ports = dict(zip(self.ids, ports))
        self.base = f"http://{HOST}:{self.http_port}"
        more = options if options is not None else (lambda _: {})
        self.gateway = gateway(self.http_port, ["--cluster", name, *gateway_args],
                               logs / "gateway.log", backlog=backlog,
                               process_class=self.process_class, env=env, **more("gateway"))
        self.nodes = {nid: node(nid, self.ports[nid], ["--cluster", name, *node_args],
                                logs / f"{nid}.log", backlog=backlog,
                                process_class=self.process_class, env=env, **more(nid))
                      for nid in self.ids}

    def processes(self) -> list[DimProcess]:
        """The gateway, then every node."""
        return [self.gateway, *self.nodes.values()]

    def start_processes(self, timeout: float = START_TIMEOUT) -> None:
        """Start every process; block until each listens (LaunchError if one does not)."""
        deadline = time.monotonic() + timeout
        for p in self.processes():
            p.start()
        for p in self.processes():
            p.wait_ready(deadline - time.monotonic())

    def start(self, timeout: float = START_TIMEOUT) -> Cluster:
        """:meth:`start_processes`, then block until the gateway lists every node."""
        deadline = time.monotonic() + timeout
        self.start_processes(timeout)
        wait_listed(self.base, self.ids, deadline - time.monotonic(), self.processes())
        return self

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every process still running at once (SIGTERM, SIGKILL after ``timeout``)."""
        stop_all(self.processes(), timeout)
