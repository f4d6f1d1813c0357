package redisq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// PopRequest asks for up to Max messages of the queue with full name Queue.
type PopRequest struct {
	Queue string
	Max   int
	Opts  PopOptions
}

// PopResult is the outcome of one PopRequest. Taken counts the entries
// taken from the queue, ghosts (expired or deleted transactions) included:
// Taken == Max means the queue may hold more.
type PopResult struct {
	Messages []Message
	Taken    int
	Err      error
}

// PopMany pops several queues in two pipelined round trips (one for the pop
// scripts, one for the per-transaction state changes), whatever their
// number: the hub batches the queues it was woken for. Each queue is popped
// atomically as by Pop; unlike Pop it does one round per queue, so a queue
// whose entries were ghosts reports Taken == Max with fewer Messages and
// the caller pops it again.
func (s *Store) PopMany(ctx context.Context, reqs []PopRequest) []PopResult {
	res := make([]PopResult, len(reqs))
	now := s.now()
	deadlines := make([]int64, len(reqs))
	var idx []scriptCall
	var idxOf []int
	for i, r := range reqs {
		if r.Opts.Reliable {
			deadlines[i] = now.Add(r.Opts.AckTimeout).UnixMilli()
			idx = append(idx, scriptCall{inflightIndexScript, []string{keyInflightQueues}, []any{r.Queue, "lt", deadlines[i]}})
			idxOf = append(idxOf, i)
		}
	}
	if len(idx) > 0 {
		cmds, _ := s.runScripts(ctx, idx)
		for j, c := range cmds {
			if err := c.Err(); err != nil && !errors.Is(err, redis.Nil) {
				res[idxOf[j]].Err = fmt.Errorf("pop %s: inflight index: %w", reqs[idxOf[j]].Queue, err)
			}
		}
	}

	calls := make([]scriptCall, 0, len(reqs))
	callOf := make([]int, 0, len(reqs))
	for i, r := range reqs {
		if res[i].Err != nil || r.Max <= 0 {
			continue
		}
		qk := KeysOfQueue(r.Queue)
		calls = append(calls, scriptCall{popScript, []string{qk.High, qk.Low, qk.Info, qk.Inflight},
			[]any{r.Max, now.Unix(), int64(infoTTL / time.Second), boolArg(r.Opts.Reliable), deadlines[i]}})
		callOf = append(callOf, i)
	}
	if len(calls) == 0 {
		return res
	}
	cmds, _ := s.runScripts(ctx, calls)
	taken := make([][]Message, len(reqs))
	var marks []scriptCall
	var markOf []int // index into reqs
	var markPos []int
	for j, c := range cmds {
		i := callOf[j]
		raw, err := c.StringSlice()
		if err != nil && !errors.Is(err, redis.Nil) {
			res[i].Err = fmt.Errorf("pop %s: %w", reqs[i].Queue, err)
			continue
		}
		state := StateDelivered
		if reqs[i].Opts.Reliable {
			state = StateBlocked
		}
		for k := 0; k+1 < len(raw); k += 2 {
			m := Message{TID: raw[k+1], Queue: reqs[i].Queue, Priority: raw[k][0]}
			tk := KeysOfTrans(m.TID)
			marks = append(marks, scriptCall{transitionScript, []string{tk.Meta, tk.State}, []any{m.Queue, state, "1"}})
			markOf = append(markOf, i)
			markPos = append(markPos, len(taken[i]))
			taken[i] = append(taken[i], m)
		}
		res[i].Taken = len(taken[i])
	}
	if len(marks) == 0 {
		return res
	}
	mcmds, _ := s.runScripts(ctx, marks)
	failed := make([]bool, len(reqs))
	live := make([][]bool, len(reqs))
	for i := range reqs {
		live[i] = make([]bool, len(taken[i]))
	}
	var ghosts map[int][]any // reliable ghosts per request, to drop from the inflight set
	for j, c := range mcmds {
		i, p := markOf[j], markPos[j]
		vals, err := c.Slice()
		switch {
		case errors.Is(err, redis.Nil) || (err == nil && len(vals) < 3):
			m := taken[i][p]
			if s.onSkip != nil {
				s.onSkip(m.Queue, m.TID)
			}
			if reqs[i].Opts.Reliable {
				if ghosts == nil {
					ghosts = map[int][]any{}
				}
				ghosts[i] = append(ghosts[i], string(m.Priority)+m.TID)
			}
		case err != nil:
			failed[i] = true
		default:
			m := &taken[i][p]
			m.Payload, _ = vals[0].(string)
			m.Callback, _ = vals[1].(string)
			if e, ok := vals[2].(string); ok {
				m.ExpiresAt, _ = strconv.ParseInt(e, 10, 64)
			}
			live[i][p] = true
		}
	}
	var after []scriptCall
	for i, r := range reqs {
		if len(taken[i]) == 0 {
			continue
		}
		if failed[i] {
			// Could not read the metadata: put everything back, untouched.
			s.handBackRaw(context.WithoutCancel(ctx), r.Queue, taken[i], r.Opts.Reliable)
			res[i].Err = fmt.Errorf("pop %s: reading transactions failed", r.Queue)
			res[i].Taken = 0
			continue
		}
		for p, m := range taken[i] {
			if live[i][p] {
				res[i].Messages = append(res[i].Messages, m)
			}
		}
		if r.Opts.Reliable && len(res[i].Messages) > 0 {
			after = append(after, scriptCall{inflightIndexScript, []string{keyInflightQueues}, []any{r.Queue, "lt", deadlines[i]}})
		}
	}
	if len(ghosts) > 0 || len(after) > 0 {
		pipe := s.rdb.Pipeline()
		for i, members := range ghosts {
			pipe.ZRem(ctx, KeysOfQueue(reqs[i].Queue).Inflight, members...)
		}
		if _, err := pipe.Exec(ctx); err != nil && len(ghosts) > 0 {
			s.log.LogAttrs(ctx, slog.LevelWarn, "drop ghost inflight entries", slog.Any("err", err))
		}
		// After the pop too: closes the race with a reaper that found the
		// inflight set empty between the first index write and the pop.
		if _, err := s.runScripts(context.WithoutCancel(ctx), after); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "inflight index", slog.Any("err", err))
		}
	}
	return res
}
