"""Where every online session is, in cluster mode: a registry in Redis shared by all nodes.

Why not the original design's ``user -> node`` routes without a TTL:

- A node that crashes (kill -9, power, network partition) never deletes its routes, so
  without a lifetime they stay forever: the user looks online forever, every message to them
  is forwarded to a node (a Kafka topic) nobody reads, and "first session" / "last session"
  presence never fires again for that user.
- One route per user cannot say that a user has several sessions on several nodes; the last
  login overwrote the others, so closing one device made the user look offline (or routed to
  the wrong node).

So here every session is ``(user, session) -> node``, and a session is only believed while
its node is alive: each node has a liveness key ``alive:<node>`` with a TTL that the node's
heartbeat renews (:meth:`RedisSessionRegistry.refresh`).  Every read filters sessions whose
node's key is gone, so a dead node's sessions disappear at most ``ttl`` seconds after its last
heartbeat even if nobody cleans up; :meth:`RedisSessionRegistry.drop_node` (called when the
node's znode vanishes from ZooKeeper, which is faster than the TTL) deletes them at once and
says which users went offline.  A node restarting with the same id must call
``drop_node(own id)`` before accepting connections, so its previous life's sessions are gone.

Keys (prefix default ``dim:``): ``sess:<user>`` hash session -> node; ``nodesess:<node>`` set
of ``user\\x00session`` (for drop_node), expiring with the node; ``alive:<node>``;
``sessver``: a counter of session changes.  Every script that changes sessions counts the
change and publishes ``version\\x00user...`` on the channel ``<prefix>sess``.

Every node keeps a cache of where users' sessions are, fed by those events (see
:class:`RedisSessionRegistry`), so that delivering a message needs no Redis look-up in the
steady state.  Adds, removes and look-ups made in one reactor turn go to Redis as one script
call (:class:`dim.store.redis.ScriptBatcher`).
"""
from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from dim.cluster.interface import ISessionRegistry, SessionRef
from dim.store.redis import (LuaScripts, ScriptBatcher, saw_session_version,
                             session_version_seen)

#: Shared Lua: the live sessions of a user (dropping dead ones, noted as changes), and
#: ``publish``: count one change of the users in ``changed`` (a set) in ``sessver`` and tell
#: every node's cache on the channel ``sess`` as ``version\0user\0user...``.
_LUA_LIVE = """
local changed, changes = {}, {}
local function touch(user)
  if not changed[user] then changed[user] = true; changes[#changes + 1] = user end
end
local function live_sessions(p, user)
  local k = p .. 'sess:' .. user
  local all = redis.call('HGETALL', k)
  local out, alive = {}, {}
  for i = 1, #all, 2 do
    local node = all[i + 1]
    if alive[node] == nil then
      alive[node] = redis.call('EXISTS', p .. 'alive:' .. node) == 1
    end
    if alive[node] then
      out[#out + 1] = all[i]
      out[#out + 1] = node
    else
      redis.call('HDEL', k, all[i])
      touch(user)
    end
  end
  return out
end
local function revive(p, node)
  -- a node whose liveness lapsed makes its sessions visible again: a change of its users
  if redis.call('EXISTS', p .. 'alive:' .. node) == 1 then return end
  for _, m in ipairs(redis.call('SMEMBERS', p .. 'nodesess:' .. node)) do
    touch(string.sub(m, 1, string.find(m, '\\0', 1, true) - 1))
  end
end
local function publish(p)
  if #changes == 0 then return tonumber(redis.call('GET', p .. 'sessver') or '0') end
  local v = redis.call('INCR', p .. 'sessver')
  redis.call('PUBLISH', p .. 'sess', v .. '\\0' .. table.concat(changes, '\\0'))
  return v
end
"""

#: The registry's hot path in one script call: ARGV: prefix, a msgpack list of operations,
#: each ``["a", user, session, node, ttl_ms]`` (add: answers 1 if it is the user's first
#: live session, else 0), ``["r", user, session]`` (remove: 1 if the user had the session
#: and has no live session left, else 0) or ``["l", user...]`` (locate: answers
#: ``[version, [session, node, ...] per user]``, ``{}`` for a user with none, where version
#: is ``sessver`` before this call's changes), run in list order.  Publishes one change
#: event for the whole call.  Returns JSON ``[session version, [result per operation]]``,
#: ``{"e": message}`` for an operation that raised.
BATCH = _LUA_LIVE + """
local renewed = {}
local function add(p, user, session, node, ttl)
  local before = live_sessions(p, user)
  local first = 0
  if #before == 0 then first = 1 end
  local k = p .. 'sess:' .. user
  if redis.call('HGET', k, session) ~= node then
    redis.call('HSET', k, session, node)
    touch(user)
  end
  redis.call('SADD', p .. 'nodesess:' .. node, user .. '\\0' .. session)
  if not renewed[node] then
    renewed[node] = true
    revive(p, node)
    redis.call('SET', p .. 'alive:' .. node, '1', 'PX', ttl)
    redis.call('PEXPIRE', p .. 'nodesess:' .. node, ttl * 4)
  end
  return first
end
local function remove(p, user, session)
  local node = redis.call('HGET', p .. 'sess:' .. user, session)
  if node then
    redis.call('HDEL', p .. 'sess:' .. user, session)
    redis.call('SREM', p .. 'nodesess:' .. node, user .. '\\0' .. session)
    touch(user)
  end
  local left = live_sessions(p, user)
  if #left == 0 and node then return 1 end
  return 0
end
local p = ARGV[1]
local base = tonumber(redis.call('GET', p .. 'sessver') or '0')
local function run(op)
  local kind = op[1]
  if kind == 'a' then return add(p, op[2], op[3], op[4], tonumber(op[5])) end
  if kind == 'r' then return remove(p, op[2], op[3]) end
  if kind == 'l' then
    local found = {}
    for i = 2, #op do found[#found + 1] = live_sessions(p, op[i]) end
    return {base, found}
  end
  error('unknown operation ' .. tostring(kind))
end
local out = {}
for i, op in ipairs(cmsgpack.unpack(ARGV[2])) do
  local ok, res = pcall(run, op)
  if ok then
    out[i] = res
  else
    if type(res) == 'table' then res = res.err end
    out[i] = {e = tostring(res)}
  end
end
return cjson.encode({publish(p), out})
"""

#: ARGV: prefix, node, ttl_ms.  Renews the node's liveness; returns its session count.
REFRESH = _LUA_LIVE + """
local p, node, ttl = ARGV[1], ARGV[2], ARGV[3]
local alive, members = p .. 'alive:' .. node, p .. 'nodesess:' .. node
revive(p, node)
redis.call('SET', alive, '1', 'PX', ttl)
redis.call('PEXPIRE', members, ttl * 4)
publish(p)
return redis.call('SCARD', members)
"""

#: ARGV: prefix, node.  Deletes the node's sessions; returns {session version, user,
#: still_online(0/1), ...}.
DROP_NODE = _LUA_LIVE + """
local p, node = ARGV[1], ARGV[2]
redis.call('DEL', p .. 'alive:' .. node)
local members = redis.call('SMEMBERS', p .. 'nodesess:' .. node)
redis.call('DEL', p .. 'nodesess:' .. node)
local users, order = {}, {}
for _, m in ipairs(members) do
  local cut = string.find(m, '\\0', 1, true)
  local user, session = string.sub(m, 1, cut - 1), string.sub(m, cut + 1)
  if redis.call('HGET', p .. 'sess:' .. user, session) == node then
    redis.call('HDEL', p .. 'sess:' .. user, session)
  end
  touch(user)
  if not users[user] then users[user] = true; order[#order + 1] = user end
end
local out = {0}
for _, user in ipairs(order) do
  out[#out + 1] = user
  if #live_sessions(p, user) > 0 then out[#out + 1] = 1 else out[#out + 1] = 0 end
end
out[1] = publish(p)
return out
"""

SCRIPTS = {"batch": BATCH, "refresh": REFRESH, "drop_node": DROP_NODE}


class _Entry:
    """A cached answer of locate for one user: as of session version ``version``."""

    __slots__ = ("expires", "refs", "version")

    def __init__(self, refs: list[SessionRef], version: int, expires: float) -> None:
        self.refs = refs
        self.version = version
        self.expires = expires


@implementer(ISessionRegistry)
class RedisSessionRegistry:
    """An :class:`ISessionRegistry` in Redis, shared by every node and the gateway.

    ``redis`` is a txredisapi connection or pool (see :func:`dim.store.redis.open_redis`);
    ``ttl`` (seconds) is how long a node's sessions are believed after its last
    :meth:`add`/:meth:`refresh`: make it several heartbeat periods (default 30 s).  Call
    :meth:`load_scripts` (or build it with :meth:`connect`) before use.

    Built with :meth:`connect`, it also keeps a cache of :meth:`locate`'s answers, so a node
    looks a user up in Redis about once per ``cache_ttl`` instead of once per message.  Every
    script that changes a user's sessions counts the change in ``sessver`` and publishes it;
    the registry listens and drops the users named.  An entry is used only while the change
    events are flowing, and only once every change up to the newest version seen in any
    Redis answer of this process (the store's batches report it too) has been heard, so a
    session added before a message was stored is always found for that message.  When in
    doubt (no subscription, an event still on its way, an entry older than ``cache_ttl``,
    which bounds how long a node that died silently, without ``drop_node``, stays cached),
    it asks Redis.
    """

    #: The most users kept in the cache (it is emptied when full).
    max_cached = 100_000

    def __init__(self, redis: Any, prefix: str = "dim:", ttl: float = 30.0, *,
                 clock: IReactorTime, cache_ttl: float = 5.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))
        self.cache_ttl = min(cache_ttl, ttl)
        #: The pub/sub channel of session changes.
        self.channel = prefix + "sess"
        self._scripts = LuaScripts(redis, prefix, SCRIPTS)
        self._clock = clock
        self._batcher = ScriptBatcher(self._scripts, clock)
        self._cache: dict[str, _Entry] = {}
        self._live = False
        self._epoch = 0
        self._applied = 0
        self._locating = 0
        self._dirty: dict[str, int] = {}
        self._waiting: list[defer.Deferred[None]] = []
        self._subscription: Any = None
        #: How many users locate answered from the cache, and from Redis.
        self.hits = 0
        self.misses = 0

    @classmethod
    def connect(cls, url: str = "redis://127.0.0.1:6379", prefix: str = "dim:",
                ttl: float = 30.0, timeout: float = 2.0, poolsize: int = 4,
                cache: bool = True, *, clock: Any) -> defer.Deferred[RedisSessionRegistry]:
        """Connect to ``url``, load the scripts and (``cache``) subscribe to session changes;
        fails with Unavailable if Redis does not answer within ``timeout`` seconds.

        ``clock`` is the reactor (time and TCP).
        """
        from dim.store.redis import (check_credentials, check_reachable, open_redis,
                                     open_redis_subscriber)

        reactor: Any = clock

        async def run() -> RedisSessionRegistry:
            await check_credentials(url, timeout)
            redis = open_redis(url, poolsize=poolsize, connect_timeout=timeout)
            try:
                await check_reachable(redis, url, timeout, reactor)
                registry = cls(redis, prefix, ttl, clock=reactor)
                await registry.load_scripts()
                if cache:
                    registry._subscription = open_redis_subscriber(
                        url, registry.channel, registry._subscribed, registry._changed,
                        registry._unsubscribed, connect_timeout=timeout, reactor=reactor)
                    try:
                        await registry.subscribed().addTimeout(
                            timeout, reactor)
                    except defer.TimeoutError:
                        pass  # the cache starts once the subscription is up
            except BaseException:
                await redis.disconnect()
                raise
            return registry
        return defer.Deferred.fromCoroutine(run())

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script."""
        await self._scripts.load()

    async def _run(self, name: str, *args: Any) -> Any:
        return await self._scripts.run(name, *args)

    # -- the cache -------------------------------------------------------------------------

    def subscribed(self) -> defer.Deferred[None]:
        """Fires once change events flow (at once if they do)."""
        if self._live:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._waiting.append(d)
        return d

    def _subscribed(self) -> None:
        """(reactor) Events flow from now on: read the version reached so far, then start
        the cache from empty (every entry then comes from a look-up made after that)."""
        epoch = self._epoch = self._epoch + 1
        self._cache.clear()

        def read(version: Any) -> None:
            if epoch == self._epoch:
                self._caught_up(int(version or 0))

        d = self.redis.get(self.prefix + "sessver")
        d.addCallbacks(read, lambda f: self._subscription_failed(f, epoch))

    def _subscription_failed(self, failure: Any, epoch: int) -> None:
        """(reactor) The version could not be read: drop the event connection, so that
        subscribing again tries again."""
        if epoch == self._epoch and self._subscription is not None:
            self._subscription.whenConnected().addCallback(
                lambda p: p.transport.loseConnection())

    def _caught_up(self, version: int) -> None:
        """(reactor) Every change up to ``version`` is reflected in what Redis answers from
        now on, and every later one will be heard: answer from the cache."""
        self._epoch += 1
        self._cache.clear()
        self._applied = version
        self._live = True
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def _unsubscribed(self) -> None:
        """(reactor) Events may be missed: forget the cache, ask Redis until resubscribed."""
        self._live = False
        self._epoch += 1
        self._cache.clear()

    def _changed(self, message: str) -> None:
        """(reactor) ``version\\0user...``: these users' sessions changed."""
        version, *users = message.split("\x00")
        for user in users:
            self._cache.pop(user, None)
            if self._locating:
                self._dirty[user] = int(version)
        self._applied = max(self._applied, int(version))

    def _forget(self, users: Any, version: int) -> None:
        """A change made here: drop the users now (the event follows)."""
        saw_session_version(self.prefix, version)
        for user in users:
            self._cache.pop(user, None)

    def _now(self) -> float:
        return float(self._clock.seconds())

    # -- ISessionRegistry ------------------------------------------------------------------

    def add(self, user: str, session: str, node: str) -> defer.Deferred[bool]:
        """Record a session (and renew its node's lifetime); fires True if it is the user's
        first live session.  Joins the batch of this reactor turn."""
        return self._batcher.submit(["a", user, session, node, self.ttl_ms],
                                    self._changed_here, user)

    def remove(self, user: str, session: str) -> defer.Deferred[bool]:
        """Forget a session; fires True if it existed and the user has no live session left.
        Joins the batch of this reactor turn."""
        return self._batcher.submit(["r", user, session], self._changed_here, user)

    def _changed_here(self, raw: Any, user: str | None) -> bool:
        """An add's or remove's answer; the user changed (the event follows)."""
        if user is not None:
            self._cache.pop(user, None)
        return bool(int(raw))

    def locate(self, users: list[str]) -> defer.Deferred[dict[str, list[SessionRef]]]:
        """``{user: [SessionRef, ...]}`` for the given users with a live session.

        From the cache when it is current (see the class docstring), else from Redis in the
        batch of this reactor turn."""
        found: dict[str, list[SessionRef]] = {}
        if not users:
            return defer.succeed(found)
        now = self._now()
        missing: list[str] = []
        if self._live:
            seen = session_version_seen(self.prefix)
            for user in users:
                entry = self._cache.get(user)
                if entry is not None and entry.expires > now \
                        and max(self._applied, entry.version) >= seen:
                    self.hits += 1
                    if entry.refs:
                        found[user] = list(entry.refs)
                else:
                    missing.append(user)
            if not missing:
                return defer.succeed(found)
        else:
            missing = list(users)
        self.misses += len(missing)
        epoch, live = self._epoch, self._live
        self._locating += 1

        def answered(raw: list[Any], _: Any) -> dict[str, list[SessionRef]]:
            version, lists = int(raw[0]), raw[1]
            if len(lists) != len(missing):
                raise ValueError(f"{len(lists)} answers for {len(missing)} users")
            keep = live and self._live and epoch == self._epoch
            if keep and len(self._cache) + len(missing) > self.max_cached:
                self._cache.clear()
            expires = now + self.cache_ttl
            for user, flat in zip(missing, lists, strict=True):
                refs = [SessionRef(session=flat[i], node=flat[i + 1])
                        for i in range(0, len(flat), 2)] if flat else []
                if refs:
                    found[user] = refs
                if keep and self._dirty.get(user, 0) <= version:
                    self._cache[user] = _Entry(list(refs), version, expires)
            return found

        def done(result: Any) -> Any:
            self._locating -= 1
            if not self._locating:
                self._dirty.clear()
            return result

        d = self._batcher.submit(["l", *missing], answered, None)
        d.addBoth(done)
        return d

    def online(self, user: str) -> defer.Deferred[bool]:
        """Whether the user has at least one live session."""
        return self.locate([user]).addCallback(lambda found: user in found)

    def refresh(self, node: str) -> defer.Deferred[int]:
        """Renew the lifetime of ``node`` and so of all its sessions; fires with how many
        sessions it has (call it on every heartbeat)."""
        async def run() -> int:
            return int(await self._run("refresh", node, self.ttl_ms))
        return defer.Deferred.fromCoroutine(run())

    def drop_node(self, node: str) -> defer.Deferred[dict[str, bool]]:
        """Forget every session of ``node``; fires ``{user: still_online}`` for its users."""
        async def run() -> dict[str, bool]:
            flat = await self._run("drop_node", node)
            users = {flat[i]: bool(int(flat[i + 1])) for i in range(1, len(flat), 2)}
            self._forget(users, int(flat[0]))
            return users
        return defer.Deferred.fromCoroutine(run())

    def close(self) -> defer.Deferred[None]:
        """Stop listening for changes and close the Redis connections."""
        async def run() -> None:
            if self._subscription is not None:
                service, self._subscription = self._subscription, None
                await service.stopService()
            self._unsubscribed()
            await self._batcher.drained()
            await self.redis.disconnect()
        return defer.Deferred.fromCoroutine(run())
