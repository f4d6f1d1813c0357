package redisq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// QueueInfo is what GET /queue/{id} shows.
type QueueInfo struct {
	Size    int64
	High    []string // transaction ids, head first (at most the first 1000)
	Low     []string
	LastPop int64 // unix seconds; 0 = never popped
	Blocked bool  // a live gateway node has a consumer waiting on the queue
}

// queueInfoListMax bounds the ids listed per priority in QueueInfo.
const queueInfoListMax = 1000

// QueueInfo reads the state of queue full.
func (s *Store) QueueInfo(ctx context.Context, full string) (QueueInfo, error) {
	qk := KeysOfQueue(full)
	pipe := s.rdb.Pipeline()
	hl := pipe.LLen(ctx, qk.High)
	ll := pipe.LLen(ctx, qk.Low)
	h := pipe.LRange(ctx, qk.High, 0, queueInfoListMax-1)
	l := pipe.LRange(ctx, qk.Low, 0, queueInfoListMax-1)
	lp := pipe.Get(ctx, qk.LastPop)
	lpOld := pipe.HGet(ctx, qk.Info, "lastPop") // written by versions before the LastPop key
	w := pipe.ZRangeWithScores(ctx, qk.Waiters, 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return QueueInfo{}, fmt.Errorf("queue info %s: %w", full, err)
	}
	info := QueueInfo{Size: hl.Val() + ll.Val(), High: h.Val(), Low: l.Val()}
	if info.High == nil {
		info.High = []string{}
	}
	if info.Low == nil {
		info.Low = []string{}
	}
	// The first line: the value may go on with records of pop calls (see
	// luaRecordPop); versions before them wrote the seconds alone.
	secs, _, _ := strings.Cut(lp.Val(), "\n")
	info.LastPop, _ = strconv.ParseInt(secs, 10, 64)
	if old, _ := strconv.ParseInt(lpOld.Val(), 10, 64); old > info.LastPop {
		info.LastPop = old
	}
	blocked, err := s.anyNodeAlive(ctx, full, w.Val())
	if err != nil {
		return QueueInfo{}, err
	}
	info.Blocked = blocked
	return info, nil
}

// deadRegistrationGrace is how old a registration of a node without a
// heartbeat must be before a reader removes it. A younger one only does not
// count: on Redis Cluster the heartbeat and the registration of one
// SetWaiting live in different slots and may land in either order.
const deadRegistrationGrace = 10 * time.Second

// anyNodeAlive tells whether any of the nodes registered as waiting on a
// queue is alive; dead registrations older than deadRegistrationGrace are
// removed.
func (s *Store) anyNodeAlive(ctx context.Context, full string, regs []redis.Z) (bool, error) {
	if len(regs) == 0 {
		return false, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(regs))
	for i, r := range regs {
		cmds[i] = pipe.Exists(ctx, KeyOfNode(fmt.Sprint(r.Member)))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return false, fmt.Errorf("waiter nodes of %s: %w", full, err)
	}
	alive := false
	cutoff := float64(s.now().Add(-deadRegistrationGrace).UnixMilli())
	var dead []any
	for i, c := range cmds {
		switch {
		case c.Val() == 1:
			alive = true
		case regs[i].Score < cutoff:
			dead = append(dead, regs[i].Member)
		}
	}
	if len(dead) > 0 {
		if err := s.rdb.ZRem(ctx, KeysOfQueue(full).Waiters, dead...).Err(); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "drop dead waiter nodes", slog.Any("err", err))
		}
	}
	return alive, nil
}

// SetWaiting registers node as having consumers waiting on each queue of
// on, and as having none on each queue of off, in one pipeline. With lease
// > 0 the same pipeline first asserts the node's heartbeat for lease (ahead
// of the registrations, so a reader that sees a registration sees the node
// alive), and lapsed reports that the heartbeat had lapsed: Redis lost its
// data (FLUSHALL, a restart without persistence, a failover to an empty
// replica), an outage outlasted the lease, or this is the node's first
// registration. Readers may then have dropped the node's other
// registrations, and the caller must assert them again at once.
func (s *Store) SetWaiting(ctx context.Context, node string, lease time.Duration, on, off []string) (lapsed bool, err error) {
	if len(on)+len(off) == 0 && lease <= 0 {
		return false, nil
	}
	now := s.now()
	pipe := s.rdb.Pipeline()
	var old *redis.IntCmd
	if lease > 0 {
		old = pipe.Exists(ctx, KeyOfNode(node))
		pipe.Set(ctx, KeyOfNode(node), now.Unix(), lease)
	}
	for _, f := range on {
		pipe.ZAdd(ctx, KeysOfQueue(f).Waiters, redis.Z{Score: float64(now.UnixMilli()), Member: node})
	}
	for _, f := range off {
		pipe.ZRem(ctx, KeysOfQueue(f).Waiters, node)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return false, fmt.Errorf("register waiters: %w", err)
	}
	return old != nil && old.Val() == 0, nil
}

// Heartbeat marks node alive for ttl. A node's "blocked" registrations only
// count while its heartbeat key lives, so a crashed node's consumers stop
// showing as blocked after ttl. existed is false when the key had lapsed
// (or on the first beat): readers may then have dropped the node's
// registrations, and the node must register its queues again.
func (s *Store) Heartbeat(ctx context.Context, node string, ttl time.Duration) (existed bool, err error) {
	lapsed, err := s.SetWaiting(ctx, node, ttl, nil, nil)
	if err != nil {
		return false, fmt.Errorf("heartbeat: %w", err)
	}
	return !lapsed, nil
}

// NodeGone removes node's heartbeat (clean shutdown).
func (s *Store) NodeGone(ctx context.Context, node string) error {
	if err := s.rdb.Del(ctx, KeyOfNode(node)).Err(); err != nil {
		return fmt.Errorf("node gone: %w", err)
	}
	return nil
}

// NonEmpty tells, for each full queue name, whether the queue holds any
// entries (one pipelined round trip per chunk).
func (s *Store) NonEmpty(ctx context.Context, fulls []string) ([]bool, error) {
	out := make([]bool, len(fulls))
	for start := 0; start < len(fulls); start += pipelineChunk {
		end := min(start+pipelineChunk, len(fulls))
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.IntCmd, end-start)
		for i := start; i < end; i++ {
			qk := KeysOfQueue(fulls[i])
			cmds[i-start] = pipe.Exists(ctx, qk.High, qk.Low)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			// Exists across two keys is one slot (hash tag), fine in Cluster.
			return nil, fmt.Errorf("queue lengths: %w", err)
		}
		for i, c := range cmds {
			out[start+i] = c.Val() > 0
		}
	}
	return out, nil
}
