"""DIM's store on Redis, for cluster mode: several nodes share one Redis.

Every write that must be atomic across nodes is done by a Lua script (loaded at connect, run
with EVALSHA): storing a message (recipient check, dedup on ``(sender, id)``, one seq per
inbox, the message and its inbox entries), acknowledging and reading.  Redis runs one script
at a time, so two nodes writing the same inbox never collide and seqs have no gaps.

The hot path (``store_message``, ``ack``, ``read``, ``last_seq``) is batched: every such call
made in one reactor turn goes to Redis in ONE call of the script :data:`BATCH`, which runs
them in call order and answers each on its own (:class:`ScriptBatcher`).  One batch is in
flight at a time, so batches, and so one sender's messages, are stored in call order.

Keys, all under a prefix (default ``dim:``), on ONE Redis instance (the scripts compute keys
from the prefix, so this is not meant for Redis Cluster):

- ``user:<name>``: hash ``pw``, ``ts``; ``names``: sorted set (score 0) for prefix search.
- ``revoked:<jti>``: a key that expires when the token does.
- ``tokens:<name>``: hash ``epoch``, ``kept``: the user's token epoch (password changes).
- ``mid``: the message-id counter; ``msg:<mid>``: hash ``m`` (the message as JSON),
  ``sender``, ``id``, ``seqs`` (JSON ``{user: seq}``), ``pa``/``pr`` (recipients that have not
  acked/read it yet), ``self`` (1 when the sender is among the recipients).
- ``dedup:<sender>``: hash client id -> mid.
- ``inbox:<user>``: a list of mids; the entry at index ``i`` has seq ``i + 1``, so the seq is
  the list length after RPUSH (the counter and the entry are one thing and cannot diverge).
- ``marks:<user>``: hash ``ack``, ``read``.
- Conversations (``<conv>`` as :func:`dim.store.interface.conversation_of` names it; the
  message hash keeps ``cv``, the group's ``#id`` or the direct message's addressee, and
  ``cu``, 1 when the message counts as unread): ``convs:<user>``, sorted set conv -> its
  newest seq; ``conv:<user>:<conv>``: hash ``read`` (the read pointer), ``unread``;
  ``cseqs:<user>:<conv>``: sorted set of the conversation's seqs; ``cment:<user>:<conv>``:
  sorted set of the seqs of entries that mention the user.
- ``profile:<user>``: hash ``name``, ``status``, ``avatar`` (absent: the default profile);
  ``folds``: hash user -> case-folded display name (for search); ``avatars``: hash file id ->
  how many profiles show it.
- ``contacts:<user>``: hash other user -> ``out``, ``in`` or ``mutual``.
- ``gid``: the group counter; ``group:<id>``: hash ``name``, ``owner``, ``ts``, ``number``
  (the counter value), ``joins`` (a join counter); ``members:<id>``: sorted set of members
  scored by join order; ``groups:<user>``: sorted set of group ids scored by ``number``.
- ``schema``: the version of this layout (see :mod:`dim.store.redis_schema`, which migrates
  older data at node start; ``migrate:conv`` and ``migrate:grants`` are its progress).
- ``file:<id>``: hash ``owner``, ``r`` (the FileRecord as JSON); ``readers:<id>``: set of the
  users whose inbox holds a message, not recalled, pointing at the file (written by the
  message script); ``grants:<id>``: hash user -> how many such messages, so that a recall
  takes the file away only from users it was the last message to give it (the message hash
  of a message counted there has ``g`` = 1).

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

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlparse

import msgspec
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure
from zope.interface import implementer

from dim.errors import (BadRequest, Conflict, DimError, Forbidden, Internal, NotFound,
                        TooLarge, Unavailable)
from dim.runtime import redact_url
from dim.store.interface import (UNREAD_KINDS, ChangeOp, Contact, Conversation, FileRecord,
                                 Group, InboxEntry, IStore, Profile, Receipt, SendResult,
                                 StoredMessage, StoreOp, apply_each, found_by)

_encode_message = msgspec.json.Encoder().encode
_decode_message = msgspec.json.Decoder(StoredMessage).decode
_decode_file = msgspec.json.Decoder(FileRecord).decode

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

#: Stores one message: prefix, sender, client id, the message JSON with an empty mid as its
#: first field (the function splices the mid in), the id of the file the message points at
#: ('' for none: every inbox's user may then read it), the recipients (a Lua list).
#: Returns {0, message JSON, seqs} when stored, {1, message JSON, seqs} for a duplicate
#: (seqs: a table user -> seq), {-1, unknown user} when a user does not exist.  Every check
#: comes before the first write, so a failed store writes nothing.
_LUA_STORE = _LUA_BASE36 + """
local function conv_of(cv, sender, u)
  if string.sub(cv, 1, 1) == '#' or sender == u then return cv end
  return sender
end
local function store(p, sender, cid, draft, fid, rcpts, cv, cu, reply, mentions)
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
  if reply[1] then
    local f = redis.call('HMGET', p .. 'msg:' .. reply[1], 'seqs', 'sender', 'cv')
    if not f[1] or cjson.decode(f[1])[sender] == nil
        or conv_of(f[3] or '', f[2], sender) ~= cv then
      return {-2, reply[1]}
    end
  end
  local mentioned = {}
  for _, u in ipairs(mentions or {}) do mentioned[u] = true end
  local mid = base36(redis.call('INCR', p .. 'mid'))
  -- draft starts with {"mid":"" (9 bytes, mid is the first field): splice the mid in
  -- without re-encoding (cjson would round large numbers).
  local mjson = '{"mid":"' .. mid .. '"' .. string.sub(draft, 10)
  local seqs = {}
  for _, u in ipairs(users) do
    local seq = redis.call('RPUSH', p .. 'inbox:' .. u, mid)
    seqs[u] = seq
    local c = conv_of(cv, sender, u)
    redis.call('ZADD', p .. 'convs:' .. u, seq, c)
    redis.call('ZADD', p .. 'cseqs:' .. u .. ':' .. c, seq, seq)
    if cu == '1' and u ~= sender then
      redis.call('HINCRBY', p .. 'conv:' .. u .. ':' .. c, 'unread', 1)
      if mentioned[u] then
        redis.call('ZADD', p .. 'cment:' .. u .. ':' .. c, seq, seq)
      end
    end
  end
  if fid ~= '' then
    redis.call('SADD', p .. 'readers:' .. fid, unpack(users))
    for _, u in ipairs(users) do redis.call('HINCRBY', p .. 'grants:' .. fid, u, 1) end
  end
  local selfr = 0
  if rseen[sender] then selfr = 1 end
  redis.call('HSET', p .. 'msg:' .. mid, 'm', mjson, 'sender', sender, 'id', cid,
             'seqs', cjson.encode(seqs), 'pa', #recipients, 'pr', #recipients, 'self', selfr,
             'cv', cv, 'cu', cu, 'g', 1)
  redis.call('HSET', p .. 'dedup:' .. sender, cid, mid)
  return {0, mjson, seqs}
end
"""

#: The shared body of ack and read: move one mark of ``user`` up to ``seq`` and decrement
#: the matching pending counter of every newly covered message that no conversation read
#: covered (those were acknowledged and read then).  A read also lowers the unread counts
#: and moves the read pointer of every conversation it covers.
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
  local creads = {}
  for i, mid in ipairs(mids) do
    local k = p .. 'msg:' .. mid
    local f = redis.call('HMGET', k, 'sender', 'id', 'self', 'cv', 'cu')
    local c = conv_of(f[4] or '', f[1], user)
    local ck = p .. 'conv:' .. user .. ':' .. c
    if creads[c] == nil then
      creads[c] = tonumber(redis.call('HGET', ck, 'read') or '0')
    end
    if creads[c] < old + i then
      if f[1] ~= user or f[3] == '1' then
        redis.call('HINCRBY', k, counter, -1)
      end
      if mark == 'read' and f[1] ~= user and f[5] == '1' then
        redis.call('HINCRBY', ck, 'unread', -1)
      end
      if want_receipts and f[1] ~= user then
        receipts[#receipts + 1] = {mid, f[2], f[1], old + i}
      end
    end
  end
  if mark == 'read' then
    for c, r in pairs(creads) do
      if r < new then redis.call('HSET', p .. 'conv:' .. user .. ':' .. c, 'read', new) end
    end
  end
  return receipts
end

-- A recalled message no longer gives its users the file: one grant less each, and a user
-- left with none (no other message of theirs points at the file) is no longer a reader.
local function ungrant(p, fid, seqs)
  local grants, readers = p .. 'grants:' .. fid, p .. 'readers:' .. fid
  for u, _ in pairs(seqs) do
    if redis.call('HINCRBY', grants, u, -1) <= 0 then
      redis.call('HDEL', grants, u)
      redis.call('SREM', readers, u)
    end
  end
end

-- An edit, recall or reaction (see IStore.change_message): {0 or 1, entry JSON, seqs} as
-- store returns, {-3} when ref is not in the sender's inbox, {-4, why} when forbidden.
local function change(p, sender, cid, kind, ref, body, on, ts)
  local known = redis.call('HGET', p .. 'dedup:' .. sender, cid)
  if known then return store(p, sender, cid, '', '', {}, '', '0', {}, {}) end
  local k = p .. 'msg:' .. ref
  local f = redis.call('HMGET', k, 'seqs', 'm')
  if not f[1] then return {-3} end
  local seqs = cjson.decode(f[1])
  if seqs[sender] == nil then return {-3} end
  local m = cjson.decode(f[2])
  if m.recalled then return {-4, 'the message was recalled'} end
  if m.kind == 'edit' or m.kind == 'recall' or m.kind == 'reaction' then
    return {-4, 'an edit, recall or reaction cannot be changed'}
  end
  if kind ~= 'reaction' and m.sender ~= sender then
    return {-4, 'only its sender may ' .. kind .. ' a message'}
  end
  if kind == 'edit' and m.kind ~= 'text' then
    return {-4, 'only a text message can be edited'}
  end
  local holders = {}
  for u, _ in pairs(seqs) do
    if u ~= sender then holders[#holders + 1] = u end
  end
  table.sort(holders)
  local group, to, cv = 'null', 'null', nil
  if type(m.group) == 'string' then
    group = cjson.encode(m.group)
    cv = '#' .. m.group
  else
    cv = holders[1] or sender
    to = cjson.encode(cv)
  end
  local extra = ''
  if kind == 'reaction' then extra = ',"on":' .. on end
  local draft = '{"mid":""' .. ',"id":' .. cjson.encode(cid) .. ',"sender":'
    .. cjson.encode(sender) .. ',"ts":' .. ts .. ',"to":' .. to .. ',"group":' .. group
    .. ',"body":' .. cjson.encode(body) .. ',"kind":"' .. kind .. '","ref":'
    .. cjson.encode(ref) .. extra .. '}'
  local result = store(p, sender, cid, draft, '', holders, cv, '0', {}, {})
  if kind == 'edit' then
    m.body = body
    m.edited = tonumber(ts)
  elseif kind == 'recall' then
    if type(m.file) == 'table' and type(m.file.id) == 'string' then
      ungrant(p, m.file.id, seqs)
    end
    m.body = ''
    m.file = cjson.null
    m.recalled = true
  else
    local reactions = m.reactions
    if type(reactions) ~= 'table' then reactions = {} end
    local users = reactions[body] or {}
    local kept, found = {}, false
    for _, u in ipairs(users) do
      if u == sender then found = true end
      if u ~= sender or on == 'true' then kept[#kept + 1] = u end
    end
    if on == 'true' and not found then kept[#kept + 1] = sender end
    if #kept > 0 then reactions[body] = kept else reactions[body] = nil end
    if next(reactions) == nil then m.reactions = cjson.null else m.reactions = reactions end
  end
  redis.call('HSET', k, 'm', cjson.encode(m))
  return result
end

-- Read one conversation up to seq: {delivered receipts, read receipts, new pointer or 0}.
local function read_conv(p, user, c, seq)
  local last = redis.call('ZSCORE', p .. 'convs:' .. user, c)
  if not last then return {{}, {}, 0} end
  local ck = p .. 'conv:' .. user .. ':' .. c
  local old = tonumber(redis.call('HGET', ck, 'read') or '0')
  local new = math.min(seq, tonumber(last))
  if new <= old then return {{}, {}, 0} end
  local acked = tonumber(redis.call('HGET', p .. 'marks:' .. user, 'ack') or '0')
  local delivered, read = {}, {}
  local inbox = p .. 'inbox:' .. user
  for _, at in ipairs(redis.call('ZRANGEBYSCORE', p .. 'cseqs:' .. user .. ':' .. c,
                                 '(' .. old, new)) do
    local s = tonumber(at)
    local mid = redis.call('LINDEX', inbox, s - 1)
    local k = p .. 'msg:' .. mid
    local f = redis.call('HMGET', k, 'sender', 'id', 'self', 'cu')
    if f[1] ~= user or f[3] == '1' then
      redis.call('HINCRBY', k, 'pr', -1)
      if s > acked then redis.call('HINCRBY', k, 'pa', -1) end
    end
    if f[1] ~= user then
      if f[4] == '1' then redis.call('HINCRBY', ck, 'unread', -1) end
      local receipt = {mid, f[2], f[1], s}
      if s > acked then delivered[#delivered + 1] = receipt end
      read[#read + 1] = receipt
    end
  end
  redis.call('HSET', ck, 'read', new)
  return {delivered, read, new}
end
"""

#: The hot path in one script call: ARGV: prefix, a msgpack list of operations, each
#: ``["s", sender, client id, draft message JSON, file id, [recipient...], cv, cu, [reply
#: mid] or [], [mentioned user...]]`` (store; ``cv`` and ``cu`` as the message hash keeps
#: them), ``["c", user, conv, seq]`` (read one
#: conversation),
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
  if kind == 's' then
    return store(p, op[2], op[3], op[4], op[5], op[6], op[7], op[8], op[9], op[10])
  end
  if kind == 'c' then return read_conv(p, op[2], op[3], tonumber(op[4])) end
  if kind == 'x' then
    return change(p, op[2], op[3], op[4], op[5], op[6], op[7], op[8])
  end
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

#: ARGV: prefix, user, limit.  Returns {{conv, newest seq, read, unread, mentions, m, pa,
#: pr}, ...}, most recent first.
CONVERSATIONS = """
local p, user = ARGV[1], ARGV[2]
local out = {}
local convs = redis.call('ZREVRANGE', p .. 'convs:' .. user, 0, tonumber(ARGV[3]) - 1,
                         'WITHSCORES')
for i = 1, #convs, 2 do
  local c, last = convs[i], tonumber(convs[i + 1])
  local f = redis.call('HMGET', p .. 'conv:' .. user .. ':' .. c, 'read', 'unread')
  local mid = redis.call('LINDEX', p .. 'inbox:' .. user, last - 1)
  local m = redis.call('HMGET', p .. 'msg:' .. mid, 'm', 'pa', 'pr')
  local mentions = redis.call('ZCOUNT', p .. 'cment:' .. user .. ':' .. c,
                              '(' .. (f[1] or '0'), '+inf')
  out[#out + 1] = {c, last, f[1] or '0', f[2] or '0', mentions, m[1], m[2], m[3]}
end
return out
"""

#: ARGV: prefix, user, conv, after, before ('+inf' for none), limit, 'a' (oldest first)
#: or 'd' (newest first).  Returns {{seq, m, pa, pr}, ...}: at most limit + 1 entries.
FETCH_CONVERSATION = """
local p, user = ARGV[1], ARGV[2]
local key = p .. 'cseqs:' .. user .. ':' .. ARGV[3]
local n = tonumber(ARGV[6]) + 1
local seqs
if ARGV[7] == 'a' then
  seqs = redis.call('ZRANGEBYSCORE', key, '(' .. ARGV[4], '(' .. ARGV[5], 'LIMIT', 0, n)
else
  seqs = redis.call('ZREVRANGEBYSCORE', key, '(' .. ARGV[5], '(' .. ARGV[4], 'LIMIT', 0, n)
end
local inbox = p .. 'inbox:' .. user
local out = {}
for _, at in ipairs(seqs) do
  local mid = redis.call('LINDEX', inbox, tonumber(at) - 1)
  local m = redis.call('HMGET', p .. 'msg:' .. mid, 'm', 'pa', 'pr')
  out[#out + 1] = {at, m[1], m[2], m[3]}
end
return out
"""

#: A profile in Lua: {user, display name, status, avatar or false}; a user without a
#: ``profile:`` hash has the default profile.
_LUA_PROFILE = """
local function profile(p, u)
  local f = redis.call('HMGET', p .. 'profile:' .. u, 'name', 'status', 'avatar')
  return {u, f[1] or u, f[2] or '', f[3] or false}
end
"""

#: ARGV: prefix, user.  Returns the profile, or {} for an unknown user.
GET_PROFILE = _LUA_PROFILE + """
if redis.call('EXISTS', ARGV[1] .. 'user:' .. ARGV[2]) == 0 then return {} end
return profile(ARGV[1], ARGV[2])
"""

#: ARGV: prefix, user, then 1/0 and the new name, its case-folded form, 1/0 and the new
#: status, 0 (keep) / 1 (set) / 2 (clear) and the new avatar.  Keeps ``avatars`` (file id ->
#: how many profiles show it) and ``folds`` (user -> case-folded display name) in step.
#: Returns the new profile, or {} for an unknown user (nothing written).
UPDATE_PROFILE = _LUA_PROFILE + """
local p, u = ARGV[1], ARGV[2]
if redis.call('EXISTS', p .. 'user:' .. u) == 0 then return {} end
local k = p .. 'profile:' .. u
if ARGV[3] == '1' then
  redis.call('HSET', k, 'name', ARGV[4])
  redis.call('HSET', p .. 'folds', u, ARGV[5])
end
if ARGV[6] == '1' then redis.call('HSET', k, 'status', ARGV[7]) end
if ARGV[8] ~= '0' then
  local old = redis.call('HGET', k, 'avatar')
  local new = false
  if ARGV[8] == '1' then new = ARGV[9] end
  if old ~= new then
    if old then
      if redis.call('HINCRBY', p .. 'avatars', old, -1) <= 0 then
        redis.call('HDEL', p .. 'avatars', old)
      end
    end
    if new then
      redis.call('HSET', k, 'avatar', new)
      redis.call('HINCRBY', p .. 'avatars', new, 1)
    else
      redis.call('HDEL', k, 'avatar')
    end
  end
end
return profile(p, u)
"""

#: ARGV: prefix, case-folded text, where to start in ``names`` (a ZRANGEBYLEX bound), page
#: size, how many more profiles are wanted.  Reads one page of user names (ASCII, so Lua's
#: lower() folds them) and their folded display names.  Returns {the bound to go on from, or
#: '' when done, profile...}.
SEARCH_PAGE = _LUA_PROFILE + """
local p, text, page, want = ARGV[1], ARGV[2], tonumber(ARGV[4]), tonumber(ARGV[5])
local names = redis.call('ZRANGEBYLEX', p .. 'names', ARGV[3], '+', 'LIMIT', 0, page)
local out = {''}
if #names == 0 then return out end
local folds = redis.call('HMGET', p .. 'folds', unpack(names))
for i, u in ipairs(names) do
  if string.find(string.lower(u), text, 1, true)
      or (folds[i] and string.find(folds[i], text, 1, true)) then
    out[#out + 1] = profile(p, u)
    if #out > want then return out end
  end
end
if #names == page then out[1] = '(' .. names[#names] end
return out
"""

#: ARGV: prefix, user, other.  Returns {1, pending} (pending: out, in or mutual), or
#: {0, the unknown user} (nothing written).
REQUEST_CONTACT = """
local p, u, o = ARGV[1], ARGV[2], ARGV[3]
for _, name in ipairs({u, o}) do
  if redis.call('EXISTS', p .. 'user:' .. name) == 0 then return {0, name} end
end
local mine, theirs = p .. 'contacts:' .. u, p .. 'contacts:' .. o
local cur = redis.call('HGET', mine, o)
if not cur then
  redis.call('HSET', mine, o, 'out')
  redis.call('HSET', theirs, u, 'in')
  return {1, 'out'}
end
if cur == 'in' then
  redis.call('HSET', mine, o, 'mutual')
  redis.call('HSET', theirs, u, 'mutual')
  return {1, 'mutual'}
end
return {1, cur}
"""

#: ARGV: prefix, user, other.  Returns how many of the two entries were removed.
REMOVE_CONTACT = """
local p, u, o = ARGV[1], ARGV[2], ARGV[3]
return redis.call('HDEL', p .. 'contacts:' .. u, o)
     + redis.call('HDEL', p .. 'contacts:' .. o, u)
"""

#: A group in Lua: {id, name, owner, member...} (members in join order), or false.
_LUA_GROUP = """
local function group(p, g)
  local f = redis.call('HMGET', p .. 'group:' .. g, 'name', 'owner')
  if not f[1] then return false end
  local out = {g, f[1], f[2]}
  for _, m in ipairs(redis.call('ZRANGE', p .. 'members:' .. g, 0, -1)) do
    out[#out + 1] = m
  end
  return out
end
local function join(p, g, u, number)
  local at = redis.call('HINCRBY', p .. 'group:' .. g, 'joins', 1)
  redis.call('ZADD', p .. 'members:' .. g, at, u)
  redis.call('ZADD', p .. 'groups:' .. u, number, g)
end
"""

#: ARGV: prefix, name, ts, owner, member... (owner first, no duplicates).  Returns {1, group}
#: or {0, the first unknown user} (nothing written).
CREATE_GROUP = _LUA_BASE36 + _LUA_GROUP + """
local p = ARGV[1]
for i = 4, #ARGV do
  if redis.call('EXISTS', p .. 'user:' .. ARGV[i]) == 0 then return {0, ARGV[i]} end
end
local number = redis.call('INCR', p .. 'gid')
local g = base36(number)
redis.call('HSET', p .. 'group:' .. g, 'name', ARGV[2], 'owner', ARGV[4], 'ts', ARGV[3],
           'number', number, 'joins', 0)
for i = 4, #ARGV do join(p, g, ARGV[i], number) end
return {1, group(p, g)}
"""

#: ARGV: prefix, group id.  Returns the group, or false.
GET_GROUP = _LUA_GROUP + """
return group(ARGV[1], ARGV[2])
"""

#: ARGV: prefix, user.  Returns every group of the user, oldest first.
GROUPS_OF = _LUA_GROUP + """
local out = {}
for _, g in ipairs(redis.call('ZRANGE', ARGV[1] .. 'groups:' .. ARGV[2], 0, -1)) do
  local found = group(ARGV[1], g)
  if found then out[#out + 1] = found end
end
return out
"""

#: ARGV: prefix, group id, name.  Returns the group, or false if there is none.
RENAME_GROUP = _LUA_GROUP + """
local p, g = ARGV[1], ARGV[2]
if redis.call('EXISTS', p .. 'group:' .. g) == 0 then return false end
redis.call('HSET', p .. 'group:' .. g, 'name', ARGV[3])
return group(p, g)
"""

#: ARGV: prefix, group id, limit, user... (no duplicates).  Returns {1, group};
#: {0, 'group'} for an unknown group, {0, 'user', name} for an unknown user, {0, 'limit'}
#: when the group would pass the limit (nothing written in every failure).
ADD_MEMBERS = _LUA_GROUP + """
local p, g, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local number = redis.call('HGET', p .. 'group:' .. g, 'number')
if not number then return {0, 'group'} end
local members = p .. 'members:' .. g
local new = {}
for i = 4, #ARGV do
  local u = ARGV[i]
  if redis.call('EXISTS', p .. 'user:' .. u) == 0 then return {0, 'user', u} end
  if not redis.call('ZSCORE', members, u) then new[#new + 1] = u end
end
if redis.call('ZCARD', members) + #new > limit then return {0, 'limit'} end
for _, u in ipairs(new) do join(p, g, u, number) end
return {1, group(p, g)}
"""

#: ARGV: prefix, group id, user.  Hands the group to the longest-standing member when the
#: owner leaves and deletes it when no member remains.  Returns {1, group}, {1} when deleted,
#: {0, 'group'} for an unknown group or {0, 'member'} when the user is not a member.
REMOVE_MEMBER = _LUA_GROUP + """
local p, g, u = ARGV[1], ARGV[2], ARGV[3]
local k, members = p .. 'group:' .. g, p .. 'members:' .. g
if redis.call('EXISTS', k) == 0 then return {0, 'group'} end
if redis.call('ZREM', members, u) == 0 then return {0, 'member'} end
redis.call('ZREM', p .. 'groups:' .. u, g)
local first = redis.call('ZRANGE', members, 0, 0)[1]
if not first then
  redis.call('DEL', k, members)
  return {1}
end
if redis.call('HGET', k, 'owner') == u then redis.call('HSET', k, 'owner', first) end
return {1, group(p, g)}
"""

#: ARGV: prefix, user, file id.  1 if the user uploaded the file, received it in a message,
#: or it is some profile's avatar; else 0.
MAY_READ_FILE = """
local p, u, f = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', p .. 'file:' .. f, 'owner') == u then return 1 end
if redis.call('SISMEMBER', p .. 'readers:' .. f, u) == 1 then return 1 end
if redis.call('HEXISTS', p .. 'avatars', f) == 1 then return 1 end
return 0
"""

#: ARGV: prefix, user, token id to keep.  A new token epoch; returns it.
BUMP_TOKENS = """
local k = ARGV[1] .. 'tokens:' .. ARGV[2]
local epoch = redis.call('HINCRBY', k, 'epoch', 1)
redis.call('HSET', k, 'kept', ARGV[3])
return epoch
"""

SCRIPTS = {
    "create_user": CREATE_USER,
    "bump_tokens": BUMP_TOKENS,
    "revoke": REVOKE,
    "batch": BATCH,
    "fetch": FETCH,
    "conversations": CONVERSATIONS,
    "fetch_conversation": FETCH_CONVERSATION,
    "get_profile": GET_PROFILE,
    "update_profile": UPDATE_PROFILE,
    "search_page": SEARCH_PAGE,
    "request_contact": REQUEST_CONTACT,
    "remove_contact": REMOVE_CONTACT,
    "create_group": CREATE_GROUP,
    "get_group": GET_GROUP,
    "groups_of": GROUPS_OF,
    "rename_group": RENAME_GROUP,
    "add_members": ADD_MEMBERS,
    "remove_member": REMOVE_MEMBER,
    "may_read_file": MAY_READ_FILE,
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

    A password in the URL (``redis://:PASSWORD@host:port``, or ``redis://USER:PASSWORD@...``
    for an ACL user) is sent with AUTH on every connection.  Numbers are not converted (user
    names like ``"42"`` stay strings).
    """
    import txredisapi  # imports the global reactor: only at run time, never at import time

    host, port, db = parse_redis_url(url)
    return txredisapi.lazyConnectionPool(host=host, port=port, dbid=db, poolsize=poolsize,
                                         connectTimeout=connect_timeout,
                                         convertNumbers=False, password=redis_password(url),
                                         username=redis_username(url))


def redis_username(url: str) -> str | None:
    """The ACL user of ``redis://USER:PASSWORD@host:port/db`` (percent-decoded), or None."""
    parsed = urlparse(url)
    return unquote(parsed.username) if parsed.username else None


def redis_password(url: str) -> str | None:
    """The password of ``redis://:PASSWORD@host:port/db`` (percent-decoded), or None."""
    password = urlparse(url).password
    return unquote(password) if password else None



async def check_credentials(url: str, timeout: float) -> None:
    """Log in to Redis once, outside any pool, when ``url`` carries credentials: fail with
    :class:`Unavailable` naming the refusal (a wrong password or user) at once, where a pool
    would keep retrying and only time out.  Other failures are left to
    :func:`check_reachable`."""
    password = redis_password(url)
    if password is None:
        return
    import txredisapi

    host, port, db = parse_redis_url(url)
    try:
        conn = await txredisapi.Connection(host, port, dbid=db, password=password,
                                           username=redis_username(url), reconnect=False,
                                           connectTimeout=timeout, replyTimeout=timeout)
    except Exception as e:
        text = str(e)
        if any(word in text for word in ("WRONGPASS", "NOAUTH", "auth")):
            raise Unavailable(f"Redis at {redact_url(url)} refused DIM's credentials: "
                              f"{text}") from None
        return
    await conn.disconnect()


def open_redis_subscriber(url: str, channel: str, on_subscribed: Callable[[], Any],
                          on_message: Callable[[str], Any], on_lost: Callable[[], Any],
                          connect_timeout: float = 2.0, *, reactor: Any) -> Any:
    """A started ClientService holding one connection to ``url`` subscribed to ``channel``.

    Calls ``on_subscribed()`` once each (re)connection is subscribed, ``on_message(text)`` for
    every message, ``on_lost()`` when the connection goes; the service connects again, with
    a short backoff, whenever the connection is lost.
    """
    from twisted.application.internet import ClientService, backoffPolicy
    from twisted.internet.endpoints import HostnameEndpoint

    address = parse_redis_url(url)
    host, port = address[0], address[1]
    endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=connect_timeout)
    factory: Any = _SubscriberFactory(channel, on_subscribed, on_message, on_lost,
                                      redis_password(url), redis_username(url))
    service = ClientService(endpoint, factory,
                            retryPolicy=backoffPolicy(initialDelay=0.1, maxDelay=2.0))
    service.startService()
    return service


class _SubscriberFactory(Factory):
    """Builds the pub/sub protocols of :func:`open_redis_subscriber`."""

    def __init__(self, channel: str, on_subscribed: Callable[[], Any],
                 on_message: Callable[[str], Any], on_lost: Callable[[], Any],
                 password: str | None = None, username: str | None = None) -> None:
        self.channel = channel
        self.password = password
        self.username = username
        self.on_subscribed = on_subscribed
        self.on_message = on_message
        self.on_lost = on_lost

    def buildProtocol(self, addr: Any) -> Any:
        """A txredisapi subscriber that subscribes as soon as it is connected."""
        import txredisapi

        factory = self

        class Subscriber(txredisapi.SubscriberProtocol):
            def connectionMade(self) -> Any:
                d = super().connectionMade()
                d.addCallback(lambda _: self.subscribe(factory.channel))
                d.addCallback(lambda _: factory.on_subscribed())
                d.addErrback(lambda _: self.transport.loseConnection())
                return d

            def messageReceived(self, pattern: Any, channel: Any, message: Any) -> None:
                factory.on_message(message)

            def connectionLost(self, why: Any) -> None:
                factory.on_lost()
                super().connectionLost(why)

        protocol = Subscriber(charset="utf-8", convertNumbers=False, password=self.password,
                              username=self.username)
        protocol.factory = self
        return protocol

    def stopTrying(self) -> None:
        """(txredisapi calls it when AUTH fails; the ClientService retries anyway.)"""

    def connectionError(self, why: str) -> None:
        """(txredisapi reports a failed AUTH or SELECT here.)"""


async def check_reachable(redis: Any, url: str, timeout: float, clock: IReactorTime) -> None:
    """Fail with :class:`Unavailable` unless Redis answers PING within ``timeout``."""
    try:
        await defer.Deferred.fromCoroutine(_ping(redis)).addTimeout(timeout, clock)
    except defer.TimeoutError:
        raise Unavailable(f"Redis at {redact_url(url)} did not answer within {timeout} s") from None


async def _ping(redis: Any) -> None:
    await redis.ping()



#: The highest version of the session registry (``sessver``, see :mod:`dim.cluster.sessions`)
#: seen in any answer from Redis in this process, per key prefix.  A node's session cache
#: answers from memory only once it has heard every change up to this version, so a session
#: added before a message was stored is never missed for that message.
_session_versions: dict[str, int] = {}


def saw_session_version(prefix: str, version: int) -> None:
    """Note that Redis under ``prefix`` reached session version ``version``."""
    if version > _session_versions.get(prefix, 0):
        _session_versions[prefix] = version


def session_version_seen(prefix: str) -> int:
    """The highest session version seen under ``prefix`` (0 when none)."""
    return _session_versions.get(prefix, 0)


class LuaScripts:
    """A set of Lua scripts run by EVALSHA with a key prefix as ``ARGV[1]``.

    The scripts are loaded on first use and loaded again when Redis answers NOSCRIPT (after
    a restart flushed its script cache).
    """

    def __init__(self, redis: Any, prefix: str, bodies: dict[str, str]) -> None:
        self.redis = redis
        self.prefix = prefix
        self._bodies = bodies
        self._shas: dict[str, str] = {}

    async def load(self) -> None:
        """SCRIPT LOAD every script."""
        for name, body in self._bodies.items():
            self._shas[name] = await self.redis.script_load(body)

    async def run(self, name: str, *args: Any) -> Any:
        """EVALSHA one script with the prefix and ``args`` as its arguments."""
        import txredisapi

        if not self._shas:
            await self.load()
        argv = [self.prefix, *args]
        try:
            return await self.redis.evalsha(self._shas[name], [], argv)
        except txredisapi.ScriptDoesNotExist:
            await self.load()
            return await self.redis.evalsha(self._shas[name], [], argv)

#: The batch script's answer: the session version, then one result per operation.
_decode_batch = msgspec.json.Decoder(tuple[int, list[Any]]).decode
_encode_batch = msgspec.msgpack.Encoder().encode

#: One operation waiting for its batch: the operation as the batch script reads it, the
#: caller's Deferred, the function that turns the script's answer into the caller's value
#: (raising a DimError for a failed operation), and the ``ref`` of its errors.
_Pending = tuple[list[Any], defer.Deferred[Any], Callable[[Any, str | None], Any], str | None]


class ScriptBatcher:
    """Sends operations to Redis as one call of the script ``batch`` per batch.

    The script takes the key prefix and a msgpack list of operations and answers JSON
    ``[session version, [one result per operation]]`` (an operation that raised answers
    ``{"e": message}``); the version goes to :func:`saw_session_version`.

    Every operation submitted in one reactor turn joins one batch, sent at the end of the
    turn (``callLater(0)``).  At most one batch is in flight: what is submitted meanwhile
    waits and goes as the next batch once the answer is in.  So batches run in Redis in
    submission order whichever pooled connection carries them, and one sender's operations
    keep their order without waiting for each other: order comes from the batch order.

    The script runs the operations in order and answers each separately, so one failed
    operation (an unknown recipient) fails alone; a batch that fails as a whole (Redis gone,
    a timeout) fails every one of its operations with :class:`dim.errors.Internal`.
    """

    #: The most operations in one script call, so one call never holds Redis for long.
    max_ops = 512
    #: About the most bytes of operations in one script call (at least one operation goes).
    max_bytes = 1 << 20

    def __init__(self, scripts: LuaScripts, clock: IReactorTime) -> None:
        """Batch through the script named ``batch`` of ``scripts``."""
        self._scripts = scripts
        self._clock = clock
        self._queue: list[_Pending] = []
        self._flush_call: Any = None
        self._in_flight = False
        self._idle: list[defer.Deferred[None]] = []
        #: How many batches were sent (for tests and metrics).
        self.batches = 0

    def submit(self, op: list[Any], convert: Callable[[Any, str | None], Any],
               ref: str | None) -> defer.Deferred[Any]:
        """Queue one operation; fires with ``convert(its answer, ref)``."""
        d: defer.Deferred[Any] = defer.Deferred()
        self._queue.append((op, d, convert, ref))
        self._schedule()
        return d

    def drained(self) -> defer.Deferred[None]:
        """Fires once nothing is queued or in flight."""
        if not self._queue and not self._in_flight:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        return d

    def _schedule(self) -> None:
        if self._flush_call is None and not self._in_flight and self._queue:
            self._flush_call = self._clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self._in_flight or not self._queue:
            return
        size, count = 0, 0
        for op, _, _, _ in self._queue[:self.max_ops]:
            size += sum(len(part) for part in op if isinstance(part, str))
            count += 1
            if size >= self.max_bytes:
                break
        batch, self._queue = self._queue[:count], self._queue[count:]
        self._in_flight = True
        self.batches += 1
        try:
            blob = _encode_batch([op for op, _, _, _ in batch])
            d = defer.Deferred.fromCoroutine(self._scripts.run("batch", blob))
        except Exception:
            d = defer.fail()
        d.addBoth(self._answered, batch)

    def _answered(self, reply: Any, batch: list[_Pending]) -> None:
        self._in_flight = False
        results: list[Any] | None = None
        why = ""
        version = 0
        if isinstance(reply, Failure):
            why = str(reply.value) or type(reply.value).__name__
        else:
            try:
                version, results = _decode_batch(reply)
                saw_session_version(self._scripts.prefix, version)
            except (msgspec.DecodeError, TypeError) as e:
                why = f"unreadable answer: {e}"
            else:
                if len(results) != len(batch):
                    why = f"{len(results)} answers to {len(batch)} operations"
                    results = None
        for i, (_, d, convert, ref) in enumerate(batch):
            if results is None:
                d.errback(Internal(f"the store failed: {why}", ref=ref))
                continue
            raw = results[i]
            if isinstance(raw, dict) and "e" in raw:
                d.errback(Internal(f"the store failed: {raw['e']}", ref=ref))
                continue
            try:
                value = convert(raw, ref)
            except Exception as e:
                d.errback(e if isinstance(e, DimError) else
                          Internal(f"the store failed: {e}", ref=ref))
            else:
                d.callback(value)
        self._schedule()
        if not self._queue and not self._in_flight:
            idle, self._idle = self._idle, []
            for waiter in idle:
                waiter.callback(None)


def _send_result(raw: list[Any], ref: str | None) -> SendResult:
    """A SendResult from the store function's answer; NotFound for an unknown user."""
    status = int(raw[0])
    if status == -3:
        raise NotFound("no such message in your inbox", ref=ref)
    if status == -4:
        raise Forbidden(str(raw[1]), ref=ref)
    if status == -2:
        raise BadRequest("reply_to must be a message of this conversation", ref=ref)
    if status < 0:
        raise NotFound(f"no such user: {raw[1]}", ref=ref)
    return SendResult(message=_decode_message(raw[1]),
                      seqs={u: int(s) for u, s in raw[2].items()}, duplicate=status == 1)


def _int(raw: Any, ref: str | None) -> int:
    """An integer answer."""
    return int(raw)


def _conversation_read(raw: Any, ref: str | None) -> tuple[list[Receipt], list[Receipt], int]:
    """``(delivered, read, moved)`` from a conversation read's answer."""
    return _receipts(raw[0], ref), _receipts(raw[1], ref), int(raw[2])


def _receipts(raw: Any, ref: str | None) -> list[Receipt]:
    """Receipts from an ack's or read's answer (``{}`` when there are none)."""
    if not raw:
        return []
    return [Receipt(mid=mid, id=cid, sender=sender, seq=int(at))
            for mid, cid, sender, at in raw]


@implementer(IStore)
class RedisStore:
    """An :class:`IStore` on Redis; build it with :func:`connect` (which loads the scripts).

    ``redis`` is a txredisapi connection (or lazy pool); ``prefix`` namespaces every key so
    that several DIM installations (or tests) can share one Redis.
    """

    def __init__(self, redis: Any, prefix: str = "dim:", durability: str = "unknown", *,
                 clock: IReactorTime) -> None:
        self.redis = redis
        self.prefix = prefix
        #: ``"fsync"``, ``"everysec"``, ``"none"`` or ``"unknown"``: see the module docstring.
        self.durability = durability
        self._scripts = LuaScripts(redis, prefix, SCRIPTS)
        self._batcher = ScriptBatcher(self._scripts, clock)
        self._closed: defer.Deferred[None] | None = None
        #: How many user names one step of :meth:`search_users` reads.
        self.search_page = 1000
        #: How many inbox entries :meth:`search_messages` read in all (for the benchmark).
        self.search_scanned = 0

    @classmethod
    def connect(cls, url: str = "redis://127.0.0.1:6379", prefix: str = "dim:",
                timeout: float = 2.0, require_fsync: bool = False, poolsize: int = 10,
                *, clock: IReactorTime) -> defer.Deferred[RedisStore]:
        """Connect to ``url``, load the scripts; fires with the store.

        Fails with :class:`dim.errors.Unavailable` if Redis does not answer within
        ``timeout`` seconds, or (``require_fsync``) if it does not fsync every write.
        """
        return defer.Deferred.fromCoroutine(
            cls._connect(url, prefix, timeout, require_fsync, poolsize, clock))

    @classmethod
    async def _connect(cls, url: str, prefix: str, timeout: float, require_fsync: bool,
                       poolsize: int, clock: IReactorTime) -> RedisStore:
        await check_credentials(url, timeout)
        redis = open_redis(url, poolsize=poolsize, connect_timeout=timeout)
        try:
            await check_reachable(redis, url, timeout, clock)
            store = cls(redis, prefix, clock=clock)
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
        if dict(zip(aof[::2], aof[1::2], strict=False)).get("appendonly") != "yes":
            return "none"
        settings = dict(zip(fsync[::2], fsync[1::2], strict=False))
        return "fsync" if settings.get("appendfsync") == "always" else "everysec"

    async def load_scripts(self) -> None:
        """SCRIPT LOAD every script (again after a Redis restart flushed them)."""
        await self._scripts.load()

    async def _run(self, name: str, *args: Any) -> Any:
        return await self._scripts.run(name, *args)

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

    def token_epoch(self, user: str) -> defer.Deferred[tuple[int, str | None]]:
        """The user's token epoch and the token id its last bump kept."""
        def parse(values: Any) -> tuple[int, str | None]:
            epoch, kept = values or (None, None)
            if isinstance(kept, bytes):
                kept = kept.decode()
            return int(epoch or 0), kept
        return self.redis.hmget(self._key("tokens", user), ["epoch", "kept"]).addCallback(parse)

    def bump_token_epoch(self, user: str, keep: str) -> defer.Deferred[int]:
        """A new token epoch for ``user``, keeping the token id ``keep``."""
        async def run() -> int:
            return int(await self._run("bump_tokens", user, keep))
        return defer.Deferred.fromCoroutine(run())

    @staticmethod
    async def _none(coro: Any) -> None:
        await coro

    # -- messages --------------------------------------------------------------------------

    def store_message(self, sender: str, client_id: str, recipients: list[str],
                      group: str | None, body: str, kind: str, file: dict[str, Any] | None,
                      ts: int, reply_to: str | None = None,
                      mentions: list[str] | None = None) -> defer.Deferred[SendResult]:
        """Store one message in the sender's inbox and every recipient's.

        Joins the batch of this reactor turn (see :class:`ScriptBatcher`): one sender's messages
        are stored in call order.  Fires once Redis answered, which is durable in the sense
        of the module docstring.  NotFound (nothing written) if the sender or a recipient
        does not exist; Internal if the batch failed.
        """
        to = recipients[0] if group is None and recipients else None
        draft = StoredMessage(mid="", id=client_id, sender=sender, ts=ts, to=to, group=group,
                              body=body, kind=kind, file=file, reply_to=reply_to,
                              mentions=mentions or None)
        file_id = file.get("id") if isinstance(file, dict) else None
        cv = "#" + group if group is not None else to or sender
        op = ["s", sender, client_id, _encode_message(draft).decode(),
              file_id if isinstance(file_id, str) else "", list(recipients), cv,
              "1" if kind in UNREAD_KINDS else "0", [] if reply_to is None else [reply_to],
              list(mentions or [])]
        return self._batcher.submit(op, _send_result, client_id)

    def apply(self, ops: list[StoreOp]) -> defer.Deferred[list[Any]]:
        """Run a batch of sends and acks in batch order; one outcome each (see
        IStore.apply).  Every operation is handed over in this reactor turn, so they all
        go to Redis in one script call, in order."""
        return apply_each(self, ops)

    def change_message(self, op: ChangeOp) -> defer.Deferred[SendResult]:
        """Store an edit, recall or reaction and change the original's current state.

        Joins the batch of this reactor turn: the checks and writes are one script step."""
        return self._batcher.submit(
            ["x", op.sender, op.client_id, op.kind, op.ref, op.body,
             "true" if op.on else "false", str(int(op.ts))], _send_result, op.client_id)

    #: Entries read per script call of a search, and the most a search reads in all.
    search_page_size = 500
    search_scan_limit = 20_000

    def search_messages(self, user: str, text: str, conv: str | None,
                        limit: int) -> defer.Deferred[list[InboxEntry]]:
        """The user's entries whose current body contains ``text``, newest first.

        A bounded scan: pages of :attr:`search_page_size` entries, newest first (each one
        script call, so Redis is never held long), are checked with :func:`found_by` until
        ``limit`` are found or :attr:`search_scan_limit` entries were read; older entries
        are then not searched."""
        needle = text.casefold()

        async def run() -> list[InboxEntry]:
            found: list[InboxEntry] = []
            below = await self.last_seq(user) + 1
            scanned = 0
            while len(found) < limit and scanned < self.search_scan_limit:
                page = self.search_page_size
                if conv is not None:
                    entries, more = await self.fetch_conversation(user, conv, 0, below, page)
                else:
                    start = max(below - 1 - page, 0)
                    entries, _ = await self.fetch(user, start, below - 1 - start)
                    more = start > 0
                scanned += len(entries)
                self.search_scanned += len(entries)
                for entry in reversed(entries):
                    if found_by(entry.message, needle):
                        found.append(entry)
                        if len(found) >= limit:
                            break
                if not entries or not more:
                    break
                below = entries[0].seq
            return found
        return defer.Deferred.fromCoroutine(run())

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
        """The highest seq in the user's inbox (0 when empty or unknown).

        Joins the batch of this reactor turn, so a reconnect storm's ``welcome`` frames cost
        one script call per turn, and the answer counts every store called before it."""
        return self._batcher.submit(["n", user], _int, None)

    def ack(self, user: str, seq: int) -> defer.Deferred[list[Receipt]]:
        """Acknowledge the user's inbox up to ``seq``; the receipts this newly makes.

        Joins the batch of this reactor turn, after the stores called before it."""
        return self._batcher.submit(["a", user, int(seq)], _receipts, None)

    def read(self, user: str, seq: int) -> defer.Deferred[list[Receipt]]:
        """Mark the user's inbox read (and acked) up to ``seq``; the read receipts.

        Joins the batch of this reactor turn, after the stores called before it."""
        return self._batcher.submit(["r", user, int(seq)], _receipts, None)

    def acked_seq(self, user: str) -> defer.Deferred[int]:
        """The highest seq the user acknowledged (0 when none)."""
        return self.redis.hget(self._key("marks", user), "ack").addCallback(
            lambda v: int(v) if v is not None else 0)

    def read_conversation(self, user: str, conv: str, seq: int) -> defer.Deferred[
            tuple[list[Receipt], list[Receipt], int]]:
        """Read one conversation up to ``seq``; ``(delivered, read, new pointer or 0)``.

        Joins the batch of this reactor turn, after the stores called before it."""
        return self._batcher.submit(["c", user, conv, int(seq)], _conversation_read, None)

    def fetch_conversation(self, user: str, conv: str, after: int, before: int | None,
                           limit: int) -> defer.Deferred[tuple[list[InboxEntry], bool]]:
        """Entries of one conversation, in seq order, and whether more remain."""
        async def run() -> tuple[list[InboxEntry], bool]:
            if limit <= 0:
                return [], False
            reply = await self._run("fetch_conversation", user, conv, int(after),
                                    "+inf" if before is None else int(before), int(limit),
                                    "a" if before is None else "d")
            more = len(reply) > limit
            rows = reply[:limit] if before is None else reply[:limit][::-1]
            return [InboxEntry(seq=int(at), message=_decode_message(m),
                               delivered=int(pa) <= 0, read=int(pr) <= 0)
                    for at, m, pa, pr in rows], more
        return defer.Deferred.fromCoroutine(run())

    def conversations(self, user: str, limit: int) -> defer.Deferred[list[Conversation]]:
        """The user's conversations, most recent activity first, at most ``limit``."""
        async def run() -> list[Conversation]:
            if limit <= 0:
                return []
            reply = await self._run("conversations", user, int(limit))
            return [Conversation(
                conv=conv, last=InboxEntry(seq=int(last), message=_decode_message(m),
                                           delivered=int(pa) <= 0, read=int(pr) <= 0),
                read_seq=int(read), unread=int(unread), mentions=int(mentions))
                for conv, last, read, unread, mentions, m, pa, pr in reply]
        return defer.Deferred.fromCoroutine(run())

    # -- people ----------------------------------------------------------------------------

    def get_profile(self, user: str) -> defer.Deferred[Profile | None]:
        """The user's profile (the user name as display name until one is set), or None."""
        async def run() -> Profile | None:
            reply = await self._run("get_profile", user)
            return _profile(reply) if reply else None
        return defer.Deferred.fromCoroutine(run())

    def update_profile(self, user: str, changes: dict[str, Any]) -> defer.Deferred[Profile]:
        """Apply the given keys of ``changes`` to the profile; NotFound for an unknown user."""
        name = changes.get("name")
        avatar = changes.get("avatar")
        argv = ["1" if "name" in changes else "0", name or "", (name or "").casefold(),
                "1" if "status" in changes else "0", changes.get("status") or "",
                "0" if "avatar" not in changes else "2" if avatar is None else "1",
                avatar or ""]

        async def run() -> Profile:
            reply = await self._run("update_profile", user, *argv)
            if not reply:
                raise NotFound(f"no such user: {user}")
            return _profile(reply)
        return defer.Deferred.fromCoroutine(run())

    def search_users(self, text: str, limit: int) -> defer.Deferred[list[Profile]]:
        """Profiles whose user or display name contains ``text`` (any case), name order.

        A script reads :attr:`search_page` names at a time, so a search over many users
        never holds Redis for long (a few milliseconds a page).
        """
        needle = text.casefold()

        async def run() -> list[Profile]:
            found: list[Profile] = []
            start = "-"
            while start and len(found) < limit:
                reply = await self._run("search_page", needle, start, self.search_page,
                                        int(limit) - len(found))
                start = reply[0]
                found.extend(_profile(row) for row in reply[1:])
            return found
        return defer.Deferred.fromCoroutine(run())

    def request_contact(self, user: str, other: str) -> defer.Deferred[Contact]:
        """``user`` asks for ``other``: pending, or mutual if ``other`` had asked already."""
        if user == other:
            return defer.fail(BadRequest("a user cannot be its own contact"))

        async def run() -> Contact:
            found, value = await self._run("request_contact", user, other)
            if not int(found):
                raise NotFound(f"no such user: {value}")
            return Contact(user=other, pending=_pending(value))
        return defer.Deferred.fromCoroutine(run())

    def contacts(self, user: str) -> defer.Deferred[list[Contact]]:
        """Every contact and pending request of ``user``, in user-name order."""
        async def run() -> list[Contact]:
            entries = await self.redis.hgetall(self._key("contacts", user))
            return [Contact(user=other, pending=_pending(entries[other]))
                    for other in sorted(entries)]
        return defer.Deferred.fromCoroutine(run())

    def remove_contact(self, user: str, other: str) -> defer.Deferred[bool]:
        """Drop the contact or request between the two, either way; whether there was one."""
        async def run() -> bool:
            return int(await self._run("remove_contact", user, other)) > 0
        return defer.Deferred.fromCoroutine(run())

    # -- groups ----------------------------------------------------------------------------

    def create_group(self, owner: str, name: str, members: list[str],
                     ts: int) -> defer.Deferred[Group]:
        """Make a group with the owner first and no duplicates; NotFound for unknown users."""
        everyone = list(dict.fromkeys([owner, *members]))

        async def run() -> Group:
            found, value = await self._run("create_group", name, int(ts), *everyone)
            if not int(found):
                raise NotFound(f"no such user: {value}")
            return _group(value)
        return defer.Deferred.fromCoroutine(run())

    def get_group(self, group_id: str) -> defer.Deferred[Group | None]:
        """The group, or None."""
        async def run() -> Group | None:
            reply = await self._run("get_group", group_id)
            return _group(reply) if reply else None
        return defer.Deferred.fromCoroutine(run())

    def groups_of(self, user: str) -> defer.Deferred[list[Group]]:
        """The groups ``user`` is a member of, oldest group first."""
        async def run() -> list[Group]:
            return [_group(row) for row in await self._run("groups_of", user)]
        return defer.Deferred.fromCoroutine(run())

    def rename_group(self, group_id: str, name: str) -> defer.Deferred[Group]:
        """Rename the group; NotFound if there is none."""
        async def run() -> Group:
            reply = await self._run("rename_group", group_id, name)
            if not reply:
                raise NotFound(f"no such group: {group_id}")
            return _group(reply)
        return defer.Deferred.fromCoroutine(run())

    def add_group_members(self, group_id: str, users: list[str],
                          limit: int) -> defer.Deferred[Group]:
        """Add the users not yet in; NotFound for unknowns, TooLarge past ``limit``."""
        async def run() -> Group:
            reply = await self._run("add_members", group_id, int(limit),
                                    *dict.fromkeys(users))
            if int(reply[0]):
                return _group(reply[1])
            if reply[1] == "group":
                raise NotFound(f"no such group: {group_id}")
            if reply[1] == "user":
                raise NotFound(f"no such user: {reply[2]}")
            raise TooLarge(f"a group has at most {limit} members")
        return defer.Deferred.fromCoroutine(run())

    def remove_group_member(self, group_id: str,
                            user: str) -> defer.Deferred[Group | None]:
        """Remove a member, handing ownership on or deleting the group when it empties."""
        async def run() -> Group | None:
            reply = await self._run("remove_member", group_id, user)
            if int(reply[0]):
                return _group(reply[1]) if len(reply) > 1 else None
            if reply[1] == "group":
                raise NotFound(f"no such group: {group_id}")
            raise NotFound(f"{user} is not a member of {group_id}")
        return defer.Deferred.fromCoroutine(run())

    # -- files -----------------------------------------------------------------------------

    def add_file(self, record: FileRecord) -> defer.Deferred[None]:
        """Keep an uploaded file's metadata."""
        return self.redis.execute_command(
            "HSET", self._key("file", record.id), "owner", record.owner,
            "r", _encode_message(record)).addCallback(lambda _: None)

    def get_file(self, file_id: str) -> defer.Deferred[FileRecord | None]:
        """The file's metadata, or None."""
        return self.redis.hget(self._key("file", file_id), "r").addCallback(
            lambda raw: None if raw is None else _decode_file(raw))

    def may_read_file(self, user: str, file_id: str) -> defer.Deferred[bool]:
        """Whether ``user`` uploaded the file, received it in a message, or it is an avatar."""
        async def run() -> bool:
            return bool(int(await self._run("may_read_file", user, file_id)))
        return defer.Deferred.fromCoroutine(run())

    def close(self) -> defer.Deferred[None]:
        """Close the connections once the batches under way are answered (every
        acknowledged write is already in Redis); idempotent."""
        if self._closed is None:
            self._closed = self._batcher.drained().addCallback(
                lambda _: self.redis.disconnect()).addCallback(lambda _: None)
        result: defer.Deferred[None] = defer.Deferred()

        def done(outcome: Any) -> Any:
            result.callback(None)
            return outcome
        self._closed.addBoth(done)
        return result


def _profile(row: list[Any]) -> Profile:
    """A Profile from a script's ``{user, name, status, avatar}``."""
    user, name, status, avatar = row
    return Profile(user=user, name=name, status=status, avatar=avatar or None)


def _pending(value: str) -> str | None:
    """A contact entry's ``pending`` from its stored value (``mutual`` is None)."""
    return None if value == "mutual" else value


def _group(row: list[Any]) -> Group:
    """A Group from a script's ``{id, name, owner, member...}``."""
    return Group(id=str(row[0]), name=row[1], owner=row[2], members=list(row[3:]))


def connect(url: str = "redis://127.0.0.1:6379", prefix: str = "dim:", timeout: float = 2.0,
            require_fsync: bool = False, poolsize: int = 10, *,
            clock: IReactorTime) -> defer.Deferred[RedisStore]:
    """Shorthand for :meth:`RedisStore.connect`."""
    return RedisStore.connect(url, prefix, timeout, require_fsync, poolsize, clock=clock)

