# -*- test-case-name: tests.test_redis_scripts -*-
"""
Cluster mode's Lua scripts, which Redis runs atomically (see
L{notificator.broker.redis.ordering}): L{PUBLISH} records and announces
notifications (a batch of them, in order), L{SINCE} reads what users
missed, L{MARK} gives a new history its start.
"""

from __future__ import annotations

import hashlib

import attrs

_LUA_COMMON = """
local MAXSEQ = 9007199254740991
local KEEP = 86400000
local function parse(id)
  if not id then return nil end
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  if not ms then return nil end
  return {tonumber(ms), tonumber(seq)}
end
local function later(a, b)
  return a[1] > b[1] or (a[1] == b[1] and a[2] > b[2])
end
local function text(k)
  return string.format('%d-%d', k[1], k[2])
end
local function pair(v)
  if not v then return nil, nil end
  local a, b = string.match(v, '^(%S+) (%S+)$')
  return parse(a), parse(b)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""


@attrs.frozen
class Script:
    """A Lua script, run with C{EVALSHA} (C{EVAL} when Redis lacks it)."""

    source: bytes
    sha: bytes

    @classmethod
    def of(cls, body: str) -> Script:
        source = (_LUA_COMMON + body).encode("utf-8")
        return cls(source, hashlib.sha1(source).hexdigest().encode("ascii"))


#: Record and announce notifications, atomically, in order: the
#: publishes of one reactor pass of a node, in one run (one is the common
#: case at a low rate).  Each is done as if by a run of its own (all in the
#: same millisecond of Redis's clock).
#: KEYS: the last id given, the history's start, then per notification its
#: user's stream and floor.
#: ARGV: size, ttl (ms), the channel, then per notification the frame body
#: and the user id.
#: Returns per notification, in order: its event id, the number of
#: subscribers (nodes) that received it.
PUBLISH = Script.of(
    """
if redis.replicate_commands then redis.replicate_commands() end
local now = now_ms()
local size, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local dead = now - ttl
local last = parse(redis.call('GET', KEYS[1]))
local given = false
local out = {}
for i = 3, #KEYS, 2 do
  local h, f = KEYS[i], KEYS[i + 1]
  local body, user = ARGV[i + 1], ARGV[i + 2]
  local key = {now, 0}
  if last and not later(key, last) then key = {last[1], last[2] + 1} end
  local id = text(key)
  if size > 0 then
    local floor, top = pair(redis.call('GET', f))
    if redis.call('EXISTS', h) == 0 then
      -- A new record: all the user had was dropped, the newest being its
      -- last; and without even that, all it had has expired.
      floor = top or {dead, MAXSEQ}
    elseif not floor then
      floor = {dead, MAXSEQ}
    end
    local added = redis.pcall('XADD', h, id, 'b', body)
    if type(added) == 'table' and added.err then
      -- The stream holds a later id than the last given (keys restored by hand).
      id = redis.call('XADD', h, '*', 'b', body)
      key = parse(id)
    end
    local n = redis.call('XLEN', h)
    if n > size then
      local gone = redis.call('XRANGE', h, '-', '+', 'COUNT', n - size)
      local g = parse(gone[#gone][1])
      if later(g, floor) then floor = g end
      redis.call('XTRIM', h, 'MAXLEN', size)
    end
    local old = redis.call('XREVRANGE', h, string.format('%d', dead), '-', 'COUNT', 1)
    if old[1] then
      local g = parse(old[1][1])
      if later(g, floor) then floor = g end
      redis.call('XTRIM', h, 'MINID', string.format('%d-0', dead + 1))
    end
    redis.call('SET', f, text(floor) .. ' ' .. id, 'PX', ttl + KEEP)
    redis.call('PEXPIRE', h, ttl)
  end
  if last == nil or later(key, last) then
    last = key
    given = true
  end
  if i == 3 then redis.call('SET', KEYS[2], id, 'NX') end
  out[#out + 1] = id
  out[#out + 1] = redis.call('PUBLISH', ARGV[3], id .. '\\n' .. user .. '\\n' .. body)
end
if given then redis.call('SET', KEYS[1], text(last)) end
return out
"""
)

#: What users missed after an id each: the replay of a reconnecting
#: stream (one user), and the fill after an outage (many).  Read only.
#: KEYS: the last id given, the history's start, then per user its stream
#: and its floor.  ARGV: ttl (ms), then per user the id it saw last ('' or
#: anything not an id: unknown).
#: Returns {now (ms), the last id given or '', then per user: reason (''
#: when complete), its oldest kept id or '', n, then n times id, body}.
SINCE = Script.of(
    """
local now = now_ms()
local dead = now - tonumber(ARGV[1])
-- No start key: nothing was recorded since the history was lost, so every
-- id up to now is from before.
local since = parse(redis.call('GET', KEYS[2])) or {now, MAXSEQ}
local given = parse(redis.call('GET', KEYS[1]))
local out = {now, given and text(given) or ''}
if not given or later(since, given) then given = since end
for i = 3, #KEYS, 2 do
  local stream, kept = KEYS[i], {}
  local floor, top = pair(redis.call('GET', KEYS[i + 1]))
  if redis.call('EXISTS', stream) == 0 then
    -- No record: all was dropped, its last the newest; or all expired.
    floor = top or {dead, MAXSEQ}
  else
    kept = redis.call('XRANGE', stream, string.format('%d-0', dead + 1), '+')
    floor = floor or {dead, MAXSEQ}
    -- Expired but not trimmed yet (no publish since): lost all the same.
    local old = redis.call('XREVRANGE', stream, string.format('%d', dead), '-', 'COUNT', 1)
    if old[1] then
      local g = parse(old[1][1])
      if later(g, floor) then floor = g end
    end
  end
  local seen = parse(ARGV[(i - 1) / 2 + 1])
  local reason = ''
  if not seen or later(seen, given) then reason = 'unknown'
  elseif later(since, seen) then reason = 'lost'
  elseif later(floor, seen) then reason = 'expired' end
  out[#out + 1] = reason
  out[#out + 1] = kept[1] and kept[1][1] or ''
  local at = #out + 1
  out[at] = 0
  local n = 0
  for _, e in ipairs(kept) do
    if reason ~= '' or later(parse(e[1]), seen) then
      out[#out + 1] = e[1]
      out[#out + 1] = e[2][2]
      n = n + 1
    end
  end
  out[at] = n
end
return out
"""
)


#: The last id given, made now when there is none (a new Redis, or one that
#: lost its data): then also the history's start, so that a stream opened
#: before the first notification has a position L{SINCE} knows (the id its
#: C{connect} event carries).  Run once when a node catches up, only when
#: L{SINCE} said no id was given yet.
#: KEYS: the last id given, the history's start.  Returns the last id given.
MARK = Script.of(
    """
local last = redis.call('GET', KEYS[1])
if last then return last end
local id = text({now_ms(), 0})
redis.call('SET', KEYS[1], id)
redis.call('SET', KEYS[2], id, 'NX')
return id
"""
)
