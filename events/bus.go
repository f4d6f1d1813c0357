package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Sink receives events from a Bus. Each sink added to a Bus gets its own
// bounded buffer and goroutine; Write is only ever called from that
// goroutine, never concurrently with itself.
type Sink interface {
	// Name identifies the sink in logs, stats and metric labels; it must
	// be unique within a Bus.
	Name() string
	// Accept reports whether the sink wants ev. It runs inside
	// Bus.Publish, so it must be fast, must not block and must not
	// publish.
	Accept(ev Event) bool
	// Write stores or sends a batch. It must honour ctx (the Bus bounds
	// each call with SinkConfig.WriteTimeout and cancels it on a hard
	// shutdown) and must not keep batch after it returns: the Bus reuses
	// the slice. A non-nil error makes the Bus retry the same batch under
	// SinkConfig.Retry unless the error is marked with Permanent.
	Write(ctx context.Context, batch []Event) error
}

// Closer is implemented by sinks that hold resources or work of their own
// (workers, connections). Bus.Close calls it once the sink's buffer has
// been written out.
type Closer interface {
	Close(ctx context.Context) error
}

// DropObserver is implemented by sinks that want to hear about the events
// the Bus dropped for them (e.g. to count them in their own metrics).
// Dropped may be called from Publish, so it must be fast and non-blocking.
type DropObserver interface {
	Dropped(reason string, n int)
}

// Reasons for dropping an event, used in SinkStats.Dropped and the
// popbox_events_dropped_total metric.
const (
	// DropBufferFull: the sink's buffer was full when the event was
	// published (the sink is slower than the event rate, or failing).
	DropBufferFull = "buffer_full"
	// DropWriteFailed: the batch failed permanently or the retry policy
	// was exhausted.
	DropWriteFailed = "write_failed"
	// DropClosed: the event was published after Close, or was still
	// buffered when the context given to Close ended.
	DropClosed = "closed"
)

var dropReasons = [...]string{DropBufferFull, DropWriteFailed, DropClosed}

func reasonIndex(reason string) int {
	for i, r := range dropReasons {
		if r == reason {
			return i
		}
	}
	panic("events: unknown drop reason " + reason)
}

// SinkConfig sets how a Bus feeds one sink. Zero fields take the defaults
// given in their comments.
type SinkConfig struct {
	// Buffer is how many events may wait for the sink; beyond it Publish
	// drops (default 10000).
	Buffer int
	// BatchSize is the most events handed to one Write (default 100).
	BatchSize int
	// FlushInterval is the longest an event waits for its batch to fill.
	// Zero means write as soon as no further event is waiting, so batches
	// only form under load (lowest latency).
	FlushInterval time.Duration
	// WriteTimeout bounds each Write call (default 10s).
	WriteTimeout time.Duration
	// Retry is the retry policy for failed writes (default: no retry).
	Retry RetryPolicy
}

func (c SinkConfig) withDefaults() SinkConfig {
	if c.Buffer <= 0 {
		c.Buffer = 10000
	}
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.FlushInterval < 0 {
		c.FlushInterval = 0
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	c.Retry = c.Retry.withDefaults()
	return c
}

// SinkStats is a snapshot of one sink's counters.
type SinkStats struct {
	Written       uint64            // events written successfully
	Dropped       map[string]uint64 // events dropped, by reason (Drop* constants)
	FailedBatches uint64            // batches given up on
	Retries       uint64            // write attempts that were retried
	Queued        int               // events waiting in the buffer now
	Capacity      int               // buffer size
}

// DroppedTotal is the number of dropped events over all reasons.
func (s SinkStats) DroppedTotal() uint64 {
	var n uint64
	for _, v := range s.Dropped {
		n += v
	}
	return n
}

// Option configures a Bus.
type Option func(*Bus)

// WithNode sets the node name stamped on events published without one.
func WithNode(node string) Option { return func(b *Bus) { b.node = node } }

// WithDropLogInterval sets the minimum interval between two log lines
// about dropped events or failing writes of one sink (default 10s).
func WithDropLogInterval(d time.Duration) Option {
	return func(b *Bus) {
		if d > 0 {
			b.logInterval = d
		}
	}
}

// WithClock sets the clock used to stamp events published with a zero
// Time (default time.Now).
func WithClock(now func() time.Time) Option { return func(b *Bus) { b.now = now } }

// Bus fans events out to sinks. Publish never blocks; each sink is fed by
// its own goroutine from a bounded buffer. The zero Bus is not usable: call
// NewBus.
type Bus struct {
	logger      *slog.Logger
	node        string
	now         func() time.Time
	logInterval time.Duration

	mu      sync.RWMutex
	closed  bool
	runners []*runner

	stop       chan struct{}      // closed by Close: drain and finish
	hardCtx    context.Context    // cancelled when Close gives up waiting
	hardCancel context.CancelFunc // cancels hardCtx
	wg         sync.WaitGroup
	closeOnce  sync.Once
	closeErr   error
	closeDone  chan struct{}
}

// NewBus returns a Bus without sinks. A nil logger means slog.Default().
func NewBus(logger *slog.Logger, opts ...Option) *Bus {
	if logger == nil {
		logger = slog.Default()
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Bus{
		logger:      logger,
		now:         time.Now,
		logInterval: 10 * time.Second,
		stop:        make(chan struct{}),
		hardCtx:     ctx,
		hardCancel:  cancel,
		closeDone:   make(chan struct{}),
	}
	for _, o := range opts {
		o(b)
	}
	return b
}

// Add attaches a sink and starts its goroutine. It fails if the Bus is
// closed or a sink of the same name is already attached.
func (b *Bus) Add(s Sink, cfg SinkConfig) error {
	cfg = cfg.withDefaults()
	name := s.Name()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return fmt.Errorf("events: add sink %q: bus closed", name)
	}
	for _, r := range b.runners {
		if r.name == name {
			return fmt.Errorf("events: add sink %q: name already in use", name)
		}
	}
	r := &runner{
		bus:  b,
		sink: s,
		name: name,
		cfg:  cfg,
		ch:   make(chan Event, cfg.Buffer),
		log:  b.logger.With(slog.String("sink", name)),
	}
	r.observer, _ = s.(DropObserver)
	// Copy on write so Publish may iterate without surprises.
	runners := make([]*runner, len(b.runners), len(b.runners)+1)
	copy(runners, b.runners)
	b.runners = append(runners, r)
	b.wg.Add(1)
	go r.run()
	return nil
}

// Publish hands ev to every sink that accepts it. It never blocks: a sink
// whose buffer is full loses the event, counted as DropBufferFull. A zero
// Time is set to now and an empty Node to the Bus's node.
func (b *Bus) Publish(ev Event) {
	if ev.Time.IsZero() {
		ev.Time = b.now()
	}
	if ev.Node == "" {
		ev.Node = b.node
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	for _, r := range b.runners {
		if !r.sink.Accept(ev) {
			continue
		}
		if b.closed {
			r.drop(DropClosed, 1)
			continue
		}
		select {
		case r.ch <- ev:
		default:
			r.drop(DropBufferFull, 1)
		}
	}
}

// Close stops accepting events, writes out what the sinks still have
// buffered (retrying as configured) and then closes sinks that implement
// Closer. When ctx ends first, pending writes are cancelled and the events
// not written are counted as DropClosed; Close then returns ctx's error.
// Close is safe to call more than once; later calls wait for the first.
func (b *Bus) Close(ctx context.Context) error {
	b.closeOnce.Do(func() {
		defer close(b.closeDone)
		b.mu.Lock()
		b.closed = true
		runners := b.runners
		b.mu.Unlock()
		close(b.stop)

		drained := make(chan struct{})
		go func() { b.wg.Wait(); close(drained) }()
		var errs []error
		select {
		case <-drained:
		case <-ctx.Done():
			b.hardCancel()
			<-drained
			errs = append(errs, fmt.Errorf("events: close: %w", ctx.Err()))
		}
		b.hardCancel()
		for _, r := range runners {
			if c, ok := r.sink.(Closer); ok {
				if err := c.Close(ctx); err != nil {
					errs = append(errs, fmt.Errorf("events: close sink %q: %w", r.name, err))
				}
			}
		}
		b.closeErr = errors.Join(errs...)
	})
	select {
	case <-b.closeDone:
		return b.closeErr
	case <-ctx.Done():
		return fmt.Errorf("events: close: %w", ctx.Err())
	}
}

// Stats returns a snapshot of every sink's counters, keyed by sink name.
func (b *Bus) Stats() map[string]SinkStats {
	b.mu.RLock()
	runners := b.runners
	b.mu.RUnlock()
	out := make(map[string]SinkStats, len(runners))
	for _, r := range runners {
		out[r.name] = r.stats()
	}
	return out
}

// runner feeds one sink.
type runner struct {
	bus      *Bus
	sink     Sink
	observer DropObserver
	name     string
	cfg      SinkConfig
	ch       chan Event
	log      *slog.Logger

	written       atomic.Uint64
	failedBatches atomic.Uint64
	retries       atomic.Uint64
	dropped       [len(dropReasons)]atomic.Uint64

	// Owned by the runner goroutine.
	seq          uint64
	lastLog      time.Time
	loggedDrops  uint64
	lastErr      error
	failing      bool
	failedSince  time.Time
	backoffTimer *time.Timer
}

func (r *runner) drop(reason string, n int) {
	if n <= 0 {
		return
	}
	r.dropped[reasonIndex(reason)].Add(uint64(n))
	if r.observer != nil {
		r.observer.Dropped(reason, n)
	}
}

func (r *runner) stats() SinkStats {
	s := SinkStats{
		Written:       r.written.Load(),
		FailedBatches: r.failedBatches.Load(),
		Retries:       r.retries.Load(),
		Queued:        len(r.ch),
		Capacity:      cap(r.ch),
		Dropped:       make(map[string]uint64, len(dropReasons)),
	}
	for i, reason := range dropReasons {
		if n := r.dropped[i].Load(); n > 0 {
			s.Dropped[reason] = n
		}
	}
	return s
}

func (r *runner) droppedTotal() uint64 {
	var n uint64
	for i := range r.dropped {
		n += r.dropped[i].Load()
	}
	return n
}

// gather appends waiting events to batch without blocking, up to the batch
// size.
func (r *runner) gather(batch []Event) []Event {
	for len(batch) < r.cfg.BatchSize {
		select {
		case ev := <-r.ch:
			batch = append(batch, ev)
		default:
			return batch
		}
	}
	return batch
}

func (r *runner) run() {
	defer r.bus.wg.Done()
	batch := make([]Event, 0, r.cfg.BatchSize)
	flushT := time.NewTimer(time.Hour)
	flushT.Stop()
	var flushC <-chan time.Time
	logT := time.NewTicker(r.bus.logInterval)
	defer logT.Stop()
	r.backoffTimer = time.NewTimer(time.Hour)
	r.backoffTimer.Stop()

	flush := func() {
		if flushC != nil {
			flushT.Stop()
			flushC = nil
		}
		if len(batch) > 0 {
			r.flush(batch)
			clear(batch) // let the strings go
			batch = batch[:0]
		}
	}
	for {
		select {
		case ev := <-r.ch:
			batch = append(batch, ev)
			if r.cfg.FlushInterval == 0 {
				batch = r.gather(batch)
				flush()
				continue
			}
			if len(batch) >= r.cfg.BatchSize {
				flush()
				continue
			}
			if flushC == nil {
				flushT.Reset(r.cfg.FlushInterval)
				flushC = flushT.C
			}
		case <-flushC:
			flushC = nil
			flush()
		case <-logT.C:
			r.maybeLog(false)
		case <-r.bus.stop:
			for {
				batch = r.gather(batch)
				if len(batch) == 0 {
					break
				}
				flush()
			}
			r.maybeLog(true)
			return
		}
	}
}

// flush writes one batch, retrying under the sink's policy.
func (r *runner) flush(batch []Event) {
	r.seq++
	n := len(batch)
	hard := r.bus.hardCtx
	started := time.Now()
	for attempt := 1; ; attempt++ {
		if hard.Err() != nil {
			r.drop(DropClosed, n)
			return
		}
		ctx, cancel := context.WithTimeout(hard, r.cfg.WriteTimeout)
		err := r.sink.Write(WithBatchInfo(ctx, BatchInfo{Seq: r.seq, Attempt: attempt}), batch)
		cancel()
		if err == nil {
			r.written.Add(uint64(n))
			if r.failing {
				r.failing = false
				r.log.LogAttrs(context.Background(), slog.LevelInfo, "events sink writing again",
					slog.Duration("failed_for", time.Since(r.failedSince).Round(time.Millisecond)))
				r.maybeLog(true) // what the outage cost, at once
			}
			return
		}
		r.lastErr = err
		if !r.failing {
			r.failing = true
			r.failedSince = time.Now()
			r.log.LogAttrs(context.Background(), slog.LevelWarn, "events sink write failed",
				slog.Int("events", n), slog.Bool("permanent", IsPermanent(err)), slog.String("error", err.Error()))
		}
		// Drops while this batch is retried (the buffer filling up) are
		// logged too, at the log interval.
		r.maybeLog(false)
		if hard.Err() != nil {
			r.drop(DropClosed, n)
			return
		}
		d, again := time.Duration(0), false
		if !IsPermanent(err) {
			d, again = r.cfg.Retry.Next(attempt, started)
		}
		if !again {
			r.failedBatches.Add(1)
			r.drop(DropWriteFailed, n)
			r.maybeLog(false)
			return
		}
		r.retries.Add(1)
		r.backoffTimer.Reset(d)
		select {
		case <-r.backoffTimer.C:
		case <-hard.Done():
			r.backoffTimer.Stop()
			r.drop(DropClosed, n)
			return
		}
	}
}

// maybeLog reports new drops and the last write error at most once per
// log interval (or now, when force is set and there is something to say).
func (r *runner) maybeLog(force bool) {
	total := r.droppedTotal()
	if total == r.loggedDrops {
		return
	}
	if !force && time.Since(r.lastLog) < r.bus.logInterval {
		return
	}
	attrs := []slog.Attr{
		slog.Uint64("dropped", total-r.loggedDrops),
		slog.Uint64("dropped_total", total),
	}
	for i, reason := range dropReasons {
		if n := r.dropped[i].Load(); n > 0 {
			attrs = append(attrs, slog.Uint64("dropped_"+reason, n))
		}
	}
	if r.lastErr != nil {
		attrs = append(attrs, slog.String("last_error", r.lastErr.Error()))
	}
	r.log.LogAttrs(context.Background(), slog.LevelWarn, "events dropped", attrs...)
	r.loggedDrops = total
	r.lastLog = time.Now()
}
