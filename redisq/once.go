package redisq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/popbox/popbox/internal/domain"
)

// ErrIdempotencyConflict means an idempotency key was used before, within
// its window, for a request with another body.
var ErrIdempotencyConflict = errors.New("idempotency key reused with another body")

// errClaimLost: a claimant's lease ran out and a repeat took its claim over.
var errClaimLost = errors.New("another request took the claim over while this one provisioned; retry with the same key")

// Once identifies one idempotent request: a key given by the client
// (Idempotency-Key), the namespace it was given in and a hash of the
// canonical request. A repeat with the same key, namespace and hash within
// Window is answered with the first request's transaction id.
type Once struct {
	NS     string
	Key    string
	Hash   string
	Window time.Duration
}

// Lease and polling of idempotency claims. A claimant renews its lease while
// it provisions, so a repeat only takes over a claim whose node stopped
// renewing it (crashed, or cut off from Redis) for onceLease.
const (
	onceLease     = 10 * time.Second
	oncePollFirst = 5 * time.Millisecond
	oncePollMax   = 200 * time.Millisecond
)

// ProvisionOnce provisions tx unless the same request (o) was provisioned
// (or is being provisioned) within o.Window: then it provisions nothing and
// returns the first request's transaction id with repeat = true. The same
// key with another hash is ErrIdempotencyConflict.
//
// The claim on the key and the provisioning are two steps, made safe as
// follows: a repeat that arrives while the first request still provisions
// waits for it and answers its tid; a failed provisioning releases the claim
// (a repeat then provisions); a claimant that dies mid-way stops renewing
// its lease, and the next repeat after the lease takes the claim over,
// deletes the abandoned transaction (its entries become ghosts that pops
// skip) and provisions a new one.
func (s *Store) ProvisionOnce(ctx context.Context, o Once, tx *Transaction) (tid string, repeat bool, err error) {
	return s.once(ctx, o, tx, func(ctx context.Context) error { return s.Provision(ctx, tx) })
}

// DeferOnce is Defer with the idempotency of ProvisionOnce.
func (s *Store) DeferOnce(ctx context.Context, o Once, tx *Transaction, due time.Time) (tid string, repeat bool, err error) {
	return s.once(ctx, o, tx, func(ctx context.Context) error { return s.Defer(ctx, tx, due) })
}

// once runs the claim protocol around run, which writes tx.
func (s *Store) once(ctx context.Context, o Once, tx *Transaction, run func(context.Context) error) (string, bool, error) {
	key := KeyOfIdempotency(o.NS, o.Key)
	wait := oncePollFirst
	for {
		res, err := onceClaimScript.Run(ctx, s.rdb, []string{key},
			o.Hash, tx.ID, s.now().UnixMilli(), onceLease.Milliseconds(), o.Window.Milliseconds()).StringSlice()
		if err != nil {
			return "", false, fmt.Errorf("idempotency key: %w", err)
		}
		switch res[0] {
		case "conflict":
			return "", false, ErrIdempotencyConflict
		case "done":
			return res[1], true, nil
		case "pending":
			// The first request is still provisioning (on this node or
			// another): wait for its outcome.
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return "", false, fmt.Errorf("idempotency key: waiting for the first request: %w", ctx.Err())
			case <-t.C:
			}
			wait = min(2*wait, oncePollMax)
			continue
		case "takeover":
			s.log.LogAttrs(ctx, slog.LevelWarn, "idempotency key: taking over an abandoned provisioning",
				slog.String("key", key), slog.String("abandoned_tid", res[2]), slog.String("tid", tx.ID))
			if _, err := s.DeleteTrans(ctx, res[2], domain.Namespace(o.NS).Org()); err != nil {
				s.release(ctx, key, tx.ID)
				return "", false, fmt.Errorf("idempotency key: drop abandoned %s: %w", res[2], err)
			}
		}
		// "new" or "takeover": this request provisions tx.
		if err := s.runClaimed(ctx, key, tx.ID, run); err != nil {
			return "", false, err
		}
		ok, err := onceSettleScript.Run(context.WithoutCancel(ctx), s.rdb, []string{key}, tx.ID, "done").Bool()
		if err != nil {
			// tx is provisioned, but the record still says pending: a
			// repeat after the lease provisions again. Say so.
			return "", false, fmt.Errorf("idempotency key: record the provisioning of %s: %w", tx.ID, err)
		}
		if !ok {
			// Our lease ran out while we provisioned (Redis unreachable
			// for that long) and a repeat took the claim over: withdraw
			// ours. The caller's retry gets the winner's tid.
			if _, err := s.DeleteTrans(context.WithoutCancel(ctx), tx.ID, domain.Namespace(o.NS).Org()); err != nil {
				return "", false, fmt.Errorf("idempotency key: withdraw %s after losing the claim: %w", tx.ID, err)
			}
			return "", false, fmt.Errorf("idempotency key: %w", errClaimLost)
		}
		return tx.ID, false, nil
	}
}

// runClaimed runs run while renewing the claim's lease; on failure it
// releases the claim so that a repeat provisions.
func (s *Store) runClaimed(ctx context.Context, key, tid string, run func(context.Context) error) error {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(onceLease / 3)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				deadline := s.now().Add(onceLease).UnixMilli()
				if err := onceSettleScript.Run(ctx, s.rdb, []string{key}, tid, "renew", deadline).Err(); err != nil {
					s.log.LogAttrs(ctx, slog.LevelWarn, "idempotency key: renew lease", slog.String("key", key), slog.Any("err", err))
				}
			}
		}
	})
	err := run(ctx)
	close(stop)
	wg.Wait()
	if err != nil {
		s.release(ctx, key, tid)
	}
	return err
}

// release drops a pending claim of tid (best effort: if it fails, the
// lease runs out and a repeat takes the claim over).
func (s *Store) release(ctx context.Context, key, tid string) {
	if err := onceSettleScript.Run(context.WithoutCancel(ctx), s.rdb, []string{key}, tid, "release").Err(); err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "idempotency key: release claim", slog.String("key", key), slog.Any("err", err))
	}
}
