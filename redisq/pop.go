package redisq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/popbox/popbox/internal/domain"
)

// PopOptions select plain or reliable pops.
type PopOptions struct {
	// Reliable records the taken entries as in flight (state Blocked) until
	// acknowledged or until AckTimeout passes.
	Reliable   bool
	AckTimeout time.Duration
	// Grace delays the reaper by this much beyond AckTimeout: the consumer
	// (a stream) watches its own deadline and hands back itself.
	Grace time.Duration
}

// Pop atomically takes up to max messages from queue full (H before L,
// FIFO), skipping ghosts (deleted or expired transactions), and marks them
// Delivered (Blocked when reliable). Several nodes may pop the same queue
// concurrently: each entry goes to exactly one caller. It is PopMany for
// one queue, repeated while ghosts left it short of max and the queue may
// hold more (every round takes entries off the queue, so it ends).
func (s *Store) Pop(ctx context.Context, full string, max int, o PopOptions) ([]Message, error) {
	var out []Message
	for len(out) < max {
		want := max - len(out)
		r := s.PopMany(ctx, []PopRequest{{Queue: full, Max: want, Opts: o}})[0]
		if r.Err != nil {
			if len(out) > 0 {
				return out, nil // hand over what was taken; the error repeats next time
			}
			return nil, r.Err
		}
		out = append(out, r.Messages...)
		if r.Taken < want && !r.Limited {
			break
		}
	}
	return out, nil
}

// maxGhostScan bounds the entries one Peek call looks through per list
// while skipping ghosts.
const maxGhostScan = 1 << 20

// ghostWindow is how many list entries Peek examines per round trip while
// skipping ghosts.
const ghostWindow = 256

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// fetchAndMark sets the state of each taken entry and reads its metadata;
// ghosts (transaction expired or deleted) are dropped from out and
// returned in gone (and, for reliable pops, removed from the inflight set).
func (s *Store) fetchAndMark(ctx context.Context, taken []Message, state string) (out, gone []Message, err error) {
	calls := make([]scriptCall, len(taken))
	for i, m := range taken {
		tk := KeysOfTrans(m.TID)
		calls[i] = scriptCall{transitionScript, []string{tk.Meta, tk.State}, []any{m.Queue, state, "1"}}
	}
	cmds, err := s.runScripts(ctx, calls)
	if err != nil {
		return nil, nil, err
	}
	out = taken[:0:0]
	var ghosts []string
	for i, c := range cmds {
		vals, err := c.Slice()
		if errors.Is(err, redis.Nil) || len(vals) < 3 {
			ghosts = append(ghosts, taken[i].Priority.String()+taken[i].TID)
			gone = append(gone, taken[i])
			continue
		}
		m := taken[i]
		m.Payload, _ = vals[0].(string)
		m.Callback, _ = vals[1].(string)
		if e, ok := vals[2].(string); ok {
			m.ExpiresAt, _ = strconv.ParseInt(e, 10, 64)
		}
		out = append(out, m)
	}
	if state == domain.StateBlocked && len(ghosts) > 0 {
		members := make([]any, len(ghosts))
		for i, g := range ghosts {
			members[i] = g
		}
		if err := s.rdb.ZRem(ctx, KeysOfQueue(taken[0].Queue).Inflight, members...).Err(); err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "drop ghost inflight entries", slog.Any("err", err))
		}
	}
	return out, gone, nil
}

// HandBack puts messages taken by Pop back at the head of their queue, in
// their original order, and resets their state to Pending. Use it when a
// message could not be written to the client it was taken for.
func (s *Store) HandBack(ctx context.Context, full string, msgs []Message) error {
	if len(msgs) == 0 {
		return nil
	}
	// Pending first: once back in the list another consumer may take the
	// message at once, and its state must then not be overwritten.
	s.setStates(ctx, msgs, domain.StatePending)
	return s.pushFront(ctx, full, msgs)
}

// HandBackReliable returns reliable messages taken by Pop (in flight) to the
// head of their queue at once, without waiting for the ack deadline. Only
// entries still in flight under the delivery the message came from
// (Message.Deadline) go back: one the reaper already re-queued, or that was
// acknowledged, is left alone, so the two never both put it back.
func (s *Store) HandBackReliable(ctx context.Context, full string, msgs []Message) error {
	if len(msgs) == 0 {
		return nil
	}
	qk := KeysOfQueue(full)
	var ttl int64 = handBackTTL.Milliseconds()
	for _, m := range msgs {
		ttl = max(ttl, s.listTTL(m.ExpiresAt))
	}
	args := make([]any, 0, 1+3*len(msgs))
	args = append(args, ttl)
	for _, m := range msgs {
		bound := "+inf"
		if m.Deadline > 0 {
			bound = strconv.FormatInt(m.Deadline+1, 10) // the score is deadline + n/1000 (n <= 1000)
		}
		args = append(args, m.Priority.String(), m.TID, bound)
	}
	// Pending before the entries are visible again (a consumer may take them
	// at once), and only where they are still Blocked (an ack that came
	// first keeps its Delivered; such entries are not in flight any more and
	// the script leaves them alone).
	s.setStatesIf(ctx, msgs, domain.StatePending, domain.StateBlocked)
	// One script: the in-flight record and the re-queue cannot be split by
	// a failover.
	back, err := s.runScript(ctx, handBackReliableScript, []string{qk.High, qk.Low, qk.Inflight}, args...).StringSlice()
	if err != nil {
		return fmt.Errorf("hand back to %s: %w", full, err)
	}
	if len(back) > 0 {
		s.wake(ctx, full)
	}
	return nil
}

// handBackRaw is the best-effort hand back used on error paths.
func (s *Store) handBackRaw(ctx context.Context, full string, msgs []Message, reliable bool) {
	var err error
	if reliable {
		err = s.HandBackReliable(ctx, full, msgs)
	} else {
		err = s.pushFront(ctx, full, msgs)
	}
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelError, "hand back failed", slog.String("queue", full), slog.Int("messages", len(msgs)), slog.Any("err", err))
	}
}

func (s *Store) pushFront(ctx context.Context, full string, msgs []Message) error {
	qk := KeysOfQueue(full)
	args := make([]any, 0, 1+2*len(msgs))
	var ttl int64 = handBackTTL.Milliseconds()
	for _, m := range msgs {
		ttl = max(ttl, s.listTTL(m.ExpiresAt))
	}
	args = append(args, ttl)
	for _, m := range msgs {
		args = append(args, m.Priority.String(), m.TID)
	}
	if err := s.runScript(ctx, handBackScript, []string{qk.High, qk.Low}, args...).Err(); err != nil {
		return fmt.Errorf("hand back to %s: %w", full, err)
	}
	s.wake(ctx, full)
	return nil
}

// setStates sets the state of each message's (transaction, queue) pair,
// best effort.
func (s *Store) setStates(ctx context.Context, msgs []Message, state string) {
	s.setStatesIf(ctx, msgs, state, "")
}

// setStatesIf is setStates limited to pairs whose state is currently from
// ("" = any), best effort.
func (s *Store) setStatesIf(ctx context.Context, msgs []Message, state, from string) {
	calls := make([]scriptCall, len(msgs))
	for i, m := range msgs {
		tk := KeysOfTrans(m.TID)
		args := []any{m.Queue, state, "0"}
		if from != "" {
			args = append(args, from)
		}
		calls[i] = scriptCall{transitionScript, []string{tk.Meta, tk.State}, args}
	}
	if _, err := s.runScripts(ctx, calls); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "set states", slog.String("state", state), slog.Any("err", err))
	}
}

// TouchLastPop records that queue full was popped now (for a pop that
// returned nothing; pops that take messages record it themselves). It
// keeps the records of recent pop calls in the value (see luaRecordPop).
func (s *Store) TouchLastPop(ctx context.Context, full string) error {
	now := s.now()
	if err := s.runScript(ctx, touchLastPopScript, []string{KeysOfQueue(full).LastPop},
		now.Unix(), int64(infoTTL/time.Second), now.UnixMilli(), popRecordWindow.Milliseconds()).Err(); err != nil {
		return fmt.Errorf("touch lastPop %s: %w", full, err)
	}
	return nil
}

// Peek returns up to max messages of queue full without removing them or
// changing any state, H before L. Ghosts are skipped (and looked past). It
// reads at most DefaultBatchBytes of payloads (see PeekBounded).
func (s *Store) Peek(ctx context.Context, full string, max int) ([]Message, error) {
	return s.PeekBounded(ctx, full, max, DefaultBatchBytes)
}
