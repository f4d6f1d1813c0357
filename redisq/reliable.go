package redisq

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
)

// indexInflight records (or moves earlier) the earliest ack deadline of
// queue full in the reaper's index.
func (s *Store) indexInflight(ctx context.Context, full string, deadline int64) error {
	err := s.runScript(ctx, inflightIndexScript, []string{keyInflightQueues}, full, "lt", deadline).Err()
	if err != nil {
		return fmt.Errorf("inflight index %s: %w", full, err)
	}
	return nil
}

// ackRaw removes tids from the inflight set of queue full and tells, per
// id, whether it was in flight there.
func (s *Store) ackRaw(ctx context.Context, full string, tids []string) ([]bool, error) {
	if len(tids) == 0 {
		return nil, nil
	}
	args := make([]any, len(tids))
	for i, t := range tids {
		args[i] = t
	}
	res, err := s.runScript(ctx, ackScript, []string{KeysOfQueue(full).Inflight}, args...).Int64Slice()
	if err != nil {
		return nil, fmt.Errorf("ack on %s: %w", full, err)
	}
	out := make([]bool, len(tids))
	for i := range tids {
		out[i] = i < len(res) && res[i] == 1
	}
	return out, nil
}

// AckResult is the outcome of acknowledging one transaction on a queue.
type AckResult struct {
	TID      string
	OK       bool   // it was in flight on the queue and is now Delivered
	Callback string // the transaction's callback URL, if any
	// Expired: it was in flight, but its transaction expired or was
	// deleted meanwhile (OK is true: it is no longer in flight).
	Expired bool
}

// Ack acknowledges reliable deliveries on queue full: each id in flight
// there becomes Delivered. Ids that are not in flight give OK=false.
func (s *Store) Ack(ctx context.Context, full string, tids []string) ([]AckResult, error) {
	if s.fused() {
		return s.ackFused(ctx, full, tids)
	}
	ok, err := s.ackRaw(ctx, full, tids)
	if err != nil {
		return nil, err
	}
	out := make([]AckResult, len(tids))
	var acked []Message
	var idx []int
	for i, t := range tids {
		out[i] = AckResult{TID: t, OK: ok[i]}
		if ok[i] {
			acked = append(acked, Message{TID: t, Queue: full})
			idx = append(idx, i)
		}
	}
	if len(acked) == 0 {
		return out, nil
	}
	// The entries left the in-flight set: record Delivered even if the
	// caller goes away now, or they would stay Blocked for good.
	marked, gone, err := s.fetchAndMark(context.WithoutCancel(ctx), acked, domain.StateDelivered)
	if err != nil {
		return out, fmt.Errorf("ack on %s: mark delivered: %w", full, err)
	}
	cb := make(map[string]string, len(marked))
	for _, m := range marked {
		cb[m.TID] = m.Callback
	}
	expired := make(map[string]bool, len(gone))
	for _, m := range gone {
		expired[m.TID] = true
	}
	for _, i := range idx {
		out[i].Callback = cb[out[i].TID]
		out[i].Expired = expired[out[i].TID]
	}
	return out, nil
}

// ackFused is Ack in one script (ackFusedScript) on a server that is not a
// Cluster.
func (s *Store) ackFused(ctx context.Context, full string, tids []string) ([]AckResult, error) {
	if len(tids) == 0 {
		return []AckResult{}, nil
	}
	pre, metaSuf, stateSuf := transKeyParts()
	args := make([]any, 0, 4+len(tids))
	args = append(args, full, pre, metaSuf, stateSuf)
	for _, t := range tids {
		args = append(args, t)
	}
	// The entries leave the in-flight set and become Delivered in one
	// step, even if the caller goes away now.
	raw, err := s.runScript(context.WithoutCancel(ctx), ackFusedScript, []string{KeysOfQueue(full).Inflight}, args...).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("ack on %s: %w", full, err)
	}
	out := make([]AckResult, len(tids))
	for i, t := range tids {
		out[i] = AckResult{TID: t}
		if 2*i+1 < len(raw) {
			out[i].OK = raw[2*i] == "1"
			out[i].Callback = raw[2*i+1]
		}
	}
	return out, nil
}

// Requeued is a reliable entry whose ack deadline passed and that went back
// to the head of its queue.
type Requeued struct {
	Queue string
	TID   string
}

// ReapInflight puts reliable entries whose ack deadline has passed back at
// the head of their queues as Pending, for at most limit queues. Any number
// of nodes may run it concurrently: each expired entry is re-queued once.
func (s *Store) ReapInflight(ctx context.Context, limit int) ([]Requeued, error) {
	now := s.now().UnixMilli()
	queues, err := s.rdb.ZRangeByScoreWithScores(ctx, keyInflightQueues, &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(now, 10), Count: int64(limit)}).Result()
	if err != nil {
		return nil, fmt.Errorf("reap: index: %w", err)
	}
	var out []Requeued
	for _, zq := range queues {
		full, _ := zq.Member.(string)
		qk := KeysOfQueue(full)
		// Pending before the entries are visible again, and only where they
		// are still Blocked (a racing ack keeps its Delivered).
		if due, err := s.rdb.ZRangeByScore(ctx, qk.Inflight, &redis.ZRangeBy{Min: "-inf", Max: strconv.FormatInt(now, 10)}).Result(); err == nil && len(due) > 0 {
			msgs := make([]Message, 0, len(due))
			for _, m := range due {
				if len(m) > 1 {
					msgs = append(msgs, Message{TID: m[1:], Queue: full, Priority: domain.Priority(m[0])})
				}
			}
			s.setStatesIf(ctx, msgs, domain.StatePending, domain.StateBlocked)
		}
		raw, err := requeueScript.Run(ctx, s.rdb, []string{qk.High, qk.Low, qk.Inflight}, now, handBackTTL.Milliseconds()).StringSlice()
		if err != nil {
			return out, fmt.Errorf("reap %s: %w", full, err)
		}
		if len(raw) == 0 {
			continue
		}
		nextMs, _ := strconv.ParseFloat(raw[0], 64)
		if err := inflightIndexScript.Run(ctx, s.rdb, []string{keyInflightQueues}, full, "cas", zq.Score, int64(nextMs)).Err(); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "reap: index update", slog.String("queue", full), slog.Any("err", err))
		}
		// A reliable pop may have added an entry after the re-queue script
		// ran: lower the index to the queue's earliest deadline now.
		if first, err := s.rdb.ZRangeWithScores(ctx, qk.Inflight, 0, 0).Result(); err == nil && len(first) == 1 {
			_ = s.indexInflight(ctx, full, int64(first[0].Score))
		}
		if len(raw) == 1 {
			continue
		}
		for _, m := range raw[1:] {
			if len(m) > 1 {
				out = append(out, Requeued{Queue: full, TID: m[1:]})
			}
		}
		s.wake(ctx, full)
	}
	return out, nil
}
