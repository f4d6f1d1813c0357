package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/popbox/popbox/loadtest/internal/hist"
	"github.com/popbox/popbox/loadtest/internal/payload"
	"github.com/popbox/popbox/loadtest/internal/transport"
)

// Command is a line the parent writes to a worker's stdin (after the spec).
type Command struct {
	Cmd string `json:"cmd"`          // "provision" (capacity), "run" (throughput, latency), "stop"
	T0  int64  `json:"t0,omitempty"` // run start, Unix ns (time-series origin)
}

// Event is a line a worker writes to its stdout.
type Event struct {
	Ev       string        `json:"ev"` // "progress", "ready", "phase", "result", "fatal"
	Progress *Progress     `json:"p,omitempty"`
	Result   *WorkerResult `json:"r,omitempty"`
	Msg      string        `json:"msg,omitempty"`
}

// Progress is a worker's running counters.
type Progress struct {
	Attempted   int64 `json:"attempted"`
	Open        int64 `json:"open"`
	OpenSubs    int64 `json:"open_subs"`
	Failed      int64 `json:"failed"`
	Dropped     int64 `json:"dropped"`
	Delivered   int64 `json:"delivered"`
	Provisioned int64 `json:"provisioned"`
	ProvErrors  int64 `json:"prov_errors"`
	Problems    int64 `json:"problems"`
}

// KindCounts are the connection counters of one transport.
type KindCounts struct {
	Subs    int64 `json:"subs"`
	Conns   int64 `json:"conns"`
	Opened  int64 `json:"opened"`
	Failed  int64 `json:"failed"`
	Dropped int64 `json:"dropped"`
}

// WorkerResult is what one worker measured; the parent merges them.
type WorkerResult struct {
	Index         int                    `json:"index"`
	Progress      Progress               `json:"progress"`
	ByKind        map[string]*KindCounts `json:"by_kind"`
	Subs          int64                  `json:"subs"`
	Verified      int64                  `json:"verified"`
	Missing       int64                  `json:"missing"`
	Duplicates    int64                  `json:"duplicates"`
	ProvisionCall *hist.Hist             `json:"provision_call"`
	Latency       map[string]*hist.Hist  `json:"latency"`
	Rounds        []*hist.Hist           `json:"rounds,omitempty"`
	SeriesProv    []int64                `json:"series_provisioned,omitempty"`
	SeriesDeliv   []int64                `json:"series_delivered,omitempty"`
	Errors        map[string]int64       `json:"errors,omitempty"`
	OpenAtStop    int64                  `json:"open_at_stop"`
	ConnectSecs   float64                `json:"connect_s"`
	RunSecs       float64                `json:"run_s"`
	CPUSecs       float64                `json:"cpu_s"`
	Nice          int                    `json:"nice"`
	MaxRSS        int64                  `json:"max_rss_bytes"`
}

// reasons counts errors by reason.
type reasons struct {
	mu sync.Mutex
	m  map[string]int64
}

func (r *reasons) add(reason string) {
	r.mu.Lock()
	if r.m == nil {
		r.m = map[string]int64{}
	}
	r.m[reason]++
	r.mu.Unlock()
}

func (r *reasons) snapshot() map[string]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make(map[string]int64, len(r.m))
	for k, v := range r.m {
		out[k] = v
	}
	return out
}

// bitset records which sequence numbers were seen (growable, locked).
type bitset struct {
	mu    sync.Mutex
	words []uint64
}

// testAndSet sets bit i and reports whether it was clear before.
func (b *bitset) testAndSet(i uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	w := int(i / 64)
	if w >= len(b.words) {
		n := max(2*len(b.words), w+1, 1024)
		nw := make([]uint64, n)
		copy(nw, b.words)
		b.words = nw
	}
	mask := uint64(1) << (i % 64)
	if b.words[w]&mask != 0 {
		return false
	}
	b.words[w] |= mask
	return true
}

// series counts events per second since t0.
type series struct {
	t0     atomic.Int64
	counts []atomic.Int64
}

func newSeries(seconds int) *series { return &series{counts: make([]atomic.Int64, seconds)} }

func (s *series) add(now int64) {
	t0 := s.t0.Load()
	if t0 == 0 || now < t0 {
		return
	}
	if i := (now - t0) / int64(time.Second); i < int64(len(s.counts)) {
		s.counts[i].Add(1)
	}
}

func (s *series) snapshot() []int64 {
	last := -1
	out := make([]int64, len(s.counts))
	for i := range s.counts {
		out[i] = s.counts[i].Load()
		if out[i] != 0 {
			last = i
		}
	}
	return out[:last+1]
}

// subState is one subscriber (one queue).
type subState struct {
	queue string
	kind  string
	open  atomic.Bool
	got   atomic.Int32
}

// connUnit is one connection: one queue, or several for wsmux.
type connUnit struct {
	kind   transport.Kind
	subs   []*subState
	client *transport.Client
}

// worker runs one share of a scenario.
type worker struct {
	spec   *WorkerSpec
	subs   []*subState
	units  []*connUnit
	prov   *transport.Provisioner
	errs   reasons
	seen   bitset
	window chan struct{}

	attempted, open, openSubs, failed, dropped atomic.Int64
	delivered, dupes, provisioned, provErrors  atomic.Int64
	problems                                   atomic.Int64
	byKind                                     map[string]*kindAtomics

	latency   map[string]*hist.Hist
	rounds    []*hist.Hist
	provCall  *hist.Hist
	sProv     *series
	sDeliv    *series
	milestone chan struct{}
	nextSeq   atomic.Uint64
	expect    atomic.Int64 // deliveries that complete the current phase (0: none)
	connect   time.Duration
	runFor    time.Duration
	openStop  int64
}

type kindAtomics struct {
	subs, conns, opened, failed, dropped atomic.Int64
}

func newWorker(spec *WorkerSpec) (*worker, error) {
	if len(spec.Targets) == 0 {
		return nil, errors.New("worker: no targets")
	}
	var sources []netip.Addr
	for _, s := range spec.Sources {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("worker: source address %q: %w", s, err)
		}
		sources = append(sources, a)
	}
	dialer := transport.NewDialer(sources, spec.Handshake)
	var urls []*url.URL
	var clients []*transport.Client
	for _, t := range spec.Targets {
		u, err := url.Parse(t)
		if err != nil {
			return nil, err
		}
		urls = append(urls, u)
		clients = append(clients, &transport.Client{
			Base: u, Dialer: dialer, PollTimeout: spec.PollSecs,
			HandshakeTimeout: spec.Handshake,
		})
	}
	w := &worker{
		spec:      spec,
		prov:      transport.NewProvisioner(urls, dialer, spec.ProvConns, 60*time.Second),
		byKind:    map[string]*kindAtomics{},
		latency:   map[string]*hist.Hist{},
		provCall:  hist.New(),
		milestone: make(chan struct{}, 1),
		window:    make(chan struct{}, max(1, spec.Window)),
	}
	w.prov.ExpirationDelay = spec.Expire
	secs := int((spec.Duration+spec.Verify)/time.Second) + 10
	w.sProv, w.sDeliv = newSeries(min(secs, 4000)), newSeries(min(secs, 4000))
	for _, k := range transport.Kinds {
		w.latency[string(k)] = hist.New()
	}
	for i := 0; i < spec.Rounds; i++ {
		w.rounds = append(w.rounds, hist.New())
	}
	i := 0
	for _, g := range spec.Groups {
		kind, err := transport.ParseKind(g.Kind)
		if err != nil {
			return nil, err
		}
		ka := &kindAtomics{}
		w.byKind[g.Kind] = ka
		ka.subs.Store(int64(g.Subs))
		per := 1
		if kind == transport.WSMux {
			per = max(1, spec.MuxQueues)
		}
		for left := g.Subs; left > 0; {
			n := min(per, left)
			u := &connUnit{kind: kind, client: clients[(spec.Offset+i)%len(clients)]}
			for j := 0; j < n; j++ {
				s := &subState{queue: QueueName(spec.Prefix, spec.Index, i), kind: g.Kind}
				w.subs = append(w.subs, s)
				u.subs = append(u.subs, s)
				i++
			}
			w.units = append(w.units, u)
			ka.conns.Add(1)
			left -= n
		}
	}
	return w, nil
}

func (w *worker) progress() Progress {
	return Progress{
		Attempted: w.attempted.Load(), Open: w.open.Load(), OpenSubs: w.openSubs.Load(),
		Failed: w.failed.Load(), Dropped: w.dropped.Load(), Delivered: w.delivered.Load(),
		Provisioned: w.provisioned.Load(), ProvErrors: w.provErrors.Load(), Problems: w.problems.Load(),
	}
}

func (w *worker) signal() {
	select {
	case w.milestone <- struct{}{}:
	default:
	}
}

func (w *worker) problem(reason string) {
	w.problems.Add(1)
	w.errs.add("frame: " + reason)
}

// deliver accounts one payload received by s.
func (w *worker) deliver(s *subState, p string) {
	now := time.Now().UnixNano()
	m, err := payload.DecodeString(p)
	if err != nil {
		w.problem("foreign payload")
		return
	}
	lat := now - m.T
	n := s.got.Add(1)
	switch w.spec.Scenario {
	case "capacity":
		if n > 1 {
			w.dupes.Add(1)
		}
	case "fanout":
		if m.Seq < uint64(len(w.rounds)) {
			w.rounds[m.Seq].Record(lat)
		}
		if int(n) > len(w.rounds) {
			w.dupes.Add(1)
		}
	default:
		if !w.seen.testAndSet(m.Seq) {
			w.dupes.Add(1)
			return
		}
		select { // give the in-flight slot back
		case <-w.window:
		default:
		}
	}
	w.latency[s.kind].Record(lat)
	w.sDeliv.add(now)
	d := w.delivered.Add(1)
	if e := w.expect.Load(); e > 0 && d%e == 0 {
		w.signal()
	}
}

// connectAll opens every connection (bounded concurrency) and returns when
// each has either opened or failed. The connections live until ctx ends;
// running tracks their goroutines.
func (w *worker) connectAll(ctx context.Context, running *sync.WaitGroup) {
	start := time.Now()
	sem := make(chan struct{}, max(1, w.spec.Connect))
	var pending sync.WaitGroup
	for _, u := range w.units {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		pending.Add(1)
		running.Add(1)
		w.attempted.Add(1)
		go func() {
			defer running.Done()
			var once sync.Once
			settle := func() { once.Do(func() { <-sem; pending.Done() }) }
			defer settle()
			w.runConn(ctx, u, settle)
		}()
	}
	pending.Wait()
	w.connect = time.Since(start)
}

func (w *worker) runConn(ctx context.Context, u *connUnit, settle func()) {
	ka := w.byKind[string(u.kind)]
	queues := make([]string, len(u.subs))
	for i, s := range u.subs {
		queues[i] = s.queue
	}
	opened := false
	err := u.client.Subscribe(ctx, u.kind, queues, transport.Handler{
		OnOpen: func() {
			opened = true
			for _, s := range u.subs {
				s.open.Store(true)
			}
			w.open.Add(1)
			w.openSubs.Add(int64(len(u.subs)))
			ka.opened.Add(1)
			settle()
		},
		OnMessage: func(q int, p string) { w.deliver(u.subs[q], p) },
		OnProblem: w.problem,
	})
	if !opened {
		if ctx.Err() == nil {
			w.failed.Add(1)
			ka.failed.Add(1)
			w.errs.add("connect: " + transport.Reason(err))
		}
		return
	}
	for _, s := range u.subs {
		s.open.Store(false)
	}
	w.open.Add(-1)
	w.openSubs.Add(-int64(len(u.subs)))
	if err != nil {
		w.dropped.Add(1)
		ka.dropped.Add(1)
		w.errs.add("dropped: " + transport.Reason(err))
	}
}

// provisionOne sends one message (stamped now) to s.
func (w *worker) provisionOne(ctx context.Context, buf []byte, s *subState, seq uint64) ([]byte, bool) {
	start := time.Now()
	buf = payload.Append(buf[:0], payload.Message{T: start.UnixNano(), Seq: seq}, w.spec.Payload)
	_, err := w.prov.Provision(ctx, []string{s.queue}, buf)
	w.provCall.Record(int64(time.Since(start)))
	if err != nil {
		if ctx.Err() == nil {
			w.provErrors.Add(1)
			w.errs.add("provision: " + transport.Reason(err))
		}
		return buf, false
	}
	w.provisioned.Add(1)
	w.sProv.add(time.Now().UnixNano())
	return buf, true
}

// provisionEach sends one message to every subscriber (capacity) and waits
// until every open subscriber has it or the verify timeout passes.
func (w *worker) provisionEach(ctx context.Context) {
	w.expect.Store(w.openSubs.Load())
	var next atomic.Int64
	w.onProvConns(func() {
		var buf []byte
		for ctx.Err() == nil {
			i := next.Add(1) - 1
			if i >= int64(len(w.subs)) {
				return
			}
			buf, _ = w.provisionOne(ctx, buf, w.subs[i], uint64(i))
		}
	})
	w.waitDelivered(ctx, func() bool { return w.delivered.Load() >= w.expect.Load() })
}

// onProvConns runs send once per provisioning connection, all at the same
// time, and returns when every one has returned.
func (w *worker) onProvConns(send func()) {
	var wg sync.WaitGroup
	for i := 0; i < max(1, w.spec.ProvConns); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			send()
		}()
	}
	wg.Wait()
}

// waitDelivered waits (polling) until done() or the verify timeout.
func (w *worker) waitDelivered(ctx context.Context, done func() bool) {
	ctx, cancel := context.WithTimeout(ctx, w.spec.Verify)
	defer cancel()
	poll(ctx, 10*time.Millisecond, nil, done)
}

// poll calls ok every interval until it holds (true). It gives up (false)
// when ctx ends or quit is closed; a nil quit never is.
func poll(ctx context.Context, interval time.Duration, quit <-chan struct{}, ok func() bool) bool {
	t := time.NewTicker(interval)
	defer t.Stop()
	for !ok() {
		select {
		case <-ctx.Done():
			return false
		case <-quit:
			return false
		case <-t.C:
		}
	}
	return true
}

// pace emits sequence numbers at rate per second until ctx ends.
func pace(ctx context.Context, rate float64, out chan<- uint64, seq *atomic.Uint64) {
	defer close(out)
	interval := time.Duration(float64(time.Second) / rate)
	interval = max(interval, time.Millisecond)
	t := time.NewTicker(interval)
	defer t.Stop()
	start := time.Now()
	var sent int64
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			due := int64(now.Sub(start).Seconds() * rate)
			for ; sent < due; sent++ {
				select {
				case out <- seq.Add(1) - 1:
				case <-ctx.Done():
					return
				}
			}
		}
	}
}

// run provisions for the spec's duration (throughput: closed loop bounded
// by the in-flight window, optionally rate-capped; latency: fixed rate),
// then waits for the in-flight messages to arrive.
func (w *worker) run(ctx context.Context, t0 time.Time) {
	var targets []*subState
	for _, s := range w.subs {
		if s.open.Load() {
			targets = append(targets, s)
		}
	}
	if len(targets) == 0 {
		w.errs.add("run: no open subscriber")
		return
	}
	runCtx, cancel := context.WithDeadline(ctx, t0.Add(w.spec.Duration))
	defer cancel()
	start := time.Now()
	var jobs chan uint64
	if w.spec.Rate > 0 {
		jobs = make(chan uint64, 1024)
		go pace(runCtx, w.spec.Rate, jobs, &w.nextSeq)
	}
	closedLoop := w.spec.Scenario == "throughput"
	w.onProvConns(func() {
		var buf []byte
		for {
			if closedLoop {
				select {
				case w.window <- struct{}{}:
				case <-runCtx.Done():
					return
				}
			}
			var seq uint64
			if jobs != nil {
				var ok bool
				if seq, ok = <-jobs; !ok {
					if closedLoop {
						<-w.window
					}
					return
				}
			} else {
				seq = w.nextSeq.Add(1) - 1
			}
			var ok bool
			buf, ok = w.provisionOne(ctx, buf, targets[seq%uint64(len(targets))], seq)
			if !ok && closedLoop {
				select {
				case <-w.window:
				default:
				}
			}
			if !ok && runCtx.Err() == nil {
				// back off a little so a failing gateway is not hammered
				select {
				case <-runCtx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
		}
	})
	w.runFor = time.Since(start)
	w.waitDelivered(ctx, func() bool { return w.delivered.Load() >= w.provisioned.Load() })
}

func (w *worker) result() *WorkerResult {
	r := &WorkerResult{
		Index: w.spec.Index, Progress: w.progress(), ByKind: map[string]*KindCounts{},
		Subs: int64(len(w.subs)), Duplicates: w.dupes.Load(), ProvisionCall: w.provCall,
		Latency: map[string]*hist.Hist{}, Rounds: w.rounds, SeriesProv: w.sProv.snapshot(),
		SeriesDeliv: w.sDeliv.snapshot(), Errors: w.errs.snapshot(),
		ConnectSecs: w.connect.Seconds(), RunSecs: w.runFor.Seconds(), OpenAtStop: w.openStop,
	}
	for k, h := range w.latency {
		if h.Count() > 0 {
			r.Latency[k] = h
		}
	}
	for k, a := range w.byKind {
		r.ByKind[k] = &KindCounts{Subs: a.subs.Load(), Conns: a.conns.Load(), Opened: a.opened.Load(),
			Failed: a.failed.Load(), Dropped: a.dropped.Load()}
	}
	if w.spec.Scenario == "capacity" {
		for _, s := range w.subs {
			switch g := s.got.Load(); {
			case g == 1:
				r.Verified++
			case g == 0:
				r.Missing++
			}
		}
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		r.CPUSecs = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
		r.MaxRSS = ru.Maxrss * 1024
	}
	// The raw getpriority(2) of Linux, which syscall.Getpriority is,
	// returns 20 - nice.
	if prio, err := syscall.Getpriority(syscall.PRIO_PROCESS, 0); err == nil {
		r.Nice = 20 - prio
	}
	return r
}
