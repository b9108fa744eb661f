"""Cluster mode for the benchmarks: Redis, ZooKeeper and Kafka, one gateway and N nodes.

The bench uses the services already answering on their default local ports (with the
credentials of ``DIM_REDIS``, ``DIM_ZOOKEEPER_AUTH`` and ``DIM_KAFKA_SASL`` in its
environment), or starts its own with ``scripts/stack up --dir DIR`` (and stops them after),
passing that stack's credentials to the processes it starts.  Its processes use a cluster
name of their own (``--cluster benchXXXX``: Redis key prefix, ZooKeeper root and Kafka topics),
so they share the services with anything else without touching its data.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import psutil

from dim import launch
from dim.bench import processes as P
from dim.launch import port_open



class ServiceProcess:
    """A service process the bench did not start (Redis, ZooKeeper, a Kafka broker), found
    by the port it listens on, so that its CPU counts in the machine's cost per message."""

    def __init__(self, name: str, ps: psutil.Process) -> None:
        self.name = name
        self.ps = ps

    def cpu_seconds(self) -> float:
        """User + system CPU seconds used so far (0 once the process is gone)."""
        try:
            t = self.ps.cpu_times()
        except psutil.Error:
            return 0.0
        return float(t.user + t.system)


def service_processes(ports: dict[str, list[int]] | None = None) -> list[ServiceProcess]:
    """The processes listening on the services' local ports (by default the ports the
    cluster scenarios use: Redis, ZooKeeper, and each Kafka broker of DIM_KAFKA)."""
    if ports is None:
        ports = service_ports()
    wanted = {port: name for name, numbers in ports.items() for port in numbers}
    found: dict[int, ServiceProcess] = {}
    for conn in psutil.net_connections(kind="tcp"):
        if (conn.status == psutil.CONN_LISTEN and conn.laddr and conn.pid
                and conn.laddr.port in wanted and conn.pid not in found):
            try:
                found[conn.pid] = ServiceProcess(wanted[conn.laddr.port],
                                                 psutil.Process(conn.pid))
            except psutil.Error:
                continue
    return list(found.values())


def service_ports() -> dict[str, list[int]]:
    """The local ports of Redis, ZooKeeper and the Kafka brokers, from DIM_REDIS,
    DIM_ZOOKEEPER and DIM_KAFKA (or the defaults)."""
    import os
    from urllib.parse import urlparse

    redis = urlparse(os.environ.get("DIM_REDIS") or "redis://127.0.0.1:6379").port or 6379
    zk = [int(h.rsplit(":", 1)[1]) for h in
          (os.environ.get("DIM_ZOOKEEPER") or "127.0.0.1:2181").split(",") if ":" in h]
    kafka = [int(h.rsplit(":", 1)[1]) for h in
             (os.environ.get("DIM_KAFKA") or "127.0.0.1:9092").split(",") if ":" in h]
    return {"Redis": [redis], "ZooKeeper": zk, "Kafka": kafka}


def services_down() -> list[str]:
    """The services that do not answer on their local ports (those of DIM_REDIS,
    DIM_ZOOKEEPER and DIM_KAFKA, else the defaults), so a stack on other ports is used."""
    return [name for name, ports in service_ports().items()
            if not all(port_open(port) for port in ports)]


class Services:
    """The cluster's services: those already running, or a stack of the bench's own."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started_dir: Path | None = None

    def ensure(self, timeout: float = 300.0) -> str | None:
        """Make the services answer; None when they do, else why they cannot."""
        if not services_down():
            return None
        stack = P.REPO / "scripts" / "stack"
        if not stack.exists():
            return "scripts/stack is missing and " + ", ".join(services_down()) + " do not answer"
        d = self.workdir / "stack"
        try:
            result = subprocess.run([sys.executable, str(stack), "up", "--dir", str(d)],
                                    cwd=P.REPO, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"scripts/stack up did not finish within {timeout:g}s"
        self.started_dir = d
        if result.returncode != 0 or services_down():
            return ("scripts/stack up failed: " + (result.stderr or result.stdout)[-500:]).strip()
        # The stack's addresses and credentials (DIM_REDIS with its password,
        # DIM_ZOOKEEPER_AUTH, DIM_KAFKA_SASL): the processes the bench starts inherit them.
        for line in result.stdout.splitlines():
            name, sep, value = line.partition("=")
            if sep and name.startswith("DIM_"):
                os.environ[name] = value
        return None

    def release(self) -> None:
        """Stop the services if the bench started them."""
        if self.started_dir is not None:
            subprocess.run([sys.executable, str(P.REPO / "scripts" / "stack"), "down", "--dir",
                            str(self.started_dir)], cwd=P.REPO, capture_output=True, timeout=120)


class Cluster(launch.Cluster):
    """``twistd -n dim-gateway`` and ``twistd -n dim-node`` processes of one cluster name
    (:class:`dim.launch.Cluster`) with the bench's secret, limits and listen backlog, on the
    services of the environment; each writes its output to ``workdir/ID.out``."""

    process_class = P.ServerProcess
    gateway: P.ServerProcess

    def __init__(self, workdir: Path, nodes: int = 2, heartbeat: float | None = None,
                 node_args: list[str] | None = None) -> None:
        self.workdir = workdir
        args = list(P.BENCH_LIMITS)
        if heartbeat is not None:
            args += ["--heartbeat", f"{heartbeat:g}"]
        super().__init__(
            workdir, "bench" + secrets.token_hex(4), [f"n{i + 1}" for i in range(nodes)],
            gateway_args=["--routing", "least_connections", *P.BENCH_GATEWAY_LIMITS],
            node_args=[*args, *(node_args or [])], env={"DIM_SECRET": P.BENCH_SECRET},
            backlog=P.BACKLOG, options=lambda name: {"output": workdir / f"{name}.out"})

    @property
    def node_ids(self) -> list[str]:
        """The nodes' ids, n1, n2, ..."""
        return self.ids

    @property
    def node_ports(self) -> list[int]:
        """The nodes' client ports, in the order of their ids."""
        return [self.ports[nid] for nid in self.ids]

    @property
    def servers(self) -> list[P.ServerProcess]:
        """The node processes, in the order of their ids."""
        return [cast(P.ServerProcess, self.nodes[nid]) for nid in self.ids]

    def start(self, timeout: float = 60.0) -> Cluster:
        """Start the gateway and the nodes; wait until the gateway lists every node."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        super().start(timeout)
        return self

    def node_dict(self, i: int) -> dict[str, Any]:
        """Node ``i`` as the gateway shows it: {id, host, port}."""
        return {"id": self.ids[i], "host": "127.0.0.1", "port": self.node_ports[i]}

    @property
    def redis_prefix(self) -> str:
        """The Redis key prefix of this cluster's store."""
        return f"{self.name}:"

    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i`` (no goaway, no deregistration: a crash)."""
        self.servers[i].kill(signal.SIGKILL)


def one_hash(password: str) -> str:
    """An Argon2id hash (library defaults) of ``password``, computed once and reused for the
    bench's seeded users."""
    import argon2
    return argon2.PasswordHasher().hash(password)


def describe(obj: Any) -> str:
    """Compact JSON for log lines."""
    return json.dumps(obj, separators=(",", ":"))[:300]
