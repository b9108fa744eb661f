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
of ``user\\x00session`` (for drop_node), expiring with the node; ``alive:<node>``.
"""
from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface import implementer

from dim.cluster.interface import ISessionRegistry, SessionRef
from dim.store.redis import LuaScripts

#: Shared Lua: whether a node is alive, and the live sessions of a user (dropping dead ones).
_LUA_LIVE = """
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
    end
  end
  return out
end
"""

#: ARGV: prefix, user, session, node, ttl_ms.  Returns 1 if it is the user's first session.
ADD = _LUA_LIVE + """
local p, user, session, node, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local before = live_sessions(p, user)
local first = 0
if #before == 0 then first = 1 end
redis.call('HSET', p .. 'sess:' .. user, session, node)
redis.call('SADD', p .. 'nodesess:' .. node, user .. '\\0' .. session)
redis.call('SET', p .. 'alive:' .. node, '1', 'PX', ttl)
redis.call('PEXPIRE', p .. 'nodesess:' .. node, ttl * 4)
return first
"""

#: ARGV: prefix, user, session.  Returns 1 if the user has no live session left.
REMOVE = _LUA_LIVE + """
local p, user, session = ARGV[1], ARGV[2], ARGV[3]
local node = redis.call('HGET', p .. 'sess:' .. user, session)
if node then
  redis.call('HDEL', p .. 'sess:' .. user, session)
  redis.call('SREM', p .. 'nodesess:' .. node, user .. '\\0' .. session)
end
local left = live_sessions(p, user)
if #left == 0 and node then return 1 end
return 0
"""

#: ARGV: prefix, user 1..n.  Returns {{session, node, session, node, ...}, ...} per user.
LOCATE = _LUA_LIVE + """
local out = {}
for i = 2, #ARGV do out[#out + 1] = live_sessions(ARGV[1], ARGV[i]) end
return out
"""

#: ARGV: prefix, node, ttl_ms.  Renews the node's liveness; returns its session count.
REFRESH = """
local p, node, ttl = ARGV[1], ARGV[2], ARGV[3]
redis.call('SET', p .. 'alive:' .. node, '1', 'PX', ttl)
redis.call('PEXPIRE', p .. 'nodesess:' .. node, ttl * 4)
return redis.call('SCARD', p .. 'nodesess:' .. node)
"""

#: ARGV: prefix, node.  Deletes the node's sessions; returns {user, still_online(0/1), ...}.
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
  if not users[user] then users[user] = true; order[#order + 1] = user end
end
local out = {}
for _, user in ipairs(order) do
  out[#out + 1] = user
  if #live_sessions(p, user) > 0 then out[#out + 1] = 1 else out[#out + 1] = 0 end
end
return out
"""

SCRIPTS = {"add": ADD, "remove": REMOVE, "locate": LOCATE, "refresh": REFRESH,
           "drop_node": DROP_NODE}


@implementer(ISessionRegistry)
class RedisSessionRegistry:
    """An :class:`ISessionRegistry` in Redis, shared by every node and the gateway.

    ``redis`` is a txredisapi connection or pool (see :func:`dim.store.redis.open_redis`);
    ``ttl`` (seconds) is how long a node's sessions are believed after its last
    :meth:`add`/:meth:`refresh`: make it several heartbeat periods (default 30 s).  Call
    :meth:`load_scripts` (or build it with :meth:`connect`) before use.
    """

    def __init__(self, redis: Any, prefix: str = "dim:", ttl: float = 30.0) -> None:
        self.redis = redis
        self.prefix = prefix
        self.ttl_ms = max(1, int(ttl * 1000))
        self._scripts = LuaScripts(redis, prefix, SCRIPTS)

    @classmethod
    def connect(cls, url: str = "redis://127.0.0.1:6379", prefix: str = "dim:",
                ttl: float = 30.0, timeout: float = 2.0,
                poolsize: int = 4) -> defer.Deferred[RedisSessionRegistry]:
        """Connect to ``url`` and load the scripts; fails with Unavailable if Redis does not
        answer within ``timeout`` seconds."""
        from dim.store.redis import check_credentials, check_reachable, open_redis

        async def run() -> RedisSessionRegistry:
            from twisted.internet import reactor

            await check_credentials(url, timeout)
            redis = open_redis(url, poolsize=poolsize, connect_timeout=timeout)
            try:
                await check_reachable(redis, url, timeout, reactor)  # type: ignore[arg-type]
                registry = cls(redis, prefix, ttl)
                await registry.load_scripts()
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

    def add(self, user: str, session: str, node: str) -> defer.Deferred[bool]:
        """Record a session (and renew its node's lifetime); fires True if it is the user's
        first live session."""
        return defer.Deferred.fromCoroutine(
            self._bool(self._run("add", user, session, node, self.ttl_ms)))

    def remove(self, user: str, session: str) -> defer.Deferred[bool]:
        """Forget a session; fires True if it existed and the user has no live session left."""
        return defer.Deferred.fromCoroutine(self._bool(self._run("remove", user, session)))

    def locate(self, users: list[str]) -> defer.Deferred[dict[str, list[SessionRef]]]:
        """``{user: [SessionRef, ...]}`` for the given users with a live session."""
        async def run() -> dict[str, list[SessionRef]]:
            if not users:
                return {}
            reply = await self._run("locate", *users)
            found: dict[str, list[SessionRef]] = {}
            for user, flat in zip(users, reply):
                if flat:
                    found[user] = [SessionRef(session=flat[i], node=flat[i + 1])
                                   for i in range(0, len(flat), 2)]
            return found
        return defer.Deferred.fromCoroutine(run())

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
            return {flat[i]: bool(int(flat[i + 1])) for i in range(0, len(flat), 2)}
        return defer.Deferred.fromCoroutine(run())

    def close(self) -> defer.Deferred[None]:
        """Close the Redis connections."""
        return self.redis.disconnect().addCallback(lambda _: None)

    @staticmethod
    async def _bool(coro: Any) -> bool:
        return bool(int(await coro))
