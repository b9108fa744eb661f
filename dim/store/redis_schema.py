"""The version of DIM's data layout in Redis, and the migration that brings older data up.

A node runs :func:`migrate` at start, before it takes clients.  The version is the key
``schema`` (under the store's prefix):

- 1 (or no key, on data written before versions were kept): inboxes, marks and messages only.
- 2, conversations: every message hash has ``cv`` and ``cu``, and every inbox has its
  conversations (``convs:``, ``conv:`` with the read pointer and unread count, ``cseqs:``),
  as :mod:`dim.store.redis` describes them.  History by conversation, search within one
  conversation, the conversation list and the unread counts read these.
- 3, file grants: ``grants:<file id>`` counts, per user, the messages (not recalled) that
  give the user the file, and every message hash counted there has ``g`` = 1.

Each step is done in batches (one Lua script call each, so Redis is never held long and a
batch is all or nothing), keeps its progress in Redis, and skips what is already in the new
layout, so a migration cut short (the node stopped or crashed) goes on where it was when a
node starts again, and several nodes starting at once may run it together.  The steps only
add what is missing; they never rewrite data written by the current code.

Step 2, for each user (in name order) and each entry of the inbox after the user's cursor
(the hash ``migrate:conv``, user -> last migrated seq): a message without ``cv`` (written
before conversations existed) gets ``cv``, ``cu`` and ``mig`` = 1 (so the other users of that
message still migrate their entry); the entry joins its conversation; an entry at or below
the user's old inbox-wide read mark moves that conversation's read pointer up to the mark
(what a ``read`` of the whole inbox did), one above it counts as unread when it is another
user's text, image or file.  Entries of messages that have ``cv`` and no ``mig`` were written
by the current code, which kept their conversation itself.

Step 3, for every message id up to the counter ``mid`` (cursor ``migrate:grants``): a message
without ``g`` that points at a file and is not recalled gives each user of the message one
grant (and a place in ``readers:``); then it gets ``g`` = 1.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dim.store.redis import _LUA_BASE36, LuaScripts, RedisStore

#: The layout the current code writes.
SCHEMA_VERSION = 3

#: ARGV: prefix, budget (entries), user...  Migrates up to ``budget`` inbox entries, user by
#: user from each one's cursor.  Returns {how many of the users are done, entries migrated}.
MIGRATE_CONVERSATIONS = """
local p, budget = ARGV[1], tonumber(ARGV[2])
local unread_kinds = {text = true, image = true, file = true}
local cursors = p .. 'migrate:conv'
local done, moved = 0, 0
for i = 3, #ARGV do
  local user = ARGV[i]
  local inbox = p .. 'inbox:' .. user
  local from = tonumber(redis.call('HGET', cursors, user) or '0')
  local last = redis.call('LLEN', inbox)
  local upto = math.min(last, from + budget - moved)
  if upto > from then
    local read = tonumber(redis.call('HGET', p .. 'marks:' .. user, 'read') or '0')
    local mids = redis.call('LRANGE', inbox, from, upto - 1)
    for j, mid in ipairs(mids) do
      local s = from + j
      local k = p .. 'msg:' .. mid
      local f = redis.call('HMGET', k, 'cv', 'mig', 'm', 'sender', 'cu')
      if f[3] and (not f[1] or f[2] == '1') then
        local cv, cu, sender = f[1], f[5], f[4]
        if not cv then
          local m = cjson.decode(f[3])
          if type(m.group) == 'string' then
            cv = '#' .. m.group
          elseif type(m.to) == 'string' then
            cv = m.to
          else
            cv = sender
          end
          cu = '0'
          if unread_kinds[m.kind] then cu = '1' end
          redis.call('HSET', k, 'cv', cv, 'cu', cu, 'mig', 1)
        end
        local c = cv
        if string.sub(cv, 1, 1) ~= '#' and sender ~= user then c = sender end
        redis.call('ZADD', p .. 'convs:' .. user, 'GT', s, c)
        redis.call('ZADD', p .. 'cseqs:' .. user .. ':' .. c, s, s)
        local ck = p .. 'conv:' .. user .. ':' .. c
        if s <= read then
          if tonumber(redis.call('HGET', ck, 'read') or '0') < read then
            redis.call('HSET', ck, 'read', read)
          end
        elseif cu == '1' and sender ~= user then
          redis.call('HINCRBY', ck, 'unread', 1)
        end
      end
    end
    moved = moved + (upto - from)
    redis.call('HSET', cursors, user, upto)
  end
  if upto < last then return {done, moved} end
  done = done + 1
end
return {done, moved}
"""

#: ARGV: prefix, first message number, how many.  Counts the file grants of the messages
#: written before grants were kept.  Returns the number of the last message looked at.
MIGRATE_GRANTS = _LUA_BASE36 + """
local p, first, count = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local top = tonumber(redis.call('GET', p .. 'mid') or '0')
local last = math.min(top, first + count - 1)
for n = first, last do
  local k = p .. 'msg:' .. base36(n)
  local f = redis.call('HMGET', k, 'g', 'm', 'seqs')
  if f[2] and not f[1] then
    local m = cjson.decode(f[2])
    if not m.recalled and type(m.file) == 'table' and type(m.file.id) == 'string' then
      local fid = m.file.id
      for u, _ in pairs(cjson.decode(f[3])) do
        redis.call('HINCRBY', p .. 'grants:' .. fid, u, 1)
        redis.call('SADD', p .. 'readers:' .. fid, u)
      end
    end
    redis.call('HSET', k, 'g', 1)
  end
end
local cursor = p .. 'migrate:grants'
if tonumber(redis.call('GET', cursor) or '0') < last then redis.call('SET', cursor, last) end
return last
"""

#: ARGV: prefix, version.  Raises the schema version to ``version`` (never lowers it).
SET_VERSION = """
local k = ARGV[1] .. 'schema'
if tonumber(redis.call('GET', k) or '0') < tonumber(ARGV[2]) then
  redis.call('SET', k, ARGV[2])
end
return tonumber(redis.call('GET', k))
"""

SCRIPTS = {"conversations": MIGRATE_CONVERSATIONS, "grants": MIGRATE_GRANTS,
           "set_version": SET_VERSION}


async def schema_version(store: RedisStore) -> int:
    """The version of the data under the store's prefix (1 when no version was kept)."""
    raw = await store.redis.get(store.prefix + "schema")
    return int(raw) if raw is not None else 1


async def migrate(store: RedisStore, batch: int = 500,
                  progress: Callable[[str], Any] = lambda line: None) -> int:
    """Bring the data under the store's prefix to :data:`SCHEMA_VERSION`, ``batch`` entries
    (or messages) per script call; the version it was at.  ``progress`` hears a line per
    step and about every 100,000 entries."""
    scripts = LuaScripts(store.redis, store.prefix, SCRIPTS)
    before = await schema_version(store)
    if before >= SCHEMA_VERSION:
        return before
    if before < 2:
        progress("migrating inboxes to conversations (schema 2)")
        await _migrate_conversations(store, scripts, batch, progress)
        await scripts.run("set_version", 2)
    if before < 3:
        progress("counting file grants (schema 3)")
        cursor = int(await store.redis.get(store.prefix + "migrate:grants") or 0)
        top = int(await store.redis.get(store.prefix + "mid") or 0)
        while cursor < top:
            cursor = int(await scripts.run("grants", cursor + 1, batch))
        await scripts.run("set_version", 3)
    progress(f"the data in Redis is at schema {SCHEMA_VERSION} (was {before})")
    return before


async def _migrate_conversations(store: RedisStore, scripts: LuaScripts, batch: int,
                                 progress: Callable[[str], Any]) -> None:
    """Step 2 over every user, a page of names at a time."""
    start = "-"
    moved = reported = 0
    while True:
        names = await store.redis.execute_command(
            "ZRANGEBYLEX", store.prefix + "names", start, "+", "LIMIT", 0, 500)
        if not names:
            return
        todo = list(names)
        while todo:
            done, count = await scripts.run("conversations", batch, *todo)
            todo = todo[int(done):]
            moved += int(count)
            if moved - reported >= 100_000:
                progress(f"{moved} inbox entries migrated")
                reported = moved
        start = "(" + names[-1]
