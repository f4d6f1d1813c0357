// Package delivery is PopBox's delivery service, between the HTTP layer
// (gateway) and Redis (redisq): provisioning (immediate, deferred,
// idempotent), pops, peeks, acks, hand-backs, the domain side of the
// consumer streams, transactions, groups and secure boxes, and the
// background work every node shares (deferred provisioning, the reaper of
// expired reliable deliveries). It owns the node's hub (local waiters fed
// from Redis) and emits every delivery event (to the event bus: history,
// callbacks, webhook) and delivery metric itself, so nothing below it calls
// back up and the HTTP layer only parses requests and renders answers.
//
// Dependencies point one way: gateway → delivery → hub → redisq.
package delivery

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/hub"
	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/redisq"
)

// Types of the store that cross the service boundary, so that callers need
// not import redisq.
type (
	// Message is one entry taken from (or looked at in) a queue.
	Message = redisq.Message
	// Transaction is what provisioning writes.
	Transaction = redisq.Transaction
	// Once makes a provisioning idempotent (Idempotency-Key).
	Once = redisq.Once
	// TransInfo is a transaction's metadata and per-queue states.
	TransInfo = redisq.TransInfo
	// QueueInfo describes a queue (GET /queue/{id}).
	QueueInfo = redisq.QueueInfo
	// AckResult is the outcome of acknowledging one transaction.
	AckResult = redisq.AckResult
	// NodeInfo describes one Redis server.
	NodeInfo = redisq.NodeInfo
)

// Errors of the service (errors.Is).
var (
	// ErrNotFound: the transaction, group or box does not exist.
	ErrNotFound = redisq.ErrNotFound
	// ErrExists: the box to create exists already.
	ErrExists = redisq.ErrExists
	// ErrIdempotencyConflict: an Idempotency-Key reused with another body.
	ErrIdempotencyConflict = redisq.ErrIdempotencyConflict
	// ErrReplicasTimeout: the replicas did not confirm a provisioning in
	// time; its outcome is unknown.
	ErrReplicasTimeout = redisq.ErrReplicasTimeout
	// ErrUnavailable: the hub sees Redis unreachable.
	ErrUnavailable = errors.New("Redis cannot be reached")
)

// Options configure a Service.
type Options struct {
	Store *redisq.Store
	// Hub configures the node's hub (local waiters), which the service
	// makes and runs.
	Hub hub.Options
	// Bus receives every delivery event; nil: a bus without sinks.
	Bus *events.Bus
	// Metrics are the delivery series; nil: new ones (register
	// Collectors on the node's registry).
	Metrics *Metrics
	// HistoryPayloads records payloads in state events.
	HistoryPayloads bool
	// JobInterval is how often the background jobs look for due work
	// (default 250 ms); DeferLease how long a claimed deferred
	// provisioning is reserved (default 30 s).
	JobInterval, DeferLease time.Duration
	Logger                  *slog.Logger
}

// Service is the delivery service of one node. Its methods are safe for
// concurrent use.
type Service struct {
	store *redisq.Store
	hub   *hub.Hub
	bus   *events.Bus
	m     *Metrics
	opts  Options
	log   *slog.Logger
}

// New makes a Service and its hub; Run runs them.
func New(o Options) *Service {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Hub.Logger == nil {
		o.Hub.Logger = o.Logger
	}
	if o.Bus == nil {
		o.Bus = events.NewBus(o.Logger)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics()
	}
	if o.JobInterval <= 0 {
		o.JobInterval = 250 * time.Millisecond
	}
	if o.DeferLease <= 0 {
		o.DeferLease = 30 * time.Second
	}
	s := &Service{store: o.Store, bus: o.Bus, m: o.Metrics, opts: o, log: o.Logger}
	s.hub = hub.New(popStore{o.Store, s}, o.Hub)
	return s
}

// Metrics are the service's series.
func (s *Service) Metrics() *Metrics { return s.m }

// Node is the node id of the service's hub.
func (s *Service) Node() string { return s.hub.Node() }

// Run runs the hub (wake-ups, registrations, heartbeats) and the
// background jobs until ctx ends; the jobs stop before the hub. Call
// Shutdown first for a graceful stop.
func (s *Service) Run(ctx context.Context) {
	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { s.hub.Run(hubCtx) })
	s.runJobs(ctx)
	stopHub()
	wg.Wait()
}

// Shutdown ends every consumer cleanly (long polls answer, streams end,
// what they hold goes back to Redis) and refuses new ones.
func (s *Service) Shutdown() { s.hub.Shutdown() }

// ShutdownContext is cancelled once Shutdown was called.
func (s *Service) ShutdownContext() context.Context { return s.hub.ShutdownContext() }

// OnOutage makes the service call f (which must not block) each time the
// hub finds Redis unreachable, after Reachable turned false.
func (s *Service) OnOutage(f func()) { s.hub.OnOutage(f) }

// Reachable tells whether the hub sees Redis reachable now.
func (s *Service) Reachable() bool {
	select {
	case <-s.hub.Outage():
		return false
	default:
		return true
	}
}

// Ping tells whether Redis answers.
func (s *Service) Ping(ctx context.Context) error { return s.store.Ping(ctx) }

// Topology describes the Redis servers behind the node.
func (s *Service) Topology(ctx context.Context) []NodeInfo { return s.store.Topology(ctx) }

// Waiting returns the queues with consumers waiting on this node now, with
// their number of waiters.
func (s *Service) Waiting() map[domain.Queue]int {
	out := map[domain.Queue]int{}
	for full, n := range s.hub.Waiting() {
		if q, ok := domain.ParseQueue(full); ok {
			out[q] = n
		}
	}
	return out
}

// Boxes is the store of secure box credentials, for auth.NewBoxes.
func (s *Service) Boxes() *redisq.Store { return s.store }

// emit publishes an event.
func (s *Service) emit(ev events.Event) {
	if ev.Time.IsZero() {
		ev.Time = time.Now()
	}
	if ev.Node == "" {
		ev.Node = s.hub.Node()
	}
	s.bus.Publish(ev)
}

// queueEvent is an event about queue q.
func queueEvent(kind events.Kind, q domain.Queue) events.Event {
	return events.Event{Kind: kind, Queue: q.ID, Namespace: string(q.NS)}
}

// parseQueue is the queue of a full name the store returned.
func parseQueue(full string) domain.Queue {
	q, _ := domain.ParseQueue(full)
	return q
}

// fail records a storage failure as an error event and returns err; the
// outcomes callers expect (not found, exists, conflict) are no failures.
func (s *Service) fail(err error) error {
	if err == nil || errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) || errors.Is(err, ErrIdempotencyConflict) {
		return err
	}
	s.emit(events.Event{Kind: events.KindAction, Action: events.ActionError, Error: err.Error()})
	return err
}

// emitStates publishes a state event per message.
func (s *Service) emitStates(msgs []Message, state, transport string, errText string) {
	now := time.Now()
	for _, m := range msgs {
		ev := queueEvent(events.KindState, parseQueue(m.Queue))
		ev.Time, ev.State, ev.Transaction, ev.Callback, ev.Transport, ev.Error = now, state, m.TID, m.Callback, transport, errText
		if s.opts.HistoryPayloads {
			ev.Payload = m.Payload
		}
		s.emit(ev)
	}
}

// popStore is the store as the hub sees it: pops that skipped entries of
// expired or deleted transactions are recorded (Expired) on the way.
type popStore struct {
	*redisq.Store
	s *Service
}

func (p popStore) PopMany(ctx context.Context, reqs []redisq.PopRequest) []redisq.PopResult {
	res := p.Store.PopMany(ctx, reqs)
	for _, r := range res {
		p.s.skipped(r.Skipped)
	}
	return res
}

// skipped records queue entries a pop or an ack skipped because their
// transaction expired or was deleted: the Expired state of each.
func (s *Service) skipped(msgs []Message) {
	if len(msgs) == 0 {
		return
	}
	s.m.Expired.Add(float64(len(msgs)))
	s.emitStates(msgs, domain.StateExpired, "", "transaction expired or deleted")
}
