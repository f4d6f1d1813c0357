package redisq

import "github.com/redis/go-redis/v9"

// The pop scripts (see scripts.go for the others): they take entries
// from a queue and record what each call took, so that popUndoScript can
// put back the entries of a call whose reply was lost.

// popScript takes up to max entries from a queue, high before low, FIFO.
//
//	KEYS[1] high list  KEYS[2] low list  KEYS[3] lastpop string  KEYS[4] inflight zset
//	ARGV[1] max  ARGV[2] now (unix s)  ARGV[3] lastpop TTL (s)
//	ARGV[4] "1" reliable (record in inflight), "0" plain  ARGV[5] ack deadline (ms)
//	ARGV[6] owner  ARGV[7] nonce  ARGV[8] now (unix ms)  ARGV[9] record window (ms)
//	ARGV[10] minimum TTL (ms) of a list that gets entries back
//	returns {prio, tid, prio, tid, ...} in pop order; prio is "H" or "L".
//
// In reliable mode each entry is added to the inflight zset with member
// prio..tid and score deadline + i/1000, so that re-queueing keeps pop order.
// The entries taken are recorded in the lastpop value under the call's
// owner and nonce (see luaRecordPop), so that popUndoScript can put them
// back if the reply is lost; a call that an undo cancelled before it ran
// puts back what it took and returns nothing.
// Not idempotent: run it with runOnce (see noRetryCmd).
var popScript = redis.NewScript(luaPopEntries + luaRecordPop + `
local max = tonumber(ARGV[1])
local got = popEntries(KEYS[1], KEYS[2], max)
if #got == 0 then return {} end
local members = {}
for i, e in ipairs(got) do members[i] = e[1] .. e[2] end
if recordPop(KEYS[3], ARGV[2], ARGV[3], ARGV[6], ARGV[7], ARGV[8], ARGV[9], members) then
  putBack(KEYS[1], KEYS[2], members, tonumber(ARGV[10]))
  return {}
end
local out = {}
for n, e in ipairs(got) do
  out[#out + 1] = e[1]
  out[#out + 1] = e[2]
  if ARGV[4] == '1' then
    redis.call('ZADD', KEYS[4], tonumber(ARGV[5]) + n / 1000, e[1] .. e[2])
  end
end
return out
`)

// luaRecordPop is the Lua function recordPop(key, nowS, ttl, owner, nonce,
// nowMs, window, members) of the pop scripts: it writes a queue's lastpop
// value (one SET, as the pop did before records existed: the happy path
// costs no extra command) and returns true when an undo cancelled the call
// nonce before it ran (popUndoScript found no record and left a
// tombstone): the caller then puts back what it took.
//
// The value is the unix seconds of the last pop on its first line (the
// whole value in the format of older versions), then one line per record:
//
//	<owner> <nonce> <unix ms> p <JSON array of prio..tid taken>
//	<owner> <nonce> <unix ms> x          (tombstone of an undone call)
//
// An owner is one store (process) and slot (concurrent pops of one queue
// in one store get different slots). A pop replaces its owner's previous
// record (that call is settled: the store pops a queue again with one
// owner only once the previous call returned or was undone) and keeps the
// other owners' records and every tombstone younger than window ms: when
// there are any, that is a second SET (at most one extra command per pop
// call, only while several owners pop the queue). members nil: no record
// (a pop that found nothing, TouchLastPop).
const luaRecordPop = `
local function recordPop(key, nowS, ttl, owner, nonce, nowMs, window, members)
  local head = tostring(nowS)
  local val = head
  if members then
    local list = '[]'
    if #members > 0 then list = cjson.encode(members) end
    val = head .. '\n' .. owner .. ' ' .. nonce .. ' ' .. nowMs .. ' p ' .. list
  end
  local old = redis.call('SET', key, val, 'EX', ttl, 'GET')
  if not old or not string.find(old, '\n', 1, true) then return false end
  local keep, cancelled = {}, false
  local oldest = tonumber(nowMs) - tonumber(window)
  for line in string.gmatch(old, '[^\n]+') do
    local o, n, ms, kind = string.match(line, '^(%S+) (%S+) (%d+) (%a)')
    if o then
      if n == nonce then
        if kind == 'x' then cancelled = true end
      elseif (o ~= owner or kind == 'x') and tonumber(ms) > oldest then
        keep[#keep + 1] = line
      end
    end
  end
  if cancelled then val = head end
  if #keep > 0 then val = val .. '\n' .. table.concat(keep, '\n') end
  if cancelled or #keep > 0 then redis.call('SET', key, val, 'KEEPTTL') end
  return cancelled
end

-- putBack(high, low, members, ttl) pushes members (prio..tid, in pop
-- order) back to the head of their lists, in order, and makes each list
-- live at least ttl ms (a list the pop emptied is gone with its TTL).
local function putBack(high, low, members, ttl)
  local used = {}
  for i = #members, 1, -1 do
    local m = members[i]
    local key = low
    if string.sub(m, 1, 1) == 'H' then key = high end
    redis.call('LPUSH', key, string.sub(m, 2))
    used[key] = true
  end
  for key in pairs(used) do
    if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
  end
end
`

// luaPopEntries is the Lua function popEntries(high, low, max) of the pop
// scripts: it takes up to max entries, high before low, in one LMPOP when
// one list serves them all, and returns {{prio, tid}, ...} in pop order.
const luaPopEntries = `
local function popEntries(high, low, max)
  local out = {}
  local r = redis.call('LMPOP', 2, high, low, 'LEFT', 'COUNT', max)
  if not r then return out end
  local prio = 'L'
  if r[1] == high then prio = 'H' end
  for _, tid in ipairs(r[2]) do out[#out + 1] = {prio, tid} end
  if prio == 'H' and #out < max then
    local more = redis.call('LPOP', low, max - #out)
    if more then
      for _, tid in ipairs(more) do out[#out + 1] = {'L', tid} end
    end
  end
  return out
end
`

// ghostLimitLua bounds the ghosts (entries of deleted or expired
// transactions) one popFusedScript call skips before it returns what it
// has: enough to clear a queue behind a cancelled fan-out in one call, small
// enough that one call stays short (each ghost is one HMGET and one EXISTS).
const ghostLimitLua = "1000"

// popFusedScript pops a queue in one step on a server that is not a
// Cluster (it reads and writes transaction keys it learns as it runs): it
// takes up to max entries as popScript does, reads each transaction's
// payload size (HSTRLEN; the first live entry of a call that keeps it
// whatever its size, ARGV[7] "1": its payload and metadata at once, one
// HMGET), keeps the live ones that fit the byte budget,
// reads their payloads and metadata, marks them and, in reliable mode,
// records them in flight and in the reaper's index. Entries beyond the
// budget go back to the head of their lists untouched, their payloads
// never read: a pop over many big payloads costs Redis what it delivers,
// not what it looked at (it used to copy every payload it took into Lua,
// 16 MiB per call of a queue of 1 MiB messages, to deliver a few of them).
//
//	KEYS[1] high list  KEYS[2] low list  KEYS[3] lastpop string
//	KEYS[4] inflight zset  KEYS[5] the reaper's index zset
//	ARGV[1] max  ARGV[2] now (unix s)  ARGV[3] lastpop TTL (s)
//	ARGV[4] "1" reliable, "0" plain  ARGV[5] ack deadline (ms)
//	ARGV[6] byte budget  ARGV[7] "1": the first live entry is kept whatever its size
//	ARGV[8] full queue name (state field, index member)  ARGV[9] new state
//	ARGV[10] transaction key prefix  ARGV[11] meta suffix  ARGV[12] state suffix
//	ARGV[13] minimum TTL (ms) of a list that gets entries back
//	ARGV[14] owner  ARGV[15] nonce  ARGV[16] now (unix ms)  ARGV[17] record window (ms)
//	returns {flag, taken, prio, tid, live, payload, callback, expirationDate, ...}:
//	flag "ok", "limited" (entries beyond the budget went back) or "big" (the
//	first live entry alone is over the budget and ARGV[7] is "0": it and
//	every entry after it went back, nothing was marked); taken = entries
//	popped, ghosts and entries put back included (ghosts do not count
//	against max: the script pops on past them, up to ghostLimitLua); then one 6-tuple per
//	entry delivered (live "1") or skipped as a ghost (live "0": deleted or
//	expired), in pop order.
//
// The live entries it marks are recorded in the lastpop value under the
// call's owner and nonce (see luaRecordPop), so that popUndoScript can
// put them back and reset their states if the reply is lost; a call that
// an undo cancelled before it ran puts back everything it took, marks
// nothing and returns {"ok", "0"}.
// Not idempotent: run it with runOnce (see noRetryCmd).
var popFusedScript = redis.NewScript(luaPopEntries + luaRecordPop + `
local max, budget = tonumber(ARGV[1]), tonumber(ARGV[6])
local pre, metaSuf, stateSuf = ARGV[10], ARGV[11], ARGV[12]
-- Ghosts do not count against max: pop again until max live entries, an
-- empty queue or ghostLimit ghosts, so that a pop behind many deleted or
-- expired entries is still one call.
local entries, info, liveN, ghosts = {}, {}, 0, 0
local got, want
repeat
  want = max - liveN
  got = popEntries(KEYS[1], KEYS[2], want)
  for _, e in ipairs(got) do
    local meta = pre .. e[2] .. metaSuf
    local size, v
    if liveN == 0 and ARGV[7] == '1' then
      -- The first live entry of a call that keeps it whatever its size
      -- is delivered for sure: read it at once (HMGET tells a ghost too:
      -- no payload field), one command instead of HSTRLEN now and HMGET
      -- later.
      v = redis.call('HMGET', meta, 'payload', 'callback', 'expirationDate')
      size = #(v[1] or '')
    else
      -- The payload's size only (O(1)): a payload is read once it is
      -- known to fit the budget, so a pop over big payloads reads no
      -- more than it delivers.
      size = redis.call('HSTRLEN', meta, 'payload')
    end
    local live = size > 0 or (v ~= nil and v[1] ~= false) or redis.call('EXISTS', meta) == 1
    if not live then v = nil end
    entries[#entries + 1] = e
    info[#entries] = {live, size, v}
    if live then liveN = liveN + 1 else ghosts = ghosts + 1 end
  end
until #got < want or liveN >= max or ghosts >= ` + ghostLimitLua + `
if #entries == 0 then return {'ok', '0'} end
local flag, total, kept, stop = 'ok', 0, 0, #entries + 1
for i, e in ipairs(entries) do
  local live, size = info[i][1], info[i][2]
  if live then
    if total + size > budget and (kept > 0 or ARGV[7] ~= '1') then
      stop = i
      flag = 'limited'
      if kept == 0 then flag = 'big' end
      break
    end
    total, kept = total + size, kept + 1
  end
end
-- Record what this call marks (the live entries before stop), in pop order.
local members = {}
for i = 1, stop - 1 do
  if info[i][1] then members[#members + 1] = entries[i][1] .. entries[i][2] end
end
local cancelled = recordPop(KEYS[3], ARGV[2], ARGV[3], ARGV[14], ARGV[15], ARGV[16], ARGV[17], members)
if cancelled then stop, kept = 1, 0 end
if stop <= #entries then
  -- Back to the head of their lists, in order; a list the pop emptied is
  -- gone with its TTL: it lives at least as long as its entries again.
  local back = {H = {}, L = {}}
  local ttl = tonumber(ARGV[13])
  local nowMs = tonumber(ARGV[2]) * 1000
  for i = #entries, stop, -1 do
    local e = entries[i]
    table.insert(back[e[1]], e[2])
    local exp = tonumber(redis.call('HGET', pre .. e[2] .. metaSuf, 'expirationDate') or '')
    if exp and exp * 1000 - nowMs + 60000 > ttl then ttl = exp * 1000 - nowMs + 60000 end
  end
  for prio, key in pairs({H = KEYS[1], L = KEYS[2]}) do
    if #back[prio] > 0 then
      redis.call('LPUSH', key, unpack(back[prio]))
      if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
    end
  end
end
if cancelled then return {'ok', '0'} end
local out = {flag, tostring(#entries)}
local deadline = tonumber(ARGV[5])
local n = 0
for i = 1, stop - 1 do
  local e, live, v = entries[i], info[i][1], {}
  n = n + 1
  local l = '0'
  if live then
    l = '1'
    v = info[i][3] or redis.call('HMGET', pre .. e[2] .. metaSuf, 'payload', 'callback', 'expirationDate')
    local state = pre .. e[2] .. stateSuf
    if redis.call('HSET', state, ARGV[8], ARGV[9]) == 1 and redis.call('PTTL', state) == -1 then
      local ttl = redis.call('PTTL', pre .. e[2] .. metaSuf)
      if ttl > 0 then redis.call('PEXPIRE', state, ttl) end
    end
    if ARGV[4] == '1' then
      redis.call('ZADD', KEYS[4], deadline + n / 1000, e[1] .. e[2])
    end
  end
  out[#out + 1] = e[1]
  out[#out + 1] = e[2]
  out[#out + 1] = l
  out[#out + 1] = v[1] or ''
  out[#out + 1] = v[2] or ''
  out[#out + 1] = v[3] or ''
end
if ARGV[4] == '1' and kept > 0 then
  local cur = redis.call('ZSCORE', KEYS[5], ARGV[8])
  if (not cur) or tonumber(cur) > deadline then redis.call('ZADD', KEYS[5], deadline, ARGV[8]) end
end
return out
`)

// popUndoScript undoes one pop script call (popScript or popFusedScript)
// whose reply was lost, by its owner and nonce: if the call's record is in
// the lastpop value, the entries it took go back to the head of their
// lists in pop order (a reliable entry only while it is still in flight
// under that call's deadline: one the reaper re-queued is left alone) and,
// for popFusedScript, their states go back to Pending where the call set
// them; the record is removed. If there is no record the call has not run
// (or it was already undone): a tombstone is left so that the call, should
// it still arrive, takes nothing (see luaRecordPop). Idempotent.
//
//	KEYS[1] high list  KEYS[2] low list  KEYS[3] lastpop string  KEYS[4] inflight zset
//	ARGV[1] owner  ARGV[2] nonce  ARGV[3] now (unix ms)  ARGV[4] lastpop TTL (s)
//	ARGV[5] "1" reliable  ARGV[6] the call's ack deadline (ms)
//	ARGV[7] "1": the call set states (popFusedScript; reads transaction keys)
//	ARGV[8] full queue name (state field)  ARGV[9] the state the call set
//	ARGV[10] transaction key prefix  ARGV[11] meta suffix  ARGV[12] state suffix
//	ARGV[13] minimum TTL (ms) of a list that gets entries back
//	returns the number of entries put back, or -1 when there was no record.
var popUndoScript = redis.NewScript(luaRecordPop + `
local old = redis.call('GET', KEYS[3])
local head, lines, found = '0', {}, nil
if old then
  local first = true
  for line in string.gmatch(old, '[^\n]+') do
    if first then
      head, first = line, false
    else
      local n, kind, rest = string.match(line, '^%S+ (%S+) %d+ (%a) ?(.*)$')
      if n == ARGV[2] then found = {kind, rest} else lines[#lines + 1] = line end
    end
  end
end
if found and found[1] == 'x' then return -1 end
if not found then lines[#lines + 1] = ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' x' end
local val = head
if #lines > 0 then val = val .. '\n' .. table.concat(lines, '\n') end
if old then
  redis.call('SET', KEYS[3], val, 'KEEPTTL')
else
  redis.call('SET', KEYS[3], val, 'EX', ARGV[4])
end
if not found then return -1 end
local taken = {}
if found[2] ~= '' and found[2] ~= '[]' then taken = cjson.decode(found[2]) end
local back = {}
local deadline = tonumber(ARGV[6])
for _, m in ipairs(taken) do
  local ours = true
  if ARGV[5] == '1' then
    local score = redis.call('ZSCORE', KEYS[4], m)
    ours = score and tonumber(score) <= deadline + 1
    if ours then redis.call('ZREM', KEYS[4], m) end
  end
  if ours then back[#back + 1] = m end
end
local ttl = tonumber(ARGV[13])
if ARGV[7] == '1' then
  local pre, metaSuf, stateSuf = ARGV[10], ARGV[11], ARGV[12]
  local nowMs = tonumber(ARGV[3])
  for _, m in ipairs(back) do
    local tid = string.sub(m, 2)
    local meta, state = pre .. tid .. metaSuf, pre .. tid .. stateSuf
    local exp = redis.call('HGET', meta, 'expirationDate')
    if redis.call('HGET', state, ARGV[8]) == ARGV[9] and (exp or redis.call('EXISTS', meta) == 1) then
      redis.call('HSET', state, ARGV[8], 'Pending')
    end
    exp = tonumber(exp or '')
    if exp and exp * 1000 - nowMs + 60000 > ttl then ttl = exp * 1000 - nowMs + 60000 end
  end
end
putBack(KEYS[1], KEYS[2], back, ttl)
return #back
`)

// touchLastPopScript records a pop that took nothing in a queue's lastpop
// value, keeping the records of recent pop calls (see luaRecordPop): a
// plain SET would drop a record that an undo still needs.
//
//	KEYS[1] lastpop string
//	ARGV[1] now (unix s)  ARGV[2] lastpop TTL (s)  ARGV[3] now (unix ms)
//	ARGV[4] record window (ms)
//	returns 1.
var touchLastPopScript = redis.NewScript(luaRecordPop + `
recordPop(KEYS[1], ARGV[1], ARGV[2], '', '', ARGV[3], ARGV[4], nil)
return 1
`)
