"""DIM's store on Redis, for cluster mode: several nodes share one Redis.

Every write that must be atomic across nodes is one Lua script (loaded at connect, run with
EVALSHA): storing a message (recipient check, dedup on ``(sender, id)``, one seq per inbox, the
message and its inbox entries), acknowledging and reading.  Redis runs one script at a time, so
two nodes writing the same inbox never collide and seqs have no gaps.

Keys, all under a prefix (default ``dim:``), on ONE Redis instance (the scripts compute keys
from the prefix, so this is not meant for Redis Cluster):

- ``user:<name>``: hash ``pw``, ``ts``; ``names``: sorted set (score 0) for prefix search.
- ``revoked:<jti>``: a key that expires when the token does.
- ``mid``: the message-id counter; ``msg:<mid>``: hash ``m`` (the message as JSON),
  ``sender``, ``id``, ``seqs`` (JSON ``{user: seq}``), ``pa``/``pr`` (recipients that have not
  acked/read it yet), ``self`` (1 when the sender is among the recipients).
- ``dedup:<sender>``: hash client id -> mid.
- ``inbox:<user>``: a list of mids; the entry at index ``i`` has seq ``i + 1``, so the seq is
  the list length after RPUSH (the counter and the entry are one thing and cannot diverge).
- ``marks:<user>``: hash ``ack``, ``read``.

Durability.  "Durable" here means: written to Redis's append-only file and, when Redis runs
with ``appendfsync always``, fsynced before Redis answers, so it survives a restart of the
node and of Redis (Redis fsyncs everything written in one event-loop turn, then replies).
With ``appendfsync everysec`` (Redis's default) an acknowledged write may be lost if the Redis
*machine* crashes within about a second (a Redis process crash alone loses nothing, the data
is in the page cache).  Redis 7.0 has no ``WAITAOF`` (7.2+), so the store cannot wait for an
fsync itself: :func:`connect` reads the server's settings into :attr:`RedisStore.durability`
(``"fsync"``, ``"everysec"`` or ``"none"``) and, with ``require_fsync=True``, refuses a server
that would acknowledge a ``sent`` before it is on disk.
"""
from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlparse

import msgspec
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from dim.errors import Conflict, NotFound, Unavailable
from dim.store.interface import InboxEntry, IStore, Receipt, SendResult, StoredMessage

_encode_message = msgspec.json.Encoder().encode
_decode_message = msgspec.json.Decoder(StoredMessage).decode

#: A base-36 encoder in Lua, so that mids look the same as the other stores'.
_LUA_BASE36 = """
local function base36(n)
  local digits = '0123456789abcdefghijklmnopqrstuvwxyz'
  local out = ''
  repeat
    local r = n % 36
    out = string.sub(digits, r + 1, r + 1) .. out
    n = (n - r) / 36
  until n == 0
  return out
end
"""

#: ARGV: prefix, password hash, ts, user.  Returns 1 if created, 0 if the name is taken.
CREATE_USER = """
local p, user = ARGV[1], ARGV[4]
if redis.call('EXISTS', p .. 'user:' .. user) == 1 then return 0 end
redis.call('HSET', p .. 'user:' .. user, 'pw', ARGV[2], 'ts', ARGV[3])
redis.call('ZADD', p .. 'names', 0, user)
return 1
"""

#: ARGV: prefix, jti, expires (epoch seconds).  Keeps the later of two expiries.
REVOKE = """
local k = ARGV[1] .. 'revoked:' .. ARGV[2]
local expires = tonumber(ARGV[3])
local now = tonumber(redis.call('TIME')[1])
if expires <= now then expires = now + 1 end
local cur = redis.call('EXPIRETIME', k)
if cur < expires then redis.call('SET', k, '1', 'EXAT', expires) end
return 1
"""

#: ARGV: prefix, sender, client id, group ('' for none), message JSON with an empty mid as
#: its first field (the script splices the mid in), n, recipient 1..n.
#: Returns {0, message JSON, seqs JSON} when stored, {1, message JSON, seqs JSON} for a
#: duplicate, {-1, unknown user} when a user does not exist (nothing written).
STORE_MESSAGE = _LUA_BASE36 + """
local p, sender, cid = ARGV[1], ARGV[2], ARGV[3]
local known = redis.call('HGET', p .. 'dedup:' .. sender, cid)
if known then
  local k = p .. 'msg:' .. known
  return {1, redis.call('HGET', k, 'm'), redis.call('HGET', k, 'seqs')}
end
local n = tonumber(ARGV[6])
local users, recipients, seen = {sender}, {}, {[sender] = true}
local rseen = {}
for i = 1, n do
  local r = ARGV[6 + i]
  if not rseen[r] then rseen[r] = true; recipients[#recipients + 1] = r end
  if not seen[r] then seen[r] = true; users[#users + 1] = r end
end
for _, u in ipairs(users) do
  if redis.call('EXISTS', p .. 'user:' .. u) == 0 then return {-1, u} end
end
local mid = base36(redis.call('INCR', p .. 'mid'))
-- ARGV[5] starts with {"mid":"" (9 bytes, mid is the first field): splice the mid in
-- without re-encoding (cjson would round large numbers).
local mjson = '{"mid":"' .. mid .. '"' .. string.sub(ARGV[5], 10)
local seqs = {}
for _, u in ipairs(users) do
  seqs[u] = redis.call('RPUSH', p .. 'inbox:' .. u, mid)
end
local sjson = cjson.encode(seqs)
local selfr = 0
if rseen[sender] then selfr = 1 end
redis.call('HSET', p .. 'msg:' .. mid, 'm', mjson, 'sender', sender, 'id', cid,
           'seqs', sjson, 'pa', #recipients, 'pr', #recipients, 'self', selfr)
redis.call('HSET', p .. 'dedup:' .. sender, cid, mid)
return {0, mjson, sjson}
"""

#: The shared body of ack and read: move one mark of ARGV[2] (user) up to ARGV[3] and
#: decrement the matching pending counter of every newly covered message.
_LUA_ADVANCE = """
local function advance(p, user, seq, mark, counter, want_receipts)
  local inbox = p .. 'inbox:' .. user
  local marks = p .. 'marks:' .. user
  local old = tonumber(redis.call('HGET', marks, mark) or '0')
  local new = math.min(seq, redis.call('LLEN', inbox))
  local receipts = {}
  if new <= old then return receipts end
  redis.call('HSET', marks, mark, new)
  local mids = redis.call('LRANGE', inbox, old, new - 1)
  for i, mid in ipairs(mids) do
    local k = p .. 'msg:' .. mid
    local f = redis.call('HMGET', k, 'sender', 'id', 'self')
    if f[1] ~= user or f[3] == '1' then
      redis.call('HINCRBY', k, counter, -1)
    end
    if want_receipts and f[1] ~= user then
      receipts[#receipts + 1] = {mid, f[2], f[1], old + i}
    end
  end
  return receipts
end
"""

#: ARGV: prefix, user, seq.  Returns the receipts {{mid, id, sender, seq}, ...}.
ACK = _LUA_ADVANCE + """
return advance(ARGV[1], ARGV[2], tonumber(ARGV[3]), 'ack', 'pa', true)
"""

#: ARGV: prefix, user, seq.  Acks up to seq, then marks read; returns the read receipts.
READ = _LUA_ADVANCE + """
advance(ARGV[1], ARGV[2], tonumber(ARGV[3]), 'ack', 'pa', false)
return advance(ARGV[1], ARGV[2], tonumber(ARGV[3]), 'read', 'pr', true)
"""

#: ARGV: prefix, user, after, limit.  Returns {last_seq, {m, pa, pr}, ...}.
FETCH = """
local p, user = ARGV[1], ARGV[2]
local after, limit = tonumber(ARGV[3]), tonumber(ARGV[4])
local inbox = p .. 'inbox:' .. user
local out = {redis.call('LLEN', inbox)}
if limit <= 0 then return out end
if after < 0 then after = 0 end
local mids = redis.call('LRANGE', inbox, after, after + limit - 1)
for _, mid in ipairs(mids) do
  out[#out + 1] = redis.call('HMGET', p .. 'msg:' .. mid, 'm', 'pa', 'pr')
end
return out
"""

SCRIPTS = {
    "create_user": CREATE_USER,
    "revoke": REVOKE,
    "store_message": STORE_MESSAGE,
    "ack": ACK,
    "read": READ,
    "fetch": FETCH,
}


def parse_redis_url(url: str) -> tuple[str, int, int]:
    """``redis://host:port/db`` -> ``(host, port, db)`` (defaults 127.0.0.1, 6379, 0)."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", ""):
        raise ValueError(f"not a redis:// URL: {url!r}")
    db = int(parsed.path.strip("/") or 0)
    return parsed.hostname or "127.0.0.1", parsed.port or 6379, db


def open_redis(url: str, poolsize: int = 10, connect_timeout: float = 2.0) -> Any:
    """A lazy txredisapi connection pool to ``url`` (commands queue until it is connected).

    Numbers are not converted (user names like ``"42"`` stay strings).
    """
    import txredisapi  # imports the global reactor: only at run time, never at import time

    host, port, db = parse_redis_url(url)
    return txredisapi.lazyConnectionPool(host=host, port=port, dbid=db, poolsize=poolsize,
                                         connectTimeout=connect_timeout,
                                         convertNumbers=False)


async def check_reachable(redis: Any, url: str, timeout: float, clock: IReactorTime) -> None:
    """Fail with :class:`Unavailable` unless Redis answers PING within ``timeout``."""
    try:
        await defer.Deferred.fromCoroutine(_ping(redis)).addTimeout(timeout, clock)
    except defer.TimeoutError:
        raise Unavailable(f"Redis at {url} did not answer within {timeout} s") from None


async def _ping(redis: Any) -> None:
    await redis.ping()


@implementer(IStore)
class RedisStore:
    """An :class:`IStore` on Redis; build it with :func:`connect` (which loads the scripts).

    ``redis`` is a txredisapi connection (or lazy pool); ``prefix`` namespaces every key so
    that several DIM installations (or tests) can share one Redis.
    """

    def __init__(self, redis: Any, prefix: str = "dim:", durability: str = "unknown") -> None:
        self.redis = redis
        self.prefix = prefix
        #: ``"fsync"``, ``"everysec"``, ``"none"`` or ``"unknown"``: see the module docstring.
        self.durability = durability
        self._shas: dict[str, str] = {}
        #: sender -> a Deferred that fires when that sender's last store_message is done.
        self._tails: dict[str, defer.Deferred[None]] = {}
        self._closed: defer.Deferred[None] | None = None

    @classmethod
    def connect(cls, url: str = "redis://127.0.0.1:6379", prefix: str = "dim:",
                timeout: float = 2.0, require_fsync: bool = False, poolsize: int = 10,
                clock: IReactorTime | None = None) -> defer.Deferred[RedisStore]:
        """Connect to ``url``, load the scripts; fires with the store.

        Fails with :class:`dim.errors.Unavailable` if Redis does not answer within
        ``timeout`` seconds, or (``require_fsync``) if it does not fsync every write.
        """
        return defer.Deferred.fromCoroutine(
            cls._connect(url, prefix, timeout, require_fsync, poolsize, clock))

    @classmethod
    async def _connect(cls, url: str, prefix: str, timeout: float, require_fsync: bool,
                       poolsize: int, clock: IReactorTime | None) -> RedisStore:
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[assignment]
        redis = open_redis(url, poolsize=poolsize, connect_timeout=timeout)
        try:
            await check_reachable(redis, url, timeout, clock)
            store = cls(redis, prefix)
            store.durability = await store._read_durability()
            if require_fsync and store.durability != "fsync":
                raise Unavailable(
                    f"Redis at {url} does not fsync every write (durability "
                    f"{store.durability!r}); run it with appendonly yes, appendfsync always")
            await store.load_scripts()
        except BaseException:
            await redis.disconnect()
            raise
        return store

    async def _read_durability(self) -> str:
        """What an acknowledged write survives, from the server's AOF settings."""
        try:
            aof = await self.redis.execute_command("CONFIG", "GET", "appendonly")
            fsync = await self.redis.execute_command("CONFIG", "GET", "appendfsync")
        except Exception:
            return "unknown"  # CONFIG may be disabled on a managed Redis
        if dict(zip(aof[::2], aof[1::2])).get("appendonly") != "yes":
            return "none"
        return "fsync" if dict(zip(fsync[::2], fsync[1::2])).get("appendfsync") == "always" \
            else "everysec"

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script (again after a Redis restart flushed them)."""
        for name, body in SCRIPTS.items():
            self._shas[name] = await self.redis.script_load(body)

    async def _run(self, name: str, *args: Any) -> Any:
        """EVALSHA one script with the prefix as ARGV[1]; reload the scripts on NOSCRIPT."""
        import txredisapi

        argv = [self.prefix, *args]
        try:
            return await self.redis.evalsha(self._shas[name], [], argv)
        except txredisapi.ScriptDoesNotExist:
            await self.load_scripts()
            return await self.redis.evalsha(self._shas[name], [], argv)

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # -- users -----------------------------------------------------------------------------

    def create_user(self, user: str, password_hash: str, ts: int) -> defer.Deferred[None]:
        """Add a user; fails with Conflict if the name is taken."""
        async def run() -> None:
            if not await self._run("create_user", password_hash, ts, user):
                raise Conflict(f"user {user!r} exists")
        return defer.Deferred.fromCoroutine(run())

    def get_password_hash(self, user: str) -> defer.Deferred[str | None]:
        """The user's password hash, or None for an unknown user."""
        return self.redis.hget(self._key("user", user), "pw")

    def set_password_hash(self, user: str, password_hash: str) -> defer.Deferred[None]:
        """Replace the user's password hash; NotFound for an unknown user."""
        async def run() -> None:
            # Check, then set: users are never deleted, so the check cannot go stale.
            if not await self.redis.exists(self._key("user", user)):
                raise NotFound(f"no such user: {user}")
            await self.redis.hset(self._key("user", user), "pw", password_hash)
        return defer.Deferred.fromCoroutine(run())

    def user_exists(self, user: str) -> defer.Deferred[bool]:
        """Whether the user exists."""
        return self.redis.exists(self._key("user", user)).addCallback(bool)

    def list_users(self, prefix: str, limit: int) -> defer.Deferred[list[str]]:
        """User names starting with ``prefix``, in name order, at most ``limit``."""
        if limit <= 0:
            return defer.succeed([])
        low = b"[" + prefix.encode() if prefix else b"-"
        high = b"[" + prefix.encode() + b"\xff" if prefix else b"+"
        return self.redis.execute_command("ZRANGEBYLEX", self._key("names"), low, high,
                                          "LIMIT", 0, limit)

    # -- tokens ----------------------------------------------------------------------------

    def revoke_token(self, jti: str, expires: int) -> defer.Deferred[None]:
        """Mark a token id revoked until ``expires`` (seconds since the epoch).

        The key expires with the token (at least one second from now), so revocations do
        not pile up.
        """
        return defer.Deferred.fromCoroutine(self._none(self._run("revoke", jti, int(expires))))

    def is_revoked(self, jti: str) -> defer.Deferred[bool]:
        """Whether a token id was revoked (and has not expired since)."""
        return self.redis.exists(self._key("revoked", jti)).addCallback(bool)

    @staticmethod
    async def _none(coro: Any) -> None:
        await coro

    # -- messages --------------------------------------------------------------------------

    def store_message(self, sender: str, client_id: str, recipients: list[str],
                      group: str | None, body: str, kind: str, file: dict[str, Any] | None,
                      ts: int) -> defer.Deferred[SendResult]:
        """Store one message in the sender's inbox and every recipient's, in one script.

        Fires once Redis answered, which is durable in the sense of the module docstring.
        NotFound (nothing written) if the sender or a recipient does not exist.
        """
        to = recipients[0] if group is None and recipients else None
        draft = StoredMessage(mid="", id=client_id, sender=sender, ts=ts, to=to, group=group,
                              body=body, kind=kind, file=file)

        async def run() -> SendResult:
            # One sender's messages are stored in call order: a pool spreads commands over
            # several connections, so each call waits for the previous one of its sender.
            previous = self._tails.get(sender)
            done: defer.Deferred[None] = defer.Deferred()
            self._tails[sender] = done
            try:
                if previous is not None:
                    await previous
                return await self._store(sender, client_id, recipients, draft)
            finally:
                if self._tails.get(sender) is done:
                    del self._tails[sender]
                done.callback(None)
        return defer.Deferred.fromCoroutine(run())

    async def _store(self, sender: str, client_id: str, recipients: list[str],
                     draft: StoredMessage) -> SendResult:
        """Run the store script once and turn its reply into a SendResult."""
        reply = await self._run("store_message", sender, client_id, draft.group or "",
                                _encode_message(draft), len(recipients), *recipients)
        status = int(reply[0])
        if status < 0:
            raise NotFound(f"no such user: {reply[1]}", ref=client_id)
        message = _decode_message(reply[1])
        seqs = {u: int(s) for u, s in json.loads(reply[2]).items()}
        return SendResult(message=message, seqs=seqs, duplicate=status == 1)

    def fetch(self, user: str, after: int,
              limit: int) -> defer.Deferred[tuple[list[InboxEntry], int]]:
        """``(entries, last_seq)``: up to ``limit`` entries with seq > ``after``."""
        async def run() -> tuple[list[InboxEntry], int]:
            reply = await self._run("fetch", user, int(after), int(limit))
            start = max(int(after), 0)
            entries = [
                InboxEntry(seq=start + i + 1, message=_decode_message(m),
                           delivered=int(pa) <= 0, read=int(pr) <= 0)
                for i, (m, pa, pr) in enumerate(reply[1:])]
            return entries, int(reply[0])
        return defer.Deferred.fromCoroutine(run())

    def last_seq(self, user: str) -> defer.Deferred[int]:
        """The highest seq in the user's inbox (0 when empty or unknown)."""
        return self.redis.llen(self._key("inbox", user)).addCallback(int)

    def ack(self, user: str, seq: int) -> defer.Deferred[list[Receipt]]:
        """Acknowledge the user's inbox up to ``seq``; the receipts this newly makes."""
        return defer.Deferred.fromCoroutine(self._receipts("ack", user, seq))

    def read(self, user: str, seq: int) -> defer.Deferred[list[Receipt]]:
        """Mark the user's inbox read (and acked) up to ``seq``; the read receipts."""
        return defer.Deferred.fromCoroutine(self._receipts("read", user, seq))

    async def _receipts(self, script: str, user: str, seq: int) -> list[Receipt]:
        reply = await self._run(script, user, int(seq))
        return [Receipt(mid=mid, id=cid, sender=sender, seq=int(at))
                for mid, cid, sender, at in reply]

    def acked_seq(self, user: str) -> defer.Deferred[int]:
        """The highest seq the user acknowledged (0 when none)."""
        return self.redis.hget(self._key("marks", user), "ack").addCallback(
            lambda v: int(v) if v is not None else 0)

    def close(self) -> defer.Deferred[None]:
        """Close the connections (every acknowledged write is already in Redis); idempotent."""
        if self._closed is None:
            self._closed = self.redis.disconnect().addCallback(lambda _: None)
        result: defer.Deferred[None] = defer.Deferred()
        self._closed.addBoth(lambda r: (result.callback(None), r)[1])
        return result


def connect(url: str = "redis://127.0.0.1:6379", prefix: str = "dim:", timeout: float = 2.0,
            require_fsync: bool = False, poolsize: int = 10,
            clock: IReactorTime | None = None) -> defer.Deferred[RedisStore]:
    """Shorthand for :meth:`RedisStore.connect`."""
    return RedisStore.connect(url, prefix, timeout, require_fsync, poolsize, clock)
