// Package jobs runs the gateway's background Redis work that any node may
// carry out: deferred provisioning (POST /trans?delay=N) and the reaper that
// returns reliable deliveries whose ack deadline passed to their queues.
// Every node runs it; the Redis scripts make sure each item is handled once.
package jobs

import (
	"context"
	"log/slog"
	"time"

	"github.com/popbox/popbox/redisq"
)

// Store is what the jobs need from Redis; *redisq.Store implements it.
type Store interface {
	ClaimDeferred(ctx context.Context, lease time.Duration, limit int) ([]*redisq.Transaction, error)
	Provision(ctx context.Context, tx *redisq.Transaction) error
	FinishDeferred(ctx context.Context, tid string) error
	ReapInflight(ctx context.Context, limit int) ([]redisq.Requeued, error)
}

var _ Store = (*redisq.Store)(nil)

// Options configure the Runner.
type Options struct {
	Interval      time.Duration                 // how often to look for due work (default 250 ms)
	Lease         time.Duration                 // how long a claimed deferral is reserved (default 30 s)
	OnProvisioned func(tx *redisq.Transaction)  // called after a deferred transaction is provisioned
	OnRequeued    func(items []redisq.Requeued) // called after reliable entries were re-queued
	Logger        *slog.Logger
}

// Runner runs the background jobs.
type Runner struct {
	store Store
	opts  Options
}

// New makes a Runner.
func New(store Store, opts Options) *Runner {
	if opts.Interval <= 0 {
		opts.Interval = 250 * time.Millisecond
	}
	if opts.Lease <= 0 {
		opts.Lease = 30 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Runner{store: store, opts: opts}
}

// Run works until ctx ends.
func (r *Runner) Run(ctx context.Context) {
	t := time.NewTicker(r.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.deferred(ctx)
		r.reap(ctx)
	}
}

func (r *Runner) deferred(ctx context.Context) {
	for round := 0; round < 10; round++ {
		txs, err := r.store.ClaimDeferred(ctx, r.opts.Lease, 100)
		if err != nil {
			if ctx.Err() == nil {
				r.opts.Logger.LogAttrs(ctx, slog.LevelWarn, "claim deferred provisioning", slog.Any("err", err))
			}
			return
		}
		for _, tx := range txs {
			if err := r.store.Provision(ctx, tx); err != nil {
				// Left leased: claimed again after the lease.
				r.opts.Logger.LogAttrs(ctx, slog.LevelWarn, "deferred provisioning", slog.String("tid", tx.ID), slog.Any("err", err))
				continue
			}
			if err := r.store.FinishDeferred(ctx, tx.ID); err != nil {
				r.opts.Logger.LogAttrs(ctx, slog.LevelWarn, "finish deferred provisioning", slog.String("tid", tx.ID), slog.Any("err", err))
			}
			if r.opts.OnProvisioned != nil {
				r.opts.OnProvisioned(tx)
			}
		}
		if len(txs) < 100 {
			return
		}
	}
}

func (r *Runner) reap(ctx context.Context) {
	items, err := r.store.ReapInflight(ctx, 100)
	if err != nil {
		if ctx.Err() == nil {
			r.opts.Logger.LogAttrs(ctx, slog.LevelWarn, "reap in-flight messages", slog.Any("err", err))
		}
	}
	if len(items) > 0 && r.opts.OnRequeued != nil {
		r.opts.OnRequeued(items)
	}
}
