package redisq

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
)

// Byte budgets. A read that takes messages or looks at them learns the size
// of every payload first (small replies), then fetches only the payloads
// that fit its budget, so no reply is larger than the budget however big
// and many the payloads are: one huge reply used to hit the Redis read
// timeout, stall every queue of the batch and, as the read failed after the
// state change, leave messages handed back in state Delivered.

// DefaultBatchBytes is the payload bytes one PopMany or Peek call reads
// when the caller sets no budget.
const DefaultBatchBytes int64 = 8 << 20

// payloadChunkBytes bounds the payload bytes of one pipelined read.
const payloadChunkBytes int64 = 4 << 20

// metaInfoScript reads what a pop or peek needs to know of one transaction
// without changing anything: whether it exists, its payload size, callback
// and expiry, and its payload when not larger than an inline bound.
//
//	KEYS[1] transaction meta hash
//	ARGV[1] inline bound (bytes)
//	returns false (a ghost), or {size, callback, expirationDate[, payload]}.
var metaInfoScript = redis.NewScript(`
local size = redis.call('HSTRLEN', KEYS[1], 'payload')
if size <= tonumber(ARGV[1]) then
  local v = redis.call('HMGET', KEYS[1], 'payload', 'callback', 'expirationDate')
  if not (v[1] or v[2] or v[3]) and redis.call('EXISTS', KEYS[1]) == 0 then return false end
  return {size, v[2], v[3], v[1]}
end
local v = redis.call('HMGET', KEYS[1], 'callback', 'expirationDate')
return {size, v[1], v[2]}
`)

// entryInfo is what readInfo learned about one entry.
type entryInfo struct {
	live    bool  // the transaction exists
	size    int64 // payload bytes
	inlined bool  // Payload is filled
}

// readInfo reads, without changing anything, the metadata of each entry
// (callback, expiry, and the payload when it is at most inline bytes) and
// reports ghosts. It fills the entries in place.
func (s *Store) readInfo(ctx context.Context, entries []Message, inline int64) ([]entryInfo, error) {
	calls := make([]scriptCall, len(entries))
	for i, m := range entries {
		calls[i] = scriptCall{metaInfoScript, []string{KeysOfTrans(m.TID).Meta}, []any{inline}}
	}
	cmds, err := s.runPayloadScripts(ctx, calls)
	if err != nil {
		return nil, fmt.Errorf("read metadata: %w", err)
	}
	info := make([]entryInfo, len(entries))
	for i, c := range cmds {
		vals, err := c.Slice()
		if errors.Is(err, redis.Nil) || len(vals) < 3 {
			continue
		}
		size, _ := vals[0].(int64)
		m := &entries[i]
		m.Callback, _ = vals[1].(string)
		if e, ok := vals[2].(string); ok {
			m.ExpiresAt, _ = strconv.ParseInt(e, 10, 64)
		}
		info[i] = entryInfo{live: true, size: size}
		if len(vals) > 3 {
			m.Payload, _ = vals[3].(string)
			info[i].inlined = true
		}
	}
	return info, nil
}

// readPayloads fetches the payloads of the entries at idx that readInfo did
// not inline, without changing anything, in pipelines of at most
// payloadChunkBytes. An entry whose transaction went away meanwhile is
// reported in gone.
func (s *Store) readPayloads(ctx context.Context, entries []Message, info []entryInfo, idx []int) (gone []int, err error) {
	for len(idx) > 0 {
		pipe := s.rdb.Pipeline()
		var cmds []*redis.StringCmd
		var at []int
		var bytes int64
		for len(idx) > 0 && (len(at) == 0 || bytes+info[idx[0]].size <= payloadChunkBytes) {
			i := idx[0]
			idx = idx[1:]
			if info[i].inlined {
				continue
			}
			cmds = append(cmds, pipe.HGet(ctx, KeysOfTrans(entries[i].TID).Meta, "payload"))
			at = append(at, i)
			bytes += info[i].size
		}
		if len(cmds) == 0 {
			continue
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("read payloads: %w", err)
		}
		for j, c := range cmds {
			v, err := c.Result()
			if errors.Is(err, redis.Nil) {
				gone = append(gone, at[j])
				continue
			}
			entries[at[j]].Payload = v
			info[at[j]].inlined = true
		}
	}
	return gone, nil
}

// PeekBounded is Peek bounded in bytes as well as in messages: it returns
// the first messages of queue full whose payloads add up to at most
// maxBytes (the first one always, whatever its size), without removing
// them or changing any state. maxBytes <= 0 means DefaultBatchBytes.
func (s *Store) PeekBounded(ctx context.Context, full string, maxMsgs int, maxBytes int64) ([]Message, error) {
	if maxMsgs <= 0 {
		return nil, nil
	}
	if maxBytes <= 0 {
		maxBytes = DefaultBatchBytes
	}
	qk := KeysOfQueue(full)
	var out []Message
	var total int64
	for _, l := range []struct {
		key  string
		prio domain.Priority
	}{{qk.High, 'H'}, {qk.Low, 'L'}} {
		var start int64
		for scanned := 0; len(out) < maxMsgs && scanned < maxGhostScan; {
			window := int64(max(maxMsgs-len(out), ghostWindow))
			ids, err := s.rdb.LRange(ctx, l.key, start, start+window-1).Result()
			if err != nil && !errors.Is(err, redis.Nil) {
				return nil, fmt.Errorf("peek %s: %w", full, err)
			}
			entries := make([]Message, len(ids))
			for i, tid := range ids {
				entries[i] = Message{TID: tid, Queue: full, Priority: l.prio}
			}
			info, err := s.readInfo(ctx, entries, (maxBytes-total)/max(int64(len(entries)), 1))
			if err != nil {
				return nil, fmt.Errorf("peek %s: %w", full, err)
			}
			var chosen []int
			spent := false
			for i := range entries {
				if !info[i].live {
					continue
				}
				if len(out)+len(chosen) >= maxMsgs {
					break
				}
				if len(out)+len(chosen) > 0 && total+info[i].size > maxBytes {
					spent = true
					break
				}
				total += info[i].size
				chosen = append(chosen, i)
			}
			gone, err := s.readPayloads(ctx, entries, info, chosen)
			if err != nil {
				return nil, fmt.Errorf("peek %s: %w", full, err)
			}
			for _, g := range gone {
				info[g].live = false
			}
			for _, i := range chosen {
				if info[i].live {
					out = append(out, entries[i])
				}
			}
			if spent {
				return out, nil
			}
			start += int64(len(ids))
			scanned += len(ids)
			if int64(len(ids)) < window {
				break
			}
		}
	}
	return out, nil
}
