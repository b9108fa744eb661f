"""``twistd dim-gateway``: the HTTP gateway of a DIM cluster, on Redis and ZooKeeper.

    DIM_SECRET=... twistd -n dim-gateway --listen tcp:8080:interface=127.0.0.1 \\
        --redis redis://127.0.0.1:6379 --zookeeper 127.0.0.1:2181

It connects to Redis (users, tokens, inboxes, sessions) and watches the live nodes in
ZooKeeper before it listens; a service that does not answer stops it with a line naming the
service and exit status 1.  When a node vanishes from ZooKeeper (it stopped, or its ZooKeeper
session expired after a crash), the gateway forgets that node's sessions at once, so its users
are no longer shown online nor forwarded to; clients are only ever routed to listed nodes.

Uploaded files live in ``--files`` (a directory every gateway of the cluster must share, e.g.
on a network file system; file metadata is in Redis).  ``notify`` frames (contacts and groups
changing), and the offline ``presence`` of users whose node died, reach the nodes holding the
users' sessions through Kafka: the gateway only produces, it has no topic of its own.
"""
from __future__ import annotations

from typing import Any

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from dim.gateway.limits import LIMIT_PARAMETERS, limit_options
from dim.runtime import (CREDENTIAL_PARAMETERS, ClusterProcess, ServiceCredentialOptions,
                         cluster_namespace, redact_url, service_defaults)

_log = Logger(namespace="dim.gateway")


class Options(ServiceCredentialOptions, usage.Options):
    """Command line of ``twistd dim-gateway``."""

    optParameters = [
        ["listen", None, "tcp:8080:interface=127.0.0.1", "Endpoint of the HTTP API."],
        ["redis", None, None, "Redis URL (default: $DIM_REDIS, else redis://127.0.0.1:6379)."],
        ["zookeeper", None, None,
         "ZooKeeper hosts (default: $DIM_ZOOKEEPER, else 127.0.0.1:2181)."],
        ["kafka", None, None,
         "Kafka bootstrap servers (default: $DIM_KAFKA, else 127.0.0.1:9092)."],
        ["cluster", None, "dim", "Cluster name, as given to its nodes."],
        ["routing", None, "round_robin",
         "Node assignment: round_robin, random, consistent_hash or least_connections."],
        ["token-ttl", None, 7 * 86400, "Token lifetime in seconds.", int],
        ["zk-timeout", None, 10.0, "ZooKeeper session timeout of the gateway, in seconds.",
         float],
        ["connect-timeout", None, 5.0,
         "Seconds each service has to answer at start before the gateway gives up.", float],
        ["files", None, None,
         "Directory of uploaded files, shared by every gateway of the cluster "
         "(default: $DIM_FILES, else ./dim-files)."],
        ["max-file-size", None, 20 * 1024 * 1024, "Largest upload, in bytes.", int],
        ["max-group-members", None, 500, "Most members of a group, its owner included.", int],
        *CREDENTIAL_PARAMETERS,
        *LIMIT_PARAMETERS,
    ]

    def postOptions(self) -> None:
        from dim import secret
        from dim.gateway.routing import STRATEGIES

        if self["routing"] not in STRATEGIES:
            raise usage.UsageError(f"--routing must be one of {', '.join(sorted(STRATEGIES))}")
        if not self["cluster"] or not all(c.isalnum() or c in "._-" for c in self["cluster"]):
            raise usage.UsageError("--cluster may hold letters, digits, '.', '_' and '-' only")
        service_defaults(self, ["redis", "zookeeper", "kafka"])
        self.credential_defaults()
        if not self["files"]:
            import os
            self["files"] = os.environ.get("DIM_FILES") or "dim-files"
        if self["max-file-size"] < 1 or self["max-group-members"] < 1:
            raise usage.UsageError("--max-file-size and --max-group-members must be 1 or more")
        self["limits"] = limit_options(self)
        try:
            self["secret"] = secret.required()
        except secret.SecretMissing as e:
            raise usage.UsageError(str(e)) from None


class ClusterGateway(ClusterProcess):
    """The gateway's life: Redis, then the ZooKeeper watch, then the HTTP port; on stop,
    the reverse.  :attr:`ready` fires once it listens."""

    label = "DIM gateway"

    def __init__(self, options: Options, reactor: Any) -> None:
        super().__init__(reactor)
        self.options = options
        self.names = cluster_namespace(options["cluster"])
        self.store: Any = None
        self.sessions: Any = None
        self.registry: Any = None
        self.forwarder: Any = None
        self.gateway: Any = None
        self.http: Any = None
        self._known: set[str] = set()

    async def _start(self) -> None:
        import uuid

        from dim.cluster.forwarder import KafkaForwarder
        from dim.cluster.pusher import ForwardingPusher
        from dim.cluster.registry import ZooKeeperNodeRegistry
        from dim.cluster.sessions import RedisSessionRegistry
        from dim.files import FileStorage
        from dim.gateway.app import Gateway
        from dim.passwords import PasswordHasher
        from dim.store.redis import RedisStore
        from dim.tokens import TokenAuthority

        o = self.options
        timeout = o["connect-timeout"]
        _log.info("DIM gateway starting (cluster {cluster}, routing {routing})",
                  cluster=o["cluster"], routing=o["routing"])
        self.connecting("Redis", redact_url(o["redis"]))
        _log.info("gateway: connecting to Redis at {url}", url=redact_url(o["redis"]))
        self.store = await RedisStore.connect(o["redis"], self.names["redis_prefix"],
                                              timeout=timeout, clock=self.reactor)
        self.sessions = await RedisSessionRegistry.connect(
            o["redis"], self.names["redis_prefix"], timeout=timeout, clock=self.reactor)
        _log.info("gateway: Redis answers (durability: {d})", d=self.store.durability)
        if self._stopping:
            return

        kafka_bridge = self.bridge("dim-kafka-gateway", 3)
        self.connecting("Kafka", o["kafka"])
        _log.info("gateway: connecting to Kafka at {kafka}", kafka=o["kafka"])
        self.forwarder = KafkaForwarder(f"gateway-{uuid.uuid4().hex[:12]}", o["kafka"],
                                        kafka_bridge, topic_prefix=self.names["topic_prefix"],
                                        connect_timeout=timeout, consume=False,
                                        security_config=o["kafka-security"])
        await self.forwarder.start()
        _log.info("gateway: Kafka answers")
        if self._stopping:
            return

        bridge = self.bridge("dim-zookeeper-gateway", 3)
        self.connecting("ZooKeeper", o["zookeeper"])
        _log.info("gateway: connecting to ZooKeeper at {zk}", zk=o["zookeeper"])
        self.registry = ZooKeeperNodeRegistry(o["zookeeper"], bridge, self.reactor,
                                              session_timeout=o["zk-timeout"],
                                              root=self.names["zk_root"],
                                              connect_timeout=timeout,
                                              auth=o["zookeeper-digest"])
        await self.registry.start()
        self.registry.subscribe(self._nodes_changed)
        await self.registry.watch()
        self._known = {n.id for n in self.registry.nodes()}
        _log.info("gateway: watching {root} in ZooKeeper; live nodes: {nodes}",
                  root=self.names["zk_root"], nodes=_ids(self.registry.nodes()))
        if self._stopping:
            return

        hashing = self.bridge("dim-passwords", 2)
        tokens = TokenAuthority(o["secret"], self.store, ttl=o["token-ttl"],
                                clock=self.reactor)
        self.connecting("the file directory", o["files"])
        files = FileStorage(o["files"])
        self.gateway = Gateway(self.store, tokens, PasswordHasher(hashing.pool, self.reactor),
                               self.registry, self.sessions, routing=o["routing"],
                               clock=self.reactor,
                               files=files, max_file_size=o["max-file-size"],
                               max_group_members=o["max-group-members"],
                               pusher=ForwardingPusher(self.sessions, self.forwarder),
                               limits=o["limits"], health=self._problems)
        self.connecting("the HTTP port", o["listen"])
        self.http = strports.service(o["listen"],
                                     self.gateway.http_factory(reactor=self.reactor),
                                     reactor=self.reactor)
        self.http.setServiceParent(self)
        self._service = None
        _log.info("gateway: HTTP API on {endpoint}; ready", endpoint=o["listen"])

    def _problems(self) -> list[str]:
        """What this gateway finds wrong with ZooKeeper and Kafka now."""
        out: list[str] = []
        for part in (self.registry, self.forwarder):
            if part is not None:
                out.extend(f"gateway: {problem}" for problem in part.problems())
        return out

    def _nodes_changed(self, nodes: list[Any]) -> None:
        """(reactor) The live nodes changed: forget the sessions of every node that left."""
        now = {n.id for n in nodes}
        gone, came = self._known - now, now - self._known
        self._known = now
        for node in sorted(came):
            _log.info("gateway: node {node} joined; live nodes: {nodes}", node=node,
                      nodes=_ids(nodes))
        for node in sorted(gone):
            _log.warn("gateway: node {node} left; live nodes: {nodes}", node=node,
                      nodes=_ids(nodes))
            d = self.sessions.drop_node(node)
            d.addCallback(self._node_dropped, node)
            d.addErrback(lambda f, n=node: _log.failure(
                "gateway: dropping the sessions of node {node} failed", f, node=n))

    def _node_dropped(self, users: dict[str, bool], node: str) -> None:
        """(reactor) A dead node's sessions are gone: announce its users now offline."""
        offline = sorted(user for user, online in users.items() if not online)
        _log.info("gateway: dropped the sessions of node {node}: {count} user(s), "
                  "{offline} now offline", node=node, count=len(users), offline=len(offline))
        if self.gateway is not None:
            for user in offline:
                self.gateway.announce_offline(user)

    def stopService(self) -> defer.Deferred[None]:
        """Stop listening, stop watching ZooKeeper, close Redis."""
        self._stopping = True
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        Service.stopService(self)
        if self.ready is not None and not self.ready.called:
            # Still starting: let the step under way finish (each has a timeout), so nothing
            # is left running behind the stop.
            await self.ready
        if self.http is not None and self.http.running:
            try:
                await defer.maybeDeferred(self.http.stopService)
            except Exception:
                _log.failure("gateway: closing the HTTP port failed")
        if self.registry is not None:
            try:
                await self.registry.stop()
            except Exception:
                _log.failure("gateway: closing ZooKeeper failed")
        if self.forwarder is not None:
            try:
                await self.forwarder.stop()
            except Exception:
                _log.failure("gateway: closing Kafka failed")
        self.stop_bridges()
        for resource in (self.sessions, self.store):
            if resource is not None:
                try:
                    await resource.close()
                except Exception:
                    _log.failure("gateway: closing Redis failed")
        _log.info("gateway: stopped")


def _ids(nodes: list[Any]) -> str:
    return ", ".join(n.id for n in nodes) or "(none)"


def makeService(options: Options) -> MultiService:
    """The service tree of one gateway."""
    from twisted.internet import reactor

    return ClusterGateway(options, reactor)
