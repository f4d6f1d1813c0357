package delivery

import (
	"context"
	"time"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/internal/domain"
)

// Provisioning is one POST /trans: a transaction, provisioned now or after
// Delay, idempotent when Once is set.
type Provisioning struct {
	Tx    *Transaction
	Delay time.Duration // > 0: deferred (provisioned by whichever node claims it when due)
	Once  *Once         // an Idempotency-Key; nil: none
}

// Provision provisions (or defers) a transaction and records it. It
// returns the transaction's id: with an Idempotency-Key, a repeat within
// the window returns the first call's id and provisions nothing
// (ErrIdempotencyConflict for the same key with another body).
func (s *Service) Provision(ctx context.Context, p Provisioning) (tid string, err error) {
	tx, now := p.Tx, time.Now()
	repeat := false
	switch {
	case p.Once != nil && p.Delay > 0:
		tid, repeat, err = s.store.DeferOnce(ctx, *p.Once, tx, now.Add(p.Delay))
	case p.Once != nil:
		tid, repeat, err = s.store.ProvisionOnce(ctx, *p.Once, tx)
	case p.Delay > 0:
		tid, err = tx.ID, s.store.Defer(ctx, tx, now.Add(p.Delay))
	default:
		tid, err = tx.ID, s.store.Provision(ctx, tx)
	}
	switch {
	case err != nil:
		return "", s.fail(err)
	case repeat:
		// The first call provisioned (or deferred) it and recorded it.
	case p.Delay > 0:
		s.emit(events.Event{Kind: events.KindAction, Action: events.ActionProvision, Transaction: tx.ID,
			Namespace: tx.NS, Count: len(tx.Queues), Error: "deferred " + p.Delay.String()})
	default:
		s.provisioned(tx)
	}
	return tid, nil
}

// provisioned records a provisioned transaction in metrics and events
// (also for deferred provisioning carried out in the background).
func (s *Service) provisioned(tx *Transaction) {
	s.m.Transactions.Inc()
	s.m.Provisioned.Add(float64(len(tx.Queues)))
	s.emit(events.Event{Kind: events.KindAction, Action: events.ActionProvision, Transaction: tx.ID,
		Namespace: tx.NS, Count: len(tx.Queues)})
	now := time.Now()
	for _, id := range tx.Queues {
		ev := queueEvent(events.KindState, domain.Namespace(tx.NS).Queue(id))
		ev.Time, ev.State, ev.Transaction, ev.Callback = now, domain.StatePending, tx.ID, tx.Meta["callback"]
		if s.opts.HistoryPayloads {
			ev.Payload = tx.Meta["payload"]
		}
		s.emit(ev)
	}
}

// ReadTrans reads a transaction's per-queue states and (withMeta) its
// metadata.
func (s *Service) ReadTrans(ctx context.Context, tid string, withMeta bool) (TransInfo, error) {
	info, err := s.store.ReadTrans(ctx, tid, withMeta)
	return info, s.fail(err)
}

// UpdateTrans changes fields of transaction tid of org; expiresAt > 0
// moves its expiry. ErrNotFound: no such transaction in org.
func (s *Service) UpdateTrans(ctx context.Context, tid, org string, fields map[string]string, expiresAt int64) error {
	return s.fail(s.store.UpdateTrans(ctx, tid, org, fields, expiresAt))
}

// DeleteTrans deletes transaction tid of org (nothing when there is none)
// and records it.
func (s *Service) DeleteTrans(ctx context.Context, tid string, ns domain.Namespace) error {
	deleted, err := s.store.DeleteTrans(ctx, tid, ns.Org())
	if err != nil {
		return s.fail(err)
	}
	if deleted {
		s.emit(events.Event{Kind: events.KindAction, Action: events.ActionDelete, Transaction: tid, Namespace: string(ns)})
	}
	return nil
}

// Group returns the members of group name in ns.
func (s *Service) Group(ctx context.Context, ns domain.Namespace, name string) ([]string, error) {
	m, err := s.store.Group(ctx, string(ns), name)
	return m, s.fail(err)
}

// AddToGroup adds queue ids to group name (creating it) and records it.
func (s *Service) AddToGroup(ctx context.Context, ns domain.Namespace, name string, queues []string) error {
	if err := s.store.AddToGroup(ctx, string(ns), name, queues); err != nil {
		return s.fail(err)
	}
	s.groupEvent(ns, name, len(queues))
	return nil
}

// ModifyGroup adds and removes members of group name (ErrNotFound: no
// such group) and records it.
func (s *Service) ModifyGroup(ctx context.Context, ns domain.Namespace, name string, add, remove []string) error {
	if err := s.store.ModifyGroup(ctx, string(ns), name, add, remove); err != nil {
		return s.fail(err)
	}
	s.groupEvent(ns, name, len(add)+len(remove))
	return nil
}

// DeleteGroup deletes group name and records it.
func (s *Service) DeleteGroup(ctx context.Context, ns domain.Namespace, name string) error {
	if err := s.store.DeleteGroup(ctx, string(ns), name); err != nil {
		return s.fail(err)
	}
	s.groupEvent(ns, name, 0)
	return nil
}

func (s *Service) groupEvent(ns domain.Namespace, name string, n int) {
	s.emit(events.Event{Kind: events.KindAction, Action: events.ActionGroup, Queue: name, Namespace: string(ns), Count: n})
}

// CreateBox creates the secure box q with its user and bcrypt hash
// (ErrExists: it exists) and records it.
func (s *Service) CreateBox(ctx context.Context, q domain.Queue, user, hash string) error {
	if err := s.store.CreateBox(ctx, q.String(), user, hash); err != nil {
		return s.fail(err)
	}
	ev := queueEvent(events.KindAction, q)
	ev.Action = events.ActionQueueCreate
	s.emit(ev)
	return nil
}
