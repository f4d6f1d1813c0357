package delivery

import (
	"context"
	"log/slog"

	"github.com/popbox/popbox/internal/tick"
)

// Background work any node may carry out (every node runs it; the Redis
// scripts make sure each item is handled once): deferred provisioning
// (POST /trans?delay=N) and the reaper that returns reliable deliveries
// whose ack deadline passed to their queues.

const jobBatch = 100 // items claimed per round trip

// runJobs works until ctx ends.
func (s *Service) runJobs(ctx context.Context) {
	tick.Every(ctx, s.opts.JobInterval, func() {
		s.provisionDue(ctx)
		s.reap(ctx)
	})
}

// provisionDue provisions deferred transactions that are due (up to ten
// batches a tick).
func (s *Service) provisionDue(ctx context.Context) {
	for round := 0; round < 10; round++ {
		txs, err := s.store.ClaimDeferred(ctx, s.opts.DeferLease, jobBatch)
		if err != nil {
			if ctx.Err() == nil {
				s.log.LogAttrs(ctx, slog.LevelWarn, "claim deferred provisioning", slog.Any("err", err))
			}
			return
		}
		for _, tx := range txs {
			if err := s.store.Provision(ctx, tx); err != nil {
				// Left leased: claimed again after the lease.
				s.log.LogAttrs(ctx, slog.LevelWarn, "deferred provisioning", slog.String("tid", tx.ID), slog.Any("err", err))
				continue
			}
			if err := s.store.FinishDeferred(ctx, tx.ID); err != nil {
				s.log.LogAttrs(ctx, slog.LevelWarn, "finish deferred provisioning", slog.String("tid", tx.ID), slog.Any("err", err))
			}
			s.provisioned(tx)
		}
		if len(txs) < jobBatch {
			return
		}
	}
}

// reap puts reliable deliveries whose ack deadline passed back at the head
// of their queues and records them.
func (s *Service) reap(ctx context.Context) {
	items, err := s.store.ReapInflight(ctx, jobBatch)
	if err != nil && ctx.Err() == nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "reap in-flight messages", slog.Any("err", err))
	}
	msgs := make([]Message, len(items))
	for i, it := range items {
		msgs[i] = Message{TID: it.TID, Queue: it.Queue}
	}
	s.requeued(msgs...)
}
