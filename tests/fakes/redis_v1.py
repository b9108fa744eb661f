"""DIM's Redis store as it wrote data before conversations (schema 1), for migration tests.

The scripts below are the store's own from before per-conversation read state, file grants
and schema versions existed (commit 8180732, ``dim/store/redis.py``), kept verbatim: a test
writes users, messages, acks and reads with them exactly as a node of that version did, then
checks what :func:`dim.store.redis_schema.migrate` makes of the data.
"""
from __future__ import annotations

import json
from typing import Any

import msgspec

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

#: Stores one message: prefix, sender, client id, the message JSON with an empty mid as its
#: first field (the function splices the mid in), the id of the file the message points at
#: ('' for none: every inbox's user may then read it), the recipients (a Lua list).
#: Returns {0, message JSON, seqs} when stored, {1, message JSON, seqs} for a duplicate
#: (seqs: a table user -> seq), {-1, unknown user} when a user does not exist.  Every check
#: comes before the first write, so a failed store writes nothing.
_LUA_STORE = _LUA_BASE36 + """
local function store(p, sender, cid, draft, fid, rcpts)
  local known = redis.call('HGET', p .. 'dedup:' .. sender, cid)
  if known then
    local k = p .. 'msg:' .. known
    local f = redis.call('HMGET', k, 'm', 'seqs')
    return {1, f[1], cjson.decode(f[2])}
  end
  local users, recipients, seen = {sender}, {}, {[sender] = true}
  local rseen = {}
  for _, r in ipairs(rcpts) do
    if not rseen[r] then rseen[r] = true; recipients[#recipients + 1] = r end
    if not seen[r] then seen[r] = true; users[#users + 1] = r end
  end
  for _, u in ipairs(users) do
    if redis.call('EXISTS', p .. 'user:' .. u) == 0 then return {-1, u} end
  end
  local mid = base36(redis.call('INCR', p .. 'mid'))
  -- draft starts with {"mid":"" (9 bytes, mid is the first field): splice the mid in
  -- without re-encoding (cjson would round large numbers).
  local mjson = '{"mid":"' .. mid .. '"' .. string.sub(draft, 10)
  local seqs = {}
  for _, u in ipairs(users) do
    seqs[u] = redis.call('RPUSH', p .. 'inbox:' .. u, mid)
  end
  if fid ~= '' then redis.call('SADD', p .. 'readers:' .. fid, unpack(users)) end
  local selfr = 0
  if rseen[sender] then selfr = 1 end
  redis.call('HSET', p .. 'msg:' .. mid, 'm', mjson, 'sender', sender, 'id', cid,
             'seqs', cjson.encode(seqs), 'pa', #recipients, 'pr', #recipients, 'self', selfr)
  redis.call('HSET', p .. 'dedup:' .. sender, cid, mid)
  return {0, mjson, seqs}
end
"""

#: The shared body of ack and read: move one mark of ``user`` up to ``seq`` and decrement
#: the matching pending counter of every newly covered message.
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

#: The hot path in one script call: ARGV: prefix, a msgpack list of operations,
#: each
#: ``["s", sender, client id, draft message JSON, file id, [recipient...]]`` (store),
#: ``["a", user, seq]`` (ack), ``["r", user, seq]`` (read: ack, then mark read) or
#: ``["n", user]`` (the inbox's last seq), run in list order.  Returns JSON
#: ``[session version, results]``: the session registry's version counter (see
#: :mod:`dim.cluster.sessions`) and one result per operation: the store function's, the
#: receipts ``[[mid, id, sender, seq], ...]`` (``{}`` when none) of an ack or read, the last
#: seq, or ``{"e": message}`` when that operation raised (the others still run: each
#: operation checks everything before its first write).
BATCH = _LUA_STORE + _LUA_ADVANCE + """
local function run(p, op)
  local kind = op[1]
  if kind == 's' then return store(p, op[2], op[3], op[4], op[5], op[6]) end
  if kind == 'a' then return advance(p, op[2], tonumber(op[3]), 'ack', 'pa', true) end
  if kind == 'n' then return redis.call('LLEN', p .. 'inbox:' .. op[2]) end
  if kind == 'r' then
    advance(p, op[2], tonumber(op[3]), 'ack', 'pa', false)
    return advance(p, op[2], tonumber(op[3]), 'read', 'pr', true)
  end
  error('unknown operation ' .. tostring(kind))
end
local p = ARGV[1]
local out = {}
for i, op in ipairs(cmsgpack.unpack(ARGV[2])) do
  local ok, res = pcall(run, p, op)
  if ok then
    out[i] = res
  else
    if type(res) == 'table' then res = res.err end
    out[i] = {e = tostring(res)}
  end
end
return cjson.encode({tonumber(redis.call('GET', p .. 'sessver') or '0'), out})
"""


class LegacyRedisWriter:
    """Writes data the way the store did at schema 1, through its scripts."""

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    async def create_user(self, user: str) -> None:
        """A user, with a password hash no test checks."""
        await self.redis.eval(CREATE_USER, [], [self.prefix, "hash", 1, user])

    async def batch(self, *ops: list[Any]) -> list[Any]:
        """Run operations of that version's batch script; their results."""
        blob = msgspec.msgpack.encode(list(ops))
        reply = await self.redis.eval(BATCH, [], [self.prefix, blob])
        return list(json.loads(reply)[1])

    async def send(self, sender: str, cid: str, recipients: list[str], body: str,
                   group: str | None = None, file: dict[str, Any] | None = None,
                   kind: str = "text") -> str:
        """Store one message as that version did (its JSON without the newer fields); its
        mid."""
        to = recipients[0] if group is None and recipients else None
        draft = json.dumps({"mid": "", "id": cid, "sender": sender, "ts": 1_700_000_000_000,
                            "to": to, "group": group, "body": body, "kind": kind,
                            "file": file}, ensure_ascii=False, separators=(",", ":"))
        file_id = file["id"] if file else ""
        result = (await self.batch(["s", sender, cid, draft, file_id, recipients]))[0]
        assert result[0] == 0, result
        return str(json.loads(result[1])["mid"])

    async def ack(self, user: str, seq: int) -> None:
        """Acknowledge the inbox up to ``seq``."""
        await self.batch(["a", user, seq])

    async def read(self, user: str, seq: int) -> None:
        """Mark the whole inbox read up to ``seq`` (that version had no other read)."""
        await self.batch(["r", user, seq])
