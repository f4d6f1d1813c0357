package callback_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/events/callback"
	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/internal/testenv"
)

// recorder is a callback endpoint that remembers every POST; fail decides
// the status of each request from its body and how many came before for
// the same (transaction, queue).
type recorder struct {
	t    *testing.T
	fail func(b callback.Body, seen int) int

	mu     sync.Mutex
	bodies map[string][]callback.Body // key transaction/queue
	total  int
}

func newRecorder(t *testing.T, fail func(callback.Body, int) int) (*recorder, *httptest.Server) {
	r := &recorder{t: t, fail: fail, bodies: map[string][]callback.Body{}}
	srv := httptest.NewServer(r)
	t.Cleanup(srv.Close)
	return r, srv
}

func (r *recorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		r.t.Errorf("method %s", req.Method)
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/json" {
		r.t.Errorf("content-type %q", ct)
	}
	var b callback.Body
	if err := json.NewDecoder(req.Body).Decode(&b); err != nil {
		r.t.Errorf("decode: %v", err)
		return
	}
	key := b.Transaction + "/" + b.Queue
	r.mu.Lock()
	seen := len(r.bodies[key])
	r.bodies[key] = append(r.bodies[key], b)
	r.total++
	r.mu.Unlock()
	status := http.StatusOK
	if r.fail != nil {
		status = r.fail(b, seen)
	}
	w.WriteHeader(status)
}

func (r *recorder) counts() (map[string]int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := make(map[string]int, len(r.bodies))
	for k, v := range r.bodies {
		m[k] = len(v)
	}
	return m, r.total
}

func fastRetry() events.RetryPolicy {
	return events.RetryPolicy{MaxAttempts: 5, InitialBackoff: 5 * time.Millisecond, MaxBackoff: 20 * time.Millisecond, MaxElapsed: 10 * time.Second}
}

func TestOnePostPerDeliveredEventWithRetryAfter500(t *testing.T) {
	rec, srv := newRecorder(t, func(b callback.Body, seen int) int {
		if b.Transaction == "t-retry" && seen == 0 {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	cb := callback.New(callback.Options{Workers: 4, Retry: fastRetry(), Logger: testenv.QuietLogger()})
	b := events.NewBus(testenv.QuietLogger())
	if err := b.Add(cb, callback.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	url := srv.URL + "/cb?x=1"
	when := time.Date(2024, 2, 3, 4, 5, 6, 789_000_000, time.UTC)

	wantKeys := map[string]int{"t-retry/q0": 2}
	b.Publish(events.Event{Time: when, Kind: events.KindState, State: domain.StateDelivered, Transaction: "t-retry", Queue: "q0", Callback: url})
	for i := range 40 {
		tid := fmt.Sprintf("t%02d", i)
		for _, q := range []string{"qa", "qb"} {
			// Not Delivered, or no callback, or an action: no POST.
			b.Publish(events.Event{Kind: events.KindState, State: domain.StatePending, Transaction: tid, Queue: q, Callback: url})
			b.Publish(events.Event{Kind: events.KindState, State: domain.StateBlocked, Transaction: tid, Queue: q, Callback: url})
			b.Publish(events.Event{Kind: events.KindAction, Action: events.ActionPeek, Transaction: tid, Queue: q, Callback: url})
			b.Publish(events.Event{Kind: events.KindState, State: domain.StateDelivered, Transaction: tid + "-nocb", Queue: q})
			// Delivered with a callback: exactly one POST.
			b.Publish(events.Event{Time: when, Kind: events.KindState, State: domain.StateDelivered, Transaction: tid, Queue: q, Callback: url})
			wantKeys[tid+"/"+q] = 1
		}
	}

	// The retry arrives by itself (before any shutdown).
	testenv.Eventually(t, 10*time.Second, "all callbacks and the retry", func() bool {
		_, total := rec.counts()
		return total == 81+1
	})
	if err := testenv.CloseWithin(b, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got, total := rec.counts()
	if total != 82 {
		t.Fatalf("%d POSTs, want 82", total)
	}
	for k, n := range wantKeys {
		if got[k] != n {
			t.Errorf("%s: %d POSTs, want %d", k, got[k], n)
		}
	}
	if len(got) != len(wantKeys) {
		t.Errorf("POSTs for %d (transaction, queue) pairs, want %d", len(got), len(wantKeys))
	}
	rec.mu.Lock()
	first := rec.bodies["t-retry/q0"][1]
	rec.mu.Unlock()
	want := callback.Body{Transaction: "t-retry", Queue: "q0", State: "Delivered", Callback: url, Timestamp: "2024-02-03T04:05:06.789Z"}
	if first != want {
		t.Errorf("body = %+v, want %+v", first, want)
	}
	if _, err := time.Parse(time.RFC3339, first.Timestamp); err != nil {
		t.Errorf("timestamp not RFC 3339: %v", err)
	}
	st := cb.Stats()
	if st.OK != 81 || st.Retry != 1 || st.Failed != 0 || st.Dropped != 0 || st.Pending != 0 {
		t.Errorf("stats = %+v", st)
	}
	assertMetric(t, cb, "retry", 1)
	assertMetric(t, cb, "ok", 81)
}

func assertMetric(t *testing.T, cb *callback.Sink, outcome string, want float64) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	for _, c := range cb.Collectors() {
		reg.MustRegister(c)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "popbox_callbacks_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == outcome {
				if got := m.GetCounter().GetValue(); got != want {
					t.Errorf("popbox_callbacks_total{outcome=%q} = %v, want %v", outcome, got, want)
				}
				return
			}
		}
	}
	t.Errorf("popbox_callbacks_total{outcome=%q} missing", outcome)
}

func delivered(tid, url string) events.Event {
	return events.Event{Kind: events.KindState, State: domain.StateDelivered, Transaction: tid, Queue: "q", Callback: url}
}

func TestFinalFailures(t *testing.T) {
	rec, srv := newRecorder(t, func(b callback.Body, seen int) int {
		switch b.Transaction {
		case "t-404":
			return http.StatusNotFound
		case "t-503":
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "ftp://example.invalid/x", http.StatusFound)
	}))
	defer redirect.Close()
	cb := callback.New(callback.Options{Workers: 2, Retry: events.RetryPolicy{MaxAttempts: 3, InitialBackoff: time.Millisecond}, Logger: testenv.QuietLogger()})
	b := events.NewBus(testenv.QuietLogger())
	if err := b.Add(cb, callback.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	b.Publish(delivered("t-404", srv.URL))
	b.Publish(delivered("t-503", srv.URL))
	b.Publish(delivered("t-ftp", "ftp://example.invalid/cb"))
	b.Publish(delivered("t-redirect", redirect.URL))
	testenv.Eventually(t, 10*time.Second, "final outcomes", func() bool { return cb.Stats().Failed == 4 })
	if err := testenv.CloseWithin(b, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	got, _ := rec.counts()
	if got["t-404/q"] != 1 {
		t.Errorf("t-404: %d POSTs, want 1 (4xx is final)", got["t-404/q"])
	}
	if got["t-503/q"] != 3 {
		t.Errorf("t-503: %d POSTs, want 3 (MaxAttempts)", got["t-503/q"])
	}
	st := cb.Stats()
	if st.OK != 0 || st.Failed != 4 || st.Retry != 2 || st.Dropped != 0 {
		t.Errorf("stats = %+v", st)
	}
}

func TestConcurrencyIsBounded(t *testing.T) {
	gate := make(chan struct{})
	var inflight, maxInflight, total atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		for {
			m := maxInflight.Load()
			if n <= m || maxInflight.CompareAndSwap(m, n) {
				break
			}
		}
		<-gate
		inflight.Add(-1)
		total.Add(1)
	}))
	defer srv.Close()
	cb := callback.New(callback.Options{Workers: 3, PerDestination: 3, Retry: fastRetry(), Logger: testenv.QuietLogger()})
	b := events.NewBus(testenv.QuietLogger())
	if err := b.Add(cb, callback.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i := range 30 {
		b.Publish(delivered(fmt.Sprint("t", i), srv.URL))
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("publishing took %v with a stuck callback endpoint", d)
	}
	testenv.Eventually(t, 10*time.Second, "3 requests in flight", func() bool { return inflight.Load() == 3 })
	close(gate)
	testenv.Eventually(t, 10*time.Second, "all 30 requests", func() bool { return total.Load() == 30 })
	if m := maxInflight.Load(); m > 3 {
		t.Fatalf("%d requests in flight, want at most 3 workers", m)
	}
	if err := testenv.CloseWithin(b, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if st := cb.Stats(); st.OK != 30 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestCloseGivesWaitingRetriesALastTry(t *testing.T) {
	rec, srv := newRecorder(t, func(b callback.Body, seen int) int {
		if seen == 0 {
			return http.StatusBadGateway
		}
		return http.StatusOK
	})
	// A long backoff: the retry is still waiting when Close is called.
	cb := callback.New(callback.Options{Retry: events.RetryPolicy{MaxAttempts: 5, InitialBackoff: time.Hour, MaxBackoff: time.Hour}, Logger: testenv.QuietLogger()})
	b := events.NewBus(testenv.QuietLogger())
	if err := b.Add(cb, callback.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	b.Publish(delivered("t1", srv.URL))
	testenv.Eventually(t, 10*time.Second, "the first attempt to fail", func() bool { return cb.Stats().Retry == 1 })
	if err := testenv.CloseWithin(b, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, _ := rec.counts(); got["t1/q"] != 2 {
		t.Fatalf("%d POSTs, want 2", got["t1/q"])
	}
	if st := cb.Stats(); st.OK != 1 || st.Pending != 0 {
		t.Fatalf("stats = %+v", st)
	}
	// After close: counted as dropped, never sent.
	b.Publish(delivered("t2", srv.URL))
	if st := cb.Stats(); st.Dropped != 1 {
		t.Fatalf("stats after close = %+v", st)
	}
}

func TestHardCloseDropsInFlight(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	cb := callback.New(callback.Options{Workers: 2, Retry: fastRetry(), Logger: testenv.QuietLogger()})
	b := events.NewBus(testenv.QuietLogger())
	if err := b.Add(cb, callback.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		b.Publish(delivered(fmt.Sprint("t", i), srv.URL))
	}
	testenv.Eventually(t, 10*time.Second, "all handed to the sink", func() bool { return cb.Stats().Pending == 10 })
	err := testenv.CloseWithin(b, 100*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("close = %v, want a deadline error", err)
	}
	if st := cb.Stats(); st.Dropped != 10 || st.Pending != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func startSink(t *testing.T, o callback.Options) (*callback.Sink, *events.Bus) {
	t.Helper()
	if o.Logger == nil {
		o.Logger = testenv.QuietLogger()
	}
	cb := callback.New(o)
	b := events.NewBus(testenv.QuietLogger())
	if err := b.Add(cb, callback.DefaultConfig()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = testenv.CloseWithin(b, 5*time.Second) })
	return cb, b
}

// TestRefusedDestinations: link-local, unspecified and multicast
// destinations are never dialled; loopback and private ones only when
// allowed; the check is on the address dialled (a name resolving to
// loopback is refused as the address is); refused callbacks fail at once
// and are logged without credentials or query.
func TestRefusedDestinations(t *testing.T) {
	rec, srv := newRecorder(t, nil)
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(srv.URL, "http://"))
	logs := &testenv.SyncBuffer{}
	cb, b := startSink(t, callback.Options{RefusePrivate: true, Retry: fastRetry(),
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	for _, u := range []string{
		srv.URL + "/direct",
		"http://localhost:" + port + "/by-name",
		"http://user:s3cret@169.254.169.254/latest/meta-data?token=t0ken",
		"http://[fe80::1]:" + port + "/",
		"http://0.0.0.0:" + port + "/",
		"http://[::]:" + port + "/",
	} {
		b.Publish(delivered("t", u))
	}
	testenv.Eventually(t, 10*time.Second, "six final failures", func() bool { return cb.Stats().Failed == 6 })
	if st := cb.Stats(); st.Retry != 0 || st.OK != 0 {
		t.Errorf("refused destinations were retried or sent: %+v", st)
	}
	if _, total := rec.counts(); total != 0 {
		t.Fatalf("the loopback endpoint got %d requests with private destinations refused", total)
	}
	if l := logs.String(); strings.Contains(l, "s3cret") || strings.Contains(l, "t0ken") {
		t.Fatalf("credentials or query of a callback URL in the log:\n%s", l)
	}

	// Open provisioning: loopback allowed, link-local still refused.
	open, ob := startSink(t, callback.Options{Retry: fastRetry()})
	ob.Publish(delivered("t-open", srv.URL+"/open"))
	ob.Publish(delivered("t-meta", "http://169.254.169.254/latest/meta-data"))
	testenv.Eventually(t, 10*time.Second, "one sent, one refused", func() bool { st := open.Stats(); return st.OK == 1 && st.Failed == 1 })
	if got, _ := rec.counts(); got["t-open/q"] != 1 {
		t.Fatalf("loopback callback with private allowed: %v", got)
	}
}

// TestRedirectsNotFollowed: a 3xx is a final answer, the target is never
// called.
func TestRedirectsNotFollowed(t *testing.T) {
	rec, target := newRecorder(t, nil)
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+"/inside", http.StatusTemporaryRedirect)
	}))
	defer redirect.Close()
	cb, b := startSink(t, callback.Options{Retry: fastRetry()})
	b.Publish(delivered("t", redirect.URL))
	testenv.Eventually(t, 10*time.Second, "a final failure", func() bool { return cb.Stats().Failed == 1 })
	if _, total := rec.counts(); total != 0 {
		t.Fatalf("redirect followed: the target got %d requests", total)
	}
}

// TestDeadDestinationDelaysOnlyItself: 40 callbacks to a host that never
// answers hold at most its share of the workers; another destination's
// callback goes out while they hang (issue 13 item 11: it waited 19 s
// behind them).
func TestDeadDestinationDelaysOnlyItself(t *testing.T) {
	release := make(chan struct{})
	var inflight, maxInflight atomic.Int64
	dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inflight.Add(1)
		defer inflight.Add(-1)
		for m := maxInflight.Load(); n > m && !maxInflight.CompareAndSwap(m, n); m = maxInflight.Load() {
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(dead.Close)
	rec, healthy := newRecorder(t, nil)
	cb, b := startSink(t, callback.Options{Timeout: time.Minute, Retry: fastRetry()})
	t.Cleanup(func() { close(release) }) // before the sink closes: the dead host answers at last
	for i := range 40 {
		b.Publish(delivered(fmt.Sprint("dead", i), dead.URL))
	}
	testenv.Eventually(t, 10*time.Second, "requests to the dead host in flight", func() bool { return inflight.Load() > 0 })
	b.Publish(delivered("victim", healthy.URL))
	testenv.Eventually(t, 10*time.Second, "the other destination's callback", func() bool { got, _ := rec.counts(); return got["victim/q"] == 1 })
	if m := maxInflight.Load(); m > 4 {
		t.Fatalf("%d requests in flight to one destination, want at most 4 (16 workers / 4)", m)
	}
	// The healthy server records the victim before the sink counts its
	// answer, so Pending reaches 40 a moment after the victim is seen.
	testenv.Eventually(t, 10*time.Second, "only the 40 dead ones pending", func() bool { return cb.Stats().Pending == 40 })
}

// TestBreakerOpens: after BreakerFailures consecutive failures a
// destination gets no more requests until the cooldown passes; its
// callbacks fail their attempts at once.
func TestBreakerOpens(t *testing.T) {
	rec, srv := newRecorder(t, func(callback.Body, int) int { return http.StatusServiceUnavailable })
	cb, b := startSink(t, callback.Options{PerDestination: 1, BreakerFailures: 3, BreakerCooldown: time.Hour, Retry: fastRetry()})
	for i := range 10 {
		b.Publish(delivered(fmt.Sprint("t", i), srv.URL))
	}
	testenv.Eventually(t, 10*time.Second, "all ten failed", func() bool { return cb.Stats().Failed == 10 })
	if _, total := rec.counts(); total != 3 {
		t.Fatalf("the failing destination got %d requests, want 3 (the breaker threshold)", total)
	}
}
