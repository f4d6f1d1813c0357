// Package callback is the delivery-callback sink (API.md 1.6): for every
// Delivered state event that carries a callback URL it POSTs
//
//	{"transaction": "<tid>", "queue": "<id>", "state": "Delivered",
//	 "callback": "<url>", "timestamp": "<RFC 3339>"}
//
// to that URL, one request per event, from a bounded pool of workers.
// Network errors and 408/425/429/5xx answers are retried with exponential
// backoff and jitter for a bounded number of attempts and time; other
// answers are final. A retry waiting for its backoff does not hold a
// worker, and each destination (scheme, host, port) gets at most
// PerDestination requests in flight and a circuit breaker, so one dead
// endpoint does not starve the others. The default client dials only
// addresses the SSRF guard allows (httpx.CheckAddr, on the address dialled)
// and follows no redirect. Every event
// handed to the sink ends in exactly one outcome: ok, failed or dropped
// (popbox_callbacks_total; "retry" counts the retried attempts).
//
// The sink does its own retrying: add it to the Bus with DefaultConfig (no
// Bus-level retry), so that a batch is never handed to it twice.
package callback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/events/internal/httpx"
	"github.com/popbox/popbox/internal/domain"
)

// Outcomes counted in popbox_callbacks_total.
const (
	OutcomeOK      = "ok"      // the endpoint answered 2xx
	OutcomeRetry   = "retry"   // an attempt failed and another is scheduled
	OutcomeFailed  = "failed"  // final failure: 4xx, bad URL, or retries exhausted
	OutcomeDropped = "dropped" // never attempted to the end: buffers full or shut down
)

// TimestampLayout is the RFC 3339 layout of the "timestamp" field
// (UTC, millisecond precision).
const TimestampLayout = "2006-01-02T15:04:05.000Z07:00"

// Options configures a Sink. Zero fields take the defaults in their
// comments.
type Options struct {
	// Workers is how many requests may be in flight at once (default 16).
	Workers int
	// Pending bounds the callbacks accepted but not finished (queued,
	// in flight or waiting for a retry); when it is reached, Write waits
	// (and the Bus buffers, then drops) (default 10000).
	Pending int
	// Retry bounds the attempts per callback (default 5 attempts, 1s
	// initial backoff doubling up to 16s, all within 30s).
	Retry events.RetryPolicy
	// Timeout bounds each request (default 10s).
	Timeout time.Duration
	// Client sends the requests; nil means a client with Timeout that
	// follows no redirects and dials only addresses the SSRF guard allows
	// (see RefusePrivate).
	Client *http.Client
	// RefusePrivate refuses loopback and private destination addresses
	// too (link-local, unspecified and multicast ones are always refused).
	// The address checked is the one dialled, after name resolution.
	// Ignored when Client is set.
	RefusePrivate bool
	// PerDestination bounds the requests in flight to one destination
	// (scheme, host and port) (default Workers/4, at least 1); more wait
	// in that destination's line without holding a worker.
	PerDestination int
	// BreakerFailures consecutive failures (network errors, timeouts,
	// retryable statuses) open a destination's circuit breaker for
	// BreakerCooldown: its callbacks then fail their attempts at once,
	// without a request, and retry later (defaults 5 and 15s).
	BreakerFailures int
	BreakerCooldown time.Duration
	// Logger for rate-limited failure logs (default slog.Default()).
	Logger *slog.Logger
}

// Stats are the sink's outcome counters.
type Stats struct {
	OK, Retry, Failed, Dropped uint64
	Pending                    int // accepted and not finished now
}

// Body is the JSON document POSTed to a callback URL.
type Body struct {
	Transaction string `json:"transaction"`
	Queue       string `json:"queue"`
	State       string `json:"state"`
	Callback    string `json:"callback"`
	Timestamp   string `json:"timestamp"`
}

type job struct {
	ev      events.Event
	attempt int // attempts made so far
	started time.Time
	final   bool // the next attempt is the last one (shutting down)
}

// Sink sends delivery callbacks. Create it with New.
type Sink struct {
	opts   Options
	client *http.Client
	log    *slog.Logger
	limit  *httpx.Limiter
	dests  *destinations

	jobs  chan *job     // capacity Pending: a job holding a slot never blocks on it
	slots chan struct{} // one token per pending callback

	ctx    context.Context // cancelled on hard shutdown
	cancel context.CancelFunc

	mu          sync.Mutex
	closing     bool
	started     bool // the workers run (started by the first Write)
	timers      map[*job]*time.Timer
	outstanding sync.WaitGroup // one per slot held
	workers     sync.WaitGroup
	closeOnce   sync.Once
	closeErr    error
	closeDone   chan struct{}

	ok, retry, failed, dropped atomic.Uint64
}

var (
	_ events.Sink         = (*Sink)(nil)
	_ events.Closer       = (*Sink)(nil)
	_ events.DropObserver = (*Sink)(nil)
)

// New makes a Sink and starts nothing: its workers start with the first
// Write. Close it (directly or through Bus.Close) to stop them.
func New(opts Options) *Sink {
	if opts.Workers <= 0 {
		opts.Workers = 16
	}
	if opts.Pending <= 0 {
		opts.Pending = 10000
	}
	if opts.Retry.MaxAttempts <= 0 {
		opts.Retry = events.RetryPolicy{
			MaxAttempts:    5,
			InitialBackoff: time.Second,
			MaxBackoff:     16 * time.Second,
			MaxElapsed:     30 * time.Second,
		}
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.PerDestination <= 0 {
		opts.PerDestination = max(1, opts.Workers/4)
	}
	if opts.BreakerFailures <= 0 {
		opts.BreakerFailures = 5
	}
	if opts.BreakerCooldown <= 0 {
		opts.BreakerCooldown = 15 * time.Second
	}
	s := &Sink{
		opts:      opts,
		client:    opts.Client,
		log:       opts.Logger.With(slog.String("sink", "callback")),
		limit:     httpx.NewLimiter(10 * time.Second),
		dests:     newDestinations(opts.PerDestination, opts.BreakerFailures, opts.BreakerCooldown),
		jobs:      make(chan *job, opts.Pending),
		slots:     make(chan struct{}, opts.Pending),
		timers:    make(map[*job]*time.Timer),
		closeDone: make(chan struct{}),
	}
	if s.client == nil {
		s.client = httpx.NewGuardedClient(opts.Timeout, opts.PerDestination, !opts.RefusePrivate)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s
}

// start starts the workers once, unless the Sink is closing; s.mu held.
// Close waits for them after it set closing under s.mu, so a worker is
// never started after that wait.
func (s *Sink) start() {
	if s.started || s.closing {
		return
	}
	s.started = true
	s.workers.Add(s.opts.Workers)
	for range s.opts.Workers {
		go s.worker()
	}
}

// DefaultConfig is the SinkConfig to add the Sink to a Bus with: events go
// to the workers as soon as they arrive, and the Bus does not retry (the
// sink retries each callback on its own).
func DefaultConfig() events.SinkConfig {
	return events.SinkConfig{
		Buffer:        10000,
		BatchSize:     256,
		FlushInterval: 0,
		WriteTimeout:  10 * time.Second,
		Retry:         events.RetryPolicy{MaxAttempts: 1},
	}
}

// Name implements events.Sink.
func (s *Sink) Name() string { return "callback" }

// Accept implements events.Sink: Delivered state events with a callback.
func (s *Sink) Accept(ev events.Event) bool {
	return ev.Kind == events.KindState && ev.State == domain.StateDelivered && ev.Callback != ""
}

// Dropped implements events.DropObserver: events the Bus lost before
// they reached the sink count as dropped callbacks.
func (s *Sink) Dropped(_ string, n int) { s.dropped.Add(uint64(n)) }

// Write implements events.Sink. It hands each event to the workers,
// waiting while Pending callbacks are outstanding; events that cannot be
// handed over before ctx ends, or after Close, are counted as dropped. It
// always returns nil, so a batch is never handed over twice.
func (s *Sink) Write(ctx context.Context, batch []events.Event) error {
	now := time.Now()
	s.mu.Lock()
	s.start()
	s.mu.Unlock()
	for i, ev := range batch {
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			s.dropN(len(batch)-i, "callback queue full")
			return nil
		case <-s.ctx.Done():
			s.dropN(len(batch)-i, "callback sink closed")
			return nil
		}
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			<-s.slots
			s.dropN(len(batch)-i, "callback sink closed")
			return nil
		}
		s.outstanding.Add(1)
		s.mu.Unlock()
		s.jobs <- &job{ev: ev, started: now}
	}
	return nil
}

func (s *Sink) dropN(n int, why string) {
	if n <= 0 {
		return
	}
	s.dropped.Add(uint64(n))
	s.limit.Do(func(held int) {
		s.log.LogAttrs(context.Background(), slog.LevelWarn, "callbacks dropped",
			slog.String("reason", why), slog.Int("count", n), slog.Int("suppressed_logs", held))
	})
}

// finish releases the slot of a job that reached its outcome.
func (s *Sink) finish() {
	<-s.slots
	s.outstanding.Done()
}

func (s *Sink) worker() {
	defer s.workers.Done()
	for {
		select {
		case j := <-s.jobs:
			s.attempt(j)
		case <-s.ctx.Done():
			return
		}
	}
}

// attempt makes one POST for j, within its destination's share of the
// workers and unless its breaker is open, and decides its fate.
func (s *Sink) attempt(j *job) {
	key := destKey(j.ev.Callback)
	var err error
	switch s.dests.acquire(key, j, time.Now()) {
	case parked:
		return // runs when a request to the same destination ends
	case refused:
		err = errCircuitOpen
	default:
		err = s.post(j.ev)
		for _, next := range s.dests.release(key, err != nil && !events.IsPermanent(err), time.Now()) {
			s.jobs <- next // never blocks: each job holds a slot
		}
	}
	j.attempt++
	if err == nil {
		s.ok.Add(1)
		s.finish()
		return
	}
	if s.ctx.Err() != nil {
		s.dropped.Add(1)
		s.finish()
		return
	}
	var (
		d     time.Duration
		again bool
	)
	if !events.IsPermanent(err) && !j.final {
		d, again = s.opts.Retry.Next(j.attempt, j.started)
	}
	if !again {
		s.failed.Add(1)
		s.finish()
		s.limit.Do(func(held int) {
			s.log.LogAttrs(context.Background(), slog.LevelWarn, "delivery callback failed",
				slog.String("transaction", j.ev.Transaction), slog.String("queue", j.ev.Queue),
				slog.String("callback", httpx.Redact(j.ev.Callback)), slog.Int("attempts", j.attempt),
				slog.String("error", logError(err, j.ev.Callback)), slog.Int("suppressed_logs", held))
		})
		return
	}
	s.retry.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		// One last attempt now rather than a backoff nobody waits for.
		j.final = true
		s.jobs <- j
		return
	}
	s.timers[j] = time.AfterFunc(d, func() {
		s.mu.Lock()
		delete(s.timers, j)
		s.mu.Unlock()
		s.jobs <- j
	})
}

// post sends one callback. Errors that retrying cannot fix are marked
// with events.Permanent.
func (s *Sink) post(ev events.Event) error {
	if _, err := httpx.CheckURL(ev.Callback); err != nil {
		return events.Permanent(fmt.Errorf("callback: %w", err))
	}
	body, err := json.Marshal(Body{
		Transaction: ev.Transaction,
		Queue:       ev.Queue,
		State:       domain.StateDelivered,
		Callback:    ev.Callback,
		Timestamp:   ev.Time.UTC().Format(TimestampLayout),
	})
	if err != nil {
		return events.Permanent(fmt.Errorf("callback: encode: %w", err))
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.Timeout)
	defer cancel()
	return httpx.PostJSON(ctx, s.client, ev.Callback, body, nil, "popbox-callback/1", "callback: post")
}

// Close stops accepting callbacks, gives those waiting for a retry one
// last attempt now, and waits for every pending callback to finish. When
// ctx ends first, requests in flight are cancelled and whatever is left is
// counted as dropped; Close then returns ctx's error.
func (s *Sink) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		defer close(s.closeDone)
		s.mu.Lock()
		s.closing = true
		for j, t := range s.timers {
			if t.Stop() {
				j.final = true
				s.jobs <- j // never blocks: j holds a slot
			}
			delete(s.timers, j)
		}
		s.mu.Unlock()

		done := make(chan struct{})
		go func() { s.outstanding.Wait(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.closeErr = fmt.Errorf("callback: close: %w", ctx.Err())
		}
		s.cancel()
		s.workers.Wait()
		for range s.dests.drain() { // parked jobs hold slots too
			s.dropped.Add(1)
			s.finish()
		}
		for {
			select {
			case <-done:
				s.client.CloseIdleConnections()
				return
			case <-s.jobs:
				s.dropped.Add(1)
				s.finish()
			}
		}
	})
	select {
	case <-s.closeDone:
		return s.closeErr
	case <-ctx.Done():
		return fmt.Errorf("callback: close: %w", ctx.Err())
	}
}

// Stats returns the outcome counters.
func (s *Sink) Stats() Stats {
	return Stats{
		OK:      s.ok.Load(),
		Retry:   s.retry.Load(),
		Failed:  s.failed.Load(),
		Dropped: s.dropped.Load(),
		Pending: len(s.slots),
	}
}

var (
	descOutcomes = prometheus.NewDesc("popbox_callbacks_total",
		"Delivery callbacks by outcome: ok, retry (attempt failed, another scheduled), failed (final), dropped (not attempted to the end).",
		[]string{"outcome"}, nil)
	descPending = prometheus.NewDesc("popbox_callbacks_pending",
		"Delivery callbacks accepted and not finished (queued, in flight or waiting for a retry).", nil, nil)
)

// Collectors returns the sink's Prometheus collectors
// (popbox_callbacks_total{outcome}, popbox_callbacks_pending), not
// registered anywhere.
func (s *Sink) Collectors() []prometheus.Collector { return []prometheus.Collector{collector{s}} }

type collector struct{ s *Sink }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descOutcomes
	ch <- descPending
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	for _, o := range [...]struct {
		name string
		v    uint64
	}{{OutcomeOK, st.OK}, {OutcomeRetry, st.Retry}, {OutcomeFailed, st.Failed}, {OutcomeDropped, st.Dropped}} {
		ch <- prometheus.MustNewConstMetric(descOutcomes, prometheus.CounterValue, float64(o.v), o.name)
	}
	ch <- prometheus.MustNewConstMetric(descPending, prometheus.GaugeValue, float64(st.Pending))
}

// logError is err's text with the callback URL shown as httpx.Redact shows it (HTTP
// client errors quote the URL, query included).
func logError(err error, raw string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Op + " " + httpx.Redact(raw) + ": " + ue.Err.Error()
	}
	msg := err.Error()
	if u, perr := url.Parse(raw); perr == nil {
		msg = strings.ReplaceAll(msg, u.Redacted(), httpx.Redact(raw))
	}
	return strings.ReplaceAll(msg, raw, httpx.Redact(raw))
}
