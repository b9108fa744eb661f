"""The live nodes of a cluster, in ZooKeeper (kazoo).

A node registers an ephemeral znode ``<root>/<id>`` (root default ``/dim/nodes``) holding
JSON ``{id, host, port, connections, incarnation}`` and rewrites it every
``refresh_interval`` seconds with its live connection count.  The znode disappears when the
node closes its ZooKeeper session, or ``session_timeout`` seconds after the node dies.

The gateway side watches the children of the root (a kazoo ``ChildrenWatch``) and the data of
each child (a ``DataWatch``) and keeps a local list, so :meth:`nodes` answers without I/O.

Connection states are logged as DIM lines at honest levels: a lost connection (kazoo's
``SUSPENDED``; the session and the ephemeral znode survive if kazoo reconnects within the
session timeout) is a warning, its return an info line, a lost session (``LOST``: the znode
is gone until the next refresh makes it again) an error.  kazoo's own log lines, which
would otherwise reach stderr through Python's last-resort handler, go to Twisted's logger
(namespace ``kazoo...``) at their own levels, but for connection failures while ZooKeeper is
away, which are info (the state lines above say what matters).  The state is also in
:mod:`dim.cluster.metrics` and in :meth:`ZooKeeperNodeRegistry.problems`.

Threads: kazoo calls back on its own threads.  Those callbacks only hop to the reactor thread
with :meth:`ThreadBridge.to_reactor`; every blocking kazoo call runs on the bridge's pool with
:meth:`ThreadBridge.call`.  Nothing here calls kazoo on the reactor thread.
"""
from __future__ import annotations

import logging
from typing import Any
from collections.abc import Callable

import msgspec
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from dim.cluster import metrics
from dim.cluster.interface import INodeRegistry, NodeInfo
from dim.cluster.threads import ThreadBridge
from dim.errors import Unavailable

_log = Logger(namespace="dim.zookeeper")
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(NodeInfo).decode


class _KazooToTwisted(logging.Handler):
    """Python logging records of kazoo, handed to Twisted's logger on the reactor thread."""

    def __init__(self, bridge: ThreadBridge) -> None:
        super().__init__()
        self.bridge = bridge

    def emit(self, record: logging.LogRecord) -> None:
        """Hop one record to the reactor (kazoo logs from its own threads)."""
        try:
            text = record.getMessage()
        except Exception:
            text = str(record.msg)
        if record.exc_info and record.exc_info[1] is not None:
            text = f"{text}: {record.exc_info[1]!r}"
        level = _kazoo_level(record.levelno, text)
        try:
            self.bridge.to_reactor(_emit, record.name, level, text)
        except Exception:
            pass  # no reactor to hop to (shutting down)


def _kazoo_level(levelno: int, text: str) -> LogLevel:
    """Twisted's level for a kazoo line: connection trouble is info (the registry logs the
    state change itself, once, at its own level)."""
    lowered = text.lower()
    if any(word in lowered for word in ("connection", "connect ", "socket", "refused",
                                        "timed out", "time-out", "retrying")):
        return LogLevel.info
    if levelno >= logging.ERROR:
        return LogLevel.error
    if levelno >= logging.WARNING:
        return LogLevel.warn
    if levelno >= logging.INFO:
        return LogLevel.info
    return LogLevel.debug


def _emit(namespace: str, level: LogLevel, text: str) -> None:
    Logger(namespace=namespace).emit(level, "{text}", text=text)


def capture_kazoo_logs(bridge: ThreadBridge) -> None:
    """Send the ``kazoo`` loggers' records to Twisted's logger (idempotent per process;
    the latest bridge is used)."""
    logger = logging.getLogger("kazoo")
    for handler in list(logger.handlers):
        if isinstance(handler, _KazooToTwisted):
            logger.removeHandler(handler)
    logger.addHandler(_KazooToTwisted(bridge))
    logger.setLevel(logging.INFO)
    logger.propagate = False


@implementer(INodeRegistry)
class ZooKeeperNodeRegistry:
    """Nodes register here (:meth:`register`); gateways watch here (:meth:`watch`, then
    :meth:`nodes` and :meth:`subscribe`).  One instance may do both.

    ``hosts`` is kazoo's connection string (``"127.0.0.1:2181"``); ``bridge`` a started
    :class:`ThreadBridge` (the caller owns its lifecycle; give it at least 2 threads);
    ``clock`` drives the periodic refresh.  ``session_timeout`` (seconds) bounds how long a
    dead node's znode outlives it; ZooKeeper clamps it to [2, 20] ticks of its tickTime.
    ``auth`` (user, password) is a digest credential: the client authenticates with it, and
    the root, its parent and every node's znode get an ACL granting everything to it and
    nothing to anyone else (an existing root and parent are given that ACL at start).
    ``client`` replaces the KazooClient (tests).
    """

    def __init__(self, hosts: str, bridge: ThreadBridge, clock: IReactorTime,
                 session_timeout: float = 4.0, root: str = "/dim/nodes",
                 refresh_interval: float = 2.0, connect_timeout: float = 5.0,
                 client: Any = None, auth: tuple[str, str] | None = None) -> None:
        #: The ACL of DIM's znodes (None: ZooKeeper's open default).
        self.acl: list[Any] | None = None
        if auth is not None:
            from kazoo.security import make_digest_acl

            self.acl = [make_digest_acl(auth[0], auth[1], all=True)]
        if client is None:
            from kazoo.client import KazooClient

            client = KazooClient(hosts=hosts, timeout=session_timeout,
                                 connection_retry={"max_tries": -1, "delay": 0.1,
                                                   "max_delay": 1.0},
                                 auth_data=[("digest", f"{auth[0]}:{auth[1]}")] if auth else None,
                                 default_acl=self.acl)
        self.client = client
        self.bridge = bridge
        self.clock = clock
        self.root = root.rstrip("/")
        self.refresh_interval = refresh_interval
        self.connect_timeout = connect_timeout
        self._nodes: dict[str, NodeInfo] = {}
        self._children: set[str] = set()
        self._watched: set[str] = set()
        self._subscribers: list[Callable[[list[NodeInfo]], None]] = []
        self._watching = False
        self._stopped = False
        self._me: NodeInfo | None = None
        self._connections: Callable[[], int] | None = None
        self._on_reregister: Callable[[], Any] | None = None
        self._problems: Callable[[], list[str]] | None = None
        self._refresh: LoopingCall | None = None
        #: kazoo's connection state (CONNECTED, SUSPENDED, LOST), or "closed".
        self.zk_state = "closed"
        self._suspended_at: float | None = None
        self.hosts = hosts
        self.session_timeout = session_timeout
        capture_kazoo_logs(bridge)
        if hasattr(client, "add_listener"):  # test stand-ins may have none
            client.add_listener(self._state_changed)
        metrics.add_registry(self)

    # -- connection state ------------------------------------------------------------------

    def _state_changed(self, state: Any) -> None:
        """(kazoo's thread) A connection state change: only hop."""
        self.bridge.to_reactor(self._log_state, str(state))

    def _log_state(self, state: str) -> None:
        """(reactor) Log a ZooKeeper connection state change at its honest level."""
        before, self.zk_state = self.zk_state, state
        now = self.clock.seconds()
        if self._stopped:
            return
        if state == "SUSPENDED":
            self._suspended_at = now
            metrics.count("zookeeper_suspended")
            _log.warn("ZooKeeper connection to {hosts} lost; reconnecting (the session, and "
                      "this process's znodes, survive if it is back within {t:g} s)",
                      hosts=self.hosts, t=self.session_timeout)
        elif state == "LOST":
            metrics.count("zookeeper_lost")
            _log.error("ZooKeeper session lost (expired or closed): ephemeral znodes are gone; "
                       "they are made again once ZooKeeper answers")
        elif state == "CONNECTED" and before in ("SUSPENDED", "LOST"):
            away = now - self._suspended_at if self._suspended_at is not None else 0.0
            self._suspended_at = None
            _log.info("ZooKeeper connection back after {s:.1f} s ({what})", s=away,
                      what="same session" if before == "SUSPENDED" else "a new session")

    def problems(self) -> list[str]:
        """What is wrong with ZooKeeper now, as short sentences (empty when all is well)."""
        if self._stopped or self.zk_state in ("CONNECTED", "closed"):
            return []
        return [f"zookeeper: {self.zk_state.lower()}"]

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        """Connect to ZooKeeper and create the root; fails with Unavailable if it does not
        answer within ``connect_timeout``."""
        async def run() -> None:
            try:
                await self.bridge.call(self.client.start, self.connect_timeout)
            except Exception as e:
                await self.bridge.call(self._close_client)
                raise Unavailable(f"ZooKeeper did not answer: {e}") from e
            await self.bridge.call(self._make_root)
        return defer.Deferred.fromCoroutine(run())

    def _make_root(self) -> None:
        """(pool thread) Create the root; with a credential, give the root and its parent
        (the cluster's own znodes) the ACL."""
        self.client.ensure_path(self.root, acl=self.acl)
        if self.acl is None:
            return
        parent = self.root.rsplit("/", 1)[0]
        for path in ([parent] if parent else []) + [self.root]:
            acls, _stat = self.client.get_acls(path)
            if list(acls) != self.acl:
                self.client.set_acls(path, self.acl)

    def stop(self) -> defer.Deferred[None]:
        """Stop refreshing and close the ZooKeeper session: this node's znode goes at once."""
        self._stopped = True
        if self._refresh is not None and self._refresh.running:
            self._refresh.stop()
        return self.bridge.call(self._close_client)

    def _close_client(self) -> None:
        """(pool thread) Stop and close the kazoo client."""
        self.client.stop()
        self.client.close()

    # -- the node side ---------------------------------------------------------------------

    def register(self, info: NodeInfo, connections: Callable[[], int] | None = None,
                 on_reregister: Callable[[], Any] | None = None,
                 problems: Callable[[], list[str]] | None = None) -> defer.Deferred[None]:
        """Create this node's ephemeral znode and keep it fresh every ``refresh_interval``
        with ``connections()`` and ``problems()`` (what the node finds wrong with the
        services it uses, for the gateway's health report), both read on the reactor thread.

        If the znode was lost (the ZooKeeper session expired, e.g. after a long pause), the
        next refresh creates it again and calls ``on_reregister`` on the reactor thread: the
        gateway may have dropped this node's sessions meanwhile, so the node should add them
        again (or close its connections).
        """
        self._me = info
        self._connections = connections
        self._on_reregister = on_reregister
        self._problems = problems

        async def run() -> None:
            await self.bridge.call(self._write, self._snapshot(), True)
            self._refresh = LoopingCall(self._publish)
            self._refresh.clock = self.clock
            self._refresh.start(self.refresh_interval, now=False).addErrback(
                lambda f: _log.failure("node registry refresh stopped", f))
        return defer.Deferred.fromCoroutine(run())

    def _snapshot(self) -> NodeInfo:
        """This node's record with the live connection count."""
        assert self._me is not None
        count = self._connections() if self._connections is not None else self._me.connections
        problems: list[str] = []
        if self._problems is not None:
            try:
                problems = list(self._problems())
            except Exception:
                _log.failure("reading this node's problems failed")
        return msgspec.structs.replace(self._me, connections=count, problems=problems)

    def _path(self, node_id: str) -> str:
        return f"{self.root}/{node_id}"

    def _write(self, info: NodeInfo, first: bool) -> bool:
        """(pool thread) Write the znode, creating it when missing; True if it was created
        again after being lost."""
        from kazoo.exceptions import NodeExistsError, NoNodeError

        path, data = self._path(info.id), _encode(info)
        if not first:
            try:
                self.client.set(path, data)
                return False
            except NoNodeError:
                pass
        try:
            self.client.create(path, data, acl=self.acl, ephemeral=True, makepath=True)
        except NodeExistsError:
            # A znode of a previous incarnation whose session has not expired yet (a fast
            # restart), or ours from before a reconnect.  Replace it with one owned by this
            # session: otherwise it would vanish when the old session expires.  Watchers see
            # the old one go (so its sessions are dropped) and this one come.
            try:
                self.client.delete(path)
            except NoNodeError:
                pass
            self.client.create(path, data, acl=self.acl, ephemeral=True, makepath=True)
        return not first

    def _publish(self) -> defer.Deferred[None] | None:
        """(reactor) One refresh: write the live count; errors are logged, never fatal."""
        if self._stopped or self._me is None:
            return None

        def written(recreated: bool) -> None:
            if recreated:
                _log.warn("znode of node {id} was lost and has been created again",
                          id=self._me.id if self._me else "?")
                if self._on_reregister is not None:
                    self._on_reregister()

        d = self.bridge.call(self._write, self._snapshot(), False)
        d.addCallbacks(written, self._refresh_failed)
        return None  # do not make the LoopingCall wait on a stuck ZooKeeper

    @staticmethod
    def _refresh_failed(failure: Any) -> None:
        """(reactor) A refresh did not reach ZooKeeper.  A lost connection is routine (kazoo
        reconnects within the session timeout, and the ephemeral znode stays): a warning, and
        the next tick tries again.  Anything else is logged as the failure it is."""
        from kazoo.exceptions import ConnectionClosedError, ConnectionLoss, SessionExpiredError

        if failure.check(ConnectionLoss, ConnectionClosedError, SessionExpiredError):
            _log.warn("node registry refresh: ZooKeeper connection lost ({error}); trying "
                      "again at the next refresh", error=failure.value.__class__.__name__)
        else:
            _log.failure("node registry refresh failed", failure)

    # -- the gateway side ------------------------------------------------------------------

    def watch(self) -> defer.Deferred[None]:
        """Start watching the nodes; fires once the first list is known."""
        from kazoo.recipe.watchers import ChildrenWatch

        if self._watching:
            return defer.succeed(None)
        self._watching = True
        first: defer.Deferred[None] = defer.Deferred()

        def on_children(children: list[str]) -> bool:
            # kazoo's thread: only hop.
            self.bridge.to_reactor(self._children_changed, list(children), first)
            return not self._stopped

        return self.bridge.call(ChildrenWatch, self.client, self.root, on_children).addCallback(
            lambda _: first)

    def _children_changed(self, children: list[str],
                          first: defer.Deferred[None] | None = None) -> None:
        """(reactor) The set of child znodes changed."""
        self._children = set(children)
        changed = False
        for gone in [n for n in self._nodes if n not in self._children]:
            del self._nodes[gone]
            changed = True
        pending = [self._watch_data(child) for child in children if child not in self._watched]
        if changed:
            self._notify()
        if first is not None and not first.called:
            defer.gatherResults(pending).addBoth(lambda _: first.callback(None)
                                                 if not first.called else None)

    def _watch_data(self, child: str) -> defer.Deferred[Any]:
        """(reactor) Watch one child's data on a pool thread (DataWatch reads at once)."""
        from kazoo.recipe.watchers import DataWatch

        self._watched.add(child)

        def on_data(data: bytes | None, stat: Any, event: Any = None) -> bool:
            # kazoo's thread: only hop; stop watching once the znode is gone.
            self.bridge.to_reactor(self._data_changed, child, data)
            return data is not None and not self._stopped

        d = self.bridge.call(DataWatch, self.client, self._path(child), on_data)
        def failed(failure: Failure) -> None:
            self._watched.discard(child)
            _log.failure("cannot watch node {child}", failure, child=child)

        d.addErrback(failed)
        return d

    def _data_changed(self, child: str, data: bytes | None) -> None:
        """(reactor) One child's data changed, or it was deleted (``data`` None)."""
        if data is None:
            self._watched.discard(child)
            if self._nodes.pop(child, None) is not None:
                self._notify()
            if child in self._children and not self._stopped:
                self._watch_data(child)  # deleted and created again before we looked
            return
        try:
            info = _decode(data)
        except msgspec.DecodeError:
            _log.warn("ignoring znode {child} with bad data {data!r}", child=child, data=data)
            return
        if child not in self._children:
            return
        if self._nodes.get(child) != info:
            self._nodes[child] = info
            self._notify()

    def _notify(self) -> None:
        nodes = self.nodes()
        for callback in list(self._subscribers):
            try:
                callback(nodes)
            except Exception:
                _log.failure("node registry subscriber failed")

    def nodes(self) -> list[NodeInfo]:
        """The live nodes as last seen, sorted by id."""
        return [self._nodes[k] for k in sorted(self._nodes)]

    def subscribe(self, callback: Callable[[list[NodeInfo]], None]) -> None:
        """Call ``callback(nodes)`` on the reactor thread whenever the list changes (a node
        appears, vanishes, or its data changes)."""
        self._subscribers.append(callback)
