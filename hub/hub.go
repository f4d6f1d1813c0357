// Package hub keeps a gateway node's local consumers ("waiters") per queue
// and feeds them from Redis. One subscriber connection per Redis primary
// brings wake-ups (keyspace notifications or explicit publishes); woken
// queues go on a ready list that a few pop workers serve in batches: one
// PopMany (one pipelined round trip on a single server, three on a
// Cluster; bounded in payload bytes) pops for up to 256 queues, each for
// the first waiter that has room; a consumer that does not read cannot
// make one batch read more than that budget, and a queue whose pop hit
// the budget or failed in a shared batch is popped alone by an apart
// worker, so it delays or fails no other queue. The number of Redis
// connections does not grow with the number of consumers, and the round
// trips per message fall as the load grows. A slow periodic re-check makes
// a lost wake-up delay a message but never strand it.
package hub

import (
	"context"
	"hash/maphash"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/popbox/popbox/redisq"
)

// Store is what the hub needs from the Redis layer; *redisq.Store
// implements it.
type Store interface {
	PopMany(ctx context.Context, reqs []redisq.PopRequest) []redisq.PopResult
	HandBack(ctx context.Context, full string, msgs []redisq.Message) error
	HandBackReliable(ctx context.Context, full string, msgs []redisq.Message) error
	NonEmpty(ctx context.Context, fulls []string) ([]bool, error)
	SetWaiting(ctx context.Context, node string, lease time.Duration, on, off []string) (lapsed bool, err error)
	Heartbeat(ctx context.Context, node string, ttl time.Duration) (existed bool, err error)
	NodeGone(ctx context.Context, node string) error
	Wakeups(ctx context.Context, wake redisq.WakeHandler, resync func(), lost func(error)) error
	// UndoPending retries the undos of failed pops that could not reach
	// Redis (see redisq.Store.PopMany); a no-op when there are none.
	UndoPending(ctx context.Context)
}

var _ Store = (*redisq.Store)(nil)

// Options tune a Hub.
type Options struct {
	Node            string        // this gateway node's id (unique per process)
	Lease           time.Duration // how long this node's "blocked" registrations live without a heartbeat
	RecheckInterval time.Duration // slow sweep for lost wake-ups
	Logger          *slog.Logger
}

const (
	shards     = 64
	popWorkers = 4   // goroutines popping for woken queues, in parallel
	popBatch   = 256 // queues popped per Redis round trip
	// apartWorkers pop, one queue per call, the queues kept out of the
	// shared batches (queueState.apart), so that they wait on each other
	// and never on, or in front of, the other queues.
	apartWorkers = 1
)

type queueState struct {
	waiters  []*Waiter
	draining bool
	again    bool
	// apart: the queue is popped alone, by the apart workers, not in the
	// shared batches: its last pop hit the byte budget (big payloads: a
	// batch with it would wait for its bytes), or it failed in a shared
	// batch (its failure, e.g. a reply that timed out, must fail no other
	// queue). Cleared by a pop alone that does neither.
	apart bool
	// registered: this node's "waiting" registration of the queue is (to
	// be) in Redis. A stream registers when it is added; one-shot pops
	// only once a pop round left them waiting, so a pop served at once
	// costs no registration and unregistration in Redis.
	registered bool
}

type shard struct {
	mu     sync.Mutex
	queues map[string]*queueState
}

// Hub holds the local waiters of one gateway node.
type Hub struct {
	store Store
	opts  Options
	log   *slog.Logger
	seed  maphash.Seed
	sh    [shards]shard

	ctx    context.Context // lives until Run ends; used by drains
	cancel context.CancelFunc

	dirtyMu sync.Mutex
	dirty   map[string]struct{}
	dirtyCh chan struct{}

	ready readyList // queues to pop for in shared batches, each at most once (queueState.draining)
	apart readyList // queues to pop for alone (queueState.apart)

	shuttingDown atomic.Bool
	// closing is cancelled by Shutdown. A context rather than a channel:
	// the gateway waits for it with context.AfterFunc, which holds no
	// goroutine while it waits.
	closing  context.Context
	closeAll context.CancelFunc
	drains   sync.WaitGroup // the pop workers

	healthMu sync.Mutex
	down     chan struct{} // closed while Redis cannot be reached; a fresh one once it is back
	onOutage []func()      // OnOutage
	isDown   bool
	probe    chan struct{} // look at Redis now (a pop failed, the wake-up subscription dropped)
	recheck  chan struct{} // re-check every local queue now (wake-up subscription back)

	stats Stats
}

// Stats are counters of the hub's work.
type Stats struct {
	Waiters   atomic.Int64 // current local waiters
	Pops      atomic.Int64 // pop calls that returned messages
	Delivered atomic.Int64 // messages offered to and taken by waiters
	HandBacks atomic.Int64 // messages handed back to Redis
	Wakeups   atomic.Int64 // wake-ups received
	Errors    atomic.Int64 // Redis errors while popping
}

// New makes a hub and starts nothing: Run starts its goroutines (queues
// woken before that wait on the ready list).
func New(store Store, opts Options) *Hub {
	if opts.Lease <= 0 {
		opts.Lease = 15 * time.Second
	}
	if opts.RecheckInterval <= 0 {
		opts.RecheckInterval = 60 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &Hub{store: store, opts: opts, log: opts.Logger, seed: maphash.MakeSeed(),
		ctx: ctx, cancel: cancel, dirty: map[string]struct{}{}, dirtyCh: make(chan struct{}, 1),
		ready: newReadyList(), apart: newReadyList(), down: make(chan struct{}), probe: make(chan struct{}, 1), recheck: make(chan struct{}, 1)}
	h.closing, h.closeAll = context.WithCancel(context.Background())
	for i := range h.sh {
		h.sh[i].queues = map[string]*queueState{}
	}
	return h
}

// Stats returns the hub's counters.
func (h *Hub) Stats() *Stats { return &h.stats }

// Node is the node id this hub registers waiters under.
func (h *Hub) Node() string { return h.opts.Node }

func (h *Hub) shardOf(queue string) *shard {
	return &h.sh[maphash.String(h.seed, queue)%shards]
}

// Add registers a waiter and looks for messages for it at once.
func (h *Hub) Add(w *Waiter) {
	if h.shuttingDown.Load() {
		close(w.shutdown)
		return
	}
	s := h.shardOf(w.queue)
	s.mu.Lock()
	q := s.queues[w.queue]
	if q == nil {
		q = &queueState{}
		s.queues[w.queue] = q
	}
	q.waiters = append(q.waiters, w)
	register := !w.oneShot && !q.registered
	q.registered = q.registered || register
	start, apart := h.scheduleLocked(w.queue, q), q.apart
	s.mu.Unlock()
	h.stats.Waiters.Add(1)
	if register {
		h.markDirty(w.queue)
	}
	if start {
		h.startDrain(w.queue, apart)
	}
}

// Remove unregisters a waiter. A one-shot waiter returns whether it was
// removed before a batch was offered to it (if false, its batch is in
// Batch() and the caller owns it). A stream waiter's unwritten messages are
// handed back to the head of the queue.
func (h *Hub) Remove(w *Waiter) (beforeOffer bool) {
	before, left := w.cancel()
	s := h.shardOf(w.queue)
	s.mu.Lock()
	last := false
	if q := s.queues[w.queue]; q != nil {
		for i, x := range q.waiters {
			if x == w {
				q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
				h.stats.Waiters.Add(-1)
				break
			}
		}
		if len(q.waiters) == 0 {
			last = q.registered
			q.registered = false
			if !q.draining {
				delete(s.queues, w.queue)
			}
		}
	}
	s.mu.Unlock()
	if last {
		h.markDirty(w.queue)
	}
	if len(left) > 0 {
		h.HandBack(w, left)
	}
	return before
}

// HandBack returns messages taken for w that were not written to its client
// to the head of their queue (Pending again, or re-queued at once for
// reliable waiters).
func (h *Hub) HandBack(w *Waiter, msgs []redisq.Message) {
	if len(msgs) == 0 {
		return
	}
	h.handBack(w.queue, w.mode, msgs)
}

func (h *Hub) handBack(queue string, mode Mode, msgs []redisq.Message) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var err error
	if mode.Reliable {
		err = h.store.HandBackReliable(ctx, queue, msgs)
	} else {
		err = h.store.HandBack(ctx, queue, msgs)
	}
	h.stats.HandBacks.Add(int64(len(msgs)))
	if err != nil {
		// Reliable messages still come back after their ack deadline.
		h.log.LogAttrs(ctx, slog.LevelError, "hand back failed", slog.String("queue", queue),
			slog.Int("messages", len(msgs)), slog.Bool("reliable", mode.Reliable), slog.Any("err", err))
	}
}

// Pulled tells the hub that a stream waiter wrote messages out; if its
// outbox had been full, the hub looks for more.
func (h *Hub) Pulled(w *Waiter) {
	if w.kick.Swap(false) {
		h.Wake(w.queue)
	}
}

// Wake makes the hub look for messages on a queue that has local waiters.
func (h *Hub) Wake(queue string) {
	s := h.shardOf(queue)
	s.mu.Lock()
	q := s.queues[queue]
	start := q != nil && h.scheduleLocked(queue, q)
	apart := start && q.apart
	s.mu.Unlock()
	if start {
		h.startDrain(queue, apart)
	}
}

// scheduleLocked marks q for draining; it returns true if the caller must
// start the drain goroutine.
func (h *Hub) scheduleLocked(queue string, q *queueState) bool {
	if len(q.waiters) == 0 {
		return false
	}
	if q.draining {
		q.again = true
		return false
	}
	q.draining = true
	return true
}

// queues returns the names of all queues with local waiters.
func (h *Hub) queues() []string { return h.queuesWhere(false) }

// registeredQueues returns the names of the queues whose registrations
// belong in Redis.
func (h *Hub) registeredQueues() []string { return h.queuesWhere(true) }

// queuesWhere returns the names of the queues with local waiters, only the
// registered ones if registered.
func (h *Hub) queuesWhere(registered bool) []string {
	var out []string
	for i := range h.sh {
		s := &h.sh[i]
		s.mu.Lock()
		for name, q := range s.queues {
			if len(q.waiters) > 0 && (q.registered || !registered) {
				out = append(out, name)
			}
		}
		s.mu.Unlock()
	}
	return out
}

// waiting tells whether the queue's registration belongs in Redis.
func (h *Hub) waiting(queue string) bool {
	s := h.shardOf(queue)
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[queue]
	return q != nil && q.registered && len(q.waiters) > 0
}

func (h *Hub) markDirty(queue string) {
	h.dirtyMu.Lock()
	h.dirty[queue] = struct{}{}
	h.dirtyMu.Unlock()
	signal(h.dirtyCh)
}

// Recheck looks for messages on every queue with local waiters (used after
// a wake-up subscription gap, and by the slow sweep).
func (h *Hub) Recheck(ctx context.Context) {
	qs := h.queues()
	if len(qs) == 0 {
		return
	}
	has, err := h.store.NonEmpty(ctx, qs)
	if err != nil {
		h.log.LogAttrs(ctx, slog.LevelWarn, "re-check failed", slog.Any("err", err))
		return
	}
	for i, q := range qs {
		if has[i] {
			h.Wake(q)
		}
	}
}

// Run starts the wake-up subscription, the "blocked" registration, the
// node heartbeat and the slow re-check, and blocks until ctx ends. Call
// Shutdown first for a graceful stop.
func (h *Hub) Run(ctx context.Context) {
	for range popWorkers {
		h.drains.Add(1)
		go h.popWorker(&h.ready, popBatch)
	}
	for range apartWorkers {
		h.drains.Add(1)
		go h.popWorker(&h.apart, 1)
	}
	h.beat(ctx) // alive before the first registration
	var wg sync.WaitGroup
	wg.Add(4)
	go func() {
		defer wg.Done()
		err := h.store.Wakeups(ctx, func(full string) {
			h.stats.Wakeups.Add(1)
			h.Wake(full)
		}, func() {
			h.log.LogAttrs(ctx, slog.LevelInfo, "wake-up subscription (re)established; re-checking queues")
			h.recheckSoon()
			// Redis may have restarted or failed over (possibly without its
			// data): beat now, which asserts the heartbeat and, if it had
			// lapsed, every registration, instead of at the next beat.
			h.checkRedis()
		}, func(err error) {
			h.checkRedis()
		})
		if err != nil {
			h.log.LogAttrs(ctx, slog.LevelError, "wake-up subscription ended", slog.Any("err", err))
		}
	}()
	go func() { defer wg.Done(); h.registrations(ctx) }()
	go func() { defer wg.Done(); h.heartbeats(ctx) }()
	go func() { defer wg.Done(); h.sweep(ctx) }()
	wg.Wait()
	h.cancel()
	h.drains.Wait()
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := h.store.SetWaiting(cctx, h.opts.Node, 0, nil, h.queues()); err != nil {
		h.log.LogAttrs(cctx, slog.LevelWarn, "unregister waiters", slog.Any("err", err))
	}
	if err := h.store.NodeGone(cctx, h.opts.Node); err != nil {
		h.log.LogAttrs(cctx, slog.LevelWarn, "remove heartbeat", slog.Any("err", err))
	}
}

// Shutdown tells every waiter to end (ShuttingDown is closed) and refuses
// new ones; the transports then hand back what they hold.
func (h *Hub) Shutdown() {
	if h.shuttingDown.Swap(true) {
		return
	}
	h.closeAll()
	for i := range h.sh {
		s := &h.sh[i]
		s.mu.Lock()
		for _, q := range s.queues {
			for _, w := range q.waiters {
				select {
				case <-w.shutdown:
				default:
					close(w.shutdown)
				}
			}
		}
		s.mu.Unlock()
	}
}

// registrations keeps "node waits on queue" in Redis in step with the local
// waiters: each change is written as soon as the previous write is done
// (changes that came meanwhile go together). Every write also asserts the
// node's heartbeat; when that had lapsed (Redis lost its data, or a long
// outage), every local queue is registered again at once, so `blocked`
// never waits for the next beat.
func (h *Hub) registrations(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.dirtyCh:
		}
		h.dirtyMu.Lock()
		batch := h.dirty
		h.dirty = map[string]struct{}{}
		h.dirtyMu.Unlock()
		var on, off []string
		for q := range batch {
			if h.waiting(q) {
				on = append(on, q)
			} else {
				off = append(off, q)
			}
		}
		lapsed, err := h.store.SetWaiting(ctx, h.opts.Node, h.opts.Lease, on, off)
		if err == nil && lapsed {
			h.reassert()
		}
		if err != nil && ctx.Err() == nil {
			h.log.LogAttrs(ctx, slog.LevelWarn, "register waiters", slog.Any("err", err))
			// Try again later with the same queues.
			h.dirtyMu.Lock()
			for q := range batch {
				h.dirty[q] = struct{}{}
			}
			h.dirtyMu.Unlock()
			if !sleep(ctx, time.Second, nil) {
				return
			}
			signal(h.dirtyCh)
		}
	}
}

// ShutdownContext is cancelled when Shutdown is called: streams end
// cleanly and hand back what they could not write.
func (h *Hub) ShutdownContext() context.Context { return h.closing }

// recheckSoon makes the sweep goroutine re-check at once (after a wake-up
// subscription gap), without blocking the subscription.
func (h *Hub) recheckSoon() { signal(h.recheck) }

func (h *Hub) sweep(ctx context.Context) {
	for {
		// Jitter so that many nodes do not sweep in lock-step.
		d := h.opts.RecheckInterval/2 + rand.N(h.opts.RecheckInterval)
		if !sleep(ctx, d, h.recheck) {
			return
		}
		h.Recheck(ctx)
	}
}

// signal sends on ch without blocking: a wake-up that is already pending
// is enough.
func signal(ch chan<- struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// sleep waits d, or less if kick (nil: none) receives; it returns false
// if ctx ended first.
func sleep(ctx context.Context, d time.Duration, kick <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
	case <-kick:
	}
	return true
}
