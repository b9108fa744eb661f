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
from typing import Any

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


class Cluster:
    """``twistd -n dim-gateway`` and ``twistd -n dim-node`` processes of one cluster name."""

    def __init__(self, workdir: Path, nodes: int = 2, heartbeat: float | None = None,
                 node_args: list[str] | None = None) -> None:
        self.workdir = workdir
        self.name = "bench" + secrets.token_hex(4)
        self.http_port, *self.node_ports = launch.free_ports(nodes + 1)
        self.base = f"http://127.0.0.1:{self.http_port}"
        env = {"DIM_SECRET": P.BENCH_SECRET}
        self.gateway = launch.gateway(
            self.http_port, ["--cluster", self.name, "--routing", "least_connections",
                             *P.BENCH_GATEWAY_LIMITS],
            workdir / "gateway.log", backlog=P.BACKLOG, process_class=P.ServerProcess, env=env,
            output=workdir / "gateway.out")
        self.node_ids = [f"n{i + 1}" for i in range(nodes)]
        self.nodes: list[P.ServerProcess] = []
        for nid, port in zip(self.node_ids, self.node_ports):
            args = ["--cluster", self.name, *P.BENCH_LIMITS]
            if heartbeat is not None:
                args += ["--heartbeat", f"{heartbeat:g}"]
            args += node_args or []
            self.nodes.append(launch.node(nid, port, args, workdir / f"{nid}.log",
                                          backlog=P.BACKLOG, process_class=P.ServerProcess,
                                          env=env, output=workdir / f"{nid}.out"))

    def start(self, timeout: float = 60.0) -> Cluster:
        """Start the nodes and the gateway; wait until the gateway lists every node."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            node.start()
        self.gateway.start()
        for process in [*self.nodes, self.gateway]:
            process.wait_ready(timeout)
        launch.wait_listed(self.base, self.node_ids, timeout, [self.gateway, *self.nodes])
        return self

    def node_dict(self, i: int) -> dict[str, Any]:
        """Node ``i`` as the gateway shows it: {id, host, port}."""
        return {"id": self.node_ids[i], "host": "127.0.0.1", "port": self.node_ports[i]}

    @property
    def redis_prefix(self) -> str:
        """The Redis key prefix of this cluster's store."""
        return f"{self.name}:"

    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i`` (no goaway, no deregistration: a crash)."""
        self.nodes[i].kill(signal.SIGKILL)

    def stop(self) -> None:
        """Stop every process of the cluster."""
        launch.stop_all([self.gateway, *self.nodes])


def one_hash(password: str) -> str:
    """An Argon2id hash (library defaults) of ``password``, computed once and reused for the
    bench's seeded users."""
    import argon2
    return argon2.PasswordHasher().hash(password)


def describe(obj: Any) -> str:
    """Compact JSON for log lines."""
    return json.dumps(obj, separators=(",", ":"))[:300]
