package redisq

import "github.com/redis/go-redis/v9"

// Every Lua script of the gateway lives in this file or, for the pop
// scripts and the records that let a lost pop be undone, in scripts_pop.go,
// each with its KEYS / ARGV / return contract. Scripts only touch the keys they are given, and all
// keys of one call share a cluster slot. The Go wrappers are the Store
// methods that run them.

// transitionScript sets the state of one (transaction, queue) pair if the
// transaction still exists, and optionally returns its metadata. The state
// hash gets the metadata's TTL when the state field is new (the hash may be
// new: its provisioning wrote no states); an existing field means the hash
// was written with its TTL.
//
//	KEYS[1] transaction meta hash  KEYS[2] transaction state hash
//	ARGV[1] state field (full queue name)  ARGV[2] new state
//	ARGV[3] "1" to return {payload, callback, expirationDate}
//	ARGV[4] optional: change the state only if it currently is this one
//	returns nil (a ghost: deleted or expired), 0 (state was not ARGV[4]),
//	1, or the metadata array.
var transitionScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[4] and redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[4] then return 0 end
if redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) == 1 and redis.call('PTTL', KEYS[2]) == -1 then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[2], ttl) end
end
if ARGV[3] == '1' then
  return redis.call('HMGET', KEYS[1], 'payload', 'callback', 'expirationDate')
end
return 1
`)

// provisionMetaScript writes a transaction's metadata and initial states.
//
//	KEYS[1] meta hash  KEYS[2] state hash
//	ARGV[1] expire at (unix s)  ARGV[2] number of metadata pairs m
//	ARGV[3 .. 2+2m] metadata field/value pairs, then state field/value pairs
//	returns 1.
//
// Both hashes are written in chunks of 2000 pairs: Lua's unpack cannot
// spread more than about 8000 values into one call, and a body may carry
// thousands of extra metadata fields or target thousands of queues.
var provisionMetaScript = redis.NewScript(`
local last = 2 + 2 * tonumber(ARGV[2])
local chunk = 4000
for i = 3, last, chunk do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + chunk - 1, last)))
end
redis.call('EXPIREAT', KEYS[1], ARGV[1])
for i = last + 1, #ARGV, chunk do
  redis.call('HSET', KEYS[2], unpack(ARGV, i, math.min(i + chunk - 1, #ARGV)))
end
if #ARGV > last then redis.call('EXPIREAT', KEYS[2], ARGV[1]) end
return 1
`)

// provisionAllScript provisions a transaction in one step on a server that
// is not a Cluster (keys of several slots in one script): metadata, states
// and every push, atomically. Used for small fan-outs; larger ones and
// Cluster mode use provisionMetaScript then pushScript per queue.
//
//	KEYS[1] meta hash  KEYS[2] state hash  KEYS[3..] one list per queue
//	ARGV[1] expire at (unix s)  ARGV[2] number of metadata pairs m
//	ARGV[3] tid  ARGV[4] minimum list TTL (ms)
//	ARGV[5 .. 4+2m] metadata field/value pairs, then one state field per queue
//	returns 1.
var provisionAllScript = redis.NewScript(luaPushEntry + `
local m = tonumber(ARGV[2])
local meta = {}
for i = 5, 4 + 2 * m do meta[#meta + 1] = ARGV[i] end
for i = 1, #meta, 4000 do
  redis.call('HSET', KEYS[1], unpack(meta, i, math.min(i + 3999, #meta)))
end
redis.call('EXPIREAT', KEYS[1], ARGV[1])
local states = {}
for q = 3, #KEYS do
  states[#states + 1] = ARGV[4 + 2 * m + q - 2]
  states[#states + 1] = 'Pending'
end
for i = 1, #states, 4000 do
  redis.call('HSET', KEYS[2], unpack(states, i, math.min(i + 3999, #states)))
end
redis.call('EXPIREAT', KEYS[2], ARGV[1])
for q = 3, #KEYS do pushEntry(KEYS[q], ARGV[3], ARGV[4]) end
return 1
`)

// pushScript appends a transaction id to a queue list and makes sure the
// list lives at least as long as the entry.
//
//	KEYS[1] high or low list
//	ARGV[1] tid  ARGV[2] minimum TTL (ms)
//	returns the new list length.
var pushScript = redis.NewScript(luaPushEntry + `
return pushEntry(KEYS[1], ARGV[1], ARGV[2])
`)

// luaPushEntry is the Lua function pushEntry(list, tid, ttl) of the push
// scripts: it appends tid to list and makes sure the list lives at least
// ttl ms, and returns the new length. A new list gets the TTL; a longer one
// only moves its expiry later (PEXPIRE GT: one command, no PTTL read per
// push), and is read only when that did not apply, to give a list without
// a TTL (written by an external writer) one.
const luaPushEntry = `
local function pushEntry(list, tid, ttl)
  local len = redis.call('RPUSH', list, tid)
  if len == 1 then
    redis.call('PEXPIRE', list, ttl)
  elseif redis.call('PEXPIRE', list, ttl, 'GT') == 0 and redis.call('PTTL', list) == -1 then
    redis.call('PEXPIRE', list, ttl)
  end
  return len
end
`

// handBackScript puts entries back at the head of their lists, keeping their
// original order (the first entry given ends up first in line).
//
//	KEYS[1] high list  KEYS[2] low list
//	ARGV[1] minimum TTL (ms)  ARGV[2..] prio, tid pairs in pop order
//	returns the number of entries put back.
var handBackScript = redis.NewScript(`
local n = 0
for i = #ARGV - 1, 2, -2 do
  local key = KEYS[2]
  if ARGV[i] == 'H' then key = KEYS[1] end
  redis.call('LPUSH', key, ARGV[i + 1])
  n = n + 1
end
for _, key in ipairs(KEYS) do
  local ttl = redis.call('PTTL', key)
  if ttl ~= -2 and ttl < tonumber(ARGV[1]) then redis.call('PEXPIRE', key, ARGV[1]) end
end
return n
`)

// handBackReliableScript returns reliable entries that are still in flight
// to the head of their lists at once (a consumer that could not take them),
// keeping their original order; entries acked meanwhile are left alone.
//
//	KEYS[1] high list  KEYS[2] low list  KEYS[3] inflight zset
//	ARGV[1] minimum TTL (ms)  ARGV[2..] prio, tid, max score triples in pop
//	order: an entry goes back only while its in-flight score is at most
//	max score (the delivery it came from; "+inf": any)
//	returns the ids put back.
var handBackReliableScript = redis.NewScript(`
local back = {}
for i = #ARGV - 2, 2, -3 do
  local prio, tid, bound = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local member = prio .. tid
  local score = redis.call('ZSCORE', KEYS[3], member)
  local ours = score and (bound == '+inf' or tonumber(score) <= tonumber(bound))
  if ours and redis.call('ZREM', KEYS[3], member) == 1 then
    local key = KEYS[2]
    if prio == 'H' then key = KEYS[1] end
    redis.call('LPUSH', key, tid)
    back[#back + 1] = tid
  end
end
for i = 1, 2 do
  local ttl = redis.call('PTTL', KEYS[i])
  if ttl ~= -2 and ttl < tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
end
return back
`)

// requeueScript moves reliable entries whose ack deadline has passed back to
// the head of their lists, in their original pop order.
//
//	KEYS[1] high list  KEYS[2] low list  KEYS[3] inflight zset
//	ARGV[1] now (ms)  ARGV[2] minimum list TTL (ms)
//	returns {next deadline (ms) or "-1", member, member, ...} where a member is prio..tid.
var requeueScript = redis.NewScript(`
local due = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
for i = #due, 1, -1 do
  local m = due[i]
  local key = KEYS[2]
  if string.sub(m, 1, 1) == 'H' then key = KEYS[1] end
  redis.call('LPUSH', key, string.sub(m, 2))
end
if #due > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
  for i = 1, 2 do
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl ~= -2 and ttl < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
  end
end
local nxt = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
local out = {'-1'}
if nxt[2] then out[1] = nxt[2] end
for _, m in ipairs(due) do out[#out + 1] = m end
return out
`)

// inflightIndexScript keeps the reaper's index of queues with in-flight
// entries: member = full queue name, score = an ack deadline (ms) no later
// than the queue's earliest one.
//
//	KEYS[1] the index zset
//	ARGV[1] member  ARGV[2] mode: "lt" or "cas"
//	lt:  ARGV[3] deadline: add the member, or lower its score to deadline
//	cas: ARGV[3] expected score, ARGV[4] new score or "-1" to remove: only
//	     if the score is still the expected one (the reaper's update)
//	returns 1 if the index changed, else 0.
//
// Pops only ever add or lower a score; only the reaper raises or removes one,
// and only the score it read, then it re-reads the queue's earliest deadline
// and lowers the index to it, so no interleaving strands an entry.
var inflightIndexScript = redis.NewScript(`
local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])
if cur then cur = tonumber(cur) end
if ARGV[2] == 'lt' then
  local want = tonumber(ARGV[3])
  if (not cur) or cur > want then
    redis.call('ZADD', KEYS[1], want, ARGV[1])
    return 1
  end
  return 0
end
if cur ~= tonumber(ARGV[3]) then return 0 end
local want = tonumber(ARGV[4])
if want < 0 then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], want, ARGV[1])
end
return 1
`)

// ackScript removes acknowledged entries from a queue's inflight zset.
//
//	KEYS[1] inflight zset
//	ARGV[1..] transaction ids
//	returns {1 or 0, ...} per id (0: not in flight on this queue).
var ackScript = redis.NewScript(`
local out = {}
for i, tid in ipairs(ARGV) do
  local n = redis.call('ZREM', KEYS[1], 'H' .. tid)
  if n == 0 then n = redis.call('ZREM', KEYS[1], 'L' .. tid) end
  out[i] = n
end
return out
`)

// ackFusedScript acknowledges reliable deliveries in one step on a server
// that is not a Cluster: each id in flight on the queue leaves the
// inflight zset and, if its transaction still exists, becomes Delivered.
//
//	KEYS[1] inflight zset
//	ARGV[1] full queue name (state field)  ARGV[2] transaction key prefix
//	ARGV[3] meta suffix  ARGV[4] state suffix  ARGV[5..] transaction ids
//	returns {ok, callback, ok, callback, ...} per id: ok "1" (it was in
//	flight here) or "0"; callback "" for none (or a ghost).
var ackFusedScript = redis.NewScript(`
local pre, metaSuf, stateSuf = ARGV[2], ARGV[3], ARGV[4]
local out = {}
for i = 5, #ARGV do
  local tid = ARGV[i]
  local n = redis.call('ZREM', KEYS[1], 'H' .. tid)
  if n == 0 then n = redis.call('ZREM', KEYS[1], 'L' .. tid) end
  local cb = ''
  if n == 1 then
    local meta = pre .. tid .. metaSuf
    local v = redis.call('HMGET', meta, 'callback', 'expirationDate')
    if v[1] or v[2] or redis.call('EXISTS', meta) == 1 then
      cb = v[1] or ''
      local state = pre .. tid .. stateSuf
      if redis.call('HSET', state, ARGV[1], 'Delivered') == 1 and redis.call('PTTL', state) == -1 then
        local ttl = redis.call('PTTL', meta)
        if ttl > 0 then redis.call('PEXPIRE', state, ttl) end
      end
    end
  end
  out[#out + 1] = tostring(n)
  out[#out + 1] = cb
end
return out
`)

// updateTransScript changes the metadata of an existing transaction of
// one org.
//
//	KEYS[1] meta hash  KEYS[2] state hash
//	ARGV[1] org ("" for none)  ARGV[2] new expire at (unix s) or "0" to keep
//	ARGV[3..] field/value pairs
//	returns 0 if the transaction does not exist or belongs to another org
//	(an absent pb:org field is the empty org), else 1.
var updateTransScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if (redis.call('HGET', KEYS[1], 'pb:org') or '') ~= ARGV[1] then return 0 end
if #ARGV > 2 then redis.call('HSET', KEYS[1], unpack(ARGV, 3)) end
if ARGV[2] ~= '0' then
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
  redis.call('EXPIREAT', KEYS[2], ARGV[2])
end
return 1
`)

// deleteTransScript deletes a transaction of one org.
//
//	KEYS[1] meta hash  KEYS[2] state hash
//	ARGV[1] org ("" for none)
//	returns -1 if the transaction does not exist, 0 if it belongs to another
//	org (left alone), 1 if it was deleted.
var deleteTransScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
if (redis.call('HGET', KEYS[1], 'pb:org') or '') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
`)

// extendScript makes queue lists live at least a given time.
//
//	KEYS[1] high list  KEYS[2] low list
//	ARGV[1] minimum TTL (ms)
//	returns 1.
var extendScript = redis.NewScript(`
for _, key in ipairs(KEYS) do
  local ttl = redis.call('PTTL', key)
  if ttl ~= -2 and ttl < tonumber(ARGV[1]) then redis.call('PEXPIRE', key, ARGV[1]) end
end
return 1
`)

// modifyGroupScript adds and removes members of an existing group.
//
//	KEYS[1] group member set
//	ARGV[1] number of ids to add a, ARGV[2 .. 1+a] ids to add, then ids to remove
//	returns 0 if the group does not exist, else 1.
var modifyGroupScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local a = tonumber(ARGV[1])
for i = 2, 1 + a do redis.call('SADD', KEYS[1], ARGV[i]) end
for i = 2 + a, #ARGV do redis.call('SREM', KEYS[1], ARGV[i]) end
return 1
`)

// createBoxScript creates a secure box unless it exists.
//
//	KEYS[1] box hash
//	ARGV[1] user  ARGV[2] password hash  ARGV[3] created (unix s)
//	returns 0 if the box exists, else 1.
var createBoxScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'user', ARGV[1], 'hash', ARGV[2], 'created', ARGV[3])
return 1
`)

// claimDeferredScript claims deferred provisionings that are due: each is
// leased (its due time moved to now + lease) so that a node that dies while
// provisioning it leaves it for another node to claim.
//
//	KEYS[1] deferred zset  KEYS[2] deferred body hash
//	ARGV[1] now (ms)  ARGV[2] lease (ms)  ARGV[3] limit
//	returns {tid, body, tid, body, ...}; an id without a body is dropped.
var claimDeferredScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, tid in ipairs(ids) do
  local body = redis.call('HGET', KEYS[2], tid)
  if body then
    redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), tid)
    out[#out + 1] = tid
    out[#out + 1] = body
  else
    redis.call('ZREM', KEYS[1], tid)
  end
end
return out
`)

// onceClaimScript claims an idempotency key (POST /trans with an
// Idempotency-Key header) or reports who holds it. The record is a hash
// {hash, tid, state, lease}: state "pending" while the claimant provisions
// (lease = the time in ms until which it is presumed alive), "done" once
// the transaction is provisioned. The record expires window ms after the
// first claim.
//
//	KEYS[1] idempotency record
//	ARGV[1] body hash  ARGV[2] candidate tid  ARGV[3] now (ms)
//	ARGV[4] lease (ms)  ARGV[5] window (ms)
//	returns {"new", tid} (claimed: provision tid), {"conflict"} (another
//	body), {"done", tid}, {"pending", tid} (someone is provisioning it), or
//	{"takeover", tid, oldtid} (the claimant's lease ran out: provision tid,
//	the pending oldtid is abandoned). The same call run twice (go-redis
//	resends a script whose reply was lost) gets the same answer, so a
//	claimant never waits on its own claim.
var onceClaimScript = redis.NewScript(`
local now = tonumber(ARGV[3])
local lease = now + tonumber(ARGV[4])
local r = redis.call('HMGET', KEYS[1], 'hash', 'tid', 'state', 'lease')
if not r[1] then
  redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'tid', ARGV[2], 'state', 'pending', 'lease', lease)
  redis.call('PEXPIRE', KEYS[1], ARGV[5])
  return {'new', ARGV[2]}
end
if r[1] ~= ARGV[1] then return {'conflict'} end
if r[3] == 'done' then return {'done', r[2]} end
if r[2] == ARGV[2] then
  -- This very call again (go-redis resent it after a lost reply): the
  -- claim is already ours; answer as the first run did.
  local prev = redis.call('HGET', KEYS[1], 'prev')
  if prev then return {'takeover', ARGV[2], prev} end
  return {'new', ARGV[2]}
end
if tonumber(r[4]) >= now then return {'pending', r[2]} end
redis.call('HSET', KEYS[1], 'tid', ARGV[2], 'lease', lease, 'prev', r[2])
return {'takeover', ARGV[2], r[2]}
`)

// onceSettleScript ends a claim made by onceClaimScript.
//
//	KEYS[1] idempotency record
//	ARGV[1] tid  ARGV[2] "done" (provisioned), "release" (failed: drop the
//	claim so a repeat provisions) or "renew" (extend the lease)
//	ARGV[3] lease deadline (ms, for "renew")
//	returns 1 when the claim was still tid's (or the record expired: the
//	window passed), 0 when another claimant took it over.
var onceSettleScript = redis.NewScript(`
local tid = redis.call('HGET', KEYS[1], 'tid')
if not tid then return 1 end
if tid ~= ARGV[1] then return 0 end
if ARGV[2] == 'done' then
  redis.call('HSET', KEYS[1], 'state', 'done')
elseif ARGV[2] == 'release' then
  if redis.call('HGET', KEYS[1], 'state') == 'pending' then redis.call('DEL', KEYS[1]) end
else
  redis.call('HSET', KEYS[1], 'lease', ARGV[3])
end
return 1
`)

var allScripts = []*redis.Script{
	popScript, popFusedScript, popUndoScript, touchLastPopScript, transitionScript, provisionMetaScript, provisionAllScript,
	pushScript, handBackScript, handBackReliableScript,
	requeueScript, inflightIndexScript, ackScript, ackFusedScript, updateTransScript, deleteTransScript, extendScript,
	modifyGroupScript, createBoxScript, claimDeferredScript,
	onceClaimScript, onceSettleScript,
	metaInfoScript,
}
