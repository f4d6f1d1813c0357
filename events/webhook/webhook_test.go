package webhook_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/popbox/popbox/events"
	"github.com/popbox/popbox/events/webhook"
	"github.com/popbox/popbox/internal/domain"
	"github.com/popbox/popbox/internal/testenv"
)

func TestWebhookReceivesFilteredEventsInBatches(t *testing.T) {
	var (
		mu      sync.Mutex
		got     []events.Event
		batches []int
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("request %s with content-type %q", r.Method, r.Header.Get("Content-Type"))
		}
		if r.Header.Get("X-Token") != "secret" {
			t.Errorf("missing configured header")
		}
		var body webhook.Body
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("decode: %v", err)
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		got = append(got, body.Events...)
		batches = append(batches, len(body.Events))
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	s, err := webhook.New(srv.URL+"/hook", webhook.Options{
		Filter: events.ParseFilter("Delivered,provision"),
		Header: http.Header{"X-Token": {"secret"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b := events.NewBus(testenv.QuietLogger(), events.WithNode("node-a"))
	cfg := webhook.DefaultConfig()
	cfg.BatchSize = 50
	cfg.FlushInterval = 10 * time.Millisecond
	if err := b.Add(s, cfg); err != nil {
		t.Fatal(err)
	}

	base := time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC)
	var want []events.Event
	for i := range 500 {
		tid := "tid-" + string(rune('a'+i%26))
		evs := []events.Event{
			{Kind: events.KindAction, Action: events.ActionProvision, Transaction: tid, Count: 1},
			{Kind: events.KindState, State: domain.StatePending, Transaction: tid, Queue: "q"},
			{Kind: events.KindAction, Action: events.ActionPop, Queue: "q", Count: 1},
			{Kind: events.KindState, State: domain.StateDelivered, Transaction: tid, Queue: "q", Namespace: "UNSEC:"},
		}
		for j := range evs {
			evs[j].Time = base.Add(time.Duration(i*4+j) * time.Millisecond)
			b.Publish(evs[j])
			evs[j].Node = "node-a"
			if evs[j].State == domain.StateDelivered || evs[j].Action == events.ActionProvision {
				want = append(want, evs[j])
			}
		}
	}
	if err := testenv.CloseWithin(b, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("webhook events (-want +got):\n%s", diff)
	}
	if len(batches) < 1000/50 {
		t.Fatalf("%d batches for 1000 events with batch size 50", len(batches))
	}
	for _, n := range batches {
		if n > 50 {
			t.Fatalf("batch of %d > 50", n)
		}
	}
	st := b.Stats()["webhook"]
	if st.Written != 1000 || st.DroppedTotal() != 0 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestDeadWebhookNeverSlowsPublish(t *testing.T) {
	for _, mode := range []string{"hang", "500"} {
		t.Run(mode, func(t *testing.T) {
			release := make(chan struct{})
			var requests atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				if mode == "hang" {
					select {
					case <-release:
					case <-r.Context().Done():
					}
					return
				}
				http.Error(w, "boom", http.StatusInternalServerError)
			}))
			defer srv.Close()
			defer close(release) // runs before srv.Close, which waits for handlers

			s, err := webhook.New(srv.URL, webhook.Options{})
			if err != nil {
				t.Fatal(err)
			}
			b := events.NewBus(testenv.QuietLogger())
			cfg := webhook.DefaultConfig()
			cfg.Buffer = 100
			cfg.WriteTimeout = 200 * time.Millisecond
			cfg.FlushInterval = time.Millisecond
			cfg.Retry = events.RetryPolicy{MaxAttempts: 3, InitialBackoff: 5 * time.Millisecond, MaxElapsed: time.Second}
			if err := b.Add(s, cfg); err != nil {
				t.Fatal(err)
			}

			const n = 10000
			start := time.Now()
			for i := range n {
				b.Publish(events.Event{Kind: events.KindState, State: domain.StateDelivered, Transaction: "t", Count: i})
			}
			elapsed := time.Since(start)
			t.Logf("%d publishes to a %s webhook: %v (%v/op)", n, mode, elapsed, elapsed/n)
			if elapsed > time.Second {
				t.Fatalf("publishing %d events took %v; a dead webhook must not slow Publish", n, elapsed)
			}

			// The sink gives up on what it holds; wait for the first
			// request and for drops to show, then close with a short deadline.
			deadline := time.Now().Add(5 * time.Second)
			for requests.Load() == 0 || b.Stats()["webhook"].Dropped[events.DropBufferFull] == 0 {
				if time.Now().After(deadline) {
					t.Fatalf("no request or no drops: %d requests, stats %+v", requests.Load(), b.Stats()["webhook"])
				}
				time.Sleep(5 * time.Millisecond)
			}
			_ = testenv.CloseWithin(b, 300*time.Millisecond)
			st := b.Stats()["webhook"]
			if st.Written != 0 {
				t.Fatalf("written = %d from a dead webhook", st.Written)
			}
			if st.DroppedTotal() != n {
				t.Fatalf("dropped %v (total %d), want all %d counted", st.Dropped, st.DroppedTotal(), n)
			}
			// Every event the sink did not take out of its buffer is a
			// buffer_full drop; the sink takes at most one batch per failed
			// (given up) batch, one in flight, plus the buffer it drains at
			// close. How many batches fit into the publish loop depends on
			// the machine's speed, so bound by what was attempted.
			taken := st.DroppedTotal() - st.Dropped[events.DropBufferFull]
			if limit := (st.FailedBatches+1)*uint64(cfg.BatchSize) + uint64(cfg.Buffer); taken > limit {
				t.Fatalf("%d events dropped outside buffer_full, more than %d failed batches can hold (%d); stats %+v", taken, st.FailedBatches, limit, st)
			}
			if st.Dropped[events.DropBufferFull] < n/2 {
				t.Fatalf("buffer_full drops = %d, want most of %d", st.Dropped[events.DropBufferFull], n)
			}
			if mode == "500" && st.Retries == 0 {
				t.Fatalf("no retries against a 500 endpoint: %+v", st)
			}
		})
	}
}

func TestNewRejectsNonHTTP(t *testing.T) {
	for _, u := range []string{"ftp://example.com/x", "/relative", "http://"} {
		if _, err := webhook.New(u, webhook.Options{}); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

func TestClientErrorIsFinal(t *testing.T) {
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		http.Error(w, "nope", http.StatusForbidden)
	}))
	defer srv.Close()
	s, err := webhook.New(srv.URL, webhook.Options{Name: "wh2"})
	if err != nil {
		t.Fatal(err)
	}
	b := events.NewBus(testenv.QuietLogger())
	cfg := webhook.DefaultConfig()
	cfg.Retry.InitialBackoff = time.Millisecond
	if err := b.Add(s, cfg); err != nil {
		t.Fatal(err)
	}
	b.Publish(events.Event{Kind: events.KindAction, Action: events.ActionAck})
	if err := testenv.CloseWithin(b, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if requests.Load() != 1 {
		t.Fatalf("%d requests for a 403, want 1", requests.Load())
	}
	if st := b.Stats()["wh2"]; st.Dropped[events.DropWriteFailed] != 1 {
		t.Fatalf("stats = %+v", st)
	}
}
