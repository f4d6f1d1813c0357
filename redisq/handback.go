package redisq

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/popbox/popbox/internal/domain"
)

// Handing back: messages taken from a queue that could not be written to
// the client they were taken for go back to the head of the queue (plain)
// or leave the in-flight set at once (reliable), Pending again.

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
