"""``twistd dim-node``: one node of a DIM cluster, on Redis, Kafka and ZooKeeper.

    DIM_SECRET=... twistd -n dim-node --id n1 --listen tcp:9001:interface=127.0.0.1 \\
        --redis redis://127.0.0.1:6379 --kafka 127.0.0.1:9092 --zookeeper 127.0.0.1:2181

Start order (each step logs a line; a service that does not answer stops the process with
a line naming it and exit status 1):

1. Redis: the store and the session registry; then forget the sessions a previous life of
   this node id left there (``drop_node``), before any client can connect;
2. Kafka: this node's topic, read from its end (envelopes left from a previous life are only
   hints about messages that are stored anyway);
3. listen for clients;
4. ZooKeeper: register the ephemeral znode with the live connection count, so the gateway
   starts routing clients here.

SIGTERM: ``goaway`` to every client, stop accepting, drain, deregister (the znode goes at
once), stop reading Kafka, close Redis, exit.
"""
from __future__ import annotations

import secrets as _secrets
from typing import Any

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from dim.protocol.frames import DEFAULT_MAX_FRAME
from dim.runtime import (CREDENTIAL_PARAMETERS, OUTPUT_LIMIT_PARAMETERS, ClusterProcess,
                         FrameLimitOptions, ServiceCredentialOptions, check_output_limits,
                         cluster_namespace, redact_url, service_defaults)

_log = Logger(namespace="dim.node")

class Options(FrameLimitOptions, ServiceCredentialOptions, usage.Options):
    """Command line of ``twistd dim-node``."""

    optParameters = [
        ["id", None, None, "This node's id (unique in the cluster; letters, digits, . _ -)."],
        ["listen", None, "tcp:9001:interface=127.0.0.1", "Endpoint of the client port."],
        ["advertise", None, None, "HOST:PORT clients should connect to (default: the bound one)."],
        ["redis", None, None, "Redis URL (default: $DIM_REDIS, else redis://127.0.0.1:6379)."],
        ["kafka", None, None,
         "Kafka bootstrap servers (default: $DIM_KAFKA, else 127.0.0.1:9092)."],
        ["zookeeper", None, None,
         "ZooKeeper hosts (default: $DIM_ZOOKEEPER, else 127.0.0.1:2181)."],
        ["cluster", None, "dim",
         "Cluster name: Redis key prefix NAME:, ZooKeeper root /NAME/nodes, topics NAME.node.ID."],
        ["heartbeat", None, 30, "Heartbeat interval H in seconds.", int],
        ["zk-timeout", None, 10.0,
         "ZooKeeper session timeout in seconds: how long a dead node stays listed.", float],
        ["session-ttl", None, None,
         "Seconds a session is believed without a heartbeat (default: max(4H, 20)).", float],
        ["linger-ms", None, 0, "Kafka producer linger (batching) in milliseconds.", float],
        ["forward-timeout", None, 30.0,
         "Seconds a forward to another node may wait for Kafka before it is given up.", float],
        ["nudge-after", None, 1.0,
         "Seconds a forward may wait for Kafka before its recipient is nudged (0: never).",
         float],
        ["connect-timeout", None, 5.0,
         "Seconds each service has to answer at start before the node gives up.", float],
        ["max-frame", None, DEFAULT_MAX_FRAME, "Largest frame accepted, in bytes.", int],
        *OUTPUT_LIMIT_PARAMETERS,
        *CREDENTIAL_PARAMETERS,
        ["metrics", None, None,
         "Endpoint serving Prometheus metrics at /metrics (e.g. tcp:9101:interface=127.0.0.1)."],
    ]

    def postOptions(self) -> None:
        self.frame_limit_defaults()
        from dim import secret

        if not self["id"]:
            raise usage.UsageError("--id is required")
        if not all(c.isalnum() or c in "._-" for c in self["id"]) or len(self["id"]) > 100:
            raise usage.UsageError("--id may hold letters, digits, '.', '_' and '-' only")
        if not self["cluster"] or not all(c.isalnum() or c in "._-" for c in self["cluster"]):
            raise usage.UsageError("--cluster may hold letters, digits, '.', '_' and '-' only")
        if self["heartbeat"] < 1:
            raise usage.UsageError("--heartbeat must be at least 1 second")
        check_output_limits(self)
        if self["max-frame"] < 1024:
            raise usage.UsageError("--max-frame must be at least 1024 bytes")
        if self["nudge-after"] < 0:
            raise usage.UsageError("--nudge-after must be 0 (never) or more")
        if self["zk-timeout"] <= 0 or self["connect-timeout"] <= 0:
            raise usage.UsageError("--zk-timeout and --connect-timeout must be positive")
        if self["session-ttl"] is None:
            self["session-ttl"] = float(max(4 * self["heartbeat"], 20))
        service_defaults(self, ["redis", "kafka", "zookeeper"])
        self.credential_defaults()
        try:
            self["secret"] = secret.required()
        except secret.SecretMissing as e:
            raise usage.UsageError(str(e)) from None


class ClusterNode(ClusterProcess):
    """A cluster node's life: connect to the services in order, take clients, and on stop
    drain, deregister and disconnect in the reverse order.

    The parts (store, registries, forwarder, node service) exist once :attr:`ready` fired.
    """

    def __init__(self, options: Options, reactor: Any) -> None:
        super().__init__(reactor)
        self.options = options
        self.node_id: str = options["id"]
        self.label = f"DIM node {self.node_id}"
        self.names = cluster_namespace(options["cluster"])
        self.incarnation = _secrets.token_hex(6)
        self.store: Any = None
        self.sessions: Any = None
        self.forwarder: Any = None
        self.registry: Any = None
        self.core: Any = None
        self.node: Any = None
        self.registered = False
        self.forwarding = False

    # -- start -----------------------------------------------------------------------------

    async def _start(self) -> None:
        from dim.cluster.forwarder import KafkaForwarder
        from dim.cluster.interface import NodeInfo
        from dim.cluster.registry import ZooKeeperNodeRegistry
        from dim.cluster.sessions import RedisSessionRegistry
        from dim.node.delivery import NodeCore
        from dim.node.service import NodeService
        from dim.node.throttle import UserLimiter
        from dim.runtime import advertised, speaks_tls
        from dim.store.redis import RedisStore
        from dim.store.redis_schema import SCHEMA_VERSION, migrate
        from dim.tokens import TokenAuthority

        o, me = self.options, self.node_id
        timeout = o["connect-timeout"]
        _log.info("DIM node {node} starting (cluster {cluster}, incarnation {inc})",
                  node=me, cluster=o["cluster"], inc=self.incarnation)

        # 1. Redis: store and sessions; forget this id's previous life.
        self.connecting("Redis", redact_url(o["redis"]))
        _log.info("node {node}: connecting to Redis at {url}", node=me,
                  url=redact_url(o["redis"]))
        self.store = await RedisStore.connect(o["redis"], self.names["redis_prefix"],
                                              timeout=timeout, clock=self.reactor)
        self.sessions = await RedisSessionRegistry.connect(
            o["redis"], self.names["redis_prefix"], ttl=o["session-ttl"], timeout=timeout,
            clock=self.reactor)
        _log.info("node {node}: Redis answers (durability: {d}); sessions live {ttl:g} s "
                  "without a heartbeat", node=me, d=self.store.durability, ttl=o["session-ttl"])
        before = await migrate(self.store, progress=lambda line: _log.info(
            "node {node}: {line}", node=me, line=line))
        if before < SCHEMA_VERSION:
            _log.info("node {node}: the data in Redis was migrated from schema {old} to {new}",
                      node=me, old=before, new=SCHEMA_VERSION)
        if self._stopping:
            return
        dropped = await self.sessions.drop_node(me)
        _log.info("node {node}: forgot {n} session user(s) left by a previous life of this id",
                  node=me, n=len(dropped))
        if self._stopping:
            return

        # 2. Kafka: this node's topic, from its end.
        forward_bridge = self.bridge(f"dim-kafka-{me}", 4)
        self.connecting("Kafka", o["kafka"])
        _log.info("node {node}: connecting to Kafka at {kafka}", node=me, kafka=o["kafka"])
        self.forwarder = KafkaForwarder(me, o["kafka"], forward_bridge,
                                        linger_ms=o["linger-ms"],
                                        forward_timeout=o["forward-timeout"],
                                        topic_prefix=self.names["topic_prefix"],
                                        connect_timeout=timeout, skip_backlog=True,
                                        security_config=o["kafka-security"],
                                        nudge_after=o["nudge-after"] or None)
        await self.forwarder.start()
        self.forwarding = True
        _log.info("node {node}: reading envelopes from Kafka topic {topic} (replication {r}), "
                  "from its end", node=me, topic=self.forwarder.topic,
                  r=self.forwarder.replication)
        if self._stopping:
            return

        # 3. Listen.
        tokens = TokenAuthority(o["secret"], self.store, clock=self.reactor)
        self.core = NodeCore(me, self.store, self.sessions, tokens.verify, self.reactor,
                             heartbeat=o["heartbeat"], max_frame=o["max-frame"],
                             forwarder=self.forwarder,
                             limiter=UserLimiter(o["frame-limits"]))
        _log.info("node {node}: rate limits per user (frames a second:burst): {limits}",
                  node=me, limits=o["frame-limits"].describe())
        self.connecting("the client port", o["listen"])
        self.node = NodeService(self.core, o["listen"], self.reactor,
                                push_limit=o["push-limit"], max_output=o["max-output"],
                                slow_consumer_grace=o["slow-consumer-grace"])
        self.node.setServiceParent(self)
        port = await self.node.listening()
        host, number = advertised(port, o["advertise"])
        _log.info("node {node}: takes clients on {host}:{port} (heartbeat {h} s)", node=me,
                  host=host, port=number, h=o["heartbeat"])
        if self._stopping:
            return

        if o["metrics"]:
            self._serve_metrics(o["metrics"])

        # 4. ZooKeeper: register, so the gateway routes clients here.
        registry_bridge = self.bridge(f"dim-zookeeper-{me}", 3)
        self.connecting("ZooKeeper", o["zookeeper"])
        _log.info("node {node}: connecting to ZooKeeper at {zk}", node=me, zk=o["zookeeper"])
        self.registry = ZooKeeperNodeRegistry(
            o["zookeeper"], registry_bridge, self.reactor, session_timeout=o["zk-timeout"],
            root=self.names["zk_root"], refresh_interval=min(2.0, o["zk-timeout"] / 2),
            connect_timeout=timeout, auth=o["zookeeper-digest"])
        await self.registry.start()
        info = NodeInfo(id=me, host=host, port=number, incarnation=self.incarnation,
                        tls=speaks_tls(o["listen"]))
        await self.registry.register(info, connections=self.core.connection_count,
                                     on_reregister=self._reregistered,
                                     problems=self.forwarder.problems)
        self.registered = True
        self._service = None
        _log.info("node {node}: registered in ZooKeeper as {path} (session timeout {t:g} s); "
                  "ready", node=me, path=f"{self.names['zk_root']}/{me}", t=o["zk-timeout"])

    def _serve_metrics(self, endpoint: str) -> None:
        """Serve the process's Prometheus metrics (node, bus) at ``/metrics``."""
        from prometheus_client.twisted import MetricsResource
        from twisted.application import strports
        from twisted.web.resource import Resource
        from twisted.web.server import Site

        root = Resource()
        root.putChild(b"metrics", MetricsResource())
        strports.service(endpoint, Site(root), reactor=self.reactor).setServiceParent(self)
        _log.info("node {node}: Prometheus metrics on {endpoint} at /metrics",
                  node=self.node_id, endpoint=endpoint)

    def _reregistered(self) -> None:
        """Our znode was lost and made again: the gateway may have dropped our sessions, so
        add every local session again."""
        if self.core is None:
            return
        count = 0
        for user, sessions in list(self.core.local.items()):
            for session_id in list(sessions):
                count += 1
                d = defer.maybeDeferred(self.sessions.add, user, session_id, self.node_id)
                d.addErrback(lambda f: _log.failure("re-adding a session failed", f))
        _log.warn("node {node}: registered again after losing its znode; re-added {n} "
                  "session(s)", node=self.node_id, n=count)

    # -- stop ------------------------------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:
        """goaway, stop accepting, drain, deregister, stop Kafka, close Redis."""
        self._stopping = True
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        from twisted.application.service import Service

        me = self.node_id
        Service.stopService(self)
        if self.ready is not None and not self.ready.called:
            _log.info("node {node}: stopping once the start step under way ends", node=me)
            # Still starting: let the step under way finish (each has a timeout), so nothing
            # is left running behind the stop.
            await self.ready
        if self.node is not None and self.node.running:
            _log.info("node {node}: shutting down: goaway to {n} connection(s), no new ones",
                      node=me, n=self.core.connection_count())
            try:
                await self.node.stopService()
            except Exception:
                _log.failure("node {node}: draining failed", node=me)
            _log.info("node {node}: drained", node=me)
        if self.registry is not None:
            try:
                await self.registry.stop()
                if self.registered:
                    _log.info("node {node}: deregistered from ZooKeeper", node=me)
            except Exception:
                _log.failure("node {node}: deregistering failed", node=me)
        if self.forwarder is not None:
            try:
                await self.forwarder.stop()
                if self.forwarding:
                    _log.info("node {node}: stopped reading Kafka", node=me)
            except Exception:
                _log.failure("node {node}: stopping the forwarder failed", node=me)
        self.stop_bridges()
        for name, resource in (("sessions", self.sessions), ("store", self.store)):
            if resource is not None:
                try:
                    await resource.close()
                except Exception:
                    _log.failure("node {node}: closing the {name} failed", node=me, name=name)
        _log.info("node {node}: stopped", node=me)


def makeService(options: Options) -> MultiService:
    """The service tree of one cluster node."""
    from twisted.internet import reactor

    return ClusterNode(options, reactor)
