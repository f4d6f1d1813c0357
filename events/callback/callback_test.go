package callback_test

import (
	"encoding/json"
	"fmt"
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
