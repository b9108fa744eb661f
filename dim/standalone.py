"""The embedded ``dim``: a gateway and a node in one process, on SQLite, needing no services.

``twistd -n dim`` is what a newcomer runs first::

    twistd -n dim --gateway tcp:8080:interface=127.0.0.1 \\
                  --node tcp:9000:interface=127.0.0.1 --data dim-data

The signing secret comes from ``DIM_SECRET`` or is made once and kept in the data directory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from twisted.application import strports
from twisted.logger import Logger
from twisted.python import usage

from dim.gateway.limits import LIMIT_PARAMETERS, limit_options
from dim.protocol.frames import DEFAULT_MAX_FRAME
from dim.runtime import (OUTPUT_LIMIT_PARAMETERS, FrameLimitOptions, OrderedMultiService,
                         check_output_limits)

_log = Logger()


class Options(FrameLimitOptions, usage.Options):
    """Command line of ``twistd dim``."""

    optParameters = [
        ["gateway", None, "tcp:8080:interface=127.0.0.1", "Endpoint of the HTTP gateway."],
        ["node", None, "tcp:9000:interface=127.0.0.1", "Endpoint of the node's client port."],
        ["data", None, "dim-data", "Directory of the SQLite store and the secret."],
        ["heartbeat", None, 30, "Heartbeat interval H in seconds.", int],
        ["routing", None, "round_robin",
         "Node assignment: round_robin, random, consistent_hash or least_connections."],
        ["node-id", None, "local", "The node's id, as clients see it."],
        ["advertise", None, None, "HOST:PORT clients should connect to (default: the bound one)."],
        ["max-frame", None, DEFAULT_MAX_FRAME, "Largest frame accepted, in bytes.", int],
        *OUTPUT_LIMIT_PARAMETERS,
        ["token-ttl", None, 7 * 86400, "Token lifetime in seconds.", int],
        ["max-file-size", None, 20 * 1024 * 1024, "Largest upload, in bytes.", int],
        ["max-group-members", None, 500, "Most members a group may have.", int],
        *LIMIT_PARAMETERS,
    ]

    def postOptions(self) -> None:
        from dim.gateway.routing import STRATEGIES

        self.frame_limit_defaults()

        if self["routing"] not in STRATEGIES:
            raise usage.UsageError(f"--routing must be one of {', '.join(sorted(STRATEGIES))}")
        if self["heartbeat"] < 1:
            raise usage.UsageError("--heartbeat must be at least 1 second")
        if self["max-frame"] < 1024:
            raise usage.UsageError("--max-frame must be at least 1024 bytes")
        check_output_limits(self)
        if self["max-file-size"] < 1 or self["max-group-members"] < 1:
            raise usage.UsageError("--max-file-size and --max-group-members must be positive")
        from dim import secret
        try:
            secret.from_environment()
        except secret.SecretMissing as e:
            raise usage.UsageError(str(e)) from None
        self["limits"] = limit_options(self)


def makeService(options: Options) -> OrderedMultiService:
    """The gateway, the node and the store of one embedded DIM, as one service tree."""
    from twisted.internet import reactor

    from dim import secret
    from dim.cluster.interface import NodeInfo
    from dim.cluster.local import ForwarderHub, LocalNodeRegistry, LocalSessionRegistry
    from dim.cluster.threads import ThreadBridge
    from dim.files import FileStorage
    from dim.gateway.app import Gateway
    from dim.node.delivery import NodeCore
    from dim.node.service import NodeService
    from dim.node.throttle import UserLimiter
    from dim.passwords import PasswordHasher
    from dim.runtime import ResourceService, advertised, speaks_tls
    from dim.store.sqlite import SQLiteStore
    from dim.tokens import TokenAuthority

    data = Path(options["data"])
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    top = OrderedMultiService()

    # Opened when the service starts, after twistd has daemonized (a fork keeps no threads).
    # Added first, so it stops last: the node and gateway finish with it before it closes.
    store = SQLiteStore(str(data / "dim.sqlite3"), reactor=reactor, start=False)
    ResourceService("store", on_start=store.start, on_stop=store.close).setServiceParent(top)
    hashing = ThreadBridge("dim-passwords", max_threads=2, reactor=reactor)
    ResourceService("password-hashing", hashing.start, hashing.stop).setServiceParent(top)

    tokens = TokenAuthority(secret.load_or_create(data), store, ttl=options["token-ttl"],
                            clock=reactor)
    sessions = LocalSessionRegistry()
    nodes = LocalNodeRegistry()

    core = NodeCore(options["node-id"], store, sessions, tokens.verify, reactor,
                    heartbeat=options["heartbeat"], max_frame=options["max-frame"],
                    forwarder=ForwarderHub().forwarder(options["node-id"]),
                    limiter=UserLimiter(options["frame-limits"]))
    node = NodeService(core, options["node"], reactor, push_limit=options["push-limit"],
                       max_output=options["max-output"],
                       slow_consumer_grace=options["slow-consumer-grace"])
    node.setServiceParent(top)

    def register_node(port: Any) -> None:
        host, number = advertised(port, options["advertise"])
        nodes.add(NodeInfo(id=core.node_id, host=host, port=number,
                           tls=speaks_tls(options["node"])),
                  connections=core.connection_count)
        _log.info("DIM node {node} takes clients on {host}:{port}", node=core.node_id,
                  host=host, port=number)

    node.listening().addCallback(register_node)

    gateway = Gateway(store, tokens, PasswordHasher(hashing.pool, reactor), nodes, sessions,
                      routing=options["routing"], clock=reactor,
                      files=FileStorage(str(data / "files")),
                      max_file_size=options["max-file-size"],
                      max_group_members=options["max-group-members"], pusher=core,
                      limits=options["limits"])
    http = strports.service(options["gateway"], gateway.http_factory(reactor=reactor),
                            reactor=reactor)
    http.setServiceParent(top)
    _log.info("DIM gateway on {endpoint}, data in {data}", endpoint=options["gateway"],
              data=str(data.resolve()))
    return top


